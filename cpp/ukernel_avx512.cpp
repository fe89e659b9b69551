// pixrank kernels: the AVX-512F SGEMM micro-kernel, a 12 x 32 register tile (24 zmm accumulators,
// two B loads and twelve A broadcasts per k step): the AVX2 6 x 16 kernel widened to 512-bit vectors
// and twice the rows. Edge tiles run only the rows (4, 8 or 12) and 16-float halves they need, and
// store partial vectors under __mmask16 masks (no scalar tail). This file alone is compiled with
// -mavx512f -mavx2 -mfma; it is only called after CPUID reported AVX-512F (runtime.cpp). In a PIXRANK_AVX512_EMULATED test build the same text is
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

// The k loop over the rows [0, R) of the register tile (R = 4, 8 or 12: the smallest that covers mr;
// the rows beyond mr are zero padding of the A panel): full width (two B vectors per k step, 2R
// accumulators), or, when kNarrow (nr <= 16: the right half of the B panel is zero padding), its left
// vector only (R FMAs per k step instead of 2R). M = 128 leaves an 8-row edge panel, N = 200 an 8-wide
// one: these compute 8 rows and 16 columns instead of 12 x 32.
template <bool kNarrow, int R>
__attribute__((always_inline)) inline void k_loop(int64_t kc, const float* __restrict a,
                                                  const float* __restrict b, __m512 (&acc)[MR][2]) {
    for (int64_t p = 0; p < kc; ++p) {
        _mm_prefetch(reinterpret_cast<const char*>(a + 192), _MM_HINT_T0);
        const __m512 b0 = _mm512_load_ps(b);
        const __m512 b1 = kNarrow ? b0 : _mm512_load_ps(b + 16);
#pragma GCC unroll 12
        for (int r = 0; r < R; ++r) {
            const __m512 av = _mm512_set1_ps(a[r]);
            acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
            if (!kNarrow) acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
        }
        a += MR;
        b += NR;
    }
}

template <bool kNarrow>
inline void k_loop_rows(int64_t kc, const float* a, const float* b, int mr, __m512 (&acc)[MR][2]) {
    if (mr <= 4) k_loop<kNarrow, 4>(kc, a, b, acc);
    else if (mr <= 8) k_loop<kNarrow, 8>(kc, a, b, acc);
    else k_loop<kNarrow, 12>(kc, a, b, acc);
}

// Stores an mr x nr corner (mr <= 12, nr <= 32) of the accumulators to C with the epilogue
// (accumulate, bias, ReLU). Vector code throughout: the two 16-float halves are loaded and stored under
// the masks m0 / m1 of their columns below nr (masked-off lanes are neither read nor written, so
// nothing beyond C's row or bias[nr - 1] is touched); an empty half is skipped.
__attribute__((always_inline)) inline void store_tile(__m512 (&acc)[MR][2], float* __restrict C, int64_t ldc,
                                                      int mr, int nr, int flags, const float* __restrict bias) {
    const __m512 zero = _mm512_setzero_ps();
    const __mmask16 m0 = nr >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << nr) - 1u);
    const __mmask16 m1 = nr >= 32   ? static_cast<__mmask16>(0xFFFF)
                         : nr > 16 ? static_cast<__mmask16>((1u << (nr - 16)) - 1u)
                                   : static_cast<__mmask16>(0);
    auto load = [](const float* p, __mmask16 m) {
        return m == 0xFFFF ? _mm512_loadu_ps(p) : maskz_loadu_ps(m, p);
    };
    auto store = [](float* p, __mmask16 m, __m512 v) {
        if (m == 0xFFFF) _mm512_storeu_ps(p, v);
        else mask_storeu_ps(p, m, v);
    };
    __m512 bias0 = zero, bias1 = zero;
    if (bias) {
        bias0 = load(bias, m0);
        if (m1) bias1 = load(bias + 16, m1);
    }
#pragma GCC unroll 12
    for (int r = 0; r < mr; ++r) {
        float* cr = C + r * ldc;
        __m512 v0 = acc[r][0], v1 = acc[r][1];
        if (flags & kAccumulate) {
            v0 = _mm512_add_ps(load(cr, m0), v0);
            if (m1) v1 = _mm512_add_ps(load(cr + 16, m1), v1);
        }
        if (bias) {
            v0 = _mm512_add_ps(v0, bias0);
            v1 = _mm512_add_ps(v1, bias1);
        }
        if (flags & kRelu) {  // max(0, v) returns v when v is NaN, as np.maximum does
            v0 = _mm512_max_ps(zero, v0);
            v1 = _mm512_max_ps(zero, v1);
        }
        store(cr, m0, v0);
        if (m1) store(cr + 16, m1, v1);
    }
}

