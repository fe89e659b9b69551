// pixrank kernels: the SGEMM micro-kernel interface shared by the per-ISA translation units.
//
// Shape legend: MR x NR is the register tile of one micro-kernel; KC the depth of one packed block.
//
// Packed formats (written by gemm.cpp's packing routines, read by the micro-kernels):
//   Ap: one A micro-panel, KC x MR floats, Ap[p * MR + r] = op(A)[i0 + r, p0 + p] (zero-padded rows).
//   Bp: one B micro-panel, KC x NR floats, Bp[p * NR + c] = op(B)[p0 + p, j0 + c] (zero-padded cols).
//   Both are 64-byte aligned.
//
// A micro-kernel computes, for the mr x nr corner (mr <= MR, nr <= NR) of the tile at C (row stride ldc):
//   C = (flags & kAccumulate ? C : 0) + Ap * Bp        then, on the last KC block only,
//   C += bias[0..nr)   (if bias != nullptr)           and   C = max(C, 0)   (if flags & kRelu).
//
// This header is deliberately free of the C++ standard library's templates: each ISA file is compiled
// with its own target flags, and sharing inline templates between them could let the linker keep an
// AVX-512 copy of a function that generic code then calls on a CPU without AVX-512.
#pragma once

#include <cstdint>

namespace pixrank {

constexpr int kAccumulate = 1;
constexpr int kRelu = 2;

using UKernelFn = void (*)(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, int mr,
                           int nr, int flags, const float* bias);

// Index of the first s[j] >= t in s[0..n), or n when there is none (the top-k scan's fast rejection).
using NextGeFn = int64_t (*)(const float* s, int64_t n, float t);

// One Adam step over n floats in place (the arithmetic of pixrank.nn.optimizers.Adam's numpy path, one
// float32 rounding per operation, no contraction into FMA, so every variant gives the same bits):
//   if (decay): w = w * wd_factor
//   m = m * b1 + g * c1;   v = v * b2 + (g * g) * c2;   w = w - (m / (sqrt(v) + eps)) * alpha
// Shapes: w, g, m, v (n,). See kernels.hpp adam_update for the formula's source.
// Functions marked PIXRANK_NO_FP_CONTRACT are compiled with -ffp-contract=off: GCC otherwise fuses a
// multiply and an add, even written as _mm256_mul_ps / _mm256_add_ps intrinsics, into one FMA (one rounding
// instead of two) in the translation units compiled with -mfma, and the result would depend on the ISA.
// (Clang contracts only within one source expression; the kernels write each operation separately.)
#if defined(__GNUC__) && !defined(__clang__)
#define PIXRANK_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define PIXRANK_NO_FP_CONTRACT
#endif

struct AdamStep {
    float b1, c1, b2, c2, eps, alpha, wd_factor;
    bool decay;
};
using AdamFn = void (*)(int64_t n, float* w, const float* g, float* m, float* v, const AdamStep& s);

// Softmax-family row kernels (used by nn.cpp's softmax, log_softmax and softmax_cross_entropy).
// x, e, o: one row of n floats (n >= 0; no alignment needed).
//   RowMaxFn:  the maximum of x[0..n); NaN if any x[j] is NaN; -inf when n == 0.
//   ExpSumFn:  e[j] = exp(x[j] - m) for j < n (not stored when e is null) and returns their sum: the
//              terms are added in float SIMD lanes (several accumulators), the lanes pairwise in
//              double at the end. exp: see below; x[j] - m is rounded to float first.
//   ScaleFn:   e[j] *= s.
//   ShiftFn:   o[j] = (x[j] - a) - b  (two float32 roundings; log_softmax's x - max - log(sum)).
//   ExpFn:     y[j] = exp(x[j]) (every float, for tests of the vectorised expf).
// The generic variant takes libm's std::exp (float) per element. The vectorised expf of the AVX2 and
// AVX-512 variants (Cephes expf, S. L. Moshier, "Methods and Programs for
// Mathematical Functions", 1989; the same scheme as SLEEF's expf, Shibata & Petrogalli 2020):
//   x clamped to [kExpLo, kExpHi] (NaN passes through, -inf -> kExpLo, +inf -> kExpHi),
//   n = round(x * log2(e)) (round to nearest by adding and subtracting 1.5 * 2^23),
//   r = x - n * kExpC1 - n * kExpC2  (Cody-Waite: ln 2 = kExpC1 + kExpC2, kExpC1 has 9 significant bits,
//   so n * kExpC1 is exact for |n| < 2^15 and r is accurate without FMA), |r| <= ln(2) / 2 + tiny,
//   exp(r) ~= 1 + r + r^2 * P(r), P of degree 5 (Cephes' minimax coefficients kExpP0..kExpP5),
//   exp(x) = exp(r) * 2^n1 * 2^n2 with n1 = floor(n / 2), n2 = n - n1, each power of two built in the
//   exponent bits (both normal for n in [-150, 129]): the first product is exact and the second rounds
//   once, so results in the subnormal range are correctly rounded from exp(r) (gradual underflow, no
//   garbage exponent) and x below about -103.97 gives exactly 0; x above about 88.72 gives +inf.
// Measured maximum error against float64 exp: see tests/test_kernels_simd.py (test_vectorised_exp).
constexpr float kExpLo = -104.0f;  // exp(-104) < 2^-150: rounds to 0
constexpr float kExpHi = 89.0f;    // exp(89) > FLT_MAX: overflows to +inf
constexpr float kExpLog2e = 1.44269504088896341f;
constexpr float kExpRound = 12582912.0f;  // 1.5 * 2^23
constexpr float kExpC1 = 0.693359375f;
constexpr float kExpC2 = -2.12194440e-4f;
constexpr float kExpP0 = 1.9875691500e-4f;
constexpr float kExpP1 = 1.3981999507e-3f;
constexpr float kExpP2 = 8.3334519073e-3f;
constexpr float kExpP3 = 4.1665795894e-2f;
constexpr float kExpP4 = 1.6666665459e-1f;
constexpr float kExpP5 = 5.0000001201e-1f;

using RowMaxFn = float (*)(const float* x, int64_t n);
using ExpSumFn = double (*)(const float* x, int64_t n, float m, float* e);
using ScaleFn = void (*)(float* e, int64_t n, float s);
using ShiftFn = void (*)(const float* x, int64_t n, float a, float b, float* o);
using ExpFn = void (*)(const float* x, int64_t n, float* y);

struct RowKernels {
    RowMaxFn max;
    ExpSumFn exp_sum;
    ScaleFn scale;
    ShiftFn shift;
    ExpFn exp;
};

struct UKernel {
    const char* name;
    int mr;  // register tile rows
    int nr;  // register tile columns
    int mc;  // rows of A packed per block (multiple of mr; sized for L2)
    int kc;  // depth of a packed block (sized so a B micro-panel stays in L1)
    int nc;  // columns of B packed per block (multiple of nr; sized for L3)
    UKernelFn fn;
    NextGeFn next_ge;
    AdamFn adam;
    RowKernels rows;  // softmax family
};

namespace generic {
const UKernel& ukernel();
}
#if defined(PIXRANK_X86_KERNELS)
namespace avx2 {
const UKernel& ukernel();
}
namespace avx512 {
const UKernel& ukernel();
}
#endif

}  // namespace pixrank
