// pixrank kernels: the AVX-512F SGEMM micro-kernel, a 12 x 32 register tile (24 zmm accumulators,
// two B loads and twelve A broadcasts per k step): the AVX2 6 x 16 kernel widened to 512-bit vectors
// and twice the rows. This file alone is compiled with -mavx512f -mavx2 -mfma; it is only called after
// CPUID reported AVX-512F (runtime.cpp). In a PIXRANK_AVX512_EMULATED test build the same text is
// compiled against SIMDe's portable intrinsics instead (simd_avx512.hpp, .ci/avx512-emulated.sh).
//
// Shapes: Ap KC x 12 packed, Bp KC x 32 packed, C 12 x 32 tile (row stride ldc); see ukernel.hpp.
#include "simd_avx512.hpp"
#include "ukernel.hpp"

namespace pixrank {
namespace avx512 {
namespace {

constexpr int MR = 12;
constexpr int NR = 32;

void kernel(int64_t kc, const float* __restrict Ap, const float* __restrict Bp, float* __restrict C,
            int64_t ldc, int mr, int nr, int flags, const float* __restrict bias) {
    __m512 acc[MR][2];
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
        acc[r][0] = _mm512_setzero_ps();
        acc[r][1] = _mm512_setzero_ps();
    }
    const float* a = Ap;
    const float* b = Bp;
    for (int64_t p = 0; p < kc; ++p) {
        _mm_prefetch(reinterpret_cast<const char*>(a + 192), _MM_HINT_T0);
        const __m512 b0 = _mm512_load_ps(b);
        const __m512 b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 12
        for (int r = 0; r < MR; ++r) {
            const __m512 av = _mm512_set1_ps(a[r]);
            acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
        }
        a += MR;
        b += NR;
    }

    const __m512 zero = _mm512_setzero_ps();
    if (mr == MR && nr == NR) {
        __m512 bias0 = zero, bias1 = zero;
        if (bias) {
            bias0 = _mm512_loadu_ps(bias);
            bias1 = _mm512_loadu_ps(bias + 16);
        }
#pragma GCC unroll 12
        for (int r = 0; r < MR; ++r) {
            float* cr = C + r * ldc;
            __m512 v0 = acc[r][0], v1 = acc[r][1];
            if (flags & kAccumulate) {
                v0 = _mm512_add_ps(_mm512_loadu_ps(cr), v0);
                v1 = _mm512_add_ps(_mm512_loadu_ps(cr + 16), v1);
            }
            if (bias) {
                v0 = _mm512_add_ps(v0, bias0);
                v1 = _mm512_add_ps(v1, bias1);
            }
            if (flags & kRelu) {  // max(0, v) returns v when v is NaN, as np.maximum does
                v0 = _mm512_max_ps(zero, v0);
                v1 = _mm512_max_ps(zero, v1);
            }
            _mm512_storeu_ps(cr, v0);
            _mm512_storeu_ps(cr + 16, v1);
        }
        return;
    }
    alignas(64) float tile[MR * NR];
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
        _mm512_store_ps(tile + r * NR, acc[r][0]);
        _mm512_store_ps(tile + r * NR + 16, acc[r][1]);
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
    const __m512 tv = _mm512_set1_ps(t);
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        const unsigned m0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(s + j), tv, _CMP_GE_OQ);
        const unsigned m1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(s + j + 16), tv, _CMP_GE_OQ);
        const unsigned bits = m0 | (m1 << 16);
        if (bits) return j + __builtin_ctz(bits);
    }
    for (; j < n; ++j)
        if (s[j] >= t) return j;
    return n;
}

}  // namespace

const UKernel& ukernel() {
    // Blocking for 48 KiB L1d / 1-2 MiB L2 (Zen 4/5, Skylake-X+): A block 192 x 256 floats (192 KiB)
    // in L2, a B micro-panel 256 x 32 floats (32 KiB) in L1, the B block in L3.
    static const UKernel k{"avx512", MR, NR, /*mc=*/192, /*kc=*/256, /*nc=*/4096, &kernel, &next_ge};
    return k;
}

}  // namespace avx512
}  // namespace pixrank