void kernel(int64_t kc, const float* __restrict Ap, const float* __restrict Bp, float* __restrict C,
            int64_t ldc, int mr, int nr, int flags, const float* __restrict bias) {
    __m512 acc[MR][2];
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
        acc[r][0] = _mm512_setzero_ps();
        acc[r][1] = _mm512_setzero_ps();
    }
    if (nr <= 16) k_loop_rows<true>(kc, Ap, Bp, mr, acc);
    else k_loop_rows<false>(kc, Ap, Bp, mr, acc);
    if (mr == MR && nr == NR) store_tile(acc, C, ldc, MR, NR, flags, bias);  // constants: full masks
    else store_tile(acc, C, ldc, mr, nr, flags, bias);
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

// Adam, 16 floats per step (see ukernel.hpp AdamStep): separate multiply and add (no FMA) and the
// correctly rounded vsqrtps / vdivps, so the result is bit-identical to the generic loop and to numpy;
// the tail of n % 16 floats under a mask.
PIXRANK_NO_FP_CONTRACT void adam(int64_t n, float* __restrict w, const float* __restrict g, float* __restrict m,
                                 float* __restrict v, const AdamStep& s) {
    const __m512 b1 = _mm512_set1_ps(s.b1), c1 = _mm512_set1_ps(s.c1), b2 = _mm512_set1_ps(s.b2);
    const __m512 c2 = _mm512_set1_ps(s.c2), eps = _mm512_set1_ps(s.eps), alpha = _mm512_set1_ps(s.alpha);
    const __m512 wdf = _mm512_set1_ps(s.wd_factor);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF)
                                        : static_cast<__mmask16>((1u << (n - i)) - 1u);
        auto load = [k](const float* p) { return k == 0xFFFF ? _mm512_loadu_ps(p) : maskz_loadu_ps(k, p); };
        auto store = [k](float* p, __m512 x) {
            if (k == 0xFFFF) _mm512_storeu_ps(p, x);
            else mask_storeu_ps(p, k, x);
        };
        __m512 wi = load(w + i);
        if (s.decay) wi = _mm512_mul_ps(wi, wdf);
        const __m512 gi = load(g + i);
        const __m512 mi = _mm512_add_ps(_mm512_mul_ps(load(m + i), b1), _mm512_mul_ps(gi, c1));
        const __m512 vi = _mm512_add_ps(_mm512_mul_ps(load(v + i), b2), _mm512_mul_ps(_mm512_mul_ps(gi, gi), c2));
        store(m + i, mi);
        store(v + i, vi);
        const __m512 step = _mm512_mul_ps(_mm512_div_ps(mi, _mm512_add_ps(_mm512_sqrt_ps(vi), eps)), alpha);
        store(w + i, _mm512_sub_ps(wi, step));
    }
}

// ------------------------------------------------------------------------------- softmax rows
// 16 floats per vector; the tail of a row under a __mmask16 (maskz_loadu_ps / mask_storeu_ps of
// simd_avx512.hpp: lanes past n neither read nor written). Only intrinsics SIMDe 0.7.4 also provides
// (no _mm512_srai_epi32, no _mm512_reduce_*): the horizontal steps go through a 64-byte array. See
// ukernel.hpp for the expf algorithm and its source.

inline __mmask16 tail_mask(int64_t r) { return static_cast<__mmask16>((1u << r) - 1u); }  // 0 <= r < 16

__attribute__((always_inline)) inline __m512 exp_ps(__m512 x) {
    // min/max return their second operand when either is NaN: a NaN x passes through.
    x = _mm512_min_ps(_mm512_set1_ps(kExpHi), x);
    x = _mm512_max_ps(_mm512_set1_ps(kExpLo), x);
    const __m512 round = _mm512_set1_ps(kExpRound);
    const __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(kExpLog2e), round);
    const __m512 n = _mm512_sub_ps(t, round);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kExpC1), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kExpC2), r);
    __m512 y = _mm512_set1_ps(kExpP0);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kExpP1));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kExpP2));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kExpP3));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kExpP4));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kExpP5));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), r);
    y = _mm512_add_ps(y, _mm512_set1_ps(1.0f));
    // 2^n = 2^n1 * 2^n2, n1 = floor(n / 2) = ((n + 256) >> 1) - 128 (n + 256 >= 0 after the clamp).
    const __m512i ni = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_castps_si512(round));
    const __m512i n1 = _mm512_sub_epi32(_mm512_srli_epi32(_mm512_add_epi32(ni, _mm512_set1_epi32(256)), 1),
                                        _mm512_set1_epi32(128));
    const __m512i n2 = _mm512_sub_epi32(ni, n1);
    const __m512i bias = _mm512_set1_epi32(127);
    const __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, bias), 23));
    const __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, bias), 23));
    return _mm512_mul_ps(_mm512_mul_ps(y, s1), s2);
}

