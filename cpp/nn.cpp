// pixrank kernels: dense-layer backward, softmax family, im2col/col2im, convolution, max pooling,
// Adam. Shapes: see the legend in kernels.hpp.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "gemm.hpp"
#include "kernels.hpp"
#include "runtime.hpp"

namespace pixrank {

namespace {
thread_local AlignedBuffer tl_cols;   // im2col chunk
thread_local AlignedBuffer tl_dcols;  // dcols chunk (conv backward)
thread_local AlignedBuffer tl_grad;   // masked dy
thread_local AlignedBuffer tl_part;   // per-thread partial sums

// Rows per parallel chunk so that each chunk does some tens of microseconds of work.
inline int64_t grain_rows(int64_t row_cost) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, row_cost)); }

// One pass over rows [r0, r1) of dy (and y): g = dy * (y > 0) into g when relu (when not, g is dy and
// nothing is written), and the column sums of g added into acc (cols,) in double when acc is not null.
void mask_and_sum_rows(int64_t r0, int64_t r1, int64_t cols, const float* dy, const float* y, bool relu, float* g,
                       double* acc) {
    for (int64_t r = r0; r < r1; ++r) {
        const float* d = dy + r * cols;
        if (relu) {
            const float* yr = y + r * cols;
            float* gr = g + r * cols;
            for (int64_t j = 0; j < cols; ++j) {  // the load first: a conditional one would not vectorise
                const float v = d[j];                // (a branch per element, ~130 us at 128 x 200)
                gr[j] = yr[j] > 0.0f ? v : 0.0f;
            }
            d = gr;
        }
        if (acc)
            for (int64_t j = 0; j < cols; ++j) acc[j] += d[j];
    }
}

}  // namespace

// ---------------------------------------------------------------------------------- dense layers

// One pass over dy computes the mask and the bias gradient's column sums (split by rows across
// threads when there are more than ~32k elements per thread); then dx and dw, each one multi-threaded
// GEMM (on the GEMM's worker pool), one after the other. At exactly 2 threads with both wanted and a
// large product (M*N*K >= 64e6), each is instead one single-threaded GEMM on its own thread,
// concurrently. Measured on 2 cores, backward only, medians of 21 interleaved samples, two rounds,
// concurrent vs sequential since the GEMM runs on its pool: 128x784->200 1019/899 vs 826/818 us,
// 128x200->60 278/272 vs 196/171 us, 128x3136->128 2441/2444 vs 2335/2390 us, 1024x784->200
// 5640/5651 vs 5841/5730 us (the concurrent form pays an OpenMP fork/join; it won for every shape
// while the GEMM itself used OpenMP). Cutting the products into strips that single-threaded GEMMs
// share was slower.
void linear_backward(int64_t M, int64_t K, int64_t N, const float* x, const float* w, const float* dy,
                     const float* y, bool relu, float* dx, float* dw, float* db, int threads) {
    if (relu && !y) throw std::invalid_argument("linear_backward: relu=True needs y (the forward output)");
    if (M < 0 || K < 0 || N < 0) throw std::invalid_argument("linear_backward: negative size");
    float* g = relu ? tl_grad.get(static_cast<size_t>(std::max<int64_t>(M * N, 1))) : nullptr;
    const float* gsrc = relu ? g : dy;
    int64_t nt = threads > 0 ? threads : num_threads();
    if (in_parallel() || serial_after_fork()) nt = 1;

    if (db || relu) {
        const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(nt, M * N / 32768));
        std::vector<double> part(db ? static_cast<size_t>(parts * N) : 0, 0.0);
        parallel_for(parts, 1, [&](int64_t pb, int64_t pe) {
            for (int64_t p = pb; p < pe; ++p)
                mask_and_sum_rows(M * p / parts, M * (p + 1) / parts, N, dy, y, relu, g,
                                  db ? part.data() + p * N : nullptr);
        }, static_cast<int>(parts));
        for (int64_t j = 0; db && j < N; ++j) {
            double s = 0.0;
            for (int64_t p = 0; p < parts; ++p) s += part[static_cast<size_t>(p * N + j)];
            db[j] = static_cast<float>(s);
        }
    }
    // dx (M, K) = g (M, N) @ w^T: w is stored (K, N), so trans_b. N == 0 writes zeros.
    const auto run_dx = [&](int th) { sgemm(M, K, N, gsrc, N, false, w, N, true, dx, K, nullptr, false, false, th); };
    // dw (K, N) = x^T (K, M) @ g (M, N): x is stored (M, K), so trans_a. M == 0 writes zeros.
    const auto run_dw = [&](int th) { sgemm(K, N, M, x, K, true, gsrc, N, false, dw, N, nullptr, false, false, th); };
    const double prod = static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
    if (nt == 2 && dx && dw && prod >= 64.0e6) {
        // exactly 2 threads, large product: each on its own thread, concurrently (a few % faster here)
        ExceptionCarrier carrier;
#ifdef _OPENMP
#pragma omp parallel for num_threads(2) schedule(dynamic, 1)
#endif
        for (int i = 0; i < 2; ++i) carrier.run([&] { i == 0 ? run_dx(1) : run_dw(1); });
        carrier.rethrow();
        return;
    }
    if (dx) run_dx(static_cast<int>(nt));
    if (dw) run_dw(static_cast<int>(nt));
}

