// pixrank._kernels: pybind11 glue only. Every function re-checks ranks, shapes, dtypes (exactly
// float32 / int64, native byte order), C-contiguity and alignment, raising ValueError (from
// std::invalid_argument) with the function name and the shapes involved; then releases the GIL and
// calls a kernel from cpp/*.cpp; results are new numpy arrays that own their memory.
//
// Shape letters: see cpp/kernels.hpp.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "gemm.hpp"
#include "kernels.hpp"
#include "runtime.hpp"

namespace py = pybind11;
using namespace pybind11::literals;
using pixrank::ConvGeom;

#ifndef PIXRANK_VERSION
#define PIXRANK_VERSION "0.0.0"
#endif

namespace {

using Dims = std::vector<int64_t>;

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        if (i) s += ", ";
        s += std::to_string(a.shape(i));
    }
    if (a.ndim() == 1) s += ",";
    return s + ")";
}

std::string dims_str(const Dims& d) {
    std::string s = "(";
    for (size_t i = 0; i < d.size(); ++i) {
        if (i) s += ", ";
        s += std::to_string(d[i]);
    }
    if (d.size() == 1) s += ",";
    return s + ")";
}

[[noreturn]] void fail(const char* fn, const std::string& msg) { throw std::invalid_argument(std::string(fn) + ": " + msg); }

bool native_order(char bo) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return bo == '=' || bo == '>' || bo == '|';
#else
    return bo == '=' || bo == '<' || bo == '|';
#endif
}

// Checks that `obj` is a numpy array of dtype kind/itemsize, ndim, C-contiguous and aligned.
py::array check_array(const py::handle& obj, const char* fn, const char* name, char kind, int itemsize,
                      const char* dtype_name, int ndim, const char* legend) {
    if (!py::isinstance<py::array>(obj))
        fail(fn, std::string(name) + " must be a numpy.ndarray of dtype " + dtype_name + ", got " +
                     std::string(py::str(py::type::of(obj).attr("__name__"))));
    py::array a = py::reinterpret_borrow<py::array>(obj);
    const py::dtype dt = a.dtype();
    if (dt.kind() != kind || dt.itemsize() != itemsize || !native_order(dt.byteorder()))
        fail(fn, std::string(name) + " must have dtype " + dtype_name + ", got " + std::string(py::str(dt)) +
                     " array of shape " + shape_str(a));
    if (a.ndim() != ndim)
        fail(fn, std::string(name) + " must be " + std::to_string(ndim) + "-D " + legend + ", got shape " +
                     shape_str(a));
    if (!(a.flags() & py::array::c_style))
        fail(fn, std::string(name) + " must be C-contiguous, got a strided array of shape " + shape_str(a));
    if (reinterpret_cast<std::uintptr_t>(a.data()) % static_cast<std::uintptr_t>(itemsize) != 0)
        fail(fn, std::string(name) + " must be aligned to " + std::to_string(itemsize) + " bytes");
    return a;
}

py::array f32(const py::handle& obj, const char* fn, const char* name, int ndim, const char* legend) {
    return check_array(obj, fn, name, 'f', 4, "float32", ndim, legend);
}

py::array i64(const py::handle& obj, const char* fn, const char* name, int ndim, const char* legend) {
    return check_array(obj, fn, name, 'i', 8, "int64", ndim, legend);
}

Dims dims(const py::array& a) {
    Dims d;
    for (py::ssize_t i = 0; i < a.ndim(); ++i) d.push_back(a.shape(i));
    return d;
}

void expect_shape(const char* fn, const char* name, const py::array& a, const Dims& want, const std::string& why) {
    if (dims(a) != want)
        fail(fn, std::string(name) + " must have shape " + dims_str(want) + " " + why + ", got " + shape_str(a));
}

const float* fp(const py::array& a) { return static_cast<const float*>(a.data()); }
const int64_t* ip(const py::array& a) { return static_cast<const int64_t*>(a.data()); }

