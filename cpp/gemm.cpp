// pixrank kernels: the SGEMM driver (blocking, packing, threading); see gemm.hpp.
//
// Loop nest (BLIS names): jc over NC columns -> pc over KC depth -> [pack B block, shared by all
// threads] -> work items (ic row block x jr panel range) spread over threads, each packing its A block
// into a thread-local buffer -> jr over NR panels -> ir over MR panels -> micro-kernel.
#include "gemm.hpp"

#include <algorithm>
#include <cstring>

#include "runtime.hpp"

namespace pixrank {

const UKernel& active_ukernel() {
    switch (simd_current()) {
#if defined(PIXRANK_X86_KERNELS)
        case Simd::avx512: return avx512::ukernel();
        case Simd::avx2: return avx2::ukernel();
#endif
        default: return generic::ukernel();
    }
}

namespace {
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Workspaces reused across calls (per thread): packed A blocks and packed B blocks.
thread_local AlignedBuffer tl_pack_a;
thread_local AlignedBuffer tl_pack_b;
}  // namespace

void pack_a(const UKernel& uk, const float* A, int64_t lda, bool trans_a, int64_t i0, int64_t mc, int64_t p0,
            int64_t kc, float* Ap) {
    const int MR = uk.mr;
    for (int64_t ir = 0; ir < mc; ir += MR) {
        const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
        float* dst = Ap + ir * kc;
        if (!trans_a) {
            // op(A)[i, p] = A[i * lda + p]: MR row streams, written p-major.
            const float* rows[32];
            for (int r = 0; r < mr; ++r) rows[r] = A + (i0 + ir + r) * lda + p0;
            if (mr == MR) {
                for (int64_t p = 0; p < kc; ++p)
                    for (int r = 0; r < MR; ++r) dst[p * MR + r] = rows[r][p];
            } else {
                for (int64_t p = 0; p < kc; ++p) {
                    for (int r = 0; r < mr; ++r) dst[p * MR + r] = rows[r][p];
                    for (int r = mr; r < MR; ++r) dst[p * MR + r] = 0.0f;
                }
            }
        } else {
            // A stored (K, M): op(A)[i, p] = A[p * lda + i], contiguous in i.
            for (int64_t p = 0; p < kc; ++p) {
                const float* src = A + (p0 + p) * lda + i0 + ir;
                float* d = dst + p * MR;
                for (int r = 0; r < mr; ++r) d[r] = src[r];
                for (int r = mr; r < MR; ++r) d[r] = 0.0f;
            }
        }
    }
}

void pack_b_panel(const UKernel& uk, const float* B, int64_t ldb, bool trans_b, int64_t p0, int64_t kc,
                  int64_t j0, int64_t nr, float* Bp, const float* col_scale) {
    const int NR = uk.nr;
    if (!trans_b) {
        // op(B)[p, j] = B[p * ldb + j], contiguous in j.
        for (int64_t p = 0; p < kc; ++p) {
            const float* src = B + (p0 + p) * ldb + j0;
            float* d = Bp + p * NR;
            if (col_scale) {
                for (int64_t c = 0; c < nr; ++c) d[c] = src[c] * col_scale[j0 + c];
            } else if (nr == NR) {
                std::memcpy(d, src, sizeof(float) * NR);
                continue;
            } else {
                for (int64_t c = 0; c < nr; ++c) d[c] = src[c];
            }
            for (int64_t c = nr; c < NR; ++c) d[c] = 0.0f;
        }
    } else {
        // B stored (N, K): op(B)[p, j] = B[j * ldb + p]; NR row streams, written p-major.
        const float* cols[64];
        float scale[64];
        for (int64_t c = 0; c < nr; ++c) {
            cols[c] = B + (j0 + c) * ldb + p0;
            scale[c] = col_scale ? col_scale[j0 + c] : 1.0f;
        }
        for (int64_t p = 0; p < kc; ++p) {
            float* d = Bp + p * NR;
            if (col_scale) {
                for (int64_t c = 0; c < nr; ++c) d[c] = cols[c][p] * scale[c];
            } else {
                for (int64_t c = 0; c < nr; ++c) d[c] = cols[c][p];
            }
            for (int64_t c = nr; c < NR; ++c) d[c] = 0.0f;
        }
    }
}

void macro_kernel(const UKernel& uk, int64_t mc, int64_t nc, int64_t kc, const float* Ap, const float* Bp,
                  float* C, int64_t ldc, int flags, const float* bias) {
    const int MR = uk.mr, NR = uk.nr;
    for (int64_t jr = 0; jr < nc; jr += NR) {
        const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
        const float* bp = Bp + jr * kc;
        const float* bb = bias ? bias + jr : nullptr;
        for (int64_t ir = 0; ir < mc; ir += MR) {
            const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
            uk.fn(kc, Ap + ir * kc, bp, C + ir * ldc + jr, ldc, mr, nr, flags, bb);
        }
    }
}

void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, bool trans_a, const float* B,
           int64_t ldb, bool trans_b, float* C, int64_t ldc, const float* bias, bool relu, bool accumulate,
           int threads) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        // op(A) @ op(B) is the zero matrix: only the epilogue remains.
        for (int64_t i = 0; i < M; ++i) {
            float* c = C + i * ldc;
            for (int64_t j = 0; j < N; ++j) {
                float v = accumulate ? c[j] : 0.0f;
                if (bias) v += bias[j];
                if (relu && v < 0.0f) v = 0.0f;
                c[j] = v;
            }
        }
        return;
    }
    const UKernel& uk = active_ukernel();
    const int64_t MR = uk.mr, NR = uk.nr;
    const int64_t KC = uk.kc;

    // Threads: never more than the work supports (about 64^3 multiply-adds per thread at least).
    int64_t nt = threads > 0 ? threads : num_threads();
    if (in_parallel()) nt = 1;
    const double work = static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
    nt = std::max<int64_t>(1, std::min<int64_t>(nt, static_cast<int64_t>(work / (64.0 * 64.0 * 64.0))));

    // Row blocks: about MC rows each, their count a multiple of the thread count when M allows.
    const int64_t mpanels = ceil_div(M, MR);
    int64_t mb = ceil_div(M, uk.mc);
    if (nt > 1) mb = std::min(mpanels, ceil_div(mb, nt) * nt);
    const int64_t panels_per_block = ceil_div(mpanels, mb);
    const int64_t mc_blk = panels_per_block * MR;
    mb = ceil_div(mpanels, panels_per_block);
    // When there are fewer row blocks than threads, split each B block's panels between threads too.
    const int64_t nsplit = mb >= nt ? 1 : ceil_div(nt, mb);
    const int64_t items = mb * nsplit;

    const int64_t nc_max = std::min<int64_t>(ceil_div(N, NR) * NR, uk.nc);
    const int64_t kc_max = std::min<int64_t>(K, KC);
    float* Bp = tl_pack_b.get(static_cast<size_t>(kc_max * nc_max));
    const size_t a_need = static_cast<size_t>(kc_max * mc_blk);

    ExceptionCarrier carrier;