// ------------------------------------------------------------------------------------ row softmax
// Each row: m = max (NaN if the row has a NaN), e = exp(x - m) with its sum s, then the scaling: the
// row kernels of the SIMD variant in use (ukernel.hpp RowKernels; AVX-512, AVX2+FMA or portable C++,
// all with the same vectorised expf). Special rows keep the semantics of the float64 references
// (tests/reference.py): a row whose maximum is +inf puts all the mass on its +inf entries; a row of
// only -inf has no finite mass (NaN); a NaN makes its whole row NaN (through exp(x - NaN)).

namespace {
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

inline bool is_pos_inf(float v) { return v == kInf; }

// A row whose maximum is +inf: e[j] = 1 on +inf entries, 0 elsewhere; returns their count.
inline double row_exp_pos_inf(const float* x, int64_t C, float* e) {
    double cnt = 0.0;
    for (int64_t j = 0; j < C; ++j) {
        e[j] = is_pos_inf(x[j]) ? 1.0f : 0.0f;
        cnt += e[j];
    }
    return cnt;
}
}  // namespace

void softmax(int64_t N, int64_t C, const float* logits, float* out) {
    const RowKernels& rk = active_ukernel().rows;
    parallel_for(N, grain_rows(C * 8), [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            const float* x = logits + i * C;
            float* o = out + i * C;
            const float m = rk.max(x, C);
            double s;
            if (is_pos_inf(m)) {
                s = row_exp_pos_inf(x, C, o);
            } else if (m == -kInf) {  // every entry is -inf: softmax undefined
                std::fill(o, o + C, kNaN);
                continue;
            } else {
                s = rk.exp_sum(x, C, m, o);
            }
            rk.scale(o, C, static_cast<float>(1.0 / s));
        }
    });
}

void log_softmax(int64_t N, int64_t C, const float* logits, float* out) {
    const RowKernels& rk = active_ukernel().rows;
    parallel_for(N, grain_rows(C * 8), [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            const float* x = logits + i * C;
            float* o = out + i * C;
            const float m = rk.max(x, C);
            if (is_pos_inf(m)) {  // +inf entries -> -log(count), others -inf
                double cnt = 0;
                for (int64_t j = 0; j < C; ++j) cnt += is_pos_inf(x[j]);
                for (int64_t j = 0; j < C; ++j)
                    o[j] = is_pos_inf(x[j]) ? static_cast<float>(-std::log(cnt)) : -kInf;
                continue;
            }
            if (m == -kInf) {  // every entry is -inf: undefined
                std::fill(o, o + C, kNaN);
                continue;
            }
            // o = (x - m) - log(s), s = sum exp(x - m) >= 1 (NaN rows: m and s are NaN).
            const double s = rk.exp_sum(x, C, m, nullptr);
            rk.shift(x, C, m, static_cast<float>(std::log(s)), o);
        }
    });
}