py::array_t<float> new_f32(const Dims& shape) {
    std::vector<py::ssize_t> s(shape.begin(), shape.end());
    return py::array_t<float>(s);
}
py::array_t<int64_t> new_i64(const Dims& shape) {
    std::vector<py::ssize_t> s(shape.begin(), shape.end());
    return py::array_t<int64_t>(s);
}
float* mp(py::array_t<float>& a) { return a.mutable_data(); }

void check_nonneg(const char* fn, const char* name, int64_t v) {
    if (v < 0) fail(fn, std::string(name) + " must be >= 0, got " + std::to_string(v));
}

// ----------------------------------------------------------------------------------------- matmul

py::array matmul(py::handle a_, py::handle b_, py::handle bias_, bool relu, bool trans_a, bool trans_b) {
    const char* fn = "matmul";
    py::array a = f32(a_, fn, "a", 2, trans_a ? "(K, M) (trans_a=True)" : "(M, K)");
    py::array b = f32(b_, fn, "b", 2, trans_b ? "(N, K) (trans_b=True)" : "(K, N)");
    const int64_t M = trans_a ? a.shape(1) : a.shape(0);
    const int64_t K = trans_a ? a.shape(0) : a.shape(1);
    const int64_t Kb = trans_b ? b.shape(1) : b.shape(0);
    const int64_t N = trans_b ? b.shape(0) : b.shape(1);
    if (K != Kb)
        fail(fn, "inner dimensions differ: a " + shape_str(a) + (trans_a ? " (trans_a=True)" : "") + " gives K=" +
                     std::to_string(K) + ", b " + shape_str(b) + (trans_b ? " (trans_b=True)" : "") + " gives K=" +
                     std::to_string(Kb));
    const float* bias = nullptr;
    py::array bias_arr;
    if (!bias_.is_none()) {
        bias_arr = f32(bias_, fn, "bias", 1, "(N,)");
        expect_shape(fn, "bias", bias_arr, {N}, "(N,) to match the output (" + std::to_string(M) + ", " +
                                                   std::to_string(N) + ")");
        bias = fp(bias_arr);
    }
    pixrank::checked_mul(M, N, fn);
    auto c = new_f32({M, N});
    float* C = mp(c);
    const float* A = fp(a);
    const float* B = fp(b);
    const int64_t lda = a.shape(1), ldb = b.shape(1);
    {
        py::gil_scoped_release release;
        pixrank::sgemm(M, N, K, A, lda, trans_a, B, ldb, trans_b, C, N, bias, relu, false);
    }
    return std::move(c);
}

// The slow twin, exposed for tests of the fast path.
py::array matmul_naive(py::handle a_, py::handle b_, py::handle bias_, bool relu, bool trans_a, bool trans_b) {
    const char* fn = "matmul_naive";
    py::array a = f32(a_, fn, "a", 2, "(M, K)");
    py::array b = f32(b_, fn, "b", 2, "(K, N)");
    const int64_t M = trans_a ? a.shape(1) : a.shape(0);
    const int64_t K = trans_a ? a.shape(0) : a.shape(1);
    const int64_t Kb = trans_b ? b.shape(1) : b.shape(0);
    const int64_t N = trans_b ? b.shape(0) : b.shape(1);
    if (K != Kb) fail(fn, "inner dimensions differ: a " + shape_str(a) + ", b " + shape_str(b));
    const float* bias = nullptr;
    py::array bias_arr;
    if (!bias_.is_none()) {
        bias_arr = f32(bias_, fn, "bias", 1, "(N,)");
        expect_shape(fn, "bias", bias_arr, {N}, "(N,)");
        bias = fp(bias_arr);
    }
    auto c = new_f32({M, N});
    float* C = mp(c);
    const float* A = fp(a);
    const float* B = fp(b);
    const int64_t lda = a.shape(1), ldb = b.shape(1);
    {
        py::gil_scoped_release release;
        pixrank::sgemm_naive(M, N, K, A, lda, trans_a, B, ldb, trans_b, C, N, bias, relu, false);
    }
    return std::move(c);
}

