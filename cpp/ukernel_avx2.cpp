// pixrank kernels: the AVX2 + FMA SGEMM micro-kernel, a 6 x 16 register tile (12 ymm accumulators,
// two B loads and six A broadcasts per k step). Edge tiles: an 8-wide (or narrower) one runs a half-width
// k loop, one of at most 3 rows a half-height one, and partial vectors are stored with masked
// loads/stores (no scalar tail). This file alone is compiled with -mavx2 -mfma; it is only called after
// CPUID reported AVX2 and FMA (runtime.cpp).
//
// Shapes: Ap KC x 6 packed, Bp KC x 16 packed, C 6 x 16 tile (row stride ldc); see ukernel.hpp.
#include <immintrin.h>

#include "ukernel.hpp"

namespace pixrank {
namespace avx2 {
namespace {

constexpr int MR = 6;
constexpr int NR = 16;

// Stores an mr x nr corner (mr <= 6, nr <= 16) of the accumulators to C with the epilogue
// (accumulate, bias, ReLU). Vector code throughout: whole 8-float vectors are loaded and stored plainly,
// a partial one with _mm256_maskload_ps / _mm256_maskstore_ps (lanes past nr are neither read nor
// written, so nothing beyond C's row or bias[nr - 1] is touched), an empty one is skipped.
__attribute__((always_inline)) inline void store_tile(__m256 (&acc)[MR][2], float* __restrict C, int64_t ldc, int mr, int nr, int flags,
                       const float* __restrict bias) {
    const __m256 zero = _mm256_setzero_ps();
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    // Vector u covers columns [8u, 8u + 8): kind 2 = whole, 1 = partial (masked), 0 = empty.
    const int kind0 = nr >= 8 ? 2 : 1;
    const int kind1 = nr >= 16 ? 2 : (nr > 8 ? 1 : 0);
    const __m256i mask0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), lane);
    const __m256i mask1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - 8), lane);
    auto load = [](const float* p, int kind, __m256i mask) {
        return kind == 2 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask);
    };
    __m256 bias0 = zero, bias1 = zero;
    if (bias) {
        bias0 = load(bias, kind0, mask0);
        if (kind1) bias1 = load(bias + 8, kind1, mask1);
    }
    for (int r = 0; r < mr; ++r) {
        float* cr = C + r * ldc;
        __m256 v0 = acc[r][0], v1 = acc[r][1];
        if (flags & kAccumulate) {
            v0 = _mm256_add_ps(load(cr, kind0, mask0), v0);
            if (kind1) v1 = _mm256_add_ps(load(cr + 8, kind1, mask1), v1);
        }
        if (bias) {
            v0 = _mm256_add_ps(v0, bias0);
            v1 = _mm256_add_ps(v1, bias1);
        }
        if (flags & kRelu) {  // max(0, v) returns v when v is NaN, as np.maximum does
            v0 = _mm256_max_ps(zero, v0);
            v1 = _mm256_max_ps(zero, v1);
        }
        if (kind0 == 2) _mm256_storeu_ps(cr, v0);
        else _mm256_maskstore_ps(cr, mask0, v0);
        if (kind1 == 2) _mm256_storeu_ps(cr + 8, v1);
        else if (kind1 == 1) _mm256_maskstore_ps(cr + 8, mask1, v1);
    }
}

// The register tile: full width (two B vectors per k step, 12 accumulators) unless nr <= 8, where the
// right half of the B panel is zero padding: then only its left vector is used (six FMAs per k step
// instead of twelve), with even and odd k steps summed into separate accumulators (c*0 / c*1, added at
// the end) so that 12 independent FMA chains still cover the FMA latency. At N = 200 (12 full panels
// and one 8 wide) this halves the cost of the edge panel instead of computing 8 columns of zeros.
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
    // The k loops are written in inline assembly so that the register allocation is fixed: 12
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
    // Narrow (nr <= 8): step s loads B's left vector only into ymm<breg> (13 for even steps, 14 for
    // odd ones) and accumulates into the set h (c<r>0 for even steps, c<r>1 for odd ones).