float row_max(const float* x, int64_t n) {
    const __m512 ninf = _mm512_set1_ps(-__builtin_inff());
    __m512 m0 = ninf, m1 = ninf;
    unsigned nan = 0;  // NaN lanes, from unordered compares (vmaxps drops a NaN in its first operand)
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        const __m512 a = _mm512_loadu_ps(x + j), b = _mm512_loadu_ps(x + j + 16);
        m0 = _mm512_max_ps(m0, a);
        m1 = _mm512_max_ps(m1, b);
        nan |= _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q);
    }
    if (j + 16 <= n) {
        const __m512 a = _mm512_loadu_ps(x + j);
        m0 = _mm512_max_ps(m0, a);
        nan |= _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
        j += 16;
    }
    if (j < n) {  // masked tail: lanes past n are -inf
        const __mmask16 k = tail_mask(n - j);
        const __m512 a = _mm512_mask_blend_ps(k, ninf, maskz_loadu_ps(k, x + j));
        m1 = _mm512_max_ps(m1, a);
        nan |= _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    }
    if (nan) return __builtin_nanf("");
    alignas(64) float t[16];
    _mm512_store_ps(t, _mm512_max_ps(m0, m1));
    float m = t[0];
    for (int u = 1; u < 16; ++u) m = t[u] > m ? t[u] : m;
    return m;
}

// The 16 lanes of v summed pairwise in double.
__attribute__((always_inline)) inline double lanes_sum(__m512 v) {
    alignas(64) float t[16];
    _mm512_store_ps(t, v);
    double d[8];
    for (int u = 0; u < 8; ++u) d[u] = static_cast<double>(t[u]) + t[u + 8];
    for (int u = 0; u < 4; ++u) d[u] += d[u + 4];
    return (d[0] + d[2]) + (d[1] + d[3]);
}

template <bool Store>
double exp_sum_impl(const float* __restrict x, int64_t n, float m, float* __restrict e) {
    const __m512 mv = _mm512_set1_ps(m);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;  // 4 chains hide the add latency
    int64_t j = 0;
    for (; j + 64 <= n; j += 64) {
        const __m512 e0 = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j), mv));
        const __m512 e1 = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j + 16), mv));
        const __m512 e2 = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j + 32), mv));
        const __m512 e3 = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j + 48), mv));
        if (Store) {
            _mm512_storeu_ps(e + j, e0);
            _mm512_storeu_ps(e + j + 16, e1);
            _mm512_storeu_ps(e + j + 32, e2);
            _mm512_storeu_ps(e + j + 48, e3);
        }
        a0 = _mm512_add_ps(a0, e0);
        a1 = _mm512_add_ps(a1, e1);
        a2 = _mm512_add_ps(a2, e2);
        a3 = _mm512_add_ps(a3, e3);
    }
    for (; j + 16 <= n; j += 16) {
        const __m512 e0 = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j), mv));
        if (Store) _mm512_storeu_ps(e + j, e0);
        a1 = _mm512_add_ps(a1, e0);
    }
    if (j < n) {  // masked tail: lanes past n read as 0 and are zeroed before the sum
        const __mmask16 k = tail_mask(n - j);
        const __m512 e0 = _mm512_mask_blend_ps(k, _mm512_setzero_ps(),
                                               exp_ps(_mm512_sub_ps(maskz_loadu_ps(k, x + j), mv)));
        if (Store) mask_storeu_ps(e + j, k, e0);
        a2 = _mm512_add_ps(a2, e0);
    }
    return lanes_sum(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

double exp_sum(const float* x, int64_t n, float m, float* e) {
    return e ? exp_sum_impl<true>(x, n, m, e) : exp_sum_impl<false>(x, n, m, nullptr);
}

void scale(float* e, int64_t n, float s) {
    const __m512 sv = _mm512_set1_ps(s);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) _mm512_storeu_ps(e + j, _mm512_mul_ps(_mm512_loadu_ps(e + j), sv));
    if (j < n) {
        const __mmask16 k = tail_mask(n - j);
        mask_storeu_ps(e + j, k, _mm512_mul_ps(maskz_loadu_ps(k, e + j), sv));
    }
}

void shift(const float* __restrict x, int64_t n, float a, float b, float* __restrict o) {
    const __m512 av = _mm512_set1_ps(a), bv = _mm512_set1_ps(b);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        _mm512_storeu_ps(o + j, _mm512_sub_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j), av), bv));
    if (j < n) {
        const __mmask16 k = tail_mask(n - j);
        mask_storeu_ps(o + j, k, _mm512_sub_ps(_mm512_sub_ps(maskz_loadu_ps(k, x + j), av), bv));
    }
}

void vexp(const float* __restrict x, int64_t n, float* __restrict y) {
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) _mm512_storeu_ps(y + j, exp_ps(_mm512_loadu_ps(x + j)));
    if (j < n) {
        const __mmask16 k = tail_mask(n - j);
        mask_storeu_ps(y + j, k, exp_ps(maskz_loadu_ps(k, x + j)));
    }
}

}  // namespace

const UKernel& ukernel() {
    // Blocking for 48 KiB L1d / 1-2 MiB L2 (Zen 4/5, Skylake-X+): A block 192 x 256 floats (192 KiB)
    // in L2, a B micro-panel 256 x 32 floats (32 KiB) in L1, the B block in L3.
    static const UKernel k{"avx512", MR, NR, /*mc=*/192, /*kc=*/256, /*nc=*/4096, &kernel, &next_ge, &adam,
                           {&row_max, &exp_sum, &scale, &shift, &vexp}};
    return k;
}

}  // namespace avx512
}  // namespace pixrank