py::tuple linear_backward(py::handle x_, py::handle w_, py::handle dy_, py::handle y_, bool relu, bool need_dx,
                          bool need_dw) {
    const char* fn = "linear_backward";
    py::array x = f32(x_, fn, "x", 2, "(M, K)");
    py::array w = f32(w_, fn, "w", 2, "(K, N)");
    py::array dy = f32(dy_, fn, "dy", 2, "(M, N)");
    const int64_t M = x.shape(0), K = x.shape(1), N = w.shape(1);
    if (w.shape(0) != K) fail(fn, "w must have shape (K, N) with K = x.shape[1] = " + std::to_string(K) + ": x " +
                                      shape_str(x) + ", w " + shape_str(w));
    expect_shape(fn, "dy", dy, {M, N}, "(M, N) for x " + shape_str(x) + " and w " + shape_str(w));
    py::array y;
    const float* yp = nullptr;
    if (!y_.is_none()) {
        y = f32(y_, fn, "y", 2, "(M, N)");
        expect_shape(fn, "y", y, {M, N}, "(M, N) like dy");
        yp = fp(y);
    } else if (relu) {
        fail(fn, "relu=True needs y (the forward output, shape (M, N) = " + dims_str({M, N}) + ")");
    }
    // only the gradients asked for are allocated and computed; the others come back as None
    py::object dx = py::none(), dw = py::none();
    float *dxp = nullptr, *dwp = nullptr;
    if (need_dx) {
        auto a = new_f32({M, K});
        dxp = mp(a);
        dx = std::move(a);
    }
    if (need_dw) {
        auto a = new_f32({K, N});
        dwp = mp(a);
        dw = std::move(a);
    }
    auto db = new_f32({N});
    float* dbp = mp(db);
    const float *xp = fp(x), *wp = fp(w), *dyp = fp(dy);
    {
        py::gil_scoped_release release;
        pixrank::linear_backward(M, K, N, xp, wp, dyp, yp, relu, dxp, dwp, dbp);
    }
    return py::make_tuple(dx, dw, db);
}

// ---------------------------------------------------------------------------------------- softmax

py::array softmax(py::handle x_) {
    py::array x = f32(x_, "softmax", "logits", 2, "(N, C)");
    const int64_t N = x.shape(0), C = x.shape(1);
    auto out = new_f32({N, C});
    float* o = mp(out);
    const float* xp = fp(x);
    {
        py::gil_scoped_release release;
        pixrank::softmax(N, C, xp, o);
    }
    return std::move(out);
}

py::array log_softmax(py::handle x_) {
    py::array x = f32(x_, "log_softmax", "logits", 2, "(N, C)");
    const int64_t N = x.shape(0), C = x.shape(1);
    auto out = new_f32({N, C});
    float* o = mp(out);
    const float* xp = fp(x);
    {
        py::gil_scoped_release release;
        pixrank::log_softmax(N, C, xp, o);
    }
    return std::move(out);
}

py::tuple softmax_cross_entropy(py::handle x_, py::handle labels_) {
    const char* fn = "softmax_cross_entropy";
    py::array x = f32(x_, fn, "logits", 2, "(N, C)");
    py::array labels = i64(labels_, fn, "labels", 1, "(N,)");
    const int64_t N = x.shape(0), C = x.shape(1);
    expect_shape(fn, "labels", labels, {N}, "(N,) for logits " + shape_str(x));
    auto d = new_f32({N, C});
    float* dp = mp(d);
    const float* xp = fp(x);
    const int64_t* lp = ip(labels);
    double loss;
    {
        py::gil_scoped_release release;
        loss = pixrank::softmax_cross_entropy(N, C, xp, lp, dp);
    }
    return py::make_tuple(loss, d);
}

// exp_f32(x): x float32 (n,) -> exp(x) (n,) by the vectorised expf of the SIMD path in use (the
// softmax family's exponential; for tests).
py::array exp_f32(py::handle x_) {
    py::array x = f32(x_, "exp_f32", "x", 1, "(n,)");
    const int64_t n = x.shape(0);
    auto out = new_f32({n});
    float* o = mp(out);
    const float* xp = fp(x);
    {
        py::gil_scoped_release release;
        pixrank::exp_f32(n, xp, o);
    }
    return std::move(out);
}

// ------------------------------------------------------------------------------------ convolution