#define PIXRANK_FMA_ROW_N(r, s, h, breg)                                        \
    "vbroadcastss " #s "*24+" #r "*4(%[a]), %%ymm15\n\t"                        \
    "vfmadd231ps %%ymm" #breg ", %%ymm15, %[c" #r #h "]\n\t"
#define PIXRANK_NSTEP(s, h, breg)                                               \
    "vmovaps " #s "*64(%[b]), %%ymm" #breg "\n\t"                               \
    PIXRANK_FMA_ROW_N(0, s, h, breg) PIXRANK_FMA_ROW_N(1, s, h, breg)           \
    PIXRANK_FMA_ROW_N(2, s, h, breg) PIXRANK_FMA_ROW_N(3, s, h, breg)           \
    PIXRANK_FMA_ROW_N(4, s, h, breg) PIXRANK_FMA_ROW_N(5, s, h, breg)
    // Short (mr <= 3, nr > 8): rows 0-2 only, even steps into c00..c21 and odd steps into c30..c51
    // (accumulator c<x>u holds row x % 3), added at the end.
#define PIXRANK_FMA_ROW_S(r, s, x)                                              \
    "vbroadcastss " #s "*24+" #r "*4(%[a]), %%ymm15\n\t"                        \
    "vfmadd231ps %%ymm13, %%ymm15, %[c" #x "0]\n\t"                             \
    "vfmadd231ps %%ymm14, %%ymm15, %[c" #x "1]\n\t"
#define PIXRANK_SSTEP(s, x0, x1, x2)                                            \
    "vmovaps " #s "*64(%[b]), %%ymm13\n\t"                                      \
    "vmovaps " #s "*64+32(%[b]), %%ymm14\n\t"                                   \
    PIXRANK_FMA_ROW_S(0, s, x0) PIXRANK_FMA_ROW_S(1, s, x1) PIXRANK_FMA_ROW_S(2, s, x2)
#define PIXRANK_OPERANDS                                                                         \
    : [a] "+r"(a), [b] "+r"(b), [k] "+r"(k), [c00] "+x"(c00), [c01] "+x"(c01), [c10] "+x"(c10),  \
      [c11] "+x"(c11), [c20] "+x"(c20), [c21] "+x"(c21), [c30] "+x"(c30), [c31] "+x"(c31),       \
      [c40] "+x"(c40), [c41] "+x"(c41), [c50] "+x"(c50), [c51] "+x"(c51)                         \
    :                                                                                            \
    : "cc", "memory", "xmm13", "xmm14", "xmm15"
    const bool narrow = nr <= 8, short_ = !narrow && mr <= 3;
    int64_t k = kc / 4;
    if (k > 0) {
        if (short_) {
            __asm__ volatile(
                ".p2align 5\n"
                "1:\n\t"
                "prefetcht0 384(%[a])\n\t"
                PIXRANK_SSTEP(0, 0, 1, 2) PIXRANK_SSTEP(1, 3, 4, 5)
                PIXRANK_SSTEP(2, 0, 1, 2) PIXRANK_SSTEP(3, 3, 4, 5)
                "add $96, %[a]\n\t"
                "add $256, %[b]\n\t"
                "dec %[k]\n\t"
                "jnz 1b\n\t"
                PIXRANK_OPERANDS);
        } else if (!narrow) {
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
        } else {
            __asm__ volatile(
                ".p2align 5\n"
                "1:\n\t"
                "prefetcht0 384(%[a])\n\t"
                PIXRANK_NSTEP(0, 0, 13) PIXRANK_NSTEP(1, 1, 14) PIXRANK_NSTEP(2, 0, 13) PIXRANK_NSTEP(3, 1, 14)
                "add $96, %[a]\n\t"
                "add $256, %[b]\n\t"
                "dec %[k]\n\t"
                "jnz 1b\n\t"
                PIXRANK_OPERANDS);
        }
    }
    k = kc % 4;
    if (k > 0) {
        if (short_) {
            __asm__ volatile(
                "1:\n\t"
                PIXRANK_SSTEP(0, 0, 1, 2)
                "add $24, %[a]\n\t"
                "add $64, %[b]\n\t"
                "dec %[k]\n\t"
                "jnz 1b\n\t"
                PIXRANK_OPERANDS);
        } else if (!narrow) {
            __asm__ volatile(
                "1:\n\t"
                PIXRANK_STEP(0)
                "add $24, %[a]\n\t"
                "add $64, %[b]\n\t"
                "dec %[k]\n\t"
                "jnz 1b\n\t"
                PIXRANK_OPERANDS);
        } else {
            __asm__ volatile(
                "1:\n\t"
                PIXRANK_NSTEP(0, 0, 13)
                "add $24, %[a]\n\t"
                "add $64, %[b]\n\t"
                "dec %[k]\n\t"
                "jnz 1b\n\t"
                PIXRANK_OPERANDS);
        }
    }
