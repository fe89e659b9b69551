// pixrank kernels: exact cosine top-k (see kernels.hpp for shapes).
//
// Method: queries are L2-normalised once and packed as GEMM A panels; the database is processed in
// blocks of NB vectors, each packed as GEMM B panels with every vector scaled by its inverse norm
// while packing (no normalised copy of the database is made). The SGEMM micro-kernels compute a
// (query block x NB) tile of cosine scores in a small thread-local buffer, and a running top-k per
// query consumes it at once: a score is first compared with the query's current k-th best (a single
// comparison rejects almost every score), and only survivors are inserted. The (Q, n) score matrix
// is never held. For small k threads take database chunks dynamically (per-thread top-k lists for
// every query, merged at the end; every database vector is normalised and packed once); for large k
// they split the queries.
//
// Ordering: score descending, then index ascending. The acceptance test uses the same total order,
// so the result does not depend on the blocking or the thread count.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <shared_mutex>
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

// Inverse L2 norms of `rows` vectors of length d (0 for a zero vector); throws on non-finite input,
// naming `what` and the row (first_row + i). The sum of squares is taken in double (no overflow for
// any finite float32 vector), in eight interleaved partial sums so that it pipelines (one sequential
// sum was a 4-cycle dependency per component: ~17 ms over 100k x 128 on one thread).
void inverse_norms(const char* what, int64_t rows, int64_t d, const float* x, float* inv, int64_t first_row = 0,
                   const char* fn = "cosine_topk") {
    parallel_for(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, d)), [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            const float* v = x + i * d;
            double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            int64_t j = 0;
            for (; j + 8 <= d; j += 8)
                for (int u = 0; u < 8; ++u) part[u] += static_cast<double>(v[j + u]) * static_cast<double>(v[j + u]);
            double s = ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
            for (; j < d; ++j) s += static_cast<double>(v[j]) * static_cast<double>(v[j]);
            if (!std::isfinite(s))
                throw std::invalid_argument(std::string(fn) + ": " + what + " row " +
                                            std::to_string(first_row + i) + " contains a non-finite value (inf or nan)");
            inv[i] = s > 0.0 ? static_cast<float>(1.0 / std::sqrt(s)) : 0.0f;
        }
    });
}

}  // namespace

// --------------------------------------------------------------------------- packed database layout

DbLayout DbLayout::make(const UKernel& uk, int64_t d) {
    DbLayout L;
    L.uk = &uk;
    L.d = d;
    L.dd = std::max<int64_t>(d, 1);  // d == 0: every score is 0
    L.nr = uk.nr;
    // Depth blocks: as few as keep one packed database micro-panel (kc x NR floats) within 24 KiB
    // (most of a 32 KiB L1), all of about the same size (balanced_block). With the AVX2 kernel
    // (NR = 16) d = 384 is one pass of 384 instead of 256 + 128: each score tile is written once
    // instead of written, re-read and re-written, and half as many micro-kernel calls (measured on
    // the 2-core EPYC, 100k x 384, 2 threads: ~5 % faster at 100 queries, ~2 % at 1000).
    L.kc = balanced_block(L.dd, std::max<int64_t>(uk.kc, 6144 / uk.nr), 4);
    // Database block: about 128 KiB of packed floats (stays in L2), a multiple of NR.
    L.nb = std::max<int64_t>(L.nr, std::min<int64_t>(1024, (32768 / L.dd) / L.nr * L.nr));
    return L;
}

// Packs rows [first, first + m) (src (m, d), inverse norms inv (m,)) into the blocks at `data`.
// Whole NR-row panels of consecutive rows go through the SSE transposing packer (pack_b_panel of the
// transposed database, each row scaled by its inverse norm); rows that start or end a panel are
// written one by one into their column, so that the panel's other columns are left as they are.
void DbLayout::pack(float* data, int64_t first, int64_t m, const float* src, const float* inv) const {
    if (d == 0) return;
    int64_t i = 0;
    while (i < m) {
        const int64_t row = first + i, r = row % nb;
        float* block = data + (row / nb) * nb * dd;
        if (r % nr == 0 && m - i >= nr && r + nr <= nb) {
            for (int64_t pc = 0; pc < d; pc += kc) {
                const int64_t kcb = std::min(kc, d - pc);
                pack_b_panel(*uk, src, d, true, pc, kcb, i, nr, block + nb * pc + r * kcb, inv);
            }
            i += nr;
        } else {
            const float* v = src + i * d;
            const float sc = inv[i];
            const int64_t panel = r / nr, c = r % nr;
            for (int64_t pc = 0; pc < d; pc += kc) {
                const int64_t kcb = std::min(kc, d - pc);
                float* dst = block + nb * pc + panel * nr * kcb + c;
                for (int64_t p = 0; p < kcb; ++p) dst[p * nr] = v[pc + p] * sc;
            }
            ++i;
        }
    }
}

