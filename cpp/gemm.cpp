// pixrank kernels: the SGEMM driver (blocking, packing, threading); see gemm.hpp.
//
// Threads take independent output tiles (a grid chosen by choose_grid, handed out dynamically, no
// barriers) on the GEMM's own worker pool (GemmPool below: workers that spin, then yield, then sleep;
// OpenMP only when another thread holds the pool). Within a tile, the loop nest (BLIS names): jc over NC columns -> pc over KC depth ->
// [pack B block] -> ic over MC rows -> [pack A block] -> jr over NR panels -> ir over MR panels ->
// micro-kernel. Packed blocks live in thread-local workspaces reused across calls.
#include "gemm.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <initializer_list>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>  // getpid
#endif
#if defined(__SSE2__)
#include <immintrin.h>  // SSE only: this file is compiled without ISA flags (the x86-64 baseline)
#endif

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
}  // namespace

int64_t balanced_block(int64_t extent, int64_t max_block, int64_t multiple) {
    if (extent <= max_block) return extent;
    const int64_t blocks = ceil_div(extent, max_block);
    const int64_t b = ceil_div(ceil_div(extent, blocks), multiple) * multiple;
    return std::min(b, max_block);  // max_block is a multiple of `multiple`
}

namespace {

// Workspaces reused across calls (per thread): packed A blocks and packed B blocks.
thread_local AlignedBuffer tl_pack_a;
thread_local AlignedBuffer tl_pack_b;
}  // namespace