#undef PIXRANK_OPERANDS
#undef PIXRANK_SSTEP
#undef PIXRANK_FMA_ROW_S
#undef PIXRANK_NSTEP
#undef PIXRANK_FMA_ROW_N
#undef PIXRANK_STEP
#undef PIXRANK_FMA_ROW

    if (narrow) {  // fold the odd-step accumulators into the even ones; the right half is unused
        __m256 acc[MR][2] = {{_mm256_add_ps(c00, c01), c01}, {_mm256_add_ps(c10, c11), c11},
                             {_mm256_add_ps(c20, c21), c21}, {_mm256_add_ps(c30, c31), c31},
                             {_mm256_add_ps(c40, c41), c41}, {_mm256_add_ps(c50, c51), c51}};
        store_tile(acc, C, ldc, mr, nr, flags, bias);
        return;
    }
    if (short_) {  // fold the odd-step accumulators (rows 0-2 in c3*..c5*) into the even ones
        const __m256 z = _mm256_setzero_ps();
        __m256 acc[MR][2] = {{_mm256_add_ps(c00, c30), _mm256_add_ps(c01, c31)},
                             {_mm256_add_ps(c10, c40), _mm256_add_ps(c11, c41)},
                             {_mm256_add_ps(c20, c50), _mm256_add_ps(c21, c51)},
                             {z, z}, {z, z}, {z, z}};
        store_tile(acc, C, ldc, mr, nr, flags, bias);
        return;
    }
    __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    if (mr == MR && nr == NR) store_tile(acc, C, ldc, MR, NR, flags, bias);  // constants: no masks
    else store_tile(acc, C, ldc, mr, nr, flags, bias);
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

// Adam, 8 floats per step (see ukernel.hpp AdamStep): separate multiply and add (no FMA) and the
// correctly rounded vsqrtps / vdivps, so the result is bit-identical to the generic loop and to numpy;
// the tail of n % 8 floats under a mask.
PIXRANK_NO_FP_CONTRACT void adam(int64_t n, float* __restrict w, const float* __restrict g, float* __restrict m,
                                 float* __restrict v, const AdamStep& s) {
    const __m256 b1 = _mm256_set1_ps(s.b1), c1 = _mm256_set1_ps(s.c1), b2 = _mm256_set1_ps(s.b2);
    const __m256 c2 = _mm256_set1_ps(s.c2), eps = _mm256_set1_ps(s.eps), alpha = _mm256_set1_ps(s.alpha);
    const __m256 wdf = _mm256_set1_ps(s.wd_factor);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int64_t i = 0; i < n; i += 8) {
        // The last n % 8 floats under a mask (_mm256_maskload_ps / _mm256_maskstore_ps).
        const bool whole = n - i >= 8;
        const __m256i k = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(whole ? 8 : n - i)), lane);
        auto load = [whole, k](const float* p) { return whole ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, k); };
        auto store = [whole, k](float* p, __m256 x) {
            if (whole) _mm256_storeu_ps(p, x);
            else _mm256_maskstore_ps(p, k, x);
        };
        __m256 wi = load(w + i);
        if (s.decay) wi = _mm256_mul_ps(wi, wdf);
        const __m256 gi = load(g + i);
        const __m256 mi = _mm256_add_ps(_mm256_mul_ps(load(m + i), b1), _mm256_mul_ps(gi, c1));
        const __m256 vi = _mm256_add_ps(_mm256_mul_ps(load(v + i), b2), _mm256_mul_ps(_mm256_mul_ps(gi, gi), c2));
        store(m + i, mi);
        store(v + i, vi);
        const __m256 step = _mm256_mul_ps(_mm256_div_ps(mi, _mm256_add_ps(_mm256_sqrt_ps(vi), eps)), alpha);
        store(w + i, _mm256_sub_ps(wi, step));
    }
}