double softmax_cross_entropy(int64_t N, int64_t C, const float* logits, const int64_t* labels, float* dlogits) {
    for (int64_t i = 0; i < N; ++i)
        if (labels[i] < 0 || labels[i] >= C)
            throw std::invalid_argument("softmax_cross_entropy: labels[" + std::to_string(i) + "] = " +
                                        std::to_string(labels[i]) + " is outside [0, " + std::to_string(C) +
                                        ") for logits of shape (" + std::to_string(N) + ", " +
                                        std::to_string(C) + ")");
    if (N == 0) return 0.0;
    const RowKernels& rk = active_ukernel().rows;
    const double invN = 1.0 / static_cast<double>(N);
    const float invNf = static_cast<float>(invN);
    const int nt = num_threads();
    // Threads only for at least 32k logits per chunk: (128, 10) is a few microseconds of work, less
    // than an OpenMP fork/join (autograd softmax CE (128, 10): 52.9 us on 2 threads, 42.2 us on 1). It
    // was the one OpenMP region left in an MLP training step; its worker then spins (libgomp's default,
    // where PyTorch loaded libgomp first) next to the GEMM pool's, and the MLP's 2-thread epoch read
    // 1.20 s against 0.98 s on 1 thread in the bench's PyTorch process.
    const int64_t chunks = std::max<int64_t>(1, std::min({static_cast<int64_t>(nt), N / 16, (N * C) / 32768}));
    std::vector<double> loss_part(static_cast<size_t>(chunks), 0.0);
    parallel_for(chunks, 1, [&](int64_t cb, int64_t ce) {
        for (int64_t c = cb; c < ce; ++c) {
            // loss = sum over rows of (m - x[y]) + log(s); the logs taken of running products of s
            // (each s in [1, C]) flushed before they could overflow: one log per many rows.
            double loss = 0.0, prod = 1.0;
            const int64_t i0 = N * c / chunks, i1 = N * (c + 1) / chunks;
            for (int64_t i = i0; i < i1; ++i) {
                const float* x = logits + i * C;
                float* d = dlogits + i * C;
                const int64_t y = labels[i];
                // One pass per row: max, exp and sum (stored in d), then scale to the gradient.
                const float m = rk.max(x, C);
                double s;
                if (is_pos_inf(m)) {  // loss log(count) when the label is +inf, +inf otherwise
                    s = row_exp_pos_inf(x, C, d);
                    if (!is_pos_inf(x[y])) loss += std::numeric_limits<double>::infinity();
                } else if (m == -kInf) {  // every entry is -inf: undefined
                    std::fill(d, d + C, kNaN);
                    s = std::numeric_limits<double>::quiet_NaN();
                } else {
                    s = rk.exp_sum(x, C, m, d);
                    loss += static_cast<double>(m) - static_cast<double>(x[y]);
                }
                prod *= s;
                if (!(prod < 1e200)) {  // also NaN: carried into the loss
                    loss += std::log(prod);
                    prod = 1.0;
                }
                rk.scale(d, C, static_cast<float>(invN / s));
                d[y] -= invNf;
            }
            loss_part[static_cast<size_t>(c)] = loss + std::log(prod);
        }
    });
    double total = 0.0;
    for (double l : loss_part) total += l;
    return total * invN;
}

void exp_f32(int64_t n, const float* x, float* y) { active_ukernel().rows.exp(x, n, y); }

// ---------------------------------------------------------------------------------- convolutions

