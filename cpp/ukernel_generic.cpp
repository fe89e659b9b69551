// pixrank kernels: the portable SGEMM micro-kernel (plain loops, auto-vectorised by the compiler
// for whatever baseline the build targets: SSE2 on x86-64, NEON on aarch64). Compiled without any
// ISA flags; it is also the fallback on CPUs without AVX2/FMA.
//
// Shapes: Ap KC x MR packed, Bp KC x NR packed, C MR x NR tile (row stride ldc); see ukernel.hpp.
#include <cmath>

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

}  // namespace

const UKernel& ukernel() {
    static const UKernel k{"generic", MR, NR, /*mc=*/128, /*kc=*/256, /*nc=*/4096, &kernel, &next_ge, &adam};
    return k;
}

}  // namespace generic
}  // namespace pixrank
