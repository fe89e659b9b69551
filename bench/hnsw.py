"""HNSW: ``pixrank.search.index.Index`` against raw hnswlib and FAISS ``IndexHNSWFlat``.

Data (float32, fixed seed), ``n = 100,000`` vectors of ``d = 128`` plus ``Q = 1,000``
queries from the same distribution (1,000 queries give recall@10 to about ±0.005 and keep
the query rows of the full suite to about 3 minutes; the builds take most of the group's
time):

* ``gaussian``: i.i.d. N(0, 1) components (the hardest case for any graph index: recall
  stays low whatever ``ef``; that is the data, not a bug);
* ``clustered``: a mixture of ``n / 100`` Gaussian clusters, centres N(0, 1), spread 0.5
  per component (closer to real embeddings, where recall@10 nears 1 by ``ef = 50``).

All three sides use the same parameters: cosine space, ``M = 16``, ``ef_construction =
200``, random seed 100, ids ``0 .. n-1`` in one batched add, query ``ef`` in {10, 20, 50,
100, 200}, ``k = 10``, the same ``num_threads``:

* pixrank: ``Index(d, space='cosine', M=16, ef_construction=200, seed=100, num_threads=t)``,
  ``add(x, ids)``, ``query(q, 10, ef=ef)`` (it wraps hnswlib; the rows measure the wrapper's
  cost);
* hnswlib: ``hnswlib.Index('cosine', d)``, ``init_index(n, M=16, ef_construction=200,
  random_seed=100)``, ``add_items(x, ids, num_threads=t)``, ``set_ef(ef)``,
  ``knn_query(q, 10, num_threads=t)`` (labels cast to int64, as pixrank returns them);
* FAISS: ``IndexHNSWFlat(d, 16, METRIC_INNER_PRODUCT)`` on L2-normalised vectors,
  ``hnsw.efConstruction = 200``, ``hnsw.efSearch = ef`` (queries normalised inside the
  timed call).

``python -m bench --hnsw-n N`` uses ``N`` vectors instead, for a loaded machine where a 100k
build takes many minutes.

Build time (on this shared machine the same deterministic build varies by 10-30 % from run
to run, so single builds say little):

* at 1 thread (when the thread counts include 1): the first 10,000 vectors, 3 alternated
  builds per side (pixrank, hnswlib), median. A 1-thread hnswlib build is deterministic,
  so both sides build the identical graph (checked: identical query results); the row is
  the wrapper's cost on exactly the same work.
* at the largest thread count: the first 20,000 vectors, 3 alternated builds per side,
  median (threads insert in a varying order, so these graphs differ slightly); then the
  full ``n`` once per side (pixrank, hnswlib, FAISS; the order of the sides alternates
  between data sets). When ``n`` is at most 20,000 the full builds are the repeated ones.

Queries, "at the same recall": a multi-threaded build gives a slightly different graph on
each side, so the same ``ef`` does not give the same recall, nor the same work. So raw
hnswlib's full-size graph is also wrapped, without a copy, by ``Index.from_hnswlib``: both
sides search the very same graph object (same memory, so no difference of page placement
either) and return identical ids: the q/s ratio is the wrapper's cost alone, at exactly the
same recall. The notes give the recall@10 of each side's own fresh build, to show that
pixrank's build makes a graph of the same quality. FAISS searches its own graph. Paired
timing, all ``Q`` queries per call, 5 alternated samples per side, at every thread count;
queries/s = ``Q / median``. Recall@10 against exact cosine search (numpy, float32).

On this machine the speed of the (virtual) cores drifts by up to 2x over seconds, with no
other process running and no steal time reported (2-thread samples of one identical call
ranged 138-302 ms), so each hnswlib row's notes also give the median over rounds of the
per-round ratio (the two sides' samples of a round are taken back to back), which that
drift moves less than the ratio of the medians.

Checks (hnswlib rows): the 1-thread builds and the shared-graph queries give identical
top-10 ids on both sides.
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np

from .common import (NotAvailable, fmt_s, import_optional, make_row, paired_time, raiser,
                     set_threads)
from .ranking import numpy_topk

GROUP = "hnsw"
PROFILES = {"machine": ["hnswlib", "faiss"]}
M, EF_C, K, SEED = 16, 200, 10, 100
BUILD_REPEATS = 3  # alternated builds per side at the reduced sizes below
REPEATED_BUILD_N = 20_000  # size of the repeated builds at the build thread count
ONE_THREAD_BUILD_N = 10_000  # size of the repeated 1-thread builds
QUERY_REPEATS = 5  # timed samples per side and query row
EFS_FULL = (10, 20, 50, 100, 200)
EFS_QUICK = (10, 50)


def make_data(kind: str, n: int, q: int, d: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """``(database (n, d), queries (q, d))`` float32 of the named kind."""
    if kind == "gaussian":
        allx = rng.standard_normal((n + q, d), dtype=np.float32)
    elif kind == "clustered":
        nc = max(10, n // 100)
        centres = rng.standard_normal((nc, d), dtype=np.float32)
        lab = rng.integers(0, nc, n + q)
        allx = centres[lab] + np.float32(0.5) * rng.standard_normal((n + q, d), dtype=np.float32)
    else:
        raise ValueError(f"make_data: kind must be 'gaussian' or 'clustered', got {kind!r}")
    return np.ascontiguousarray(allx[:n]), np.ascontiguousarray(allx[n:])


def recall_at_k(ids: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ true top-k| / k."""
    k = truth.shape[1]
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ids[:, :k], truth))
    return hits / (k * len(truth))