// The normalised row i (as packed) into out (d,).
void DbLayout::unpack_row(const float* data, int64_t i, float* out) const {
    const float* block = data + (i / nb) * nb * dd;
    const int64_t r = i % nb, panel = r / nr, c = r % nr;
    for (int64_t pc = 0; pc < d; pc += kc) {
        const int64_t kcb = std::min(kc, d - pc);
        const float* src = block + nb * pc + panel * nr * kcb + c;
        for (int64_t p = 0; p < kcb; ++p) out[pc + p] = src[p * nr];
    }
}

// ---------------------------------------------------------------------------- the top-k scan

namespace {

// The blocked scan shared by both entry points. block(nb0, nb, scratch) returns database rows
// [nb0, nb0 + nb) packed in layout L (nb0 a multiple of L.nb), either from a prepared database or
// packed into `scratch` (L.nb * L.dd floats, thread-local) on the spot.
template <class Block>
void topk_scan(const DbLayout& L, int64_t Q, int64_t n, const float* queries, int64_t k, int64_t* indices,
               float* scores, Block&& block) {
    const int64_t kk = std::min(k, n);
    if (Q == 0 || kk == 0) return;
    const int64_t d = L.d, dd = L.dd, NB = L.nb, KC = L.kc;
    const UKernel& uk = *L.uk;
    const int64_t MR = uk.mr;
    // Query rows per score tile: the tile (QB x NB floats, 15 KiB at d = 384) stays in L1 with the
    // database micro-panel; at d = 128 the block size made no measurable difference (24 ... 96).
    const int64_t QB = std::max<int64_t>(MR, (48 / MR) * MR);

    // All queries, L2-normalised, packed once as GEMM A panels (one region per depth block).
    std::vector<float> qinv(static_cast<size_t>(Q));
    inverse_norms("queries", Q, d, queries, qinv.data());
    const int64_t Qpad = (Q + MR - 1) / MR * MR;
    std::vector<float> qn(static_cast<size_t>(Q * dd));
    for (int64_t i = 0; i < Q; ++i)
        for (int64_t j = 0; j < d; ++j)
            qn[static_cast<size_t>(i * d + j)] = queries[i * d + j] * qinv[static_cast<size_t>(i)];
    float* Aq = tl_qpack.get(static_cast<size_t>(Qpad * dd));
    for (int64_t pc = 0; pc < d; pc += KC) pack_a(uk, qn.data(), d, false, 0, Q, pc, std::min(KC, d - pc), Aq + Qpad * pc);

    const int nt = num_threads();
    const bool small = kk <= kSmallK;
    const int64_t cap = small ? kk : 2 * kk;
    // Small k: threads take database chunks dynamically, each keeping per-thread lists for every
    // query (merged at the end), so every database block is packed (or read) exactly once. Large k,
    // or so many queries that per-thread lists would be big: threads take query ranges.
    const bool split_db = small && nt > 1 &&
                          (static_cast<double>(Q) * static_cast<double>(kk) * nt <= double(1 << 24) || Q < 8 * MR * nt);
    const int64_t slots = split_db ? nt : 1;
    std::vector<float> tvals(static_cast<size_t>(checked_mul(checked_mul(slots, Q, "cosine_topk"), cap, "cosine_topk")));
    std::vector<int64_t> tidx(tvals.size());
    std::vector<TopK> lists;
    lists.reserve(static_cast<size_t>(slots * Q));
    for (int64_t t = 0; t < slots; ++t)
        for (int64_t q = 0; q < Q; ++q) {
            const size_t off = static_cast<size_t>((t * Q + q) * cap);
            lists.push_back(TopK{kk, small, tvals.data() + off, tidx.data() + off});
        }

    // Scores of queries [q0, q1) (q0 a multiple of MR) against database rows [n0, n1), offered to
    // the lists of `slot`.
    auto run = [&](int64_t slot, int64_t q0, int64_t q1, int64_t n0, int64_t n1) {
        const int64_t nq = q1 - q0;
        if (nq <= 0 || n1 <= n0) return;
        float* S = tl_tile.get(static_cast<size_t>(QB * NB));
        TopK* L0 = lists.data() + slot * Q;
        for (int64_t nb0 = n0; nb0 < n1; nb0 += NB) {
            const int64_t nb = std::min(NB, n1 - nb0);
            const float* Bd = block(nb0, nb);
            for (int64_t qb = q0; qb < q1; qb += QB) {
                const int64_t mq = std::min(QB, q1 - qb);
                if (d == 0) {
                    std::fill(S, S + mq * NB, 0.0f);
                } else {
                    for (int64_t pc = 0; pc < d; pc += KC) {
                        const int64_t kc = std::min(KC, d - pc);
                        macro_kernel(uk, mq, nb, kc, Aq + Qpad * pc + qb * kc, Bd + NB * pc, S, NB,
                                     pc > 0 ? kAccumulate : 0, nullptr);
                    }
                }
                for (int64_t r = 0; r < mq; ++r) {
                    TopK& T = L0[qb + r];
                    const float* srow = S + r * NB;
                    int64_t j = 0;
                    while (j < nb && !T.have_thr) {
                        T.offer(srow[j], nb0 + j);
                        ++j;
                    }
                    // Fast rejection: most scores are below the current k-th best.
                    while (j < nb) {
                        j += uk.next_ge(srow + j, nb - j, T.thr_val);
                        if (j >= nb) break;
                        T.offer(srow[j], nb0 + j);
                        ++j;
                    }
                }
            }
        }
    };

    if (split_db) {
        // About 8 chunks per thread (at least one database block each) for dynamic balance.
        const int64_t blocks = (n + NB - 1) / NB;
        const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(blocks, 8 * nt));
        parallel_dynamic(chunks, nt, [&](int64_t c, int64_t slot) {
            const int64_t n0 = std::min(n, blocks * c / chunks * NB);
            const int64_t n1 = std::min(n, blocks * (c + 1) / chunks * NB);
            run(slot, 0, Q, n0, n1);
        });
        // Merge the threads' lists per query (each sorted best first).
        parallel_for(Q, 64, [&](int64_t qb, int64_t qe) {
            std::vector<int64_t> pos(static_cast<size_t>(slots));
            for (int64_t q = qb; q < qe; ++q) {
                for (int64_t t = 0; t < slots; ++t) lists[static_cast<size_t>(t * Q + q)].finish();
                std::fill(pos.begin(), pos.end(), 0);
                for (int64_t r = 0; r < kk; ++r) {
                    int64_t best = -1;
                    for (int64_t t = 0; t < slots; ++t) {
                        const TopK& T = lists[static_cast<size_t>(t * Q + q)];
                        const int64_t p = pos[static_cast<size_t>(t)];
                        if (p >= T.count) continue;
                        if (best < 0) {
                            best = t;
                            continue;
                        }
                        const TopK& B = lists[static_cast<size_t>(best * Q + q)];
                        const int64_t bp = pos[static_cast<size_t>(best)];
                        if (better(T.vals[p], T.idx[p], B.vals[bp], B.idx[bp])) best = t;
                    }
                    if (best < 0) throw std::logic_error("cosine_topk: internal error (merge ran short)");
                    const TopK& B = lists[static_cast<size_t>(best * Q + q)];
                    const int64_t bp = pos[static_cast<size_t>(best)]++;
                    scores[q * kk + r] = B.vals[bp];
                    indices[q * kk + r] = B.idx[bp];
                }
            }
        });
    } else {
        // Query ranges on MR boundaries, each against the whole database.
        const int64_t panels = (Q + MR - 1) / MR;
        const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(nt, panels));
        parallel_dynamic(tasks, nt, [&](int64_t t, int64_t) {
            const int64_t q0 = std::min(Q, panels * t / tasks * MR);
            const int64_t q1 = std::min(Q, panels * (t + 1) / tasks * MR);
            run(0, q0, q1, 0, n);
            for (int64_t q = q0; q < q1; ++q) lists[static_cast<size_t>(q)].finish();
        });
        for (int64_t q = 0; q < Q; ++q) {
            const TopK& T = lists[static_cast<size_t>(q)];
            if (T.count != kk) throw std::logic_error("cosine_topk: internal error (short list)");
            std::memcpy(scores + q * kk, T.vals, sizeof(float) * static_cast<size_t>(kk));
            std::memcpy(indices + q * kk, T.idx, sizeof(int64_t) * static_cast<size_t>(kk));
        }
    }
}

}  // namespace