ConvGeom make_conv_geom(const char* fn, int64_t B, int64_t H, int64_t W, int64_t C, int64_t kh, int64_t kw,
                        int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
    auto fail = [&](const std::string& what) {
        throw std::invalid_argument(std::string(fn) + ": " + what + " (input (" + std::to_string(B) + ", " +
                                    std::to_string(H) + ", " + std::to_string(W) + ", " + std::to_string(C) +
                                    "), window (" + std::to_string(kh) + ", " + std::to_string(kw) +
                                    "), stride (" + std::to_string(sh) + ", " + std::to_string(sw) +
                                    "), padding (" + std::to_string(pt) + ", " + std::to_string(pb) + ", " +
                                    std::to_string(pl) + ", " + std::to_string(pr) + "))");
    };
    constexpr int64_t kLimit = int64_t(1) << 31;
    if (B < 0 || H < 0 || W < 0 || C < 0) fail("sizes must be >= 0");
    if (kh < 1 || kw < 1) fail("window sizes must be >= 1");
    if (sh < 1 || sw < 1) fail("strides must be >= 1");
    if (pt < 0 || pb < 0 || pl < 0 || pr < 0) fail("paddings must be >= 0");
    if (H >= kLimit || W >= kLimit || C >= kLimit || kh >= kLimit || kw >= kLimit || sh >= kLimit ||
        sw >= kLimit || pt >= kLimit || pb >= kLimit || pl >= kLimit || pr >= kLimit)
        fail("sizes must be < 2^31");
    if (H + pt + pb < kh || W + pl + pr < kw) fail("window larger than the padded input");
    ConvGeom g{B, H, W, C, kh, kw, sh, sw, pt, pb, pl, pr, 0, 0, 0, 0};
    g.OH = (H + pt + pb - kh) / sh + 1;
    g.OW = (W + pl + pr - kw) / sw + 1;
    g.KK = checked_mul(checked_mul(kh, kw, fn), C, fn);
    g.R = checked_mul(checked_mul(B, g.OH, fn), g.OW, fn);
    checked_mul(g.R, g.KK, fn);
    checked_mul(checked_mul(checked_mul(B, H, fn), W, fn), C, fn);
    return g;
}

namespace {
// Copies / zeroes n floats; short runs (a kernel row of a 1-3 channel image) inline, long ones via libc.
inline void copy_floats(float* __restrict dst, const float* __restrict src, int64_t n) {
    if (n <= 16) {
        for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
    } else {
        std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(n));
    }
}
inline void zero_floats(float* dst, int64_t n) {
    if (n <= 16) {
        for (int64_t i = 0; i < n; ++i) dst[i] = 0.0f;
    } else {
        std::memset(dst, 0, sizeof(float) * static_cast<size_t>(n));
    }
}

// cols rows [r0, r1) (global row index r = (b * OH + oh) * OW + ow) into dst (r1 - r0, KK).
void im2col_rows(const ConvGeom& g, const float* x, int64_t r0, int64_t r1, float* dst) {
    const int64_t C = g.C;
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / (g.OH * g.OW);
        const int64_t rem = r % (g.OH * g.OW);
        const int64_t oh = rem / g.OW, ow = rem % g.OW;
        float* out = dst + (r - r0) * g.KK;
        const float* img = x + b * g.H * g.W * C;
        for (int64_t i = 0; i < g.kh; ++i) {
            const int64_t ih = oh * g.sh - g.pt + i;
            if (ih < 0 || ih >= g.H) {
                zero_floats(out, g.kw * C);
                out += g.kw * C;
                continue;
            }
            const int64_t iw0 = ow * g.sw - g.pl;
            if (iw0 >= 0 && iw0 + g.kw <= g.W) {  // the whole kernel row is inside: one copy
                copy_floats(out, img + (ih * g.W + iw0) * C, g.kw * C);
                out += g.kw * C;
                continue;
            }
            for (int64_t j = 0; j < g.kw; ++j, out += C) {
                const int64_t iw = iw0 + j;
                if (iw < 0 || iw >= g.W)
                    zero_floats(out, C);
                else
                    copy_floats(out, img + (ih * g.W + iw) * C, C);
            }
        }
    }
}

