// pixrank kernels: the portable SGEMM micro-kernel (plain loops, auto-vectorised by the compiler
// for whatever baseline the build targets: SSE2 on x86-64, NEON on aarch64). Compiled without any
// ISA flags; it is also the fallback on CPUs without AVX2/FMA.
//
// Shapes: Ap KC x MR packed, Bp KC x NR packed, C MR x NR tile (row stride ldc); see ukernel.hpp.
#include <cmath>
#include <limits>

#include "ukernel.hpp"

namespace pixrank {
namespace generic {
namespace {

constexpr int MR = 4;
constexpr int NR = 8;

void kernel(int64_t kc, const float* __restrict Ap, const float* __restrict Bp, float* __restrict C,
            int64_t ldc, int mr, int nr, int flags, const float* __restrict bias) {
    float acc[MR][NR] = {};
    for (int64_t p = 0; p < kc; ++p) {
        const float* a = Ap + p * MR;
        const float* b = Bp + p * NR;
        for (int r = 0; r < MR; ++r)
            for (int c = 0; c < NR; ++c) acc[r][c] += a[r] * b[c];
    }
    for (int r = 0; r < mr; ++r) {
        float* cr = C + r * ldc;
        for (int c = 0; c < nr; ++c) {
            float v = acc[r][c];
            if (flags & kAccumulate) v = cr[c] + v;
            if (bias) v += bias[c];
            if ((flags & kRelu) && v < 0.0f) v = 0.0f;  // NaN propagates, as np.maximum does
            cr[c] = v;
        }
    }
}

int64_t next_ge(const float* s, int64_t n, float t) {
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {  // branch-free blocks of 8 (vectorisable), then locate
        bool any = false;
        for (int u = 0; u < 8; ++u) any |= s[j + u] >= t;
        if (any) break;
    }
    for (; j < n; ++j)
        if (s[j] >= t) return j;
    return n;
}

PIXRANK_NO_FP_CONTRACT void adam(int64_t n, float* __restrict w, const float* __restrict g, float* __restrict m,
                                 float* __restrict v, const AdamStep& s) {
    for (int64_t i = 0; i < n; ++i) {  // one operation per statement: nothing to contract
        float wi = w[i];
        if (s.decay) wi = wi * s.wd_factor;
        const float gi = g[i];
        const float m1 = m[i] * s.b1;
        const float m2 = gi * s.c1;
        const float mi = m1 + m2;
        const float g2 = gi * gi;
        const float v1 = v[i] * s.b2;
        const float v2 = g2 * s.c2;
        const float vi = v1 + v2;
        m[i] = mi;
        v[i] = vi;
        const float den = std::sqrt(vi) + s.eps;
        const float step = (mi / den) * s.alpha;
        w[i] = wi - step;
    }
}

// ------------------------------------------------------------------------------- softmax rows
// The portable twin of the SIMD row kernels: the same lanes and reductions, with libm's std::exp (float)
// per element as the exponential: compiled for the baseline ISA, GCC did not vectorise a scalar copy of
// the polynomial, and glibc's expf was faster (256 x 1000 softmax, 1 thread: 1.9 vs 2.3 ms).

float row_max(const float* x, int64_t n) {
    float m[8];
    bool nan = false;
    for (int u = 0; u < 8; ++u) m[u] = -std::numeric_limits<float>::infinity();
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int u = 0; u < 8; ++u) {
            const float v = x[j + u];
            m[u] = v > m[u] ? v : m[u];
            nan |= v != v;
        }
    for (; j < n; ++j) {
        m[0] = x[j] > m[0] ? x[j] : m[0];
        nan |= x[j] != x[j];
    }
    float r = m[0];
    for (int u = 1; u < 8; ++u) r = m[u] > r ? m[u] : r;
    return nan ? std::numeric_limits<float>::quiet_NaN() : r;
}

// Sum of 8 float lanes, pairwise in double.
inline double lanes_sum(const float* a) {
    const double s0 = static_cast<double>(a[0]) + a[4], s1 = static_cast<double>(a[1]) + a[5];
    const double s2 = static_cast<double>(a[2]) + a[6], s3 = static_cast<double>(a[3]) + a[7];
    return (s0 + s2) + (s1 + s3);
}

template <bool Store>
double exp_sum_impl(const float* __restrict x, int64_t n, float m, float* __restrict e) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int u = 0; u < 8; ++u) {
            const float v = std::exp(x[j + u] - m);
            if (Store) e[j + u] = v;
            acc[u] += v;
        }
    for (int u = 0; j < n; ++j, ++u) {
        const float v = std::exp(x[j] - m);
        if (Store) e[j] = v;
        acc[u] += v;
    }
    return lanes_sum(acc);
}

double exp_sum(const float* x, int64_t n, float m, float* e) {
    return e ? exp_sum_impl<true>(x, n, m, e) : exp_sum_impl<false>(x, n, m, nullptr);
}

void scale(float* e, int64_t n, float s) {
    for (int64_t j = 0; j < n; ++j) e[j] *= s;
}

PIXRANK_NO_FP_CONTRACT void shift(const float* __restrict x, int64_t n, float a, float b, float* __restrict o) {
    for (int64_t j = 0; j < n; ++j) {
        const float d = x[j] - a;
        o[j] = d - b;
    }
}

void vexp(const float* __restrict x, int64_t n, float* __restrict y) {
    for (int64_t j = 0; j < n; ++j) y[j] = std::exp(x[j]);
}

}  // namespace

const UKernel& ukernel() {
    static const UKernel k{"generic", MR, NR, /*mc=*/128, /*kc=*/256, /*nc=*/4096, &kernel, &next_ge, &adam,
                           {&row_max, &exp_sum, &scale, &shift, &vexp}};
    return k;
}

}  // namespace generic
}  // namespace pixrank
