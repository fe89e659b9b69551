// pixrank kernels: exact cosine top-k (see kernels.hpp for shapes).
//
// Method: queries are L2-normalised once and packed as GEMM A panels; the database is processed in
// blocks of NB vectors, each packed as GEMM B panels with every vector scaled by its inverse norm
// while packing (no normalised copy of the database is made). The SGEMM micro-kernels compute a
// (query block x NB) tile of cosine scores in a small thread-local buffer, and a running top-k per
// query consumes it at once: a score is first compared with the query's current k-th best (a single
// comparison rejects almost every score), and only survivors are inserted. The (Q, n) score matrix
// is never held. Threads split the queries (each owns its output rows) or, for few queries, the
// database (per-thread top-k lists merged at the end).
//
// Ordering: score descending, then index ascending. The acceptance test uses the same total order,
// so the result does not depend on the blocking or the thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "gemm.hpp"
#include "kernels.hpp"
#include "runtime.hpp"

namespace pixrank {

namespace {

thread_local AlignedBuffer tl_qpack;   // packed queries of a task
thread_local AlignedBuffer tl_dbpack;  // packed database block
thread_local AlignedBuffer tl_tile;    // score tile

inline bool better(float s1, int64_t i1, float s2, int64_t i2) { return s1 > s2 || (s1 == s2 && i1 < i2); }

// A top-k list for one query: vals/idx sorted best first, `count` valid entries, capacity kk.
// For small kk a sorted insertion; for large kk an unsorted buffer of 2*kk compacted with
// nth_element whenever it fills (amortised O(1) per accepted candidate).
struct TopK {
    int64_t kk;
    bool small;
    float* vals;
    int64_t* idx;
    int64_t count = 0;
    // threshold: the current worst kept entry once full (small mode) / after a compaction (large mode)
    bool have_thr = false;
    float thr_val = 0.0f;
    int64_t thr_idx = 0;

    void offer(float s, int64_t i) {
        if (have_thr && !better(s, i, thr_val, thr_idx)) return;
        if (small) {
            int64_t pos = count < kk ? count : kk - 1;
            if (count < kk) ++count;
            while (pos > 0 && better(s, i, vals[pos - 1], idx[pos - 1])) {
                vals[pos] = vals[pos - 1];
                idx[pos] = idx[pos - 1];
                --pos;
            }
            vals[pos] = s;
            idx[pos] = i;
            if (count == kk) {
                have_thr = true;
                thr_val = vals[kk - 1];
                thr_idx = idx[kk - 1];
            }
        } else {
            vals[count] = s;
            idx[count] = i;
            if (++count == 2 * kk) compact();
        }
    }

    // Large mode: keep the best kk of the buffer (unsorted) and raise the threshold.
    void compact() {
        std::vector<int64_t> order(static_cast<size_t>(count));
        for (int64_t t = 0; t < count; ++t) order[static_cast<size_t>(t)] = t;
        auto cmp = [&](int64_t a, int64_t b) { return better(vals[a], idx[a], vals[b], idx[b]); };
        if (count > kk) std::nth_element(order.begin(), order.begin() + kk, order.end(), cmp);
        const int64_t keep = std::min(count, kk);
        std::vector<float> v(static_cast<size_t>(keep));
        std::vector<int64_t> ix(static_cast<size_t>(keep));
        for (int64_t t = 0; t < keep; ++t) {
            v[static_cast<size_t>(t)] = vals[order[static_cast<size_t>(t)]];
            ix[static_cast<size_t>(t)] = idx[order[static_cast<size_t>(t)]];
        }
        std::copy(v.begin(), v.end(), vals);
        std::copy(ix.begin(), ix.end(), idx);
        count = keep;
        if (count == kk) {
            int64_t w = 0;
            for (int64_t t = 1; t < count; ++t)
                if (better(vals[w], idx[w], vals[t], idx[t])) w = t;
            have_thr = true;
            thr_val = vals[w];
            thr_idx = idx[w];
        }
    }

    // Final order: best first, exactly min(kk, count) entries.
    void finish() {
        if (!small) compact();
        std::vector<int64_t> order(static_cast<size_t>(count));
        for (int64_t t = 0; t < count; ++t) order[static_cast<size_t>(t)] = t;
        std::sort(order.begin(), order.end(),
                  [&](int64_t a, int64_t b) { return better(vals[a], idx[a], vals[b], idx[b]); });
        std::vector<float> v(static_cast<size_t>(count));
        std::vector<int64_t> ix(static_cast<size_t>(count));
        for (int64_t t = 0; t < count; ++t) {
            v[static_cast<size_t>(t)] = vals[order[static_cast<size_t>(t)]];
            ix[static_cast<size_t>(t)] = idx[order[static_cast<size_t>(t)]];
        }
        std::copy(v.begin(), v.end(), vals);
        std::copy(ix.begin(), ix.end(), idx);
    }
};

constexpr int64_t kSmallK = 64;

// Inverse L2 norms of `rows` vectors of length d (0 for a zero vector); throws on non-finite input.
void inverse_norms(const char* what, int64_t rows, int64_t d, const float* x, float* inv) {
    parallel_for(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, d)), [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            const float* v = x + i * d;
            double s = 0.0;
            for (int64_t j = 0; j < d; ++j) s += static_cast<double>(v[j]) * static_cast<double>(v[j]);
            if (!std::isfinite(s))
                throw std::invalid_argument(std::string("cosine_topk: ") + what + " row " + std::to_string(i) +
                                            " contains a non-finite value (inf or nan)");
            inv[i] = s > 0.0 ? static_cast<float>(1.0 / std::sqrt(s)) : 0.0f;
        }
    });
}

}  // namespace

