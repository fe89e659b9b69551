// pixrank kernels: the neural-network and ranking kernels called by cpp/bindings.cpp.
//
// Shape legend (used in every comment below):
//   M rows, K inner, N columns (GEMM); B batch; H W C input image (NHWC, row-major, C fastest);
//   kh kw kernel/pool window; sh sw strides; pt pb pl pr explicit paddings (top bottom left right);
//   OH OW output size; F filters; KK = kh * kw * C (one im2col row); R = B * OH * OW (im2col rows);
//   Q queries, n database vectors, d dimension, k results per query.
//
// All pointers are to C-contiguous float32 (or int64 where said) buffers of exactly the stated
// shapes; callers (the bindings) have checked them. Functions throw std::invalid_argument on bad
// geometry or data-dependent errors (label or argmax out of range, non-finite vectors), never abort.
#pragma once

#include <cstdint>
#include <shared_mutex>
#include <string>
#include <vector>

#include "ukernel.hpp"

namespace pixrank {

// ----------------------------------------------------------------------------------- dense layers

// Gradients of y = relu?(x @ w + b).
//   x (M, K), w (K, N), dy (M, N), y (M, N) or nullptr (required when relu: mask = y > 0).
//   dx (M, K) = g @ w^T, dw (K, N) = x^T @ g, db (N,) = sum_rows g (summed in double), where
//   g = dy * mask. Any of dx, dw, db may be nullptr: that gradient is not computed. M == 0 gives zero
//   dw and db. threads <= 0 means num_threads(); inside a parallel region it runs on the calling thread.
void linear_backward(int64_t M, int64_t K, int64_t N, const float* x, const float* w, const float* dy,
                     const float* y, bool relu, float* dx, float* dw, float* db, int threads = 0);

// ------------------------------------------------------------------------------------ row softmax

// logits (N, C) -> out (N, C); numerically stable (max subtracted): per row m = max, e = exp(x - m) by
// the vectorised expf of the SIMD variant in use (ukernel.hpp RowKernels), summed in float lanes and
// reduced in double; softmax = e / sum, log_softmax = (x - m) - log(sum). Special rows: a NaN makes the
// row NaN; a +inf maximum shares the mass equally among the +inf entries; an all -inf row is NaN.
void softmax(int64_t N, int64_t C, const float* logits, float* out);
void log_softmax(int64_t N, int64_t C, const float* logits, float* out);

// Fused softmax cross-entropy. logits (N, C), labels int64 (N,) in [0, C) (checked: throws),
// dlogits (N, C) = (softmax - onehot) / N. Returns the mean loss (0 when N == 0).
double softmax_cross_entropy(int64_t N, int64_t C, const float* logits, const int64_t* labels,
                             float* dlogits);

// y (n,) = exp(x (n,)) by the vectorised expf of the SIMD variant in use (ukernel.hpp; the softmax
// family's exponential), exposed for tests.
void exp_f32(int64_t n, const float* x, float* y);

// ---------------------------------------------------------------------------------- convolutions

struct ConvGeom {
    int64_t B, H, W, C;      // input (B, H, W, C)
    int64_t kh, kw, sh, sw;  // window and strides
    int64_t pt, pb, pl, pr;  // paddings
    int64_t OH, OW;          // output size
    int64_t KK;              // kh * kw * C
    int64_t R;               // B * OH * OW
};

// Validates and completes a geometry; `fn` names the caller in error messages.
ConvGeom make_conv_geom(const char* fn, int64_t B, int64_t H, int64_t W, int64_t C, int64_t kh, int64_t kw,
                        int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr);

// x (B, H, W, C) -> cols (R, KK), column order (i, j, c); padded taps are 0.
void im2col(const ConvGeom& g, const float* x, float* cols);
// cols (R, KK) -> x (B, H, W, C) = the adjoint of im2col (overlapping taps summed; x overwritten).
void col2im(const ConvGeom& g, const float* cols, float* x);

// y (B, OH, OW, F) = relu?(conv(x (B, H, W, C), w (kh, kw, C, F)) + bias (F,) or nullptr).
void conv2d(const ConvGeom& g, int64_t F, const float* x, const float* w, const float* bias, bool relu,
            float* y);

// Gradients of conv2d. dy (B, OH, OW, F); y (B, OH, OW, F) or nullptr (required when relu).
// dx (B, H, W, C), dw (kh, kw, C, F), db (F,).
void conv2d_backward(const ConvGeom& g, int64_t F, const float* x, const float* w, const float* dy,
                     const float* y, bool relu, float* dx, float* dw, float* db);

// ---------------------------------------------------------------------------------------- pooling

// Max pooling without padding: x (B, H, W, C) -> y (B, OH, OW, C) and argmax int64 (B, OH, OW, C),
// the flat index into x of each maximum (ties: the first in the window, row-major). Geometry from
// make_conv_geom with zero pads (kh, kw = pool size).
void max_pool2d(const ConvGeom& g, const float* x, float* y, int64_t* argmax);
// dx (B, H, W, C) = scatter-add of dy (B, OH, OW, C) at argmax; each argmax must lie inside its own
// image's block [b*H*W*C, (b+1)*H*W*C) (checked: throws).
void max_pool2d_backward(const ConvGeom& g, const float* dy, const int64_t* argmax, float* dx);

// ---------------------------------------------------------------------------------------- ranking

// Exact cosine top-k. queries (Q, d), database (n, d); kk = min(k, n) results per query:
// indices int64 (Q, kk), scores (Q, kk), scores descending, ties by lower index; a zero vector
// scores 0. Non-finite inputs throw. Never holds the full (Q, n) score matrix. The database is
// normalised and packed block by block during the call (see CosineDatabase to do that once).
void cosine_topk(int64_t Q, int64_t n, int64_t d, const float* queries, const float* database, int64_t k,
                 int64_t* indices, float* scores);

// How a database is packed for the top-k scan: blocks of nb rows (nb a multiple of nr; block b at
// data + b * nb * dd), each block one GEMM B operand of the transposed, L2-normalised rows: for each
// depth block [pc, pc + kc') (kc' = min(kc, d - pc)) at block + nb * pc, panels of nr rows, panel t at
// + t * nr * kc', element (row r, depth p) at [(p - pc) * nr + r % nr]. Depends on the micro-kernel
// (nr, kc), hence on the SIMD variant.
struct DbLayout {
    const UKernel* uk;
    int64_t d, dd;  // dimension; max(d, 1)
    int64_t nr, kc, nb;
    static DbLayout make(const UKernel& uk, int64_t d);
    // Packs rows [first, first + m) from src (m, d), each scaled by inv (m,), into data.
    void pack(float* data, int64_t first, int64_t m, const float* src, const float* inv) const;
    // Row i as packed (normalised) into out (d,).
    void unpack_row(const float* data, int64_t i, float* out) const;
};

// A database prepared once for many exact cosine top-k calls: its n rows of dimension d are
// L2-normalised (in double, as cosine_topk does; a zero row stays zero and scores 0) and packed in
// DbLayout (n rounded up to whole blocks; ~4 bytes per component plus up to nb - 1 rows of padding),
// so that a query costs only the multiply and the selection. Results are identical to
// cosine_topk(queries, rows, k) over the same rows. Rows can be appended (amortised O(d) per row: the
// storage at least doubles when it grows), replaced in place and dropped from the end. Thread-safe:
// queries share a lock, changes take it exclusively. If the SIMD variant in use changes (set_simd),
// the next query re-packs the rows for it once.
class CosineDatabase {
public:
    explicit CosineDatabase(int64_t d);  // d >= 1; empty
    ~CosineDatabase();
    CosineDatabase(const CosineDatabase&) = delete;
    CosineDatabase& operator=(const CosineDatabase&) = delete;

