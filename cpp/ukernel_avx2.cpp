// pixrank kernels: the AVX2 + FMA SGEMM micro-kernel, a 6 x 16 register tile (12 ymm accumulators,
// two B loads and six A broadcasts per k step). This file alone is compiled with -mavx2 -mfma; it is
// only called after CPUID reported AVX2 and FMA (runtime.cpp).
//
// Shapes: Ap KC x 6 packed, Bp KC x 16 packed, C 6 x 16 tile (row stride ldc); see ukernel.hpp.
#include <immintrin.h>

#include "ukernel.hpp"

namespace pixrank {
namespace avx2 {
namespace {

constexpr int MR = 6;
constexpr int NR = 16;

void kernel(int64_t kc, const float* __restrict Ap, const float* __restrict Bp, float* __restrict C,
            int64_t ldc, int mr, int nr, int flags, const float* __restrict bias) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    const float* a = Ap;
    const float* b = Bp;
    for (int r = 0; r < mr; ++r) {  // the C tile is needed at the end: start fetching it now
        _mm_prefetch(reinterpret_cast<const char*>(C + r * ldc), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(C + r * ldc + 15), _MM_HINT_T0);
    }
    // The k loop is written in inline assembly so that the register allocation is fixed: 12
    // accumulators + 2 B vectors (ymm13, ymm14) + 1 broadcast (ymm15) = 15 of the 16 ymm registers.
    // (Compiled from intrinsics, GCC 12 interleaves consecutive k steps and spills accumulators.)
#define PIXRANK_FMA_ROW(r, s)                                                   \
    "vbroadcastss " #s "*24+" #r "*4(%[a]), %%ymm15\n\t"                        \
    "vfmadd231ps %%ymm13, %%ymm15, %[c" #r "0]\n\t"                             \
    "vfmadd231ps %%ymm14, %%ymm15, %[c" #r "1]\n\t"
#define PIXRANK_STEP(s)                                                         \
    "vmovaps " #s "*64(%[b]), %%ymm13\n\t"                                      \
    "vmovaps " #s "*64+32(%[b]), %%ymm14\n\t"                                   \
    PIXRANK_FMA_ROW(0, s) PIXRANK_FMA_ROW(1, s) PIXRANK_FMA_ROW(2, s)           \
    PIXRANK_FMA_ROW(3, s) PIXRANK_FMA_ROW(4, s) PIXRANK_FMA_ROW(5, s)
#define PIXRANK_OPERANDS                                                                         \
    : [a] "+r"(a), [b] "+r"(b), [k] "+r"(k), [c00] "+x"(c00), [c01] "+x"(c01), [c10] "+x"(c10),  \
      [c11] "+x"(c11), [c20] "+x"(c20), [c21] "+x"(c21), [c30] "+x"(c30), [c31] "+x"(c31),       \
      [c40] "+x"(c40), [c41] "+x"(c41), [c50] "+x"(c50), [c51] "+x"(c51)                         \
    :                                                                                            \
    : "cc", "memory", "xmm13", "xmm14", "xmm15"
    int64_t k = kc / 4;
    if (k > 0) {
        __asm__ volatile(
            ".p2align 5\n"
            "1:\n\t"
            "prefetcht0 384(%[a])\n\t"
            PIXRANK_STEP(0) PIXRANK_STEP(1) PIXRANK_STEP(2) PIXRANK_STEP(3)
            "add $96, %[a]\n\t"
            "add $256, %[b]\n\t"
            "dec %[k]\n\t"
            "jnz 1b\n\t"
            PIXRANK_OPERANDS);
    }
    k = kc % 4;
    if (k > 0) {
        __asm__ volatile(
            "1:\n\t"
            PIXRANK_STEP(0)
            "add $24, %[a]\n\t"
            "add $64, %[b]\n\t"
            "dec %[k]\n\t"
            "jnz 1b\n\t"
            PIXRANK_OPERANDS);
    }
#undef PIXRANK_OPERANDS
#undef PIXRANK_STEP
#undef PIXRANK_FMA_ROW

    __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    const __m256 zero = _mm256_setzero_ps();
    if (mr == MR && nr == NR) {
        __m256 bias0 = zero, bias1 = zero;
        if (bias) {
            bias0 = _mm256_loadu_ps(bias);
            bias1 = _mm256_loadu_ps(bias + 8);
        }
        for (int r = 0; r < MR; ++r) {
            float* cr = C + r * ldc;
            __m256 v0 = acc[r][0], v1 = acc[r][1];
            if (flags & kAccumulate) {
                v0 = _mm256_add_ps(_mm256_loadu_ps(cr), v0);
                v1 = _mm256_add_ps(_mm256_loadu_ps(cr + 8), v1);
            }
            if (bias) {
                v0 = _mm256_add_ps(v0, bias0);
                v1 = _mm256_add_ps(v1, bias1);
            }
            if (flags & kRelu) {  // max(0, v) returns v when v is NaN, as np.maximum does
                v0 = _mm256_max_ps(zero, v0);
                v1 = _mm256_max_ps(zero, v1);
            }
            _mm256_storeu_ps(cr, v0);
            _mm256_storeu_ps(cr + 8, v1);
        }
        return;
    }
    alignas(32) float tile[MR * NR];
    for (int r = 0; r < MR; ++r) {
        _mm256_store_ps(tile + r * NR, acc[r][0]);
        _mm256_store_ps(tile + r * NR + 8, acc[r][1]);
    }
    for (int r = 0; r < mr; ++r) {
        float* cr = C + r * ldc;
        for (int c = 0; c < nr; ++c) {
            float v = tile[r * NR + c];
            if (flags & kAccumulate) v = cr[c] + v;
            if (bias) v += bias[c];
            if ((flags & kRelu) && v < 0.0f) v = 0.0f;
            cr[c] = v;
        }
    }
}

int64_t next_ge(const float* s, int64_t n, float t) {
    const __m256 tv = _mm256_set1_ps(t);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        const __m256 m0 = _mm256_cmp_ps(_mm256_loadu_ps(s + j), tv, _CMP_GE_OQ);
        const __m256 m1 = _mm256_cmp_ps(_mm256_loadu_ps(s + j + 8), tv, _CMP_GE_OQ);
        const int bits = _mm256_movemask_ps(m0) | (_mm256_movemask_ps(m1) << 8);
        if (bits) return j + __builtin_ctz(static_cast<unsigned>(bits));
    }
    for (; j < n; ++j)
        if (s[j] >= t) return j;
    return n;
}

}  // namespace

const UKernel& ukernel() {
    // Blocking for 32-48 KiB L1d / 512 KiB-1 MiB L2 (Zen 3/4/5, Haswell+): A block 144 x 256 floats
    // (144 KiB) stays in L2, a B micro-panel 256 x 16 floats (16 KiB) in L1, the B block in L3.
    static const UKernel k{"avx2", MR, NR, /*mc=*/144, /*kc=*/256, /*nc=*/4080, &kernel, &next_ge};
    return k;
}

}  // namespace avx2
}  // namespace pixrank