py::array im2col(py::handle x_, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                 int64_t pr) {
    const char* fn = "im2col";
    py::array x = f32(x_, fn, "x", 4, "(B, H, W, C)");
    ConvGeom g = pixrank::make_conv_geom(fn, x.shape(0), x.shape(1), x.shape(2), x.shape(3), kh, kw, sh, sw, pt, pb,
                                         pl, pr);
    auto cols = new_f32({g.R, g.KK});
    float* cp = mp(cols);
    const float* xp = fp(x);
    {
        py::gil_scoped_release release;
        pixrank::im2col(g, xp, cp);
    }
    return std::move(cols);
}

py::array col2im(py::handle cols_, int64_t B, int64_t H, int64_t W, int64_t C, int64_t kh, int64_t kw, int64_t sh,
                 int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
    const char* fn = "col2im";
    py::array cols = f32(cols_, fn, "cols", 2, "(B*OH*OW, kh*kw*C)");
    ConvGeom g = pixrank::make_conv_geom(fn, B, H, W, C, kh, kw, sh, sw, pt, pb, pl, pr);
    expect_shape(fn, "cols", cols, {g.R, g.KK},
                 "(B*OH*OW, kh*kw*C) for x_shape " + dims_str({B, H, W, C}) + " (OH, OW) = " + dims_str({g.OH, g.OW}));
    auto x = new_f32({B, H, W, C});
    float* xp = mp(x);
    const float* cp = fp(cols);
    {
        py::gil_scoped_release release;
        pixrank::col2im(g, cp, xp);
    }
    return std::move(x);
}

py::array conv2d(py::handle x_, py::handle w_, py::handle bias_, int64_t sh, int64_t sw, int64_t pt, int64_t pb,
                 int64_t pl, int64_t pr, bool relu) {
    const char* fn = "conv2d";
    py::array x = f32(x_, fn, "x", 4, "(B, H, W, C)");
    py::array w = f32(w_, fn, "w", 4, "(kh, kw, C, F)");
    if (w.shape(2) != x.shape(3))
        fail(fn, "w must have shape (kh, kw, C, F) with C = x.shape[3] = " + std::to_string(x.shape(3)) + ": x " +
                     shape_str(x) + ", w " + shape_str(w));
    const int64_t F = w.shape(3);
    ConvGeom g = pixrank::make_conv_geom(fn, x.shape(0), x.shape(1), x.shape(2), x.shape(3), w.shape(0), w.shape(1), sh,
                                         sw, pt, pb, pl, pr);
    py::array bias;
    const float* bp = nullptr;
    if (!bias_.is_none()) {
        bias = f32(bias_, fn, "bias", 1, "(F,)");
        expect_shape(fn, "bias", bias, {F}, "(F,) for w " + shape_str(w));
        bp = fp(bias);
    }
    pixrank::checked_mul(g.R, F, fn);
    auto y = new_f32({g.B, g.OH, g.OW, F});
    float* yp = mp(y);
    const float *xp = fp(x), *wp = fp(w);
    {
        py::gil_scoped_release release;
        pixrank::conv2d(g, F, xp, wp, bp, relu, yp);
    }
    return std::move(y);
}