    int64_t dim() const { return layout_.d; }
    int64_t size() const;      // rows
    int64_t capacity() const;  // rows the storage holds before it grows
    std::string layout() const;
    void reserve(int64_t rows);
    // rows (m, d): appended as rows size() .. size() + m - 1. Throws (changing nothing) on a
    // non-finite row, naming its index in `rows`.
    void append(const float* rows, int64_t m);
    // rows (m, d) replace the rows at positions (m,), each in [0, size()); applied in order.
    void set_rows(const int64_t* positions, const float* rows, int64_t m);
    // Keeps the first n rows (0 <= n <= size()); the storage is kept for later appends.
    void truncate(int64_t n);
    // Row i, normalised, as packed (d,).
    std::vector<float> row(int64_t i) const;
    // queries (Q, d) -> indices, scores (Q, kk) with kk = min(k, size()) (returned).
    int64_t topk(int64_t Q, const float* queries, int64_t k, std::vector<int64_t>& indices,
                 std::vector<float>& scores);

private:
    void grow(int64_t rows);
    void relayout(const UKernel& uk);
    mutable std::shared_mutex mu_;
    DbLayout layout_;
    float* data_ = nullptr;  // cap_ * dd floats, 64-byte aligned
    int64_t n_ = 0, cap_ = 0;
};

// One Adam(W) step in place over `size` parameters, Keras' form (the "efficient version" at the end of
// Kingma & Ba 2015, sec. 2, with epsilon added to sqrt(v), not to sqrt(v_hat) as PyTorch does), with
// Keras' decoupled weight decay applied first (Loshchilov & Hutter 2019). t >= 1 is the step number:
//   alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t)                      (double, then float32)
//   param *= 1 - lr * weight_decay                                       (only when weight_decay != 0)
//   m = beta1 m + (1 - beta1) grad;   v = beta2 v + (1 - beta2) grad^2
//   param -= alpha * m / (sqrt(v) + eps)
// Every float32 operation rounded separately, in the order of pixrank.nn.optimizers.Adam's numpy
// path (ukernel.hpp AdamStep): all SIMD variants and that path give the same bits.
// param, grad, m, v: (size,) float32, distinct (grad may not alias the others).
void adam_update(int64_t size, float* param, const float* grad, float* m, float* v, double lr, double beta1,
                 double beta2, double eps, double weight_decay, int64_t t);

}  // namespace pixrank