namespace {

// dst[p * W + r] = rows[r][p] (* scale[r] when scale is not null) for p < kc, r < W: W row streams
// interleaved depth-major, the layout of a packed A panel (W = MR) and of a packed B panel of
// transposed B (W = NR). With SSE, four depths at a time: each group of four rows is a 4 x 4 transpose
// (four 16-byte loads and stores), a last pair of rows (W = 6) two 8-byte stores per depth. The scalar
// interleave (W loads and W stores per depth) took ~12 % of a 128 x 200 x 60 product, and re-packing
// the database ~37 % of an exact cosine top-k.
template <int W>
inline void interleave_rows(const float* const* rows, int64_t kc, float* __restrict dst, const float* scale) {
    static_assert(W % 4 == 0 || W % 4 == 2, "interleave_rows: W must be 4g or 4g + 2");
    int64_t p = 0;
#if defined(__SSE2__)
    for (; p + 4 <= kc; p += 4) {
        float* d = dst + p * W;
#pragma GCC unroll 8
        for (int g = 0; g + 4 <= W; g += 4) {
            __m128 r0 = _mm_loadu_ps(rows[g] + p), r1 = _mm_loadu_ps(rows[g + 1] + p);
            __m128 r2 = _mm_loadu_ps(rows[g + 2] + p), r3 = _mm_loadu_ps(rows[g + 3] + p);
            _MM_TRANSPOSE4_PS(r0, r1, r2, r3);  // r0 = (rows g..g+3 at depth p), r1 at p + 1, ...
            if (scale) {
                const __m128 sc = _mm_loadu_ps(scale + g);
                r0 = _mm_mul_ps(r0, sc);
                r1 = _mm_mul_ps(r1, sc);
                r2 = _mm_mul_ps(r2, sc);
                r3 = _mm_mul_ps(r3, sc);
            }
            _mm_storeu_ps(d + g, r0);
            _mm_storeu_ps(d + W + g, r1);
            _mm_storeu_ps(d + 2 * W + g, r2);
            _mm_storeu_ps(d + 3 * W + g, r3);
        }
        if (W % 4 == 2) {
            __m128 x = _mm_loadu_ps(rows[W - 2] + p), y = _mm_loadu_ps(rows[W - 1] + p);
            if (scale) {
                x = _mm_mul_ps(x, _mm_set1_ps(scale[W - 2]));
                y = _mm_mul_ps(y, _mm_set1_ps(scale[W - 1]));
            }
            const __m128 lo = _mm_unpacklo_ps(x, y), hi = _mm_unpackhi_ps(x, y);
            _mm_storel_pi(reinterpret_cast<__m64*>(d + W - 2), lo);
            _mm_storeh_pi(reinterpret_cast<__m64*>(d + 2 * W - 2), lo);
            _mm_storel_pi(reinterpret_cast<__m64*>(d + 3 * W - 2), hi);
            _mm_storeh_pi(reinterpret_cast<__m64*>(d + 4 * W - 2), hi);
        }
    }
#endif
    for (; p < kc; ++p) {
        float* d = dst + p * W;
        if (scale) {
#pragma GCC unroll 32
            for (int r = 0; r < W; ++r) d[r] = rows[r][p] * scale[r];
        } else {
#pragma GCC unroll 32
            for (int r = 0; r < W; ++r) d[r] = rows[r][p];
        }
    }
}

// The packing loops are templates on the micro-tile size, so that the inner loops over MR rows or
// NR columns are fully unrolled with the row pointers in registers (a run-time MR made them scalar
// loops that cost half as much as the multiply itself in convolutions).
template <int MR>
void pack_a_impl(const float* A, int64_t lda, bool trans_a, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                 float* __restrict Ap) {
    for (int64_t ir = 0; ir < mc; ir += MR) {
        const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
        float* __restrict dst = Ap + ir * kc;
        if (!trans_a) {
            // op(A)[i, p] = A[i * lda + p]: MR row streams, written p-major.
            if (mr == MR) {
                const float* rows[MR];
                for (int r = 0; r < MR; ++r) rows[r] = A + (i0 + ir + r) * lda + p0;
                interleave_rows<MR>(rows, kc, dst, nullptr);
            } else {
                for (int64_t p = 0; p < kc; ++p)
                    for (int r = 0; r < MR; ++r) dst[p * MR + r] = 0.0f;
                for (int r = 0; r < mr; ++r) {
                    const float* src = A + (i0 + ir + r) * lda + p0;
                    for (int64_t p = 0; p < kc; ++p) dst[p * MR + r] = src[p];
                }
            }
        } else {
            // A stored (K, M): op(A)[i, p] = A[p * lda + i], contiguous in i.
            for (int64_t p = 0; p < kc; ++p) {
                const float* src = A + (p0 + p) * lda + i0 + ir;
                float* d = dst + p * MR;
                if (mr == MR) {
#pragma GCC unroll 32
                    for (int r = 0; r < MR; ++r) d[r] = src[r];
                } else {
                    for (int r = 0; r < mr; ++r) d[r] = src[r];
                    for (int r = mr; r < MR; ++r) d[r] = 0.0f;
                }
            }
        }
    }
}

template <int NR>
void pack_b_impl(const float* B, int64_t ldb, bool trans_b, int64_t p0, int64_t kc, int64_t j0, int64_t nr,
                 float* __restrict Bp, const float* col_scale) {
    float scale[NR];
    for (int c = 0; c < NR; ++c) scale[c] = (col_scale && c < nr) ? col_scale[j0 + c] : 1.0f;
    if (!trans_b) {
        // op(B)[p, j] = B[p * ldb + j], contiguous in j.
        for (int64_t p = 0; p < kc; ++p) {
            const float* src = B + (p0 + p) * ldb + j0;
            float* __restrict d = Bp + p * NR;
            if (nr == NR) {
                if (col_scale) {
#pragma GCC unroll 32
                    for (int c = 0; c < NR; ++c) d[c] = src[c] * scale[c];
                } else {
#pragma GCC unroll 32
                    for (int c = 0; c < NR; ++c) d[c] = src[c];
                }
            } else {
                for (int64_t c = 0; c < nr; ++c) d[c] = src[c] * scale[c];
                for (int64_t c = nr; c < NR; ++c) d[c] = 0.0f;
            }
        }
    } else {
        // B stored (N, K): op(B)[p, j] = B[j * ldb + p]; NR row streams, written p-major.
        if (nr == NR) {
            const float* cols[NR];
            for (int c = 0; c < NR; ++c) cols[c] = B + (j0 + c) * ldb + p0;
            interleave_rows<NR>(cols, kc, Bp, col_scale ? scale : nullptr);
        } else {
            for (int64_t p = 0; p < kc; ++p)
                for (int c = 0; c < NR; ++c) Bp[p * NR + c] = 0.0f;
            for (int64_t c = 0; c < nr; ++c) {
                const float* src = B + (j0 + c) * ldb + p0;
                for (int64_t p = 0; p < kc; ++p) Bp[p * NR + c] = src[p] * scale[c];
            }
        }
    }
}

// Packs op(B)[p0 : p0+kc, j0 : j0+nc] into ceil(nc / NR) micro-panels. Untransposed B is read row by
// row, each row once and in order (one stream the hardware prefetcher follows), and scattered to the
// panels; panel by panel it was read as ceil(nc / NR) interleaved column strips, and packing took 10-15 %
// of a 128 x 784 x 200 product. Transposed B keeps the panel-wise order (NR row streams per panel).
template <int NR>
void pack_b_block_impl(const float* B, int64_t ldb, bool trans_b, int64_t p0, int64_t kc, int64_t j0,
                       int64_t nc, float* __restrict Bp) {
    if (trans_b) {
        for (int64_t j = 0; j < nc; j += NR)
            pack_b_impl<NR>(B, ldb, true, p0, kc, j0 + j, std::min<int64_t>(NR, nc - j), Bp + j * kc, nullptr);
        return;
    }
    const int64_t full = nc / NR, rest = nc % NR;
    const int64_t panel = kc * NR;  // floats per packed panel
    for (int64_t p = 0; p < kc; ++p) {
        const float* __restrict src = B + (p0 + p) * ldb + j0;
        float* __restrict d = Bp + p * NR;
        for (int64_t t = 0; t < full; ++t) {
#pragma GCC unroll 32
            for (int c = 0; c < NR; ++c) d[t * panel + c] = src[t * NR + c];
        }
        if (rest) {  // branch-free, in bounds (s[rest - 1] is the last read): no memcpy/memset calls
            float* __restrict e = d + full * panel;
            const float* __restrict s = src + full * NR;
#pragma GCC unroll 32
            for (int c = 0; c < NR; ++c) e[c] = c < rest ? s[c < rest ? c : rest - 1] : 0.0f;
        }
    }
}

}  // namespace

