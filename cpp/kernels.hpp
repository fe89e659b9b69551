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

namespace pixrank {

// ----------------------------------------------------------------------------------- dense layers

// Gradients of y = relu?(x @ w + b).
//   x (M, K), w (K, N), dy (M, N), y (M, N) or nullptr (required when relu: mask = y > 0).
//   dx (M, K) = g @ w^T, dw (K, N) = x^T @ g, db (N,) = sum_rows g, where g = dy * mask.
void linear_backward(int64_t M, int64_t K, int64_t N, const float* x, const float* w, const float* dy,
                     const float* y, bool relu, float* dx, float* dw, float* db);

// ------------------------------------------------------------------------------------ row softmax

// logits (N, C) -> out (N, C); numerically stable (max subtracted).
void softmax(int64_t N, int64_t C, const float* logits, float* out);
void log_softmax(int64_t N, int64_t C, const float* logits, float* out);

// Fused softmax cross-entropy. logits (N, C), labels int64 (N,) in [0, C) (checked: throws),
// dlogits (N, C) = (softmax - onehot) / N. Returns the mean loss (0 when N == 0).
double softmax_cross_entropy(int64_t N, int64_t C, const float* logits, const int64_t* labels,
                             float* dlogits);

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
// scores 0. Non-finite inputs throw. Never holds the full (Q, n) score matrix.
void cosine_topk(int64_t Q, int64_t n, int64_t d, const float* queries, const float* database, int64_t k,
                 int64_t* indices, float* scores);

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
