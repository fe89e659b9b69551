"""Exact cosine top-10: pixrank's ``ops.cosine_topk`` against numpy, PyTorch and FAISS.

Data: ``n`` database vectors and ``Q`` queries of dimension ``d``, i.i.d. N(0, 1) float32
with a fixed seed; n in {100k, 1M}, d in {128, 384}, Q in {100, 1000} (``--quick``: a few
thousand vectors). The database is L2-normalised once, as an index stores it (not timed);
every side gets that normalised database and the *raw* queries, and normalises the
queries inside the timed call:

* pixrank: ``ops.CosineDatabase(database)`` built once (normalised and packed, as
  ``pixrank.search.Index`` keeps it in exact mode; not timed, like FAISS's index), then
  ``ops.cosine_topk(queries, prepared, 10)`` (fused GEMM + running top-k);
* numpy: ``q / |q|``, then per block of queries ``S = q @ db.T``, ``np.argpartition`` for
  the 10 best and ``np.argsort`` of those 10 (blocks keep ``S`` at 128 MB or less);
* PyTorch: the same with ``torch.mm`` and ``torch.topk`` (sorted) per block;
* FAISS: ``IndexFlatIP`` over the normalised database (built once, not timed),
  ``faiss.normalize_L2`` on a copy of the queries, ``index.search(q, 10)``, with
  ``faiss.cvar.distance_compute_blas_threshold = 20`` so that FAISS uses its BLAS path for
  batches of 20 queries and more (its default, 20 *only when Q x d >= 128,000*, would make
  it scan at ~500 queries/s and flatter pixrank).

Throughput: queries per second = Q / median time. Repeats: 5 timed per side; 3 for rows
of n·d·Q >= 10^10 (warmed up on Q/10 queries); 1 for the 1M-vector rows with 1000 queries
(n·d·Q >= 10^11: tens of seconds per call, the row's notes say so). Check: the same top-10
ids as each reference, ties aside (:func:`bench.common.check_topk_ids`), on all queries, or
on the first Q/10 for rows of n·d·Q >= 10^10.

Memory: one database copy of n x d float32 (1.5 GB at 1M x 384) shared by numpy and
PyTorch (``torch.from_numpy``), pixrank's packed copy in its ``CosineDatabase``, plus FAISS's
own copy inside its index in the process that runs FAISS; score blocks of at most 128 MB; the database is freed before the next size.
"""
from __future__ import annotations

import numpy as np

from .common import (NotAvailable, check_topk_ids, fmt_s, import_optional, import_pixrank_ops,
                     make_row, paired_time, raiser, set_threads)

GROUP = "ranking"
PROFILES = {"numpy": ["numpy"], "machine": ["torch", "faiss"]}
K = 10
FULL = [(100_000, 128), (100_000, 384), (1_000_000, 128), (1_000_000, 384)]
QUICK = [(5_000, 64), (3_000, 128)]
QS_FULL = (100, 1000)
QS_QUICK = (20,)
BLOCK_BYTES = 128 << 20
#: n·d·Q from which a row warms up on Q/10 queries and checks on them
HEAVY = 1e10
#: n·d·Q from which a row times one repeat per side (1M vectors x 1000 queries)
HUGE = 1e11