void cosine_topk(int64_t Q, int64_t n, int64_t d, const float* queries, const float* database, int64_t k,
                 int64_t* indices, float* scores) {
    if (k < 1) throw std::invalid_argument("cosine_topk: k must be >= 1, got " + std::to_string(k));
    if (Q == 0 || n == 0) return;
    std::vector<float> dinv(static_cast<size_t>(n));
    inverse_norms("database", n, d, database, dinv.data());
    const DbLayout L = DbLayout::make(active_ukernel(), d);
    // Each block is packed on the spot into the calling thread's workspace (scaled by the inverse
    // norms while packing: no normalised copy of the database is made).
    topk_scan(L, Q, n, queries, k, indices, scores, [&](int64_t nb0, int64_t nb) -> const float* {
        float* Bd = tl_dbpack.get(static_cast<size_t>(L.nb * L.dd));
        if (L.d > 0)
            for (int64_t pc = 0; pc < L.d; pc += L.kc) {
                const int64_t kc = std::min(L.kc, L.d - pc);
                float* dst = Bd + L.nb * pc;
                for (int64_t j = 0; j < nb; j += L.nr)
                    pack_b_panel(*L.uk, database, d, true, pc, kc, nb0 + j, std::min(L.nr, nb - j), dst + j * kc,
                                 dinv.data());
            }
        return Bd;
    });
}

