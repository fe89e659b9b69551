"""Times pixrank's prepared ``CosineDatabase`` top-10 against FAISS ``IndexFlatIP`` on the
rows of bench/ranking.py, in one process, alternating, as bench.common.paired_time does.

Same data as bench/ranking.py (``np.random.default_rng(777)``, the sizes drawn in the same
order: 100k x 128 and its 100 and 1000 queries, then 100k x 384, ...), the database
L2-normalised once (not timed), pixrank's ``ops.CosineDatabase`` and FAISS's index built
once (not timed), FAISS with ``distance_compute_blas_threshold = 20``. Per sample at 2+
threads an untimed 0.02 s pause first (idle OpenMP workers), calls back to back within a
sample (``inner`` sized so a sample lasts >= 0.2 s), order alternating every repeat.

Usage: python tools/topk_rows.py [--rows 100k/384/1000,...] [--threads 2,1] [--repeats 7]
Prints per row and thread count: the medians, minima, every sample, q/s and the ratio
FAISS time / pixrank time (above 1: pixrank faster); checks that the ids agree.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def normalize_rows(x):
    for s in range(0, len(x), 65536):
        blk = x[s:s + 65536]
        blk /= np.linalg.norm(blk, axis=1, keepdims=True)


def machine_cpu():
    """(busy, steal) seconds of the whole machine so far, from /proc/stat's cpu line."""
    import os
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / tick, v[7] / tick


def thread_cpu():
    """{tid: (name, CPU seconds)} for every thread of this process (utime + stime from /proc)."""
    import os
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                st = f.read()
        except OSError:
            continue
        name = st[st.index("(") + 1:st.rindex(")")]
        rest = st[st.rindex(")") + 2:].split()
        out[int(tid)] = (f"{name}#{tid}", (int(rest[11]) + int(rest[12])) / tick)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="100k/384/100,100k/384/1000")
    ap.add_argument("--threads", default="2,1")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--pause", type=float, default=0.02)
    ap.add_argument("--no-faiss", action="store_true")
    ap.add_argument("--torch", action="store_true", help="also time PyTorch (mm + topk), as the bench's machine process does")
    ap.add_argument("--heavy-warm", action="store_true", help="warm up on Q/10 queries (the bench's rows of n*d*Q >= 1e10)")
    ap.add_argument("--threads-cpu", action="store_true", help="print CPU seconds per OS thread (from /proc) for each sample")
    a = ap.parse_args()
    import faiss
    import pixrank
    from pixrank import ops
    faiss.cvar.distance_compute_blas_threshold = 20
    want = {}
    for r in a.rows.split(","):
        n, d, Q = r.split("/")
        n = int(n.replace("k", "000").replace("M", "000000"))
        want.setdefault((n, int(d)), []).append(int(Q))
    threads = [int(t) for t in a.threads.split(",")]
    rng = np.random.default_rng(777)
    sizes = [(100_000, 128), (100_000, 384), (1_000_000, 128), (1_000_000, 384)]
    last = max(sizes.index(s) for s in want)
    for n, d in sizes[:last + 1]:
        db = rng.standard_normal((n, d), dtype=np.float32)
        qs = {Q: rng.standard_normal((Q, d), dtype=np.float32) for Q in (100, 1000)}
        if (n, d) not in want:
            continue
        normalize_rows(db)
        index = faiss.IndexFlatIP(d)
        index.add(db)
        pdb = ops.CosineDatabase(db)
        for Q in want[(n, d)]:
            q = qs[Q]

            def fa(q=q):
                qn = q.copy()
                faiss.normalize_L2(qn)
                return index.search(qn, 10)[1]

            def px(q=q):
                return ops.cosine_topk(q, pdb, 10)[0]

            sides_all = {"pixrank": px, "faiss": fa}
            if a.torch:
                import torch
                tq, tdb = torch.from_numpy(q), torch.from_numpy(db)

                def tc(tq=tq):
                    qn = torch.nn.functional.normalize(tq, dim=1)
                    out = []
                    for s0 in range(0, tq.shape[0], 335):
                        S = torch.mm(qn[s0:s0 + 335], tdb.t())
                        out.append(torch.topk(S, 10, dim=1, largest=True, sorted=True).indices)
                    return torch.cat(out)
                sides_all = {"pixrank": px, "torch": tc, "faiss": fa}
            ids_p, ids_f = px(), fa()
            same = float(np.mean(ids_p == ids_f))
            for nt in threads:
                pixrank.set_num_threads(nt)
                faiss.omp_set_num_threads(nt)
                try:
                    from threadpoolctl import threadpool_limits
                    threadpool_limits(nt)
                except ImportError:
                    pass
                if a.torch:
                    torch.set_num_threads(nt)
                sides = {"pixrank": px} if a.no_faiss else sides_all
                slow = 0.0
                for s0, f in sides.items():  # warm-up, sizes inner
                    if a.heavy_warm:
                        qw = q[:max(1, Q // 10)]
                        {"pixrank": lambda: ops.cosine_topk(qw, pdb, 10), "faiss": lambda: fa(qw),
                         "torch": lambda: tc(torch.from_numpy(qw)) if a.torch else None}[s0]()
                        slow = 1.0
                    else:
                        t0 = time.perf_counter(); f(); slow = max(slow, time.perf_counter() - t0)
                inner = 1 if slow >= 0.2 else max(1, int(0.2 / slow))
                samples = {s: [] for s in sides}
                order = list(sides)
                for r in range(a.repeats):
                    for s in (order if r % 2 == 0 else order[::-1]):
                        if nt > 1:
                            time.sleep(a.pause)
                        th0 = thread_cpu() if a.threads_cpu else None
                        m0 = machine_cpu()
                        c0 = time.process_time()
                        t0 = time.perf_counter()
                        for _ in range(inner):
                            sides[s]()
                        samples[s].append((time.perf_counter() - t0) / inner)
                        if th0 is not None:
                            th1 = thread_cpu()
                            busy = {k: th1[k][1] - th0.get(k, (None, 0))[1] for k in th1}
                            m1 = machine_cpu()
                            own = time.process_time() - c0
                            print(f"    {s} {samples[s][-1]*1e3:.0f} ms wall, cpu {own*1e3:.0f} ms, other processes "
                                  f"{(m1[0]-m0[0]-own)*1e3:.0f} ms, steal {(m1[1]-m0[1])*1e3:.0f} ms; threads: "
                                  + " ".join(f"{th1[k][0]}:{v*1e3:.0f}" for k, v in sorted(busy.items()) if v > 0.005), flush=True)
                med = {s: statistics.median(v) for s, v in samples.items()}
                line = f"n={n} d={d} Q={Q} t={nt} inner={inner} same-ids={same:.4f}: "
                line += "; ".join(f"{s} med {med[s]*1e3:.1f} ms min {min(v)*1e3:.1f} ({Q/med[s]:.0f} q/s) "
                                  f"[{' '.join(f'{x*1e3:.0f}' for x in v)}]" for s, v in samples.items())
                if "faiss" in med:
                    line += f"; ratio {med['faiss']/med['pixrank']:.2f}x (min {min(samples['faiss'])/min(samples['pixrank']):.2f}x)"
                print(line, flush=True)
        del db, index, pdb


if __name__ == "__main__":
    main()