// Adjoint of im2col for images [b0, b1): x rows of those images overwritten with the gathered sums of
// cols (rows of image b0 first). Gathering (rather than scattering) makes each output pixel the
// work of exactly one iteration, so rows of x can be split between threads without races.
void col2im_images(const ConvGeom& g, const float* cols, int64_t b0, int64_t b1, float* x, bool parallel) {
    const int64_t C = g.C;
    const int64_t rows = (b1 - b0) * g.H;  // (b, ih) pairs
    auto body = [&](int64_t rb, int64_t re) {
        for (int64_t q = rb; q < re; ++q) {
            const int64_t b = b0 + q / g.H, ih = q % g.H;
            const float* cimg = cols + (b - b0) * g.OH * g.OW * g.KK;
            float* xrow = x + (b * g.H + ih) * g.W * C;
            std::memset(xrow, 0, sizeof(float) * static_cast<size_t>(g.W * C));
            for (int64_t i = 0; i < g.kh; ++i) {
                const int64_t t = ih + g.pt - i;  // = oh * sh
                if (t < 0 || t % g.sh != 0) continue;
                const int64_t oh = t / g.sh;
                if (oh >= g.OH) continue;
                for (int64_t ow = 0; ow < g.OW; ++ow) {
                    const float* crow = cimg + (oh * g.OW + ow) * g.KK + i * g.kw * C;
                    const int64_t iw0 = ow * g.sw - g.pl;
                    for (int64_t j = 0; j < g.kw; ++j) {
                        const int64_t iw = iw0 + j;
                        if (iw < 0 || iw >= g.W) continue;
                        float* xp = xrow + iw * C;
                        const float* cp = crow + j * C;
                        for (int64_t c = 0; c < C; ++c) xp[c] += cp[c];
                    }
                }
            }
        }
    };
    if (parallel)
        parallel_for(rows, grain_rows(g.W * g.C * g.kh), body);
    else
        body(0, rows);
}

// Images per chunk so that a chunk's im2col rows take about `bytes` bytes (at least one image).
int64_t images_per_chunk(const ConvGeom& g, int64_t bytes) {
    const int64_t per_image = std::max<int64_t>(1, g.OH * g.OW * g.KK * 4);
    return std::max<int64_t>(1, std::min<int64_t>(g.B, bytes / per_image));
}

constexpr int64_t kChunkBytes = 512 * 1024;
}  // namespace

void im2col(const ConvGeom& g, const float* x, float* cols) {
    parallel_for(g.R, grain_rows(g.KK), [&](int64_t b, int64_t e) { im2col_rows(g, x, b, e, cols + b * g.KK); });
}

void col2im(const ConvGeom& g, const float* cols, float* x) {
    if (g.B == 0) return;
    col2im_images(g, cols, 0, g.B, x, true);
}