py::tuple conv2d_backward(py::handle x_, py::handle w_, py::handle dy_, int64_t sh, int64_t sw, int64_t pt, int64_t pb,
                          int64_t pl, int64_t pr, py::handle y_, bool relu) {
    const char* fn = "conv2d_backward";
    py::array x = f32(x_, fn, "x", 4, "(B, H, W, C)");
    py::array w = f32(w_, fn, "w", 4, "(kh, kw, C, F)");
    py::array dy = f32(dy_, fn, "dy", 4, "(B, OH, OW, F)");
    if (w.shape(2) != x.shape(3))
        fail(fn, "w must have shape (kh, kw, C, F) with C = x.shape[3] = " + std::to_string(x.shape(3)) + ": x " +
                     shape_str(x) + ", w " + shape_str(w));
    const int64_t F = w.shape(3);
    ConvGeom g = pixrank::make_conv_geom(fn, x.shape(0), x.shape(1), x.shape(2), x.shape(3), w.shape(0), w.shape(1), sh,
                                         sw, pt, pb, pl, pr);
    const Dims yshape{g.B, g.OH, g.OW, F};
    expect_shape(fn, "dy", dy, yshape, "(B, OH, OW, F) for x " + shape_str(x) + " and w " + shape_str(w));
    py::array y;
    const float* yp = nullptr;
    if (!y_.is_none()) {
        y = f32(y_, fn, "y", 4, "(B, OH, OW, F)");
        expect_shape(fn, "y", y, yshape, "(B, OH, OW, F) like dy");
        yp = fp(y);
    } else if (relu) {
        fail(fn, "relu=True needs y (the forward output, shape " + dims_str(yshape) + ")");
    }
    auto dx = new_f32({g.B, g.H, g.W, g.C});
    auto dw = new_f32(dims(w));
    auto db = new_f32({F});
    float *dxp = mp(dx), *dwp = mp(dw), *dbp = mp(db);
    const float *xp = fp(x), *wp = fp(w), *dyp = fp(dy);
    {
        py::gil_scoped_release release;
        pixrank::conv2d_backward(g, F, xp, wp, dyp, yp, relu, dxp, dwp, dbp);
    }
    return py::make_tuple(dx, dw, db);
}

// ---------------------------------------------------------------------------------------- pooling

py::tuple max_pool2d(py::handle x_, int64_t ph, int64_t pw, int64_t sh, int64_t sw) {
    const char* fn = "max_pool2d";
    py::array x = f32(x_, fn, "x", 4, "(B, H, W, C)");
    if (ph > x.shape(1) || pw > x.shape(2))
        fail(fn, "pool size (" + std::to_string(ph) + ", " + std::to_string(pw) + ") is larger than the input x " +
                     shape_str(x));
    ConvGeom g = pixrank::make_conv_geom(fn, x.shape(0), x.shape(1), x.shape(2), x.shape(3), ph, pw, sh, sw, 0, 0, 0, 0);
    auto y = new_f32({g.B, g.OH, g.OW, g.C});
    auto am = new_i64({g.B, g.OH, g.OW, g.C});
    float* yp = mp(y);
    int64_t* ap = am.mutable_data();
    const float* xp = fp(x);
    {
        py::gil_scoped_release release;
        pixrank::max_pool2d(g, xp, yp, ap);
    }
    return py::make_tuple(y, am);
}

py::array max_pool2d_backward(py::handle dy_, py::handle argmax_, int64_t B, int64_t H, int64_t W, int64_t C) {
    const char* fn = "max_pool2d_backward";
    py::array dy = f32(dy_, fn, "dy", 4, "(B, OH, OW, C)");
    py::array am = i64(argmax_, fn, "argmax", 4, "(B, OH, OW, C)");
    check_nonneg(fn, "B", B);
    check_nonneg(fn, "H", H);
    check_nonneg(fn, "W", W);
    check_nonneg(fn, "C", C);
    if (dy.shape(0) != B || dy.shape(3) != C)
        fail(fn, "dy " + shape_str(dy) + " does not match x_shape " + dims_str({B, H, W, C}) +
                     " (batch and channels must agree)");
    expect_shape(fn, "argmax", am, dims(dy), "(the shape of dy)");
    ConvGeom g{B, H, W, C, 1, 1, 1, 1, 0, 0, 0, 0, dy.shape(1), dy.shape(2), C, 0};
    pixrank::checked_mul(pixrank::checked_mul(pixrank::checked_mul(B, H, fn), W, fn), C, fn);
    auto dx = new_f32({B, H, W, C});
    float* dxp = mp(dx);
    const float* dyp = fp(dy);
    const int64_t* ap = ip(am);
    {
        py::gil_scoped_release release;
        pixrank::max_pool2d_backward(g, dyp, ap, dxp);
    }
    return std::move(dx);
}

// ---------------------------------------------------------------------------------------- ranking