// ------------------------------------------------------------------------------- softmax rows
// 8 floats per vector. No masked stores (vmaskmovps to memory is microcoded on AMD Zen, tens of cycles,
// and dominated rows of 10 classes): a row of n >= 8 floats ends with the vector of its last 8, which
// overlaps the previous one (results that are a function of x alone are simply written twice; sums
// leave the repeated lanes out), a row of n < 8 loads under a mask (cheap) and stores through a small
// buffer. See ukernel.hpp for the expf algorithm and its source.

// Lanes [0, r) set, 0 <= r <= 8.
inline __m256i tail_mask(int64_t r) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(r)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Stores lanes [0, r) of v to p (r < 8).
inline void store_first(float* p, __m256 v, int64_t r) {
    alignas(32) float t[8];
    _mm256_store_ps(t, v);
    for (int64_t u = 0; u < r; ++u) p[u] = t[u];
}

__attribute__((always_inline)) inline __m256 exp_ps(__m256 x) {
    // min/max return their second operand when either is NaN: a NaN x passes through.
    x = _mm256_min_ps(_mm256_set1_ps(kExpHi), x);
    x = _mm256_max_ps(_mm256_set1_ps(kExpLo), x);
    const __m256 round = _mm256_set1_ps(kExpRound);
    const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(kExpLog2e), round);
    const __m256 n = _mm256_sub_ps(t, round);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kExpC1), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kExpC2), r);
    __m256 y = _mm256_set1_ps(kExpP0);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP1));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP2));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP3));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP4));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP5));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r);
    y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
    // 2^n = 2^n1 * 2^n2, n1 = floor(n / 2) = ((n + 256) >> 1) - 128 (n + 256 >= 0 after the clamp).
    const __m256i ni = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(round));
    const __m256i n1 = _mm256_sub_epi32(_mm256_srli_epi32(_mm256_add_epi32(ni, _mm256_set1_epi32(256)), 1),
                                        _mm256_set1_epi32(128));
    const __m256i n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(y, s1), s2);
}

float row_max(const float* x, int64_t n) {
    const __m256 ninf = _mm256_set1_ps(-__builtin_inff());
    if (n < 8) {  // one masked vector; lanes past n are -inf
        const __m256i k = tail_mask(n);
        const __m256 v = _mm256_blendv_ps(ninf, _mm256_maskload_ps(x, k), _mm256_castsi256_ps(k));
        alignas(32) float t[8];
        _mm256_store_ps(t, v);
        float m = t[0];
        bool nan = t[0] != t[0];
        for (int u = 1; u < 8; ++u) {
            m = t[u] > m ? t[u] : m;
            nan |= t[u] != t[u];
        }
        return nan ? __builtin_nanf("") : m;
    }
    // NaN: tracked in a separate unordered-compare mask (vmaxps drops a NaN in its first operand).
    __m256 m0 = _mm256_loadu_ps(x), m1 = m0;
    __m256 nan = _mm256_cmp_ps(m0, m0, _CMP_UNORD_Q);
    int64_t j = 8;
    for (; j + 16 <= n; j += 16) {
        const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + 8);
        m0 = _mm256_max_ps(m0, a);
        m1 = _mm256_max_ps(m1, b);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
    }
    if (j + 8 <= n) {
        const __m256 a = _mm256_loadu_ps(x + j);
        m0 = _mm256_max_ps(m0, a);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
        j += 8;
    }
    if (j < n) {  // the last 8 floats again (overlapping: the maximum does not mind)
        const __m256 a = _mm256_loadu_ps(x + n - 8);
        m1 = _mm256_max_ps(m1, a);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
    }
    if (_mm256_movemask_ps(nan)) return __builtin_nanf("");
    __m256 m = _mm256_max_ps(m0, m1);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

// The 8 lanes of v summed pairwise in double.
inline double lanes_sum(__m256 v) {
    const __m256d a = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    const __m128d b = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(b, _mm_unpackhi_pd(b, b)));
}