def _pixrank_index():
    try:
        from pixrank.search.index import Index
        return Index
    except Exception as exc:
        raise NotAvailable(f"pixrank.search.index.Index does not import ({type(exc).__name__}: {exc})") from exc


def _build_timing(samples: list[float], cpu: list[float]) -> dict:
    """A :func:`paired_time`-style timing dict from repeated builds (seconds)."""
    return {"median_s": statistics.median(samples), "min_s": min(samples), "samples": samples, "inner": 1,
            "cpu_median_s": statistics.median(cpu)}


def _alternated_builds(builders: dict, reps: int) -> tuple[dict, dict]:
    """Run each builder ``reps`` times, alternating the order; ``(timings, last index of each)``.

    A builder that raises is dropped (its timing holds ``'error'``)."""
    samples = {name: [] for name in builders}
    cpu = {name: [] for name in builders}
    last, errors = {}, {}
    for r in range(reps):
        order = list(builders) if r % 2 == 0 else list(builders)[::-1]
        for name in order:
            if name in errors:
                continue
            last.pop(name, None)  # free the previous build first
            c0, t0 = time.process_time(), time.perf_counter()
            try:
                last[name] = builders[name]()
            except NotAvailable as exc:
                errors[name] = {"error": f"not available: {exc}"}
                continue
            except Exception as exc:
                errors[name] = {"error": f"failed: {type(exc).__name__}: {exc}"}
                continue
            samples[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    timing = {name: errors.get(name) or _build_timing(samples[name], cpu[name]) for name in builders}
    return timing, last


def _same_ids_check(a: np.ndarray, b: np.ndarray, what: str) -> dict:
    same = a.shape == b.shape and bool(np.array_equal(a, b))
    frac = float((a == b).mean()) if a.shape == b.shape else 0.0
    return {"ok": same, "detail": f"{what}: {'identical' if same else 'DIFFERENT'} top-{K} ids "
                                  f"({100 * frac:.2f} % of entries equal)"}


def run(refs: list[str], threads: list[int], quick: bool, log=print) -> list[dict]:
    rng = np.random.default_rng(2024)
    n, d, nq = (3_000, 32, 200) if quick else (100_000, 128, 1_000)
    if os.environ.get("PIXRANK_BENCH_HNSW_N"):  # python -m bench --hnsw-n N
        n = int(os.environ["PIXRANK_BENCH_HNSW_N"])
    efs = EFS_QUICK if quick else EFS_FULL
    reps = 1 if quick else BUILD_REPEATS
    n_rep = min(n, REPEATED_BUILD_N)  # the repeated builds at the build thread count
    n_one = min(n, ONE_THREAD_BUILD_N)  # the repeated 1-thread builds (identical graphs)
    build_threads = max(threads)
    try:
        Index = _pixrank_index()
        pix_err = None
    except NotAvailable as exc:
        Index, pix_err = None, exc
    libs = {}
    for ref in refs:
        try:
            libs[ref] = import_optional(ref)
        except NotAvailable as exc:
            libs[ref] = exc
    faiss = libs.get("faiss")
    rows = []
    for kind_no, kind in enumerate(("gaussian", "clustered")):
        x, q = make_data(kind, n, nq, d, rng)
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        truth = numpy_topk(q, xn, K)
        ids = np.arange(n, dtype=np.int64)

        def builders_for(m, nt, sides):
            """Builders of the first ``m`` vectors at ``nt`` threads for ``sides``."""
            xs, ids_s = x[:m], ids[:m]
            out = {}
            for name in sides:
                lib = libs.get(name)
                if name == "pixrank":
                    if Index is None:
                        out[name] = raiser(pix_err)
                        continue

                    def b_pix():
                        ix = Index(d, space="cosine", M=M, ef_construction=EF_C, seed=SEED, num_threads=nt)
                        ix.add(xs, ids_s)
                        return ix
                    out[name] = b_pix
                elif isinstance(lib, Exception):
                    out[name] = raiser(lib)
                elif name == "hnswlib":
                    def b_h(lib=lib):
                        ix = lib.Index(space="cosine", dim=d)
                        ix.init_index(max_elements=m, M=M, ef_construction=EF_C, random_seed=SEED)
                        ix.add_items(xs, ids_s, num_threads=nt)
                        return ix
                    out[name] = b_h
                elif name == "faiss":
                    xns = xn[:m]

                    def b_f(lib=lib):
                        lib.omp_set_num_threads(nt)
                        ix = lib.IndexHNSWFlat(d, M, lib.METRIC_INNER_PRODUCT)
                        ix.hnsw.efConstruction = EF_C
                        ix.add(xns)
                        return ix
                    out[name] = b_f
            return out

        def q_pix(ix, ef, nt):
            return ix.query(q, K, ef=ef)[0]

        def q_h(ix, ef, nt):
            ix.set_ef(ef)
            return ix.knn_query(q, k=K, num_threads=nt)[0].astype(np.int64)

        def q_f(ix, ef, nt):
            ix.hnsw.efSearch = ef
            qq = q.copy()
            faiss.normalize_L2(qq)
            return ix.search(qq, K)[1]
        qfns = {"pixrank": q_pix, "hnswlib": q_h, "faiss": q_f}
        pair = ["pixrank"] + [r for r in refs if r == "hnswlib"]

        # ------------------------------------------------ builds: 1 thread, repeated (same graph)
        if 1 in threads and build_threads != 1 and "hnswlib" in refs:
            set_threads(1)
            timing, last = _alternated_builds(builders_for(n_one, 1, pair), reps)
            check = {}
            if "pixrank" in last and "hnswlib" in last:
                a, b = q_pix(last["pixrank"], EFS_QUICK[0], 1), q_h(last["hnswlib"], EFS_QUICK[0], 1)
                check["hnswlib"] = _same_ids_check(a, b, f"graphs built at 1 thread, queried at ef={EFS_QUICK[0]}")
            rows.append(make_row(GROUP, f"{kind}: build {_k(n_one)} x {d}, 1 thread", 1, timing, ["hnswlib"],
                                 unit="build", check=check,
                                 extra={"kind": kind, "n": n_one, "d": d, "repeats": reps},
                                 notes=[f"{_reps_note(reps)} of the first {n_one} vectors (deterministic at 1 "
                                        f"thread: both sides build the identical graph, checked)",
                                        *_paired_note(timing, "hnswlib", "build")]))
            log(f"  hnsw {kind} build {n_one} t=1: " + _fmt_builds(timing))
            del last

        # ------------------------------------------------ builds: build threads, repeated
        set_threads(build_threads)
        if n_rep < n:
            timing, last = _alternated_builds(builders_for(n_rep, build_threads, pair), reps)
            rows.append(make_row(GROUP, f"{kind}: build {_k(n_rep)} x {d}", build_threads, timing,
                                 [r for r in refs if r == "hnswlib"], unit="build",
                                 extra={"kind": kind, "n": n_rep, "d": d, "repeats": reps},
                                 notes=[f"{_reps_note(reps)} of the first {n_rep} vectors (threads insert in "
                                        f"a varying order: the graphs differ slightly)",
                                        *_paired_note(timing, "hnswlib", "build")]))
            log(f"  hnsw {kind} build {n_rep} t={build_threads}: " + _fmt_builds(timing))
            del last
        # the full-size builds (the graphs queried below): repeated when they are the small ones,
        # else once per side (a median of 100k builds would take many minutes)
        full_reps = reps if n_rep == n else 1
        order = ["pixrank", *refs] if kind_no % 2 == 0 else ["pixrank", *refs][::-1]
        timing, built = _alternated_builds(builders_for(n, build_threads, order), full_reps)
        note = (f"one build per side (not a median; see the {_k(n_rep)} row above)" if full_reps == 1 and n_rep < n
                else _reps_note(full_reps))
        rows.append(make_row(GROUP, f"{kind}: build {_k(n)} x {d}", build_threads, timing, refs, unit="build",
                             extra={"kind": kind, "n": n, "d": d, "order": order, "repeats": full_reps},
                             notes=[note, *_paired_note(timing, "hnswlib", "build")]))
        log(f"  hnsw {kind} build {n} t={build_threads}: " + _fmt_builds(timing))

        # ------------------------------------------------ one graph for pixrank and hnswlib
        # raw hnswlib's graph, wrapped without a copy by Index.from_hnswlib: both sides search the
        # very same object in memory (same graph, same memory placement) and return identical
        # ids, so the q/s ratio is the wrapper's cost alone, at exactly the same recall.
        own_recall = {name: {ef: recall_at_k(qfns[name](ix, ef, build_threads), truth) for ef in efs}
                      for name, ix in built.items()}
        queried = {}
        share_note = None
        if "hnswlib" in built:
            queried["hnswlib"] = built["hnswlib"]
            if Index is not None:
                queried["pixrank"] = Index.from_hnswlib(built["hnswlib"], num_threads=build_threads)
                share_note = ("pixrank and hnswlib search the same graph object (hnswlib's build, wrapped by "
                              "Index.from_hnswlib)")
        elif "pixrank" in built:
            queried["pixrank"] = built["pixrank"]
        if "faiss" in built:
            queried["faiss"] = built["faiss"]
        built.clear()

        # ------------------------------------------------------------- queries
        for ef in efs:
            results = {name: qfns[name](ix, ef, build_threads) for name, ix in queried.items()}
            recalls = {name: recall_at_k(r, truth) for name, r in results.items()}
            check = {}
            if "pixrank" in results and "hnswlib" in results:
                check["hnswlib"] = _same_ids_check(results["pixrank"], results["hnswlib"],
                                                   f"the same graph at ef={ef}")
                check["hnswlib"]["detail"] += (f"; recall@10 pixrank {recalls['pixrank']:.4f}, "
                                               f"hnswlib {recalls['hnswlib']:.4f}")
            notes = [share_note] if share_note else []
            if own_recall:
                notes.append("recall@10 of the own builds: " + ", ".join(
                    f"{s} {own_recall[s][ef]:.4f}" for s in own_recall))
            for nt in threads:
                set_threads(nt)
                if "pixrank" in queried:
                    queried["pixrank"].set_num_threads(nt)
                sides = {}
                for name in ["pixrank", *refs]:
                    if name in queried:
                        sides[name] = (lambda ef=ef, nt=nt, f=qfns[name], ix=queried[name]: f(ix, ef, nt))
                    else:
                        sides[name] = raiser(NotAvailable("not built" if name != "pixrank" or pix_err is None
                                                          else str(pix_err)))
                timing = paired_time(sides, repeats=1 if quick else QUERY_REPEATS, warmup=1,
                                     min_sample_s=0.002 if quick else 0.1)
                row = make_row(GROUP, f"{kind}: ef={ef}", nt, timing, refs, unit=f"{nq} queries", check=check,
                               notes=notes + _paired_note(timing, "hnswlib", "q/s"),
                               extra={"kind": kind, "ef": ef, "recall": recalls, "n": n, "d": d, "Q": nq,
                                      "recall_own_build": {s: own_recall[s][ef] for s in own_recall},
                                      "qps": {s: nq / t["median_s"] for s, t in timing.items() if "median_s" in t}})
                rows.append(row)
                log(f"  hnsw {kind} ef={ef} t={nt}: " + ", ".join(
                    f"{s} {row['extra']['qps'].get(s, 0):.0f} q/s recall {recalls.get(s, float('nan')):.3f}"
                    for s in sides))
        del queried
    return rows


def _paired_note(timing: dict, ref: str, what: str) -> list[str]:
    """A note with the median over rounds of the per-round ratio ``ref time / pixrank time``.

    Each round of :func:`paired_time` (and of the repeated builds) times the sides back to
    back, so the two samples of a round mostly share the machine's state; on this shared
    machine the speed of the virtual cores drifts by up to 2x over seconds (no other process,
    no steal time reported), and the median of the per-round ratios is less sensitive to that
    drift than the ratio of the two medians. Empty when a side has under 3 samples."""
    a, b = timing.get("pixrank", {}).get("samples"), timing.get(ref, {}).get("samples")
    if not a or not b or min(len(a), len(b)) < 3:
        return []
    r = sorted(y / x for x, y in zip(a, b))
    return [f"{what} ratio vs {ref} per round (adjacent samples): median {statistics.median(r):.2f}x, "
            f"range {r[0]:.2f}-{r[-1]:.2f}x over {len(r)} rounds"]


def _reps_note(reps: int) -> str:
    return "one build per side" if reps == 1 else f"median of {reps} alternated builds per side"


def _k(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def _fmt_builds(timing: dict) -> str:
    return ", ".join(f"{s} {fmt_s(t.get('median_s'))}" if "median_s" in t else f"{s} {t.get('error')}"
                     for s, t in timing.items())