void conv2d(const ConvGeom& g, int64_t F, const float* x, const float* w, const float* bias, bool relu,
            float* y) {
    if (g.R == 0 || F == 0) return;
    const bool pointwise = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pb == 0 &&
                           g.pl == 0 && g.pr == 0;
    if (pointwise) {  // the input already is the im2col matrix
        sgemm(g.R, F, g.C, x, g.C, false, w, F, false, y, F, bias, relu, false);
        return;
    }
    const int64_t ipc = images_per_chunk(g, kChunkBytes);
    const int64_t nchunks = (g.B + ipc - 1) / ipc;
    const int64_t rows_per_image = g.OH * g.OW;
    const int nt = num_threads();
    // One chunk of whole images: im2col into this thread's reused buffer, then the SGEMM with the
    // bias/ReLU epilogue writes the chunk's output rows.
    auto do_chunk = [&](int64_t ch, bool inner_parallel) {
        const int64_t b0 = ch * ipc, b1 = std::min(g.B, b0 + ipc);
        const int64_t r0 = b0 * rows_per_image, r1 = b1 * rows_per_image;
        float* cols = tl_cols.get(static_cast<size_t>(std::max<int64_t>(1, (r1 - r0) * g.KK)));
        if (inner_parallel)
            parallel_for(r1 - r0, grain_rows(g.KK),
                         [&](int64_t b, int64_t e) { im2col_rows(g, x, r0 + b, r0 + e, cols + b * g.KK); });
        else
            im2col_rows(g, x, r0, r1, cols);
        sgemm(r1 - r0, F, g.KK, cols, g.KK, false, w, F, false, y + r0 * F, F, bias, relu, false,
              inner_parallel ? 0 : 1);
    };
    if (nt > 1 && nchunks >= 2 * nt) {
        // Threads take whole chunks (dynamically): each chunk's im2col stays in its thread's cache.
        parallel_dynamic(nchunks, nt, [&](int64_t ch, int64_t) { do_chunk(ch, false); });
    } else {
        // Few, large chunks: parallelise inside each (im2col rows, SGEMM tiles).
        for (int64_t ch = 0; ch < nchunks; ++ch) do_chunk(ch, true);
    }
}

void conv2d_backward(const ConvGeom& g, int64_t F, const float* x, const float* w, const float* dy,
                     const float* y, bool relu, float* dx, float* dw, float* db) {
    if (relu && !y) throw std::invalid_argument("conv2d_backward: relu=True needs y (the forward output)");
    const int64_t KK = g.KK;
    const int64_t xsize = g.B * g.H * g.W * g.C;
    if (g.R == 0 || F == 0) {
        std::fill(dx, dx + xsize, 0.0f);
        std::fill(dw, dw + KK * F, 0.0f);
        std::fill(db, db + F, 0.0f);
        return;
    }
    const int64_t ipc = images_per_chunk(g, kChunkBytes);
    const int64_t nchunks = (g.B + ipc - 1) / ipc;
    const int64_t rows_per_image = g.OH * g.OW;
    const int nt = num_threads();
    const bool outer = nt > 1 && nchunks >= 2 * nt;
    const int64_t nparts = outer ? nt : 1;
    // Per-thread partial dw (KK, F) and db (F,), summed at the end.
    float* part = nparts > 1 ? tl_part.get(static_cast<size_t>(nparts * KK * F)) : dw;
    std::vector<double> db_part(static_cast<size_t>(nparts * F), 0.0);
    std::vector<char> touched(static_cast<size_t>(nparts), 0);

    // One chunk of whole images: g = dy * (y > 0) for its rows (the ReLU mask applied once, into a
    // reused buffer), db += column sums of g, dw += cols^T @ g, dcols = g @ w^T, dx rows = col2im.
    auto do_chunk = [&](int64_t ch, int64_t slot, bool inner_parallel) {
        const int64_t b0 = ch * ipc, b1 = std::min(g.B, b0 + ipc);
        const int64_t r0 = b0 * rows_per_image, r1 = b1 * rows_per_image, rows = r1 - r0;
        const int thr = inner_parallel ? 0 : 1;
        const float* gch = dy + r0 * F;
        if (relu) {
            float* gb = tl_grad.get(static_cast<size_t>(std::max<int64_t>(1, rows * F)));
            const float* yc = y + r0 * F;
            for (int64_t i = 0; i < rows * F; ++i) {  // branch-free (vectorised)
                const float d = gch[i];
                gb[i] = yc[i] > 0.0f ? d : 0.0f;
            }
            gch = gb;
        }
        double* dbp = db_part.data() + slot * F;
        for (int64_t r = 0; r < rows; ++r) {
            const float* row = gch + r * F;
            for (int64_t f = 0; f < F; ++f) dbp[f] += row[f];
        }
        float* cols = tl_cols.get(static_cast<size_t>(std::max<int64_t>(1, rows * KK)));
        if (inner_parallel)
            parallel_for(rows, grain_rows(KK),
                         [&](int64_t b, int64_t e) { im2col_rows(g, x, r0 + b, r0 + e, cols + b * KK); });
        else
            im2col_rows(g, x, r0, r1, cols);
        float* dwp = part + slot * KK * F;
        // dw (KK, F) += cols^T (KK, rows) @ g (rows, F)
        sgemm(KK, F, rows, cols, KK, true, gch, F, false, dwp, F, nullptr, false,
              touched[static_cast<size_t>(slot)] != 0, thr);
        touched[static_cast<size_t>(slot)] = 1;
        // dcols (rows, KK) = g (rows, F) @ w^T (w stored (KK, F))
        float* dcols = tl_dcols.get(static_cast<size_t>(std::max<int64_t>(1, rows * KK)));
        sgemm(rows, KK, F, gch, F, false, w, F, true, dcols, KK, nullptr, false, false, thr);
        col2im_images(g, dcols, b0, b1, dx, inner_parallel);
    };
    if (outer) {
        parallel_dynamic(nchunks, static_cast<int>(nparts), [&](int64_t ch, int64_t slot) { do_chunk(ch, slot, false); });
        // Reduce the partials (slots never touched stay out of the sum).
        for (int64_t i = 0; i < KK * F; ++i) {
            float s = 0.0f;
            for (int64_t t = 0; t < nparts; ++t)
                if (touched[static_cast<size_t>(t)]) s += part[t * KK * F + i];
            dw[i] = s;
        }
    } else {
        for (int64_t ch = 0; ch < nchunks; ++ch) do_chunk(ch, 0, true);
    }
    for (int64_t f = 0; f < F; ++f) {
        double s = 0.0;
        for (int64_t t = 0; t < nparts; ++t) s += db_part[static_cast<size_t>(t * F + f)];
        db[f] = static_cast<float>(s);
    }
}