// ------------------------------------------------------------------------------ CosineDatabase

CosineDatabase::CosineDatabase(int64_t d) : layout_(DbLayout::make(active_ukernel(), d)) {
    if (d < 1) throw std::invalid_argument("CosineDatabase: d must be >= 1, got " + std::to_string(d));
}

CosineDatabase::~CosineDatabase() { std::free(data_); }

int64_t CosineDatabase::size() const {
    std::shared_lock<std::shared_mutex> lk(mu_);
    return n_;
}

int64_t CosineDatabase::capacity() const {
    std::shared_lock<std::shared_mutex> lk(mu_);
    return cap_;
}

std::string CosineDatabase::layout() const {
    std::shared_lock<std::shared_mutex> lk(mu_);
    return std::string(layout_.uk->name) + " nr=" + std::to_string(layout_.nr) + " kc=" + std::to_string(layout_.kc) +
           " nb=" + std::to_string(layout_.nb);
}

// Grows the packed storage (under the exclusive lock) to at least `rows` rows: whole blocks, at least
// doubling, the new blocks zeroed, the old ones copied.
void CosineDatabase::grow(int64_t rows) {
    if (rows <= cap_) return;
    const int64_t nb = layout_.nb;
    int64_t want = std::max<int64_t>(rows, cap_ * 2);
    want = (want + nb - 1) / nb * nb;
    const int64_t floats = checked_mul(want, layout_.dd, "CosineDatabase");
    const size_t bytes = static_cast<size_t>(checked_mul(floats, 4, "CosineDatabase"));
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    float* fresh = static_cast<float*>(p);
    const size_t old = static_cast<size_t>(cap_ * layout_.dd);
    // Copy and zero in parallel chunks: the first touch of each page (a page fault) is most of it.
    const int64_t total = floats;
    parallel_for(total, 1 << 18, [&](int64_t b, int64_t e) {
        const int64_t c = std::min<int64_t>(e, static_cast<int64_t>(old));
        if (b < c) std::memcpy(fresh + b, data_ + b, static_cast<size_t>(c - b) * sizeof(float));
        const int64_t z = std::max<int64_t>(b, static_cast<int64_t>(old));
        if (z < e) std::memset(fresh + z, 0, static_cast<size_t>(e - z) * sizeof(float));
    });
    std::free(data_);
    data_ = fresh;
    cap_ = want;
}

void CosineDatabase::reserve(int64_t rows) {
    if (rows < 0) throw std::invalid_argument("CosineDatabase.reserve: rows must be >= 0, got " + std::to_string(rows));
    std::unique_lock<std::shared_mutex> lk(mu_);
    grow(rows);
}

void CosineDatabase::append(const float* rows, int64_t m) {
    if (m <= 0) return;
    std::vector<float> inv(static_cast<size_t>(m));
    std::unique_lock<std::shared_mutex> lk(mu_);
    inverse_norms("vectors", m, layout_.d, rows, inv.data(), 0, "CosineDatabase.append");  // throws first
    grow(n_ + m);
    // The rows up to the next panel edge one by one, then whole panels in parallel (each panel is
    // written by one thread only), then the rest.
    const int64_t nr = layout_.nr;
    const int64_t head = std::min(m, (nr - n_ % nr) % nr);
    layout_.pack(data_, n_, head, rows, inv.data());
    const int64_t panels = (m - head) / nr;
    parallel_for(panels, std::max<int64_t>(1, 4096 / (nr * layout_.dd) + 1), [&](int64_t b, int64_t e) {
        layout_.pack(data_, n_ + head + b * nr, (e - b) * nr, rows + (head + b * nr) * layout_.d,
                     inv.data() + head + b * nr);
    });
    const int64_t done = head + panels * nr;
    layout_.pack(data_, n_ + done, m - done, rows + done * layout_.d, inv.data() + done);
    n_ += m;
}