py::tuple cosine_topk(py::handle q_, py::handle d_, int64_t k) {
    const char* fn = "cosine_topk";
    py::array q = f32(q_, fn, "queries", 2, "(Q, d)");
    py::array db = f32(d_, fn, "database", 2, "(n, d)");
    if (q.shape(1) != db.shape(1))
        fail(fn, "queries and database must have the same dimension d: queries " + shape_str(q) + ", database " +
                     shape_str(db));
    if (k < 1) fail(fn, "k must be >= 1, got " + std::to_string(k));
    const int64_t Q = q.shape(0), n = db.shape(0), d = q.shape(1);
    const int64_t kk = k < n ? k : n;
    pixrank::checked_mul(Q, kk, fn);
    auto idx = new_i64({Q, kk});
    auto sc = new_f32({Q, kk});
    int64_t* ipw = idx.mutable_data();
    float* sp = mp(sc);
    const float *qp = fp(q), *dp = fp(db);
    {
        py::gil_scoped_release release;
        pixrank::cosine_topk(Q, n, d, qp, dp, k, ipw, sp);
    }
    return py::make_tuple(idx, sc);
}

// A prepared database (pixrank::CosineDatabase): the bindings check shapes and dtypes, release the
// GIL around packing and queries (the object's own lock orders them), and copy results into numpy.

void db_append(pixrank::CosineDatabase& db, py::handle rows_) {
    const char* fn = "CosineDatabase.append";
    py::array rows = f32(rows_, fn, "vectors", 2, "(m, d)");
    if (rows.shape(1) != db.dim())
        fail(fn, "vectors must have shape (m, " + std::to_string(db.dim()) + "), got " + shape_str(rows));
    const float* rp = fp(rows);
    const int64_t m = rows.shape(0);
    py::gil_scoped_release release;
    db.append(rp, m);
}

void db_set_rows(pixrank::CosineDatabase& db, py::handle pos_, py::handle rows_) {
    const char* fn = "CosineDatabase.replace";
    py::array pos = i64(pos_, fn, "positions", 1, "(m,)");
    py::array rows = f32(rows_, fn, "vectors", 2, "(m, d)");
    if (rows.shape(1) != db.dim() || rows.shape(0) != pos.shape(0))
        fail(fn, "vectors must have shape (" + std::to_string(pos.shape(0)) + ", " + std::to_string(db.dim()) +
                     ") to match positions " + shape_str(pos) + ", got " + shape_str(rows));
    const float* rp = fp(rows);
    const int64_t* pp = ip(pos);
    const int64_t m = rows.shape(0);
    py::gil_scoped_release release;
    db.set_rows(pp, rp, m);
}

py::tuple db_topk(pixrank::CosineDatabase& db, py::handle q_, int64_t k) {
    const char* fn = "cosine_topk";
    py::array q = f32(q_, fn, "queries", 2, "(Q, d)");
    if (q.shape(1) != db.dim())
        fail(fn, "queries must have shape (Q, " + std::to_string(db.dim()) + ") to match the prepared database, got " +
                     shape_str(q));
    if (k < 1) fail(fn, "k must be >= 1, got " + std::to_string(k));
    const int64_t Q = q.shape(0);
    const float* qp = fp(q);
    std::vector<int64_t> iv;
    std::vector<float> sv;
    int64_t kk;
    {
        py::gil_scoped_release release;
        kk = db.topk(Q, qp, k, iv, sv);
    }
    auto idx = new_i64({Q, kk});
    auto sc = new_f32({Q, kk});
    if (!iv.empty()) {
        std::memcpy(idx.mutable_data(), iv.data(), iv.size() * sizeof(int64_t));
        std::memcpy(mp(sc), sv.data(), sv.size() * sizeof(float));
    }
    return py::make_tuple(idx, sc);
}

// ------------------------------------------------------------------------------------------- adam