#ifdef _OPENMP
#pragma omp parallel num_threads(static_cast<int>(nt)) if (nt > 1)
#endif
    {
        float* Ap = nullptr;
        carrier.run([&] { Ap = tl_pack_a.get(a_need); });
#ifdef _OPENMP
#pragma omp barrier
#endif
        if (!carrier.failed()) {
            for (int64_t jc = 0; jc < N; jc += uk.nc) {
                const int64_t nc = std::min<int64_t>(uk.nc, N - jc);
                const int64_t npanels = ceil_div(nc, NR);
                for (int64_t pc = 0; pc < K; pc += KC) {
                    const int64_t kc = std::min<int64_t>(KC, K - pc);
                    const bool last = pc + kc >= K;
                    const int flags = ((accumulate || pc > 0) ? kAccumulate : 0) | ((relu && last) ? kRelu : 0);
                    const float* blk_bias = (bias && last) ? bias + jc : nullptr;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
                    for (int64_t t = 0; t < npanels; ++t) {
                        const int64_t j = t * NR;
                        pack_b_panel(uk, B, ldb, trans_b, pc, kc, jc + j, std::min<int64_t>(NR, nc - j),
                                     Bp + j * kc, nullptr);
                    }
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
                    for (int64_t it = 0; it < items; ++it) {
                        const int64_t ib = it / nsplit, s = it % nsplit;
                        const int64_t i0 = ib * mc_blk;
                        const int64_t mc = std::min<int64_t>(mc_blk, M - i0);
                        const int64_t t0 = npanels * s / nsplit, t1 = npanels * (s + 1) / nsplit;
                        if (t0 >= t1) continue;
                        pack_a(uk, A, lda, trans_a, i0, mc, pc, kc, Ap);
                        const int64_t j0 = t0 * NR;
                        const int64_t ncs = std::min<int64_t>(t1 * NR, nc) - j0;
                        macro_kernel(uk, mc, ncs, kc, Ap, Bp + j0 * kc, C + i0 * ldc + jc + j0, ldc, flags,
                                     blk_bias ? blk_bias + j0 : nullptr);
                    }
                }
            }
        }
    }
    carrier.rethrow();
}

void sgemm_naive(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, bool trans_a,
                 const float* B, int64_t ldb, bool trans_b, float* C, int64_t ldc, const float* bias,
                 bool relu, bool accumulate) {
    for (int64_t i = 0; i < M; ++i) {
        for (int64_t j = 0; j < N; ++j) {
            double s = 0.0;
            for (int64_t p = 0; p < K; ++p) {
                const float a = trans_a ? A[p * lda + i] : A[i * lda + p];
                const float b = trans_b ? B[j * ldb + p] : B[p * ldb + j];
                s += static_cast<double>(a) * static_cast<double>(b);
            }
            float v = static_cast<float>(s);
            if (accumulate) v += C[i * ldc + j];
            if (bias) v += bias[j];
            if (relu && v < 0.0f) v = 0.0f;
            C[i * ldc + j] = v;
        }
    }
}

}  // namespace pixrank