def _block(n: int) -> int:
    return max(1, min(4096, BLOCK_BYTES // (4 * n)))


def normalize_rows(x: np.ndarray, chunk: int = 65536) -> None:
    """L2-normalise the rows of float32 ``x`` in place, a chunk of rows at a time (no
    full-size temporary: at 1M x 384 one copy is 1.5 GB)."""
    for s in range(0, len(x), chunk):
        blk = x[s:s + chunk]
        blk /= np.linalg.norm(blk, axis=1, keepdims=True)


def numpy_topk(q: np.ndarray, db: np.ndarray, k: int) -> np.ndarray:
    """Exact cosine top-k ids with numpy (``db`` already normalised)."""
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
    out = np.empty((len(q), k), dtype=np.int64)
    bs = _block(len(db))
    for s in range(0, len(q), bs):
        S = qn[s:s + bs] @ db.T
        part = np.argpartition(S, -k, axis=1)[:, -k:]
        sc = np.take_along_axis(S, part, axis=1)
        order = np.argsort(-sc, axis=1, kind="stable")
        out[s:s + bs] = np.take_along_axis(part, order, axis=1)
    return out


def torch_topk(torch, q, db, k: int):
    """Exact cosine top-k ids with PyTorch tensors (``db`` already normalised)."""
    qn = torch.nn.functional.normalize(q, dim=1)
    bs = _block(db.shape[0])
    out = []
    for s in range(0, q.shape[0], bs):
        S = torch.mm(qn[s:s + bs], db.t())
        out.append(torch.topk(S, k, dim=1, largest=True, sorted=True).indices)
    return torch.cat(out)


def faiss_topk(faiss, index, q: np.ndarray, k: int) -> np.ndarray:
    qn = q.copy()
    faiss.normalize_L2(qn)
    return index.search(qn, k)[1]


def run(refs: list[str], threads: list[int], quick: bool, log=print) -> list[dict]:
    rng = np.random.default_rng(777)
    try:
        ops = import_pixrank_ops()
        ops_err = None
    except NotAvailable as exc:
        ops, ops_err = None, exc
    libs = {}
    for ref in refs:
        if ref == "numpy":
            libs[ref] = np
            continue
        try:
            libs[ref] = import_optional(ref)
        except NotAvailable as exc:
            libs[ref] = exc
    faiss = libs.get("faiss")
    if faiss is not None and not isinstance(faiss, Exception):
        faiss.cvar.distance_compute_blas_threshold = 20
    torch = libs.get("torch")
    rows = []
    for n, d in (QUICK if quick else FULL):
        db = rng.standard_normal((n, d), dtype=np.float32)
        normalize_rows(db)
        index = None
        if faiss is not None and not isinstance(faiss, Exception):
            index = faiss.IndexFlatIP(d)
            index.add(db)
        tdb = torch.from_numpy(db) if torch is not None and not isinstance(torch, Exception) else None
        # pixrank's analogue of FAISS's index: the database prepared once (not timed)
        pdb = ops.CosineDatabase(db) if ops is not None else None
        for Q in (QS_QUICK if quick else QS_FULL):
            q = rng.standard_normal((Q, d), dtype=np.float32)
            qw = q[: max(1, Q // 10)]
            tq = torch.from_numpy(q) if tdb is not None else None
            heavy = (not quick) and n * d * Q >= HEAVY
            # 1M vectors x 1000 queries: tens of seconds per call and side (numpy's and
            # PyTorch's selection over 1M scores per query dominates): one timed repeat at
            # each thread count, so that the full suite fits in about half an hour
            huge = heavy and n * d * Q >= HUGE
            # the output check: on the Q/10 warm-up queries for heavy rows (saves a full
            # call per side), on all queries otherwise
            qc = qw if heavy else q
            pix_ids = ops.cosine_topk(qc, pdb, K)[0] if ops is not None else None
            cfg_checks = {}  # computed at the first thread count, reported at all
            for nt in threads:
                set_threads(nt)
                sides, warm, check = {}, {}, {}
                if ops is None:
                    sides["pixrank"] = raiser(ops_err)
                else:
                    sides["pixrank"] = lambda q=q: ops.cosine_topk(q, pdb, K)
                    warm["pixrank"] = lambda qw=qw: ops.cosine_topk(qw, pdb, K)
                for ref in refs:
                    lib = libs[ref]
                    if isinstance(lib, Exception):
                        sides[ref] = raiser(lib)
                        continue
                    if ref == "numpy":
                        sides[ref] = lambda q=q: numpy_topk(q, db, K)
                        warm[ref] = lambda qw=qw: numpy_topk(qw, db, K)
                        ref_ids = numpy_topk(qc, db, K) if pix_ids is not None and ref not in cfg_checks else None
                    elif ref == "torch":
                        sides[ref] = lambda tq=tq, lib=lib: torch_topk(lib, tq, tdb, K)
                        warm[ref] = lambda qw=qw, lib=lib: torch_topk(lib, lib.from_numpy(qw), tdb, K)
                        ref_ids = (torch_topk(lib, lib.from_numpy(qc), tdb, K).numpy()
                                   if pix_ids is not None and ref not in cfg_checks else None)
                    elif ref == "faiss":
                        sides[ref] = lambda q=q, lib=lib: faiss_topk(lib, index, q, K)
                        warm[ref] = lambda qw=qw, lib=lib: faiss_topk(lib, index, qw, K)
                        ref_ids = faiss_topk(lib, index, qc, K) if pix_ids is not None and ref not in cfg_checks else None
                    if ref_ids is not None:
                        cfg_checks[ref] = check_topk_ids("ids", pix_ids, ref_ids, qc, db)
                        if heavy:
                            cfg_checks[ref]["detail"] += f" (checked on the first {len(qc)} of the {Q} queries)"
                    if ref in cfg_checks:
                        check[ref] = cfg_checks[ref]
                # slow stretches of a few seconds come from outside this machine's VM and hit
                # whichever side runs then: 5 repeats even for heavy rows, so that one stretch
                # does not decide a median
                reps = 1 if (quick or huge) else 5
                timing = paired_time(sides, repeats=reps, warmup=1,
                                     min_sample_s=0.002 if quick else 0.2,
                                     warmup_sides=warm if heavy else None)
                if huge and "faiss" in sides and "pixrank" in sides:
                    # pixrank against FAISS (seconds per call, not tens) gets 3 alternated repeats
                    # of its own; numpy and PyTorch keep their single repeat above
                    pf = {s: sides[s] for s in ("pixrank", "faiss")}
                    timing.update(paired_time(pf, repeats=3, warmup=1, min_sample_s=0.2,
                                              warmup_sides={s: warm[s] for s in pf if s in warm}))
                name = f"n={n // 1000}k d={d} Q={Q}" if n < 1_000_000 else f"n={n // 1_000_000}M d={d} Q={Q}"
                row = make_row(GROUP, name, nt, timing, refs, unit=f"{Q} queries", check=check,
                               notes=["pixrank and FAISS: median of 3 alternated repeats; numpy and PyTorch: one timed repeat (tens of seconds per call)"] if huge else None,
                               flops=2.0 * n * d * Q, extra={"n": n, "d": d, "Q": Q, "k": K})
                row["extra"]["qps"] = {s: Q / t["median_s"] for s, t in timing.items() if "median_s" in t}
                rows.append(row)
                log(f"  ranking {name} t={nt}: " + ", ".join(
                    f"{s} {fmt_s(t['median_s'])} ({Q / t['median_s']:.0f} q/s)" for s, t in timing.items() if "median_s" in t))
        del db, index, tdb, pdb
    return rows