void adam_update(py::handle param_, py::handle grad_, py::handle m_, py::handle v_, double lr, double beta1,
                 double beta2, double eps, double weight_decay, int64_t t) {
    const char* fn = "adam_update";
    if (!py::isinstance<py::array>(param_)) fail(fn, "param must be a numpy.ndarray of dtype float32");
    const int nd = static_cast<int>(py::reinterpret_borrow<py::array>(param_).ndim());
    py::array p = f32(param_, fn, "param", nd, "(any shape)");
    py::array g = f32(grad_, fn, "grad", nd, "(the shape of param)");
    py::array m = f32(m_, fn, "m", nd, "(the shape of param)");
    py::array v = f32(v_, fn, "v", nd, "(the shape of param)");
    for (const py::array* a : {&g, &m, &v})
        if (dims(*a) != dims(p)) fail(fn, "grad, m and v must have the shape of param " + shape_str(p) + ", got " + shape_str(*a));
    if (!p.writeable() || !m.writeable() || !v.writeable()) fail(fn, "param, m and v must be writeable");
    // All four are C-contiguous with the same element count: two share memory exactly when their
    // byte ranges intersect. (This is the only overlap check on the ops.adam_update path: done here,
    // it costs nothing, where numpy's may_share_memory cost ~4 us per call, per parameter.)
    {
        const std::pair<const char*, const py::array*> all[4] = {{"param", &p}, {"m", &m}, {"v", &v}, {"grad", &g}};
        const std::uintptr_t bytes = static_cast<std::uintptr_t>(p.size()) * sizeof(float);
        for (int i = 0; i < 4; ++i)
            for (int j = i + 1; j < 4; ++j) {
                const auto a = reinterpret_cast<std::uintptr_t>(all[i].second->data());
                const auto b = reinterpret_cast<std::uintptr_t>(all[j].second->data());
                if (bytes > 0 && a < b + bytes && b < a + bytes)
                    fail(fn, std::string(all[i].first) + " and " + all[j].first + " must not share memory");
            }
    }
    if (!(lr >= 0) || !(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1) || !(eps > 0) || !(weight_decay >= 0))
        fail(fn, "need lr >= 0, 0 <= beta1, beta2 < 1, eps > 0, weight_decay >= 0");
    if (t < 1) fail(fn, "t must be >= 1, got " + std::to_string(t));
    const int64_t size = p.size();
    float* pp = static_cast<float*>(p.mutable_data());
    float* mpp = static_cast<float*>(m.mutable_data());
    float* vp = static_cast<float*>(v.mutable_data());
    const float* gp = fp(g);
    {
        py::gil_scoped_release release;
        pixrank::adam_update(size, pp, gp, mpp, vp, lr, beta1, beta2, eps, weight_decay, t);
    }
}

// ------------------------------------------------------------------------------------------- info

std::string compiler() {
#if defined(__clang__)
    return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    return std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
    return "msvc " + std::to_string(_MSC_VER);
#else
    return "unknown";
#endif
}

py::list available_simd() {
    py::list out;
    for (auto s : pixrank::simd_available()) out.append(pixrank::simd_name(s));
    return out;
}

py::dict info() {
    py::dict d;
    d["version"] = PIXRANK_VERSION;
    d["simd"] = pixrank::simd_name(pixrank::simd_current());
    d["simd_available"] = available_simd();
    d["threads"] = pixrank::num_threads();
    d["threading"] = pixrank::threading_backend();
    if (pixrank::serial_after_fork()) d["serial_after_fork"] = true;
    d["compiler"] = compiler();
    const pixrank::UKernel& uk = pixrank::active_ukernel();
    d["gemm_tile"] = py::make_tuple(uk.mr, uk.nr);
    d["gemm_blocks"] = py::make_tuple(uk.mc, uk.kc, uk.nc);
#ifdef PIXRANK_SANITIZE_BUILD
    d["sanitize"] = true;
#else
    d["sanitize"] = false;
#endif
#ifdef PIXRANK_AVX512_EMULATED
    d["avx512_emulated"] = true;  // test build: the avx512 path runs SIMDe's portable intrinsics
#else
    d["avx512_emulated"] = false;
#endif
    if (!pixrank::simd_env_rejected().empty()) d["simd_env_rejected"] = pixrank::simd_env_rejected();
    return d;
}

}  // namespace

