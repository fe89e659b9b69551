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
200``, query ``ef`` in {10, 20, 50, 100, 200}, ``k = 10``:

* pixrank: ``Index(d, space='cosine', M=16, ef_construction=200, num_threads=t)``,
  ``add(x, ids)``, ``query(q, 10, ef=ef)`` (it wraps hnswlib; the row measures the wrapper's
  cost);
* hnswlib: ``hnswlib.Index('cosine', d)``, ``init_index(n, M=16, ef_construction=200)``,
  ``add_items(x, num_threads=t)``, ``set_ef(ef)``, ``knn_query(q, 10, num_threads=t)``;
* FAISS: ``IndexHNSWFlat(d, 16, METRIC_INNER_PRODUCT)`` on L2-normalised vectors,
  ``hnsw.efConstruction = 200``, ``hnsw.efSearch = ef`` (queries normalised inside the
  timed call).

``python -m bench --hnsw-n N`` uses ``N`` vectors instead, for a loaded machine where a 100k
build takes many minutes.

Build time: one build per side at the largest thread count asked for (a build of 100k takes
about a minute on 2 shared cores; the order of the sides alternates between data sets).
Queries: paired timing, all ``Q`` queries per call, at every thread count; queries/s =
``Q / median``. Recall@10 against exact cosine search (numpy, float32).

Check: pixrank's recall@10 within 0.03 of raw hnswlib's at every ``ef`` (both are
hnswlib graphs with the same parameters and seed; multi-threaded builds differ slightly).
"""
from __future__ import annotations

import os
import time

import numpy as np

from .common import (NotAvailable, fmt_s, import_optional, make_row, paired_time, raiser,
                     set_threads)
from .ranking import numpy_topk

GROUP = "hnsw"
PROFILES = {"machine": ["hnswlib", "faiss"]}
M, EF_C, K = 16, 200, 10
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


def run(refs: list[str], threads: list[int], quick: bool, log=print) -> list[dict]:
    rng = np.random.default_rng(2024)
    n, d, nq = (3_000, 32, 200) if quick else (100_000, 128, 1_000)
    if os.environ.get("PIXRANK_BENCH_HNSW_N"):  # python -m bench --hnsw-n N
        n = int(os.environ["PIXRANK_BENCH_HNSW_N"])
    efs = EFS_QUICK if quick else EFS_FULL
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
    hnswlib = libs.get("hnswlib")
    rows = []
    for kind_no, kind in enumerate(("gaussian", "clustered")):
        x, q = make_data(kind, n, nq, d, rng)
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        truth = numpy_topk(q, xn, K)
        ids = np.arange(n, dtype=np.int64)
        # ------------------------------------------------------------- builds
        set_threads(build_threads)
        builders = {}
        if Index is None:
            builders["pixrank"] = raiser(pix_err)
        else:
            def b_pix():
                ix = Index(d, space="cosine", M=M, ef_construction=EF_C, num_threads=build_threads)
                ix.add(x, ids)
                return ix
            builders["pixrank"] = b_pix
        for ref in refs:
            lib = libs[ref]
            if isinstance(lib, Exception):
                builders[ref] = raiser(lib)
            elif ref == "hnswlib":
                def b_h(lib=lib):
                    ix = lib.Index(space="cosine", dim=d)
                    ix.init_index(max_elements=n, M=M, ef_construction=EF_C, random_seed=100)
                    ix.add_items(x, ids, num_threads=build_threads)
                    return ix
                builders[ref] = b_h
            elif ref == "faiss":
                def b_f(lib=lib):
                    lib.omp_set_num_threads(build_threads)
                    ix = lib.IndexHNSWFlat(d, M, lib.METRIC_INNER_PRODUCT)
                    ix.hnsw.efConstruction = EF_C
                    ix.add(xn)
                    return ix
                builders[ref] = b_f
        order = list(builders) if kind_no % 2 == 0 else list(builders)[::-1]
        built, build_t = {}, {}
        for name in order:
            t0 = time.perf_counter()
            try:
                built[name] = builders[name]()
                build_t[name] = {"median_s": time.perf_counter() - t0, "samples": [time.perf_counter() - t0]}
            except NotAvailable as exc:
                build_t[name] = {"error": f"not available: {exc}"}
            except Exception as exc:
                build_t[name] = {"error": f"failed: {type(exc).__name__}: {exc}"}
        rows.append(make_row(GROUP, f"{kind}: build {n // 1000}k x {d}", build_threads, build_t, refs,
                             unit="build", extra={"kind": kind, "n": n, "d": d, "order": order},
                             notes=["one build per side (not a median)"]))
        log(f"  hnsw {kind} build t={build_threads}: " + ", ".join(
            f"{s} {fmt_s(t.get('median_s'))}" for s, t in build_t.items()))

        # ------------------------------------------------------------- queries
        def q_pix(ef, nt):
            return built["pixrank"].query(q, K, ef=ef)[0]

        def q_h(ef, nt):
            ix = built["hnswlib"]
            ix.set_ef(ef)
            return ix.knn_query(q, k=K, num_threads=nt)[0].astype(np.int64)

        def q_f(ef, nt):
            ix = built["faiss"]
            ix.hnsw.efSearch = ef
            qq = q.copy()
            faiss.normalize_L2(qq)
            return ix.search(qq, K)[1]
        fns = {"pixrank": q_pix, "hnswlib": q_h, "faiss": q_f}
        for ef in efs:
            recalls = {}
            for name in built:
                recalls[name] = recall_at_k(fns[name](ef, build_threads), truth)
            for nt in threads:
                set_threads(nt)
                if "pixrank" in built:
                    built["pixrank"].set_num_threads(nt)
                sides = {}
                for name in ["pixrank", *refs]:
                    if name in built:
                        sides[name] = (lambda ef=ef, nt=nt, f=fns[name]: f(ef, nt))
                    else:
                        err = build_t.get(name, {}).get("error", "not built")
                        sides[name] = raiser(NotAvailable(err.replace("not available: ", "")))
                check = {}
                if "pixrank" in recalls and "hnswlib" in recalls:
                    diff = abs(recalls["pixrank"] - recalls["hnswlib"])
                    check["hnswlib"] = {"ok": diff <= 0.03, "detail": f"recall@10 pixrank {recalls['pixrank']:.4f} "
                                        f"vs hnswlib {recalls['hnswlib']:.4f} (|diff| {diff:.4f}, tol 0.03)"}
                timing = paired_time(sides, repeats=1 if quick else 3, warmup=1,
                                     min_sample_s=0.002 if quick else 0.1)
                row = make_row(GROUP, f"{kind}: ef={ef}", nt, timing, refs, unit=f"{nq} queries", check=check,
                               extra={"kind": kind, "ef": ef, "recall": recalls, "n": n, "d": d, "Q": nq,
                                      "qps": {s: nq / t["median_s"] for s, t in timing.items() if "median_s" in t}})
                rows.append(row)
                log(f"  hnsw {kind} ef={ef} t={nt}: " + ", ".join(
                    f"{s} {row['extra']['qps'].get(s, 0):.0f} q/s recall {recalls.get(s, float('nan')):.3f}" for s in sides))
        del built
    return rows