void pack_b(const UKernel& uk, const float* B, int64_t ldb, bool trans_b, int64_t p0, int64_t kc, int64_t j0,
            int64_t nc, float* Bp) {
    switch (uk.nr) {
        case 8: return pack_b_block_impl<8>(B, ldb, trans_b, p0, kc, j0, nc, Bp);
        case 16: return pack_b_block_impl<16>(B, ldb, trans_b, p0, kc, j0, nc, Bp);
        case 32: return pack_b_block_impl<32>(B, ldb, trans_b, p0, kc, j0, nc, Bp);
        default: throw std::logic_error("pack_b: unsupported micro-tile width");
    }
}

void pack_a(const UKernel& uk, const float* A, int64_t lda, bool trans_a, int64_t i0, int64_t mc, int64_t p0,
            int64_t kc, float* Ap) {
    switch (uk.mr) {
        case 4: return pack_a_impl<4>(A, lda, trans_a, i0, mc, p0, kc, Ap);
        case 6: return pack_a_impl<6>(A, lda, trans_a, i0, mc, p0, kc, Ap);
        case 12: return pack_a_impl<12>(A, lda, trans_a, i0, mc, p0, kc, Ap);
        default: throw std::logic_error("pack_a: unsupported micro-tile height");
    }
}

void pack_b_panel(const UKernel& uk, const float* B, int64_t ldb, bool trans_b, int64_t p0, int64_t kc,
                  int64_t j0, int64_t nr, float* Bp, const float* col_scale) {
    switch (uk.nr) {
        case 8: return pack_b_impl<8>(B, ldb, trans_b, p0, kc, j0, nr, Bp, col_scale);
        case 16: return pack_b_impl<16>(B, ldb, trans_b, p0, kc, j0, nr, Bp, col_scale);
        case 32: return pack_b_impl<32>(B, ldb, trans_b, p0, kc, j0, nr, Bp, col_scale);
        default: throw std::logic_error("pack_b_panel: unsupported micro-tile width");
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

namespace {

// One independent task: C[i0:i0+m, j0:j0+n] with the serial GotoBLAS loop nest, packing its own B
// and A blocks into the calling thread's workspaces.
void gemm_tile(const UKernel& uk, int64_t m, int64_t n, int64_t K, const float* A, int64_t lda, bool trans_a,
               const float* B, int64_t ldb, bool trans_b, float* C, int64_t ldc, const float* bias, bool relu,
               bool accumulate, int64_t i0, int64_t j0) {
    const int64_t NR = uk.nr;
    // Balanced blocks: K, m and n are cut into as few blocks as the cache sizes allow, all of about the
    // same size (a multiple of 4 in depth, of the micro-tile otherwise), instead of full blocks and a
    // thin tail (K = 784 with KC = 256 gave 256+256+256+16: a 16-deep pass over C that costs as much
    // C traffic and packing set-up as a full one).
    const int64_t KCb = balanced_block(K, uk.kc, 4);
    const int64_t MCb = balanced_block(m, uk.mc, uk.mr);
    const int64_t NCb = balanced_block(n, uk.nc, NR);
    const int64_t kc_max = std::min<int64_t>(K, KCb);
    const int64_t nc_max = ceil_div(std::min(n, NCb), NR) * NR;  // whole panels, the last zero-padded
    const int64_t mc_max = ceil_div(std::min(m, MCb), uk.mr) * uk.mr;
    float* Bp = tl_pack_b.get(static_cast<size_t>(kc_max * nc_max));
    float* Ap = tl_pack_a.get(static_cast<size_t>(kc_max * mc_max));
    for (int64_t jc = 0; jc < n; jc += NCb) {
        const int64_t nc = std::min<int64_t>(NCb, n - jc);
        for (int64_t pc = 0; pc < K; pc += KCb) {
            const int64_t kc = std::min<int64_t>(KCb, K - pc);
            const bool last = pc + kc >= K;
            const int flags = ((accumulate || pc > 0) ? kAccumulate : 0) | ((relu && last) ? kRelu : 0);
            const float* blk_bias = (bias && last) ? bias + j0 + jc : nullptr;
            pack_b(uk, B, ldb, trans_b, pc, kc, j0 + jc, nc, Bp);
            for (int64_t ic = 0; ic < m; ic += MCb) {
                const int64_t mc = std::min<int64_t>(MCb, m - ic);
                pack_a(uk, A, lda, trans_a, i0 + ic, mc, pc, kc, Ap);
                macro_kernel(uk, mc, nc, kc, Ap, Bp, C + (i0 + ic) * ldc + j0 + jc, ldc, flags, blk_bias);
            }
        }
    }
}

// Splits the M x N output into mt x nt independent tiles for `threads` threads: the number of tiles
// a multiple of the thread count (balanced on a quiet machine) and about four per thread when the
// shape allows and the product is large (dynamic scheduling absorbs preemption on a busy one),
// tiles as square as possible and at least min_m x min_n so that packing stays amortised.
void choose_grid(int64_t M, int64_t N, int64_t threads, int64_t min_m, int64_t min_n, bool large, int64_t* mt,
                 int64_t* nt) {
    const int64_t max_mt = std::max<int64_t>(1, M / min_m), max_nt = std::max<int64_t>(1, N / min_n);
    const std::initializer_list<int64_t> large_order{4, 3, 2, 1}, small_order{1, 2};
    for (int64_t per : large ? large_order : small_order) {
        const int64_t want = per * threads;
        int64_t best_m = 0, best_n = 0;
        double best_score = 0.0;
        for (int64_t a = 1; a <= want; ++a) {
            if (want % a != 0) continue;
            const int64_t b = want / a;  // a row tiles, b column tiles
            if (a > max_mt || b > max_nt) continue;
            const double tm = static_cast<double>(M) / a, tn = static_cast<double>(N) / b;
            const double score = std::min(tm, tn) / std::max(tm, tn);  // 1 = square tiles
            if (score > best_score) {
                best_score = score;
                best_m = a;
                best_n = b;
            }
        }
        if (best_m > 0) {
            *mt = best_m;
            *nt = best_n;
            return;
        }
    }
    // Too small for a multiple of the thread count: as many tiles as the minimum sizes allow.
    *mt = std::min(max_mt, threads);
    *nt = std::min(max_nt, std::max<int64_t>(1, threads / *mt));
}

}  // namespace


// ---------------------------------------------------------------------------------------------
// The GEMM's own worker pool
// ---------------------------------------------------------------------------------------------
//
// Why not OpenMP here: how long an idle OpenMP worker spins before it sleeps is set once per process,
// for every OpenMP user in it, and pixrank.ops sets GOMP_SPINCOUNT=1000 before libgomp loads (unless
// the user set it or OMP_WAIT_POLICY; a long spin made 2-thread kernels far slower than 1 thread on a
// loaded machine): the worker then sleeps in the kernel almost at once, so every parallel region pays
// a futex wake-up at the fork and another at the join. On this 2-core VM that made a 2-thread
// 128 x 784 x 200 product slower than a 1-thread one (0.77-0.79 ms against 0.63 ms; 0.40 ms with
// GOMP_SPINCOUNT=300000, or in a process that had loaded PyTorch's libgomp before pixrank.ops, where
// the setting comes too late). The pool below keeps the policy for the GEMM in our hands: an idle
// worker spins (pause) for kSpinPauseUs, then yields its core to any other runnable thread
// (sched_yield, so a loaded machine's work is not starved) until kSpinYieldUs after its last task,
// then sleeps on a condition variable; the caller never waits for a worker that
// has not yet woken up (it takes the tiles itself), only for tiles a worker has started.
//
// Protocol (all atomics sequentially consistent): the caller writes the job, then publishes
// state = 2 * generation + 1 ("open"). A worker that sees a new open generation registers (active++),
// re-reads state, and only if it is still the same open generation claims a participant slot and then
// tiles (next++) until none are left, then deregisters. The caller claims tiles too; when none are left
// it stores state = 2 * generation ("closed") and waits until active == 0. A worker registering after
// the close sees it and leaves without touching the job, so the job (on the caller's stack) is never
// read after sgemm returns.
namespace {

constexpr int64_t kSpinPauseUs = 50;
constexpr int64_t kSpinYieldUs = 2000;

inline void cpu_relax() {
#if defined(__SSE2__)
    _mm_pause();
#endif
}

struct PoolJob {
    void (*run)(void* ctx, int64_t tile);
    void* ctx;
    int64_t tiles;
    int64_t max_workers;  // participants besides the caller
};

class GemmPool {
public:
    // Runs job.run(ctx, t) for every t in [0, job.tiles) on the caller and up to job.max_workers
    // workers. Returns false (nothing run) when another thread is using the pool.
    bool run(PoolJob job) {
        if (busy_.test_and_set(std::memory_order_acquire)) return false;
        job.max_workers = grow(job.max_workers);
        job_ = job;
        next_.store(0);
        joined_.store(0);
        const uint64_t gen = ++generation_;
        state_.store(2 * gen + 1);
        if (sleepers_.load() > 0) {
            std::lock_guard<std::mutex> lock(mu_);
            cv_.notify_all();
        }
        for (int64_t t; (t = next_.fetch_add(1)) < job.tiles;) job.run(job.ctx, t);
        state_.store(2 * gen);
        for (int spins = 0; active_.load() != 0; ++spins) {
            if (spins < 4096) cpu_relax();
            else std::this_thread::yield();
        }
        busy_.clear(std::memory_order_release);
        return true;
    }

private:
    // Starts workers until there are `want`; returns how many there are (fewer if the system refuses
    // a thread: the caller then does more of the tiles itself).
    int64_t grow(int64_t want) {
        try {
            while (threads_ < want) {
                std::thread(&GemmPool::worker, this).detach();  // the pool lives until the process ends
                ++threads_;
            }
        } catch (const std::system_error&) {
        }
        return std::min(threads_, want);
    }

    void worker() {
        uint64_t done_gen = 0;
        auto last_work = std::chrono::steady_clock::now();
        for (;;) {
            uint64_t s = state_.load();
            if ((s & 1) == 0 || s / 2 == done_gen) {
                // Nothing new: spin, then yield, then sleep until the state changes.
                const auto now = std::chrono::steady_clock::now();
                const int64_t idle_us =
                    std::chrono::duration_cast<std::chrono::microseconds>(now - last_work).count();
                if (idle_us < kSpinPauseUs) {
                    for (int i = 0; i < 64 && state_.load() == s; ++i) cpu_relax();
                } else if (idle_us < kSpinYieldUs) {
                    std::this_thread::yield();
                } else {
                    std::unique_lock<std::mutex> lock(mu_);
                    sleepers_.fetch_add(1);
                    cv_.wait(lock, [&] { return state_.load() != s; });
                    sleepers_.fetch_sub(1);
                    last_work = std::chrono::steady_clock::now();  // woken: spin again before sleeping
                }
                continue;
            }
            done_gen = s / 2;
            active_.fetch_add(1);
            if (state_.load() == s && joined_.fetch_add(1) < job_.max_workers) {
                const PoolJob job = job_;
                for (int64_t t; (t = next_.fetch_add(1)) < job.tiles;) job.run(job.ctx, t);
            }
            active_.fetch_sub(1);
            last_work = std::chrono::steady_clock::now();
        }
    }

    std::atomic_flag busy_ = ATOMIC_FLAG_INIT;
    int64_t threads_ = 0;  // guarded by busy_
    uint64_t generation_ = 0;  // guarded by busy_
    PoolJob job_{};  // written by the caller before the open state is published
    std::atomic<uint64_t> state_{0};
    std::atomic<int64_t> next_{0};
    std::atomic<int64_t> joined_{0};
    std::atomic<int64_t> active_{0};
    std::atomic<int> sleepers_{0};
    std::mutex mu_;
    std::condition_variable cv_;
};

// The process's pool, created on first use; a process forked from one that had a pool makes its own
// (the parent's workers do not exist in the child). Never destroyed: detached workers may be asleep
// in it at exit.
GemmPool* gemm_pool() {
    static std::mutex create_mu;
#if defined(__unix__) || defined(__APPLE__)
    static GemmPool* pool = nullptr;
    static pid_t owner = 0;
    std::lock_guard<std::mutex> lock(create_mu);
    if (!pool || owner != getpid()) {
        pool = new GemmPool();
        owner = getpid();
    }
    return pool;
#else
    static GemmPool* pool = new GemmPool();
    return pool;
#endif
}

}  // namespace

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

    // Threads: never more than the work supports (about 64^3 multiply-adds per thread at least).
    int64_t nt = threads > 0 ? threads : num_threads();
    if (in_parallel() || serial_after_fork()) nt = 1;
    const double work = static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
    nt = std::max<int64_t>(1, std::min<int64_t>(nt, static_cast<int64_t>(std::min(work / (64.0 * 64.0 * 64.0), 1e6))));
    if (nt == 1) {
        gemm_tile(uk, M, N, K, A, lda, trans_a, B, ldb, trans_b, C, ldc, bias, relu, accumulate, 0, 0);
        return;
    }

    // Independent output tiles, scheduled dynamically: no barrier inside the parallel region, so a
    // preempted thread never stalls the others. Tile edges fall on micro-tile boundaries.
    int64_t gm = 1, gn = 1;
    // Large products: about four tiles per thread; small ones (under ~32M multiply-adds per thread):
    // one tile per thread, so that packing stays a small part of the work.
    const bool large = work / static_cast<double>(nt) >= 32.0 * 1024 * 1024;
    choose_grid(M, N, nt, 4 * MR, 2 * NR, large, &gm, &gn);
    const int64_t mpanels = ceil_div(M, MR), npanels = ceil_div(N, NR);
    gm = std::min(gm, mpanels);
    gn = std::min(gn, npanels);
    const int64_t tiles = gm * gn;
    nt = std::min(nt, tiles);
    ExceptionCarrier carrier;
    struct TileCtx {
        const UKernel* uk;
        int64_t M, N, K, gm, gn, mpanels, npanels;
        const float *A, *B, *bias;
        int64_t lda, ldb, ldc;
        bool trans_a, trans_b, relu, accumulate;
        float* C;
        ExceptionCarrier* carrier;
    } ctx{&uk, M, N, K, gm, gn, mpanels, npanels, A, B, bias, lda, ldb, ldc, trans_a, trans_b, relu,
          accumulate, C, &carrier};
    auto run_tile = [](void* p, int64_t t) {
        const TileCtx& c = *static_cast<const TileCtx*>(p);
        c.carrier->run([&] {
            const int64_t MR = c.uk->mr, NR = c.uk->nr;
            const int64_t ti = t / c.gn, tj = t % c.gn;
            const int64_t i0 = std::min(c.M, c.mpanels * ti / c.gm * MR);
            const int64_t i1 = std::min(c.M, c.mpanels * (ti + 1) / c.gm * MR);
            const int64_t j0 = std::min(c.N, c.npanels * tj / c.gn * NR);
            const int64_t j1 = std::min(c.N, c.npanels * (tj + 1) / c.gn * NR);
            if (i0 < i1 && j0 < j1)
                gemm_tile(*c.uk, i1 - i0, j1 - j0, c.K, c.A, c.lda, c.trans_a, c.B, c.ldb, c.trans_b, c.C, c.ldc,
                          c.bias, c.relu, c.accumulate, i0, j0);
        });
    };
    if (gemm_pool()->run(PoolJob{run_tile, &ctx, tiles, nt - 1})) {
        carrier.rethrow();
        return;
    }
    // Another thread is using the pool: OpenMP instead.
#ifdef _OPENMP
#pragma omp parallel for num_threads(static_cast<int>(nt)) schedule(dynamic, 1) if (nt > 1)
#endif
    for (int64_t t = 0; t < tiles; ++t) {
        carrier.run([&] {
            const int64_t ti = t / gn, tj = t % gn;
            const int64_t i0 = std::min(M, mpanels * ti / gm * MR), i1 = std::min(M, mpanels * (ti + 1) / gm * MR);
            const int64_t j0 = std::min(N, npanels * tj / gn * NR), j1 = std::min(N, npanels * (tj + 1) / gn * NR);
            if (i0 < i1 && j0 < j1)
                gemm_tile(uk, i1 - i0, j1 - j0, K, A, lda, trans_a, B, ldb, trans_b, C, ldc, bias, relu, accumulate,
                          i0, j0);
        });
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