template <bool Store>
double exp_sum_impl(const float* __restrict x, int64_t n, float m, float* __restrict e) {
    const __m256 mv = _mm256_set1_ps(m);
    if (n < 8) {  // masked load (lanes past n read as 0, zeroed before the sum), stored through a buffer
        const __m256i k = tail_mask(n);
        const __m256 e0 = _mm256_and_ps(exp_ps(_mm256_sub_ps(_mm256_maskload_ps(x, k), mv)), _mm256_castsi256_ps(k));
        if (Store) store_first(e, e0, n);
        return lanes_sum(e0);
    }
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;  // 4 chains hide the add latency
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        const __m256 e0 = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), mv));
        const __m256 e1 = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j + 8), mv));
        const __m256 e2 = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j + 16), mv));
        const __m256 e3 = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j + 24), mv));
        if (Store) {
            _mm256_storeu_ps(e + j, e0);
            _mm256_storeu_ps(e + j + 8, e1);
            _mm256_storeu_ps(e + j + 16, e2);
            _mm256_storeu_ps(e + j + 24, e3);
        }
        a0 = _mm256_add_ps(a0, e0);
        a1 = _mm256_add_ps(a1, e1);
        a2 = _mm256_add_ps(a2, e2);
        a3 = _mm256_add_ps(a3, e3);
    }
    for (; j + 8 <= n; j += 8) {
        const __m256 e0 = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), mv));
        if (Store) _mm256_storeu_ps(e + j, e0);
        a1 = _mm256_add_ps(a1, e0);
    }
    if (j < n) {  // the last 8 floats (overlapping); the lanes already summed, [0, 8 - (n - j)), left out
        const __m256 e0 = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + n - 8), mv));
        if (Store) _mm256_storeu_ps(e + n - 8, e0);  // the repeated lanes get the same values again
        const __m256i fresh = _mm256_cmpgt_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                 _mm256_set1_epi32(static_cast<int>(7 - (n - j))));
        a2 = _mm256_add_ps(a2, _mm256_and_ps(e0, _mm256_castsi256_ps(fresh)));
    }
    return lanes_sum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

double exp_sum(const float* x, int64_t n, float m, float* e) {
    return e ? exp_sum_impl<true>(x, n, m, e) : exp_sum_impl<false>(x, n, m, nullptr);
}

void scale(float* e, int64_t n, float s) {  // in place: the tail goes scalar (at most 7 floats)
    const __m256 sv = _mm256_set1_ps(s);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(e + j, _mm256_mul_ps(_mm256_loadu_ps(e + j), sv));
    for (; j < n; ++j) e[j] *= s;
}

void shift(const float* __restrict x, int64_t n, float a, float b, float* __restrict o) {
    const __m256 av = _mm256_set1_ps(a), bv = _mm256_set1_ps(b);
    if (n < 8) {
        store_first(o, _mm256_sub_ps(_mm256_sub_ps(_mm256_maskload_ps(x, tail_mask(n)), av), bv), n);
        return;
    }
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(o + j, _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), av), bv));
    if (j < n) _mm256_storeu_ps(o + n - 8, _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + n - 8), av), bv));
}

void vexp(const float* __restrict x, int64_t n, float* __restrict y) {
    if (n < 8) {
        store_first(y, exp_ps(_mm256_maskload_ps(x, tail_mask(n))), n);
        return;
    }
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(y + j, exp_ps(_mm256_loadu_ps(x + j)));
    if (j < n) _mm256_storeu_ps(y + n - 8, exp_ps(_mm256_loadu_ps(x + n - 8)));
}

}  // namespace

const UKernel& ukernel() {
    // Blocking for 32-48 KiB L1d / 512 KiB-1 MiB L2 (Zen 3/4/5, Haswell+): A block 144 x 256 floats
    // (144 KiB) stays in L2, a B micro-panel 256 x 16 floats (16 KiB) in L1, the B block in L3.
    static const UKernel k{"avx2", MR, NR, /*mc=*/144, /*kc=*/256, /*nc=*/4080, &kernel, &next_ge, &adam,
                           {&row_max, &exp_sum, &scale, &shift, &vexp}};
    return k;
}

}  // namespace avx2
}  // namespace pixrank