PYBIND11_MODULE(_kernels, m) {
    m.doc() = "pixrank's compiled kernels (private; use pixrank.ops). Shapes and dtypes are checked again here.";
    m.def("matmul", &matmul, "a"_a, "b"_a, "bias"_a = py::none(), "relu"_a = false, "trans_a"_a = false,
          "trans_b"_a = false, "op(a) @ op(b) (+ bias) (ReLU), float32, fused epilogue");
    m.def("matmul_naive", &matmul_naive, "a"_a, "b"_a, "bias"_a = py::none(), "relu"_a = false, "trans_a"_a = false,
          "trans_b"_a = false, "the plain-loop reference of matmul (slow; for tests)");
    m.def("linear_backward", &linear_backward, "x"_a, "w"_a, "dy"_a, "y"_a = py::none(), "relu"_a = false,
          "need_dx"_a = true, "need_dw"_a = true);
    m.def("softmax", &softmax, "logits"_a);
    m.def("log_softmax", &log_softmax, "logits"_a);
    m.def("softmax_cross_entropy", &softmax_cross_entropy, "logits"_a, "labels"_a);
    m.def("exp_f32", &exp_f32, "x"_a);
    m.def("im2col", &im2col, "x"_a, "kh"_a, "kw"_a, "sh"_a, "sw"_a, "pt"_a, "pb"_a, "pl"_a, "pr"_a);
    m.def("col2im", &col2im, "cols"_a, "B"_a, "H"_a, "W"_a, "C"_a, "kh"_a, "kw"_a, "sh"_a, "sw"_a, "pt"_a, "pb"_a,
          "pl"_a, "pr"_a);
    m.def("conv2d", &conv2d, "x"_a, "w"_a, "bias"_a, "sh"_a, "sw"_a, "pt"_a, "pb"_a, "pl"_a, "pr"_a, "relu"_a = false);
    m.def("conv2d_backward", &conv2d_backward, "x"_a, "w"_a, "dy"_a, "sh"_a, "sw"_a, "pt"_a, "pb"_a, "pl"_a, "pr"_a,
          "y"_a = py::none(), "relu"_a = false);
    m.def("max_pool2d", &max_pool2d, "x"_a, "ph"_a, "pw"_a, "sh"_a, "sw"_a);
    m.def("max_pool2d_backward", &max_pool2d_backward, "dy"_a, "argmax"_a, "B"_a, "H"_a, "W"_a, "C"_a);
    m.def("cosine_topk", &cosine_topk, "queries"_a, "database"_a, "k"_a);
    py::class_<pixrank::CosineDatabase>(m, "CosineDatabase",
                                        "A database normalised and packed once for cosine_topk (private; use "
                                        "pixrank.ops.CosineDatabase)")
        .def(py::init<int64_t>(), "d"_a)
        .def_property_readonly("dim", &pixrank::CosineDatabase::dim)
        .def("__len__", &pixrank::CosineDatabase::size)
        .def_property_readonly("capacity", &pixrank::CosineDatabase::capacity)
        .def_property_readonly("layout", &pixrank::CosineDatabase::layout)
        .def("reserve", [](pixrank::CosineDatabase& db, int64_t rows) {
            py::gil_scoped_release release;
            db.reserve(rows);
        }, "rows"_a)
        .def("append", &db_append, "vectors"_a)
        .def("set_rows", &db_set_rows, "positions"_a, "vectors"_a)
        .def("truncate", &pixrank::CosineDatabase::truncate, "n"_a)
        .def("row", [](const pixrank::CosineDatabase& db, int64_t i) {
            std::vector<float> r = db.row(i);
            auto out = new_f32({static_cast<int64_t>(r.size())});
            std::memcpy(mp(out), r.data(), r.size() * sizeof(float));
            return out;
        }, "i"_a)
        .def("topk", &db_topk, "queries"_a, "k"_a);
    m.def("adam_update", &adam_update, "param"_a, "grad"_a, "m"_a, "v"_a, "lr"_a, "beta1"_a, "beta2"_a, "eps"_a,
          "weight_decay"_a, "t"_a);
    m.def("set_num_threads", [](int64_t n) { pixrank::set_num_threads(n); }, "n"_a);
    m.def("get_num_threads", []() { return pixrank::num_threads(); });
    m.def("set_simd", [](const std::string& name) { pixrank::simd_set(name); }, "name"_a);
    m.def("available_simd", &available_simd);
    m.def("info", &info);
    m.attr("__version__") = PIXRANK_VERSION;
}
