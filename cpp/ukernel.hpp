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