void CosineDatabase::set_rows(const int64_t* positions, const float* rows, int64_t m) {
    if (m <= 0) return;
    std::vector<float> inv(static_cast<size_t>(m));
    std::unique_lock<std::shared_mutex> lk(mu_);
    for (int64_t i = 0; i < m; ++i)
        if (positions[i] < 0 || positions[i] >= n_)
            throw std::invalid_argument("CosineDatabase.replace: position " + std::to_string(positions[i]) +
                                        " out of range [0, " + std::to_string(n_) + ")");
    for (int64_t i = 0; i < m; ++i)  // a non-finite row throws before anything changes
        inverse_norms("vectors", 1, layout_.d, rows + i * layout_.d, inv.data() + i, i, "CosineDatabase.replace");
    for (int64_t i = 0; i < m; ++i) layout_.pack(data_, positions[i], 1, rows + i * layout_.d, inv.data() + i);
}

void CosineDatabase::truncate(int64_t n) {
    std::unique_lock<std::shared_mutex> lk(mu_);
    if (n < 0 || n > n_)
        throw std::invalid_argument("CosineDatabase.truncate: n must be in [0, " + std::to_string(n_) + "], got " +
                                    std::to_string(n));
    n_ = n;
}

void CosineDatabase::relayout(const UKernel& uk) {
    const DbLayout L = DbLayout::make(uk, layout_.d);
    const int64_t cap = std::max<int64_t>(L.nb, (n_ + L.nb - 1) / L.nb * L.nb);
    const size_t floats = static_cast<size_t>(checked_mul(cap, L.dd, "CosineDatabase"));
    float* fresh = static_cast<float*>(std::aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64));
    if (!fresh) throw std::bad_alloc();
    std::memset(fresh, 0, floats * sizeof(float));
    // Rows are moved as they are packed (already normalised): unpack in the old layout, pack in the
    // new one with scale 1, a panel's worth at a time.
    const int64_t chunk = L.nr;
    std::vector<float> buf(static_cast<size_t>(chunk * L.dd)), ones(static_cast<size_t>(chunk), 1.0f);
    for (int64_t i = 0; i < n_; i += chunk) {
        const int64_t m = std::min(chunk, n_ - i);
        for (int64_t r = 0; r < m; ++r) layout_.unpack_row(data_, i + r, buf.data() + r * L.d);
        L.pack(fresh, i, m, buf.data(), ones.data());
    }
    std::free(data_);
    data_ = fresh;
    cap_ = cap;
    layout_ = L;
}

std::vector<float> CosineDatabase::row(int64_t i) const {
    std::shared_lock<std::shared_mutex> lk(mu_);
    if (i < 0 || i >= n_)
        throw std::invalid_argument("CosineDatabase.vector: i must be in [0, " + std::to_string(n_) + "), got " +
                                    std::to_string(i));
    std::vector<float> out(static_cast<size_t>(layout_.d));
    layout_.unpack_row(data_, i, out.data());
    return out;
}

int64_t CosineDatabase::topk(int64_t Q, const float* queries, int64_t k, std::vector<int64_t>& indices,
                             std::vector<float>& scores) {
    if (k < 1) throw std::invalid_argument("cosine_topk: k must be >= 1, got " + std::to_string(k));
    for (;;) {
        const UKernel& uk = active_ukernel();
        {
            std::shared_lock<std::shared_mutex> lk(mu_);
            if (layout_.uk == &uk) {
                const int64_t kk = std::min(k, n_);
                indices.assign(static_cast<size_t>(checked_mul(Q, kk, "cosine_topk")), 0);
                scores.assign(indices.size(), 0.0f);
                if (Q == 0 || kk == 0) return kk;
                const float* base = data_;
                const int64_t block_floats = layout_.nb * layout_.dd;
                topk_scan(layout_, Q, n_, queries, k, indices.data(), scores.data(),
                          [&](int64_t nb0, int64_t) -> const float* { return base + (nb0 / layout_.nb) * block_floats; });
                return kk;
            }
        }
        // The SIMD variant changed since the rows were packed (set_simd): re-pack them once for it.
        std::unique_lock<std::shared_mutex> lk(mu_);
        if (layout_.uk != &uk) relayout(uk);
    }
}

}  // namespace pixrank
