// pixrank kernels: single-precision GEMM (ours: packed, cache-blocked, SIMD micro-kernels chosen at
// run time) and its plain-loop twin.
//
// Shape legend: M rows of C, N columns of C, K inner dimension.
//   op(A) is (M, K): A is stored (M, K) row-major with row stride lda, or (K, M) when trans_a.
//   op(B) is (K, N): B is stored (K, N) row-major with row stride ldb, or (N, K) when trans_b.
//   C is (M, N) row-major with row stride ldc; bias is (N,) or nullptr.
//
//   C = relu?( [C +] op(A) @ op(B) [+ bias] )
//
// Transposition is handled while packing (no copy of A or B is ever made); bias and ReLU are applied
// by the micro-kernel on the last K block (no second pass over C). The method is GotoBLAS/BLIS's:
// K. Goto, R. van de Geijn, "Anatomy of high-performance matrix multiplication", ACM TOMS 34(3), 2008;
// F. Van Zee, R. van de Geijn, "BLIS: A framework for rapidly instantiating BLAS functionality",
// ACM TOMS 41(3), 2015.
#pragma once

#include <cstdint>

#include "ukernel.hpp"

namespace pixrank {

// Multi-threaded packed SGEMM. threads <= 0 means num_threads(); inside a parallel region it runs
// on the calling thread only. Sizes must be >= 0; pointers may be null only when the matching size
// product is 0.
void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, bool trans_a, const float* B,
           int64_t ldb, bool trans_b, float* C, int64_t ldc, const float* bias, bool relu, bool accumulate,
           int threads = 0);

// The slow twin: triple loop with double accumulation, same semantics. Used as the oracle in tests.
void sgemm_naive(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, bool trans_a,
                 const float* B, int64_t ldb, bool trans_b, float* C, int64_t ldc, const float* bias,
                 bool relu, bool accumulate);

// The micro-kernel of the SIMD variant in use.
const UKernel& active_ukernel();

// Packs op(A)[i0 : i0+mc, p0 : p0+kc] into ceil(mc / MR) micro-panels of kc x MR floats at Ap
// (zero-padded), panel t at Ap + t * kc * MR.
void pack_a(const UKernel& uk, const float* A, int64_t lda, bool trans_a, int64_t i0, int64_t mc,
            int64_t p0, int64_t kc, float* Ap);

// Packs op(B)[p0 : p0+kc, j0 : j0+nr] (nr <= NR) into one micro-panel of kc x NR floats at Bp
// (zero-padded). When col_scale is not null, column j is multiplied by col_scale[j] (global index).
void pack_b_panel(const UKernel& uk, const float* B, int64_t ldb, bool trans_b, int64_t p0, int64_t kc,
                  int64_t j0, int64_t nr, float* Bp, const float* col_scale);

// Packs op(B)[p0 : p0+kc, j0 : j0+nc] into ceil(nc / NR) micro-panels of kc x NR floats at Bp (the
// last one zero-padded), panel t at Bp + t * kc * NR: pack_b_panel for each panel, in a faster order.
void pack_b(const UKernel& uk, const float* B, int64_t ldb, bool trans_b, int64_t p0, int64_t kc, int64_t j0,
            int64_t nc, float* Bp);

// The block size used to cut `extent` into ceil(extent / max_block) blocks of nearly equal size: the
// smallest multiple of `multiple` >= extent / blocks (capped at max_block, itself such a multiple), or
// extent itself when it fits one block. E.g. K = 784, KC = 256 -> 196 (4 x 196, not 3 x 256 + 16).
int64_t balanced_block(int64_t extent, int64_t max_block, int64_t multiple);

// Runs the micro-kernel over an mc x nc block of C from packed A (ceil(mc/MR) panels of kc x MR) and
// packed B (ceil(nc/NR) panels of kc x NR). flags: kAccumulate, kRelu; bias (nc,) or null.
void macro_kernel(const UKernel& uk, int64_t mc, int64_t nc, int64_t kc, const float* Ap, const float* Bp,
                  float* C, int64_t ldc, int flags, const float* bias);

}  // namespace pixrank