// ---------------------------------------------------------------------------------------- pooling

namespace {
// Output rows q in [rb, re) (q = b * OH + oh) of max_pool2d, one pass over each window. Channels go in
// blocks of 256 with the running maximum and its window position (int32, the same width as float, so
// the compare-and-select loop over C vectorises); the int64 flat index is formed once per output.
void max_pool_rows(const ConvGeom& g, const float* __restrict x, float* __restrict y, int64_t* __restrict argmax,
                   int64_t rb, int64_t re) {
    constexpr int64_t CB = 256;
    alignas(64) float best[CB];
    alignas(64) int32_t pos[CB];
    const int64_t C = g.C, H = g.H, W = g.W, OH = g.OH, OW = g.OW, kh = g.kh, kw = g.kw, sh = g.sh, sw = g.sw;
    for (int64_t q = rb; q < re; ++q) {
        const int64_t b = q / OH, oh = q % OH;
        const int64_t base = b * H * W * C;
        for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t ih0 = oh * sh, iw0 = ow * sw;
            for (int64_t c0 = 0; c0 < C; c0 += CB) {
                const int64_t cn = std::min(CB, C - c0);
                const float* first = x + base + (ih0 * W + iw0) * C + c0;
                for (int64_t c = 0; c < cn; ++c) {
                    best[c] = first[c];
                    pos[c] = 0;
                }
                for (int64_t i = 0; i < kh; ++i) {
                    for (int64_t j = (i == 0 ? 1 : 0); j < kw; ++j) {
                        const float* __restrict xp = x + base + ((ih0 + i) * W + iw0 + j) * C + c0;
                        const int32_t wp = static_cast<int32_t>(i * kw + j);
                        for (int64_t c = 0; c < cn; ++c) {  // branch-free over C (vectorised)
                            const float v = xp[c];
                            const float cur = best[c];
                            // Strictly greater keeps the first maximum; a NaN, once seen, stays.
                            const bool take = (v > cur) | ((v != v) & (cur == cur));
                            best[c] = take ? v : cur;
                            pos[c] = take ? wp : pos[c];
                        }
                    }
                }
                float* yo = y + (q * OW + ow) * C + c0;
                int64_t* ao = argmax + (q * OW + ow) * C + c0;
                for (int64_t c = 0; c < cn; ++c) {
                    const int64_t i = pos[c] / kw, j = pos[c] % kw;
                    yo[c] = best[c];
                    ao[c] = base + ((ih0 + i) * W + iw0 + j) * C + c0 + c;
                }
            }
        }
    }
}
}  // namespace