void cosine_topk(int64_t Q, int64_t n, int64_t d, const float* queries, const float* database, int64_t k,
                 int64_t* indices, float* scores) {
    if (k < 1) throw std::invalid_argument("cosine_topk: k must be >= 1, got " + std::to_string(k));
    const int64_t kk = std::min(k, n);
    if (Q == 0 || kk == 0) return;

    std::vector<float> qinv(static_cast<size_t>(Q)), dinv(static_cast<size_t>(n));
    inverse_norms("queries", Q, d, queries, qinv.data());
    inverse_norms("database", n, d, database, dinv.data());
    // Normalised queries (Q, d): small next to the database.
    std::vector<float> qn(static_cast<size_t>(Q * std::max<int64_t>(d, 1)));
    for (int64_t i = 0; i < Q; ++i)
        for (int64_t j = 0; j < d; ++j) qn[static_cast<size_t>(i * d + j)] = queries[i * d + j] * qinv[static_cast<size_t>(i)];

    const UKernel& uk = active_ukernel();
    const int64_t MR = uk.mr, NR = uk.nr, KC = uk.kc;
    const int64_t dd = std::max<int64_t>(d, 1);  // d == 0: every score is 0 (packing writes zeros)
    // Database block: about 128 KiB of packed floats, a multiple of NR.
    const int64_t NB = std::max<int64_t>(NR, std::min<int64_t>(1024, (32768 / dd) / NR * NR));
    const int64_t QB = std::max<int64_t>(MR, (96 / MR) * MR);  // query rows per score tile

    const int nt = num_threads();
    // Split queries when there are enough of them; otherwise split the database and merge.
    const bool split_queries = nt == 1 || Q >= 8 * MR * nt;
    const int64_t tasks = nt;
    const bool small = kk <= kSmallK;
    const int64_t cap = small ? kk : 2 * kk;

    // Per-task top-k storage for database splitting (Q lists per task); queries splitting writes
    // its lists into the outputs directly when small, else into per-query buffers.
    std::vector<float> tvals;
    std::vector<int64_t> tidx;
    std::vector<int64_t> tcount;
    const int64_t lists = split_queries ? Q : Q * tasks;
    if (!(split_queries && small)) {
        tvals.resize(static_cast<size_t>(checked_mul(lists, cap, "cosine_topk")));
        tidx.resize(static_cast<size_t>(lists * cap));
    }
    tcount.assign(static_cast<size_t>(lists), 0);

    auto run_task = [&](int64_t task, int64_t q0, int64_t q1, int64_t n0, int64_t n1) {
        const int64_t nq = q1 - q0;
        if (nq <= 0 || n1 <= n0) return;
        const int64_t nq_pad = (nq + MR - 1) / MR * MR;
        const int64_t kblocks = (d + KC - 1) / KC;
        // Pack this task's queries once, one region per depth block.
        float* Aq = tl_qpack.get(static_cast<size_t>(nq_pad * dd));
        for (int64_t pc = 0; pc < d; pc += KC) {
            const int64_t kc = std::min(KC, d - pc);
            pack_a(uk, qn.data(), d, false, q0, nq, pc, kc, Aq + nq_pad * pc);
        }
        float* Bd = tl_dbpack.get(static_cast<size_t>(NB * dd));
        float* S = tl_tile.get(static_cast<size_t>(QB * NB));
        std::vector<TopK> lists_here;
        lists_here.reserve(static_cast<size_t>(nq));
        for (int64_t q = q0; q < q1; ++q) {
            const int64_t slot = split_queries ? q : task * Q + q;
            float* v;
            int64_t* ix;
            if (split_queries && small) {
                v = scores + q * kk;
                ix = indices + q * kk;
            } else {
                v = tvals.data() + slot * cap;
                ix = tidx.data() + slot * cap;
            }
            lists_here.push_back(TopK{kk, small, v, ix});
        }
        for (int64_t nb0 = n0; nb0 < n1; nb0 += NB) {
            const int64_t nb = std::min(NB, n1 - nb0);
            // Pack database rows nb0..nb0+nb as op(B) = database^T, scaled by their inverse norms.
            for (int64_t pc = 0; pc < d; pc += KC) {
                const int64_t kc = std::min(KC, d - pc);
                float* dst = Bd + NB * pc;
                for (int64_t j = 0; j < nb; j += NR)
                    pack_b_panel(uk, database, d, true, pc, kc, nb0 + j, std::min(NR, nb - j), dst + j * kc,
                                 dinv.data());
            }
            for (int64_t qb = 0; qb < nq; qb += QB) {
                const int64_t mq = std::min(QB, nq - qb);
                if (d == 0) {
                    std::fill(S, S + mq * NB, 0.0f);
                } else {
                    for (int64_t kb = 0; kb < kblocks; ++kb) {
                        const int64_t pc = kb * KC, kc = std::min(KC, d - pc);
                        macro_kernel(uk, mq, nb, kc, Aq + nq_pad * pc + qb * kc, Bd + NB * pc, S, NB,
                                     kb > 0 ? kAccumulate : 0, nullptr);
                    }
                }
                for (int64_t r = 0; r < mq; ++r) {
                    TopK& L = lists_here[static_cast<size_t>(qb + r)];
                    const float* srow = S + r * NB;
                    int64_t j = 0;
                    while (j < nb && !L.have_thr) {
                        L.offer(srow[j], nb0 + j);
                        ++j;
                    }
                    // Fast rejection: most scores are below the current k-th best.
                    while (j < nb) {
                        j += uk.next_ge(srow + j, nb - j, L.thr_val);
                        if (j >= nb) break;
                        L.offer(srow[j], nb0 + j);
                        ++j;
                    }
                }
            }
        }
        for (int64_t q = 0; q < nq; ++q) {
            TopK& L = lists_here[static_cast<size_t>(q)];
            L.finish();
            tcount[static_cast<size_t>(split_queries ? q0 + q : task * Q + q0 + q)] = L.count;
        }
    };

    if (split_queries) {
        parallel_for(tasks, 1, [&](int64_t tb, int64_t te) {
            for (int64_t t = tb; t < te; ++t) {
                // Query ranges on MR boundaries.
                const int64_t panels = (Q + MR - 1) / MR;
                const int64_t q0 = std::min(Q, panels * t / tasks * MR);
                const int64_t q1 = std::min(Q, panels * (t + 1) / tasks * MR);
                run_task(t, q0, q1, 0, n);
            }
        }, static_cast<int>(tasks));
        if (!small) {
            for (int64_t q = 0; q < Q; ++q) {
                std::memcpy(scores + q * kk, tvals.data() + q * cap, sizeof(float) * static_cast<size_t>(kk));
                std::memcpy(indices + q * kk, tidx.data() + q * cap, sizeof(int64_t) * static_cast<size_t>(kk));
            }
        }
    } else {
        parallel_for(tasks, 1, [&](int64_t tb, int64_t te) {
            for (int64_t t = tb; t < te; ++t) {
                const int64_t blocks = (n + NB - 1) / NB;
                const int64_t n0 = std::min(n, blocks * t / tasks * NB);
                const int64_t n1 = std::min(n, blocks * (t + 1) / tasks * NB);
                run_task(t, 0, Q, n0, n1);
            }
        }, static_cast<int>(tasks));
        // Merge the tasks' sorted lists per query.
        parallel_for(Q, 16, [&](int64_t qb, int64_t qe) {
            std::vector<int64_t> pos(static_cast<size_t>(tasks));
            for (int64_t q = qb; q < qe; ++q) {
                std::fill(pos.begin(), pos.end(), 0);
                for (int64_t r = 0; r < kk; ++r) {
                    int64_t best = -1;
                    for (int64_t t = 0; t < tasks; ++t) {
                        const int64_t slot = t * Q + q;
                        const int64_t p = pos[static_cast<size_t>(t)];
                        if (p >= tcount[static_cast<size_t>(slot)]) continue;
                        if (best < 0) { best = t; continue; }
                        const int64_t bs = best * Q + q, bp = pos[static_cast<size_t>(best)];
                        if (better(tvals[static_cast<size_t>(slot * cap + p)], tidx[static_cast<size_t>(slot * cap + p)],
                                   tvals[static_cast<size_t>(bs * cap + bp)], tidx[static_cast<size_t>(bs * cap + bp)]))
                            best = t;
                    }
                    if (best < 0) throw std::logic_error("cosine_topk: internal error (merge ran short)");
                    const int64_t bs = best * Q + q, bp = pos[static_cast<size_t>(best)]++;
                    scores[q * kk + r] = tvals[static_cast<size_t>(bs * cap + bp)];
                    indices[q * kk + r] = tidx[static_cast<size_t>(bs * cap + bp)];
                }
            }
        });
    }
}

}  // namespace pixrank