void max_pool2d(const ConvGeom& g, const float* x, float* y, int64_t* argmax) {
    parallel_for(g.B * g.OH, grain_rows(g.OW * g.C * g.kh * g.kw),
                 [&](int64_t rb, int64_t re) { max_pool_rows(g, x, y, argmax, rb, re); });
}

void max_pool2d_backward(const ConvGeom& g, const float* dy, const int64_t* argmax, float* dx) {
    const int64_t img = g.H * g.W * g.C;
    const int64_t per_out = g.OH * g.OW * g.C;
    // One image per task: each image's argmax must point into that image, so tasks never collide.
    parallel_for(g.B, 1, [&](int64_t bb, int64_t be) {
        for (int64_t b = bb; b < be; ++b) {
            float* dimg = dx + b * img;
            std::memset(dimg, 0, sizeof(float) * static_cast<size_t>(img));
            const int64_t lo = b * img, hi = lo + img;
            const int64_t* a = argmax + b * per_out;
            const float* d = dy + b * per_out;
            for (int64_t t = 0; t < per_out; ++t) {
                const int64_t idx = a[t];
                if (idx < lo || idx >= hi)
                    throw std::invalid_argument(
                        "max_pool2d_backward: argmax[" + std::to_string(b * per_out + t) + "] = " +
                        std::to_string(idx) + " does not index image " + std::to_string(b) + " of x (B, H, W, C) = (" +
                        std::to_string(g.B) + ", " + std::to_string(g.H) + ", " + std::to_string(g.W) + ", " +
                        std::to_string(g.C) + "): expected a value in [" + std::to_string(lo) + ", " +
                        std::to_string(hi) + ")");
                dx[idx] += d[t];
            }
        }
    });
}

// ------------------------------------------------------------------------------------------- adam

void adam_update(int64_t size, float* param, const float* grad, float* m, float* v, double lr, double beta1,
                 double beta2, double eps, double weight_decay, int64_t t) {
    if (t < 1) throw std::invalid_argument("adam_update: t must be >= 1, got " + std::to_string(t));
    // The float32 constants exactly as pixrank.nn.optimizers computes them (in double, then rounded).
    AdamStep s;
    s.b1 = static_cast<float>(beta1);
    s.b2 = static_cast<float>(beta2);
    s.c1 = static_cast<float>(1.0 - beta1);
    s.c2 = static_cast<float>(1.0 - beta2);
    s.eps = static_cast<float>(eps);
    const double tt = static_cast<double>(t);
    s.alpha = static_cast<float>(lr * std::sqrt(1.0 - std::pow(beta2, tt)) / (1.0 - std::pow(beta1, tt)));
    s.decay = weight_decay != 0.0;
    s.wd_factor = static_cast<float>(1.0 - lr * weight_decay);
    const AdamFn fn = active_ukernel().adam;
    // ~28 bytes of memory traffic per float and a division and a square root. Split across threads only beyond
    // 2^20 floats: measured on 2 cores (AMD EPYC, 512 KiB L2 per core, 32 MiB L3; medians of 15
    // interleaved samples of 50 calls), 1 vs 2 threads: 156,800 floats (the MLP's first layer) 117 vs
    // 195 us, 600,000 437 vs 508 us, 2,000,000 2,643 vs 1,627 us: below ~1M floats, a second thread
    // costs more (fork/join, cache lines split between cores) than it saves.
    parallel_for(size, int64_t{1} << 20, [&](int64_t b, int64_t e) { fn(e - b, param + b, grad + b, m + b, v + b, s); });
}

}  // namespace pixrank
