"""Write a suite's results: ``BENCHMARKS.md``, ``results.json`` and the PNG plots.

``BENCHMARKS.md`` holds the machine (CPU, SIMD flags, cores, measured clock, fp32 peak
and how it was estimated), the library versions and the compute path each side used,
the command and the date, then one table per group: median times per side, the ratio
``reference time / pixrank time`` (above 1: pixrank is faster), GFLOP/s where meaningful,
and the check of pixrank's output against the reference's.

Plots (matplotlib, Agg backend): ``gemm.png`` (GFLOP/s against size per library and
thread count, with the peak), ``hnsw.png`` (recall@10 against queries/s per library and
data set).
"""
from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone

from .common import fmt_s

GROUP_TITLES = {
    "gemm": "GEMM (SGEMM, float32)",
    "layers": "Layers (forward, forward+backward)",
    "training": "Training on Fashion-MNIST",
    "ranking": "Exact cosine top-10",
    "hnsw": "HNSW (approximate top-10)",
}


def _ratio(r, best=None):
    if r is None:
        return "n/a"
    return f"{r:.2f}×" + (f" ({best:.2f}×)" if best is not None else "")


def _cpu_ratio(row, ref):
    """Ratio of median process CPU times, shown for 1-thread rows only (at more threads CPU
    time also counts worker threads spinning while they wait, which is not work)."""
    c = row.get("cpu_s", {})
    if row["threads"] != 1 or not c.get("pixrank") or not c.get(ref):
        return "–"
    return f"{c[ref] / c['pixrank']:.2f}×"


def _rr(row, ref):
    """Ratio of medians, and of the fastest repeats in brackets."""
    return _ratio(row["ratios"].get(ref), row.get("ratios_best", {}).get(ref))


def _gf(flops, t):
    return "" if (flops is None or not t) else f"{flops / t / 1e9:.1f}"


def _check(row, ref):
    c = row.get("check", {}).get(ref)
    if not c:
        return "–"
    mark = "ok" if c.get("ok") else "**MISMATCH**"
    if "rel_err" in c:
        return f"{mark} ({c['rel_err']:.1e})"
    if "ids_equal" in c:
        return f"{mark} ({c['ids_equal'] * 100:.1f}% same ids)"
    return mark


def _notes(row):
    return "; ".join(row.get("notes", []))


def _pairs(rows):
    """(row, ref) pairs in run order, one per reference the row was paired with."""
    for r in rows:
        for ref in r["refs"]:
            yield r, ref


def _table(lines, header, body):
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(" --- " for _ in header) + "|")
    for b in body:
        lines.append("| " + " | ".join(str(x) for x in b) + " |")
    lines.append("")


def _group_rows(suite, g):
    return [r for res in suite["groups"].get(g, []) for r in res.get("rows", [])]


def _gemm_table(lines, rows, machine):
    peak = machine.get("peak_gflops", {})
    body = []
    for r, ref in _pairs(rows):
        p, t = r["pixrank_s"], r["refs"].get(ref)
        pk = peak.get(str(r["threads"]))
        pct = f"{r['flops'] / p / 1e9 / pk * 100:.0f}%" if (p and pk) else ""
        body.append([r["row"], r["threads"], ref, fmt_s(p), fmt_s(t), _rr(r, ref), _cpu_ratio(r, ref),
                     _gf(r["flops"], p), _gf(r["flops"], t), pct, _check(r, ref), _notes(r)])
    _table(lines, ["shape M×K×N", "threads", "vs", "pixrank", "reference", "ratio ref/pixrank (best)", "CPU-time ratio",
                   "pixrank GFLOP/s", "ref GFLOP/s", "pixrank % of peak", "output check", "notes"], body)


def _generic_table(lines, rows, gflops=True):
    body = []
    for r, ref in _pairs(rows):
        p, t = r["pixrank_s"], r["refs"].get(ref)
        b = [r["row"], r["threads"], ref, fmt_s(p), fmt_s(t), _rr(r, ref), _cpu_ratio(r, ref)]
        if gflops:
            b += [_gf(r["flops"], p), _gf(r["flops"], t)]
        b += [_check(r, ref), _notes(r)]
        body.append(b)
    head = ["row", "threads", "vs", "pixrank", "reference", "ratio ref/pixrank (best)", "CPU-time ratio"]
    if gflops:
        head += ["pixrank GFLOP/s", "ref GFLOP/s"]
    _table(lines, head + ["output check", "notes"], body)


def _ranking_table(lines, rows):
    body = []
    for r, ref in _pairs(rows):
        p, t = r["pixrank_s"], r["refs"].get(ref)
        qps = r["extra"].get("qps", {})
        body.append([r["row"], r["threads"], ref, fmt_s(p), fmt_s(t), _rr(r, ref), _cpu_ratio(r, ref),
                     f"{qps['pixrank']:.0f}" if "pixrank" in qps else "n/a",
                     f"{qps[ref]:.0f}" if ref in qps else "n/a", _check(r, ref), _notes(r)])
    _table(lines, ["data, queries", "threads", "vs", "pixrank", "reference", "ratio ref/pixrank (best)", "CPU-time ratio",
                   "pixrank q/s", "ref q/s", "same top-10 ids", "notes"], body)


def _training_table(lines, rows):
    body = []
    for r, ref in _pairs(rows):
        ex = r["extra"]
        acc = ex.get("accuracy", {})
        fa = lambda a: "n/a" if a is None else f"{a * 100:.2f}%"  # noqa: E731
        loss = ex.get("train_loss", {})
        fl = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        runs = len(ex.get("seeds", [])) or 1
        body.append([r["row"], r["threads"], ref, fmt_s(r["pixrank_s"]), fmt_s(r["refs"].get(ref)),
                     _rr(r, ref), _cpu_ratio(r, ref), f"{ex.get('epochs', '')} × {runs}",
                     fa(acc.get("pixrank")), fa(acc.get(ref)),
                     f"{fl(loss.get('pixrank'))} / {fl(loss.get(ref))}", _notes(r)])
    _table(lines, ["model", "threads", "vs", "pixrank s/epoch", "reference s/epoch", "ratio ref/pixrank (best)",
                   "CPU-time ratio", "epochs × runs", "pixrank test acc. (mean of runs)", "ref test acc. (mean of runs)",
                   "training loss, last epoch (pixrank / ref)", "notes"], body)


def _hnsw_table(lines, rows):
    builds = [r for r in rows if r["unit"] == "build"]
    queries = [r for r in rows if r["unit"] != "build"]
    lines.append("Build (the rows at reduced sizes are medians of 3 alternated builds per side: 10k vectors at "
                 "1 thread, where both sides build the identical graph, and 20k at the largest thread count; "
                 "the full-size rows are one build per side, as their notes say):")
    lines.append("")
    body = []
    for r, ref in _pairs(builds):
        body.append([r["row"], r["threads"], ref, fmt_s(r["pixrank_s"]), fmt_s(r["refs"].get(ref)),
                     _rr(r, ref), _notes(r)])
    _table(lines, ["data", "threads", "vs", "pixrank", "reference", "ratio ref/pixrank (best)", "notes"], body)
    lines.append("Queries (all queries in one batched call; queries/s and recall@10 against exact search):")
    lines.append("")
    body = []
    for r, ref in _pairs(queries):
        qps, rec = r["extra"].get("qps", {}), r["extra"].get("recall", {})
        f = lambda d, s, fmt: fmt.format(d[s]) if s in d else "n/a"  # noqa: E731
        body.append([r["row"], r["threads"], ref, f(qps, "pixrank", "{:.0f}"), f(qps, ref, "{:.0f}"),
                     _rr(r, ref), _cpu_ratio(r, ref), f(rec, "pixrank", "{:.4f}"), f(rec, ref, "{:.4f}"),
                     _check(r, ref), _notes(r)])
    _table(lines, ["data, ef", "threads", "vs", "pixrank q/s", "ref q/s", "ratio (q/s pixrank/ref)", "CPU-time ratio",
                   "pixrank recall@10", "ref recall@10", "check", "notes"], body)


def _meta_lines(suite):
    """Library versions and compute paths, gathered from every child process."""
    out = []
    seen = set()
    for g, results in suite["groups"].items():
        for res in results:
            meta = res.get("meta", {})
            env = meta.get("openblas_env", {})
            key = (g, res.get("profile"))
            if key in seen:
                continue
            seen.add(key)
            blas = [b for b in meta.get("blas", []) if b.get("internal_api") == "openblas"]
            blas_s = ", ".join(f"{os.path.basename(b.get('filepath') or '')} {b.get('version')} "
                               f"kernel **{b.get('architecture')}** ({b.get('threading_layer')})" for b in blas)
            out.append(f"- `{g}` / {res.get('profile')} process ({', '.join(res.get('refs', []))}): "
                       f"{res.get('profile_env_note', '')}; OPENBLAS_CORETYPE={env.get('OPENBLAS_CORETYPE')}, "
                       f"OPENBLAS_L2_SIZE={env.get('OPENBLAS_L2_SIZE')}; OpenBLAS loaded: {blas_s or 'none'}"
                       + (f"; load average (1 min) {res['loadavg_start'][0]:.1f} at start, {res['loadavg_end'][0]:.1f} at end"
                          if res.get("loadavg_start") and res.get("loadavg_end") else "")
                       + (f"; {res['seconds']:.1f} s" if res.get("seconds") else "")
                       + (f"; **error**: `{res['error'].strip().splitlines()[-1]}`" if res.get("error") else ""))
    return out


def _versions(suite):
    """One merged view of versions/paths over the children."""
    v = {}
    for results in suite["groups"].values():
        for res in results:
            for k, val in res.get("meta", {}).items():
                if k in ("pixrank", "torch", "faiss", "hnswlib", "numpy") and k not in v:
                    if isinstance(val, dict) and "error" in val:
                        continue
                    v[k] = val
    return v


#: issue 5's figures to reach: (label, group, row filter, reference, threshold on the ratio)
TARGETS = [
    ("SGEMM ≥ 512³: ≥ 0.95× numpy", "gemm", lambda r: r["row"] in ("512³", "1024³", "2048³"), "numpy", 0.95),
    ("SGEMM ≥ 512³: ≥ 2× PyTorch", "gemm", lambda r: r["row"] in ("512³", "1024³", "2048³"), "torch", 2.0),
    ("Dense+ReLU fwd+bwd 128×784→200: ≥ 2× PyTorch", "layers",
     lambda r: r["row"].startswith("Dense+ReLU fwd+bwd 128x784->200"), "torch", 2.0),
    ("softmax CE fwd+bwd (128, 10): ≥ 3× PyTorch", "layers",
     lambda r: r["row"].startswith("softmax CE fwd+bwd (128, 10)"), "torch", 3.0),
    ("Conv2D fwd+bwd, cnn shapes: ≥ 1× PyTorch", "layers",
     lambda r: r["row"].startswith("Conv2D+ReLU fwd+bwd") or r["row"].startswith("Dense+ReLU fwd+bwd 3136"), "torch", 1.0),
    ("MLP epoch: ≥ 2× PyTorch", "training", lambda r: r["row"].startswith("mlp"), "torch", 2.0),
    ("cnn epoch: ≥ 1× PyTorch", "training", lambda r: r["row"].startswith("cnn"), "torch", 1.0),
    ("exact top-10: ≥ 1.5× FAISS IndexFlatIP", "ranking", lambda r: True, "faiss", 1.5),
    ("exact top-10: ≥ 2× numpy", "ranking", lambda r: True, "numpy", 2.0),
    # single full-size builds (one sample per side on a machine whose speed drifts) are reported in the
    # HNSW table but not judged here; the repeated (median) builds are
    ("HNSW via Index: within 5 % of raw hnswlib (q/s on the same graph; builds: medians of repeated builds)",
     "hnsw", lambda r: r["unit"] != "build" or (r.get("extra") or {}).get("repeats", 1) > 1, "hnswlib", 0.95),
]


def _targets(lines, suite, loaded=True):
    """A summary table: each target of issue 5, the worst and best ratio over its rows."""
    rows_all = [r for results in suite["groups"].values() for res in results for r in res.get("rows", [])]
    body = []
    for label, g, sel, ref, thr in TARGETS:
        rows = [r for r in rows_all if r["group"] == g and sel(r) and ref in r.get("refs", {})]
        cells = []
        for nt in (2, 1):
            vals = [(r["ratios"].get(ref), r["row"]) for r in rows if r["threads"] == nt and r["ratios"].get(ref)]
            missing = sum(1 for r in rows if r["threads"] == nt and not r["ratios"].get(ref))
            if vals:
                lo, hi = min(vals), max(vals)
                cell = f"{lo[0]:.2f}× ({lo[1]}) … {hi[0]:.2f}×" if len(vals) > 1 else f"{lo[0]:.2f}×"
            else:
                cell = "n/a"
            if missing:  # a side failed or was not available in these rows: say so, do not hide it
                cell += f" ({missing} of {missing + len(vals)} rows without a ratio)"
            cells.append(cell)
        cpu = [(r["cpu_s"][ref] / r["cpu_s"]["pixrank"], r["row"]) for r in rows if r["threads"] == 1
               and r.get("cpu_s", {}).get(ref) and r.get("cpu_s", {}).get("pixrank")]
        cpu_cell = (f"{min(cpu)[0]:.2f}× … {max(cpu)[0]:.2f}×" if len(cpu) > 1 else f"{cpu[0][0]:.2f}×") if cpu else "n/a"
        two = [r["ratios"].get(ref) for r in rows if r["threads"] == 2 and r["ratios"].get(ref)]
        met = "n/a" if not two else ("**yes**" if min(two) >= thr else ("partly" if max(two) >= thr else "no"))
        c1 = [c for c, _ in cpu]
        met_cpu = "n/a" if not c1 else ("**yes**" if min(c1) >= thr else ("partly" if max(c1) >= thr else "no"))
        extra = ""
        if g == "training":
            gaps = [(r["extra"].get("accuracy", {}).get("pixrank"), r["extra"].get("accuracy", {}).get(ref))
                    for r in rows]
            gaps = [(a - b) * 100 for a, b in gaps if a is not None and b is not None]
            if gaps:
                extra = f"; accuracy gap {', '.join(f'{x:+.2f}' for x in gaps)} points (target within ±0.5)"
        body.append([label, cells[0], cells[1], cpu_cell, met, met_cpu + extra])
    _table(lines, ["target (issue 5)", "ratio, 2 threads (worst … best)", "ratio, 1 thread",
                   "CPU-time ratio, 1 thread", "met at 2 threads (all rows)?",
                   "met by 1-thread CPU time (all rows)?"], body)
    if loaded:
        lines += ["On a machine this loaded, 2-thread wall times mostly measure how each library's threads "
                  "wait at barriers (FAISS's and PyTorch's OpenMP threads spin, which collapses under "
                  "oversubscription and flatters pixrank); the last column, from 1-thread CPU time, is the "
                  "comparison to trust here.", ""]
    else:
        lines += [""]


def _between_sides_note() -> str:
    """The header paragraph that says what the harness does between the sides of a row."""
    from .common import SETTLE_BLAS_S, SETTLE_OMP_S
    knobs = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT", "KMP_BLOCKTIME", "MKL_NUM_THREADS",
             "OMP_NUM_THREADS")
    set_ = [f"{k}={os.environ[k]}" for k in knobs if k in os.environ]
    env = ("as the environment sets them: " + ", ".join(f"`{x}`" for x in set_)) if set_ else \
        "as the environment sets them (here: all unset, the libraries' defaults)"
    override = os.environ.get("PIXRANK_BENCH_SETTLE_S")
    pause = (f"**{override} s** before every timed sample (`PIXRANK_BENCH_SETTLE_S` was set for this run)"
             if override is not None else
             f"{SETTLE_BLAS_S:g} s before every timed sample in rows with a numpy side, {SETTLE_OMP_S:g} s in "
             "the others")
    return ("**Between sides** (rows at 2 threads): a library's idle worker threads keep spinning for a while "
            "after each call, and in one process they take the cores from the side timed next: numpy's "
            "OpenBLAS (a pthreads build) spins 2^28 TSC ticks, about 0.1 s, after each call. Measured on this "
            "machine on 2026-11-30, pixrank at 1024³ read 0.67–0.86× numpy with the two alternating back to "
            "back and 0.91–0.92× with the pause below (about 0.92× was reported with each in a process of its own). So the "
            f"harness sleeps, untimed, {pause}. pixrank's GEMM runs on its own worker pool (an idle worker "
            "spins 50 µs, then yields its core until 2 ms after its last task, then sleeps); pixrank's other "
            "parallel loops, PyTorch's MKL and oneDNN, and FAISS use GNU OpenMP, whose idle workers spin "
            "`GOMP_SPINCOUNT` iterations: libgomp's default 300,000 (a few ms at most), or 1,000 where "
            "`import pixrank.ops` loaded libgomp first (it sets `GOMP_SPINCOUNT=1000` unless the user set it or "
            "`OMP_WAIT_POLICY`; where PyTorch loaded libgomp first, the default stays); hnswlib starts and "
            "joins its threads per call. Training epochs get the short pause too. Every side thus starts "
            "each sample with idle workers, and its repeated calls inside a sample run back to back, as in "
            "a user's loop. The harness changes no library's threading: `OMP_WAIT_POLICY`, `GOMP_SPINCOUNT`, "
            f"`OPENBLAS_THREAD_TIMEOUT`, `KMP_BLOCKTIME`, `OMP_NUM_THREADS` are left {env}, so no side loses "
            "its spin-wait fast path between its own calls; thread counts are set through each library's "
            "API (`pixrank.set_num_threads`, `torch.set_num_threads`, `faiss.omp_set_num_threads`, "
            "threadpoolctl for the BLAS libraries, hnswlib's `num_threads`). 1-thread rows have no workers "
            "and no pause.")


def write_markdown(suite, path):
    m = suite["machine"]
    lines = ["# pixrank benchmarks", ""]
    when = suite.get("started") or datetime.now(timezone.utc).isoformat(timespec="seconds")
    cmds = {res.get("command") for results in suite["groups"].values() for res in results if res.get("command")}
    quick = " — **quick mode** (small sizes, one repeat: not figures to quote)" if suite.get("quick") else ""
    if len(cmds) > 1:
        head = (f"Assembled from several runs (each section names the command that measured it and when); "
                f"the last was `{suite['command']}` (run from the repository root) on {when} UTC{quick}.")
    else:
        head = (f"Generated by `{suite['command']}` (run from the repository root) on {when} UTC, "
                f"{suite['seconds'] / 60:.1f} minutes{quick}.")
    loads = [x for results in suite["groups"].values() for res in results
             for x in (res.get("loadavg_start", [None])[0], res.get("loadavg_end", [None])[0]) if x is not None]
    loaded = bool(loads) and max(loads) > (m.get("cores") or 1)
    lines += [head, "",
              ("**Measured on a shared machine**: other jobs ran at the same time, so absolute times are noisy. "
               if loaded else "")
              + "Each row times pixrank and its reference(s) in the same process, interleaved (the order "
              "alternates every repeat) after a warm-up, and reports medians; trust the ratios more than the "
              "absolute figures. Ratio = reference time / pixrank time: **above 1 means pixrank is faster**.",
              "",
              _between_sides_note(),
              ""]
    if loaded:
        lines += [f"**Load warning**: the 1-minute load average ranged {min(loads):.1f}–{max(loads):.1f} on "
                  f"{m.get('cores')} cores during these runs (other jobs). When runnable threads far outnumber "
                  "cores, every side's 2-thread timings mostly measure waiting for the scheduler at each "
                  "parallel barrier, and even 1-thread wall times stretch. The 'CPU-time ratio' column "
                  "(1-thread rows: process CPU seconds, which exclude time spent descheduled) and the "
                  "best-repeat ratios in brackets are the more robust comparisons on such a machine.", ""]
    lines += ["## Figures against the targets", "",
              "Ratios are reference time / pixrank time (for HNSW: pixrank q/s / hnswlib q/s, and build "
              "times); the worst and best over the target's rows, each a median over interleaved repeats.", ""]
    _targets(lines, suite, loaded)
    lines += ["## Machine", ""]
    pk = m.get("peak_gflops", {})
    lines += [f"- CPU: {m['cpu']} ({m['machine']}), {m['cores']} cores available to the process",
              f"- SIMD: **{m['simd']}** (flags: {', '.join(m['flags_simd'])})",
              f"- clock: {m['clock_ghz'] or 0:.2f} GHz — {m['clock_how']}",
              f"- fp32 peak: {m['peak_how']}; × clock = {m['peak_gflops_1'] or 0:.0f} GFLOP/s per core, "
              + ", ".join(f"{v:.0f} on {k} threads" for k, v in pk.items() if v and k in ("1", "2")),
              f"- Python {m['python']}, {m['platform']}", ""]
    v = _versions(suite)
    lines += ["## Libraries and compute paths", ""]
    if "pixrank" in v:
        p = v["pixrank"]
        lines.append(f"- pixrank {p.get('version')}: SIMD path **{p.get('simd')}** (available: "
                     f"{', '.join(p.get('simd_available', []) or [])}), threading {p.get('threading')}, "
                     f"compiler {p.get('compiler')}")
    else:
        lines.append("- pixrank: kernels not available in this run")
    lines.append(f"- numpy {v.get('numpy', '?')}")
    if "torch" in v:
        t = v["torch"]
        lines.append(f"- PyTorch {t['version']}: CPU capability {t.get('cpu_capability')}, MKL {t.get('mkl')}, "
                     f"oneDNN (mkldnn) {t.get('mkldnn')}; {'; '.join(t.get('config', []))}. Convolutions and "
                     "max-pool run in PyTorch's natural NCHW layout (contiguous NCHW tensors), Linear "
                     "weights in its (out, in) layout; its default allocator (glibc malloc).")
    if "faiss" in v:
        f = v["faiss"]
        lines.append(f"- FAISS {f['version']} ({f.get('compile_options')}), "
                     f"`faiss.cvar.distance_compute_blas_threshold = {f.get('distance_compute_blas_threshold')}`")
    if "hnswlib" in v:
        lines.append(f"- hnswlib {v['hnswlib'].get('version')}")
    lines.append("")
    lines.append("Per process (numpy's rows run with `OPENBLAS_CORETYPE` and `OPENBLAS_L2_SIZE` removed from "
                 "their environment, so that numpy's OpenBLAS picks its best kernel; FAISS runs with the "
                 "environment as the machine sets it):")
    lines.append("")
    lines += _meta_lines(suite)
    lines.append("")
    for g in suite["groups"]:
        rows = _group_rows(suite, g)
        lines += [f"## {GROUP_TITLES.get(g, g)}", ""]
        doc = _group_doc(g)
        if doc:
            lines += [doc, ""]
        when = [(res.get("command"), res.get("started"), res.get("seconds")) for res in suite["groups"][g]]
        cmds = list(dict.fromkeys(w[0] for w in when if w[0]))
        if cmds:
            lines += [f"Measured by {', '.join(f'`{c}`' for c in cmds)} (finished {max(w[1] or '' for w in when)} UTC; "
                      f"{sum(w[2] or 0 for w in when) / 60:.1f} minutes in its child processes).", ""]
        for res in suite["groups"][g]:
            if res.get("partial_note"):
                lines += [f"**Partial** ({res.get('profile')} process, {', '.join(res.get('refs', []))}): "
                          f"{res['partial_note']}", ""]
        if not rows:
            errs = [res.get("error") for res in suite["groups"][g] if res.get("error")]
            lines += [f"No rows: {errs[0].strip().splitlines()[-1] if errs else 'nothing ran'}", ""]
            continue
        if g == "gemm":
            _gemm_table(lines, rows, m)
            if "gemm.png" in suite.get("_plots", []):
                lines += ["![GEMM GFLOP/s](gemm.png)", ""]
        elif g == "layers":
            _generic_table(lines, rows, gflops=True)
        elif g == "training":
            _training_table(lines, rows)
        elif g == "ranking":
            _ranking_table(lines, rows)
        elif g == "hnsw":
            _hnsw_table(lines, rows)
            if "hnsw.png" in suite.get("_plots", []):
                lines += ["![HNSW recall vs queries/s](hnsw.png)", ""]
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)


def _group_doc(g):
    """The first paragraph of the group module's docstring, for the report."""
    import importlib
    try:
        doc = importlib.import_module(f"bench.{g}").__doc__ or ""
    except Exception:
        return ""
    paras = [p.strip() for p in doc.strip().split("\n\n")]
    return re.sub(r"\s*\n\s*", " ", paras[0]) if paras else ""


def plot_gemm(suite, path) -> bool:
    rows = _group_rows(suite, "gemm")
    if not rows:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    threads = sorted({r["threads"] for r in rows})
    styles = {"pixrank": "o-", "numpy": "s--", "torch": "^:"}
    for nt in threads:
        sq = [r for r in rows if r["threads"] == nt and r["extra"]["shape"][0] == r["extra"]["shape"][1] == r["extra"]["shape"][2]]
        series = {}
        for r in sq:
            n = r["extra"]["shape"][0]
            if r["pixrank_s"]:
                series.setdefault("pixrank", {})[n] = max(series.get("pixrank", {}).get(n, 0), r["flops"] / r["pixrank_s"] / 1e9)
            for ref, t in r["refs"].items():
                if t:
                    series.setdefault(ref, {})[n] = r["flops"] / t / 1e9
        for lib, pts in series.items():
            xs = sorted(pts)
            ax.plot(xs, [pts[x] for x in xs], styles.get(lib, "x-"), label=f"{lib}, {nt} thr",
                    alpha=1.0 if nt == threads[-1] else 0.5)
        pk = suite["machine"].get("peak_gflops", {}).get(str(nt))
        if pk:
            ax.axhline(pk, color="grey", lw=0.8, ls="-.")
            ax.text(64, pk * 1.01, f"fp32 peak, {nt} thr ({pk:.0f})", fontsize=8, color="grey")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("n (square n×n×n SGEMM)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"SGEMM throughput — {suite['machine']['cpu']}, {suite['machine']['simd']} (shared machine)")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_hnsw(suite, path) -> bool:
    rows = [r for r in _group_rows(suite, "hnsw") if r["unit"] != "build"]
    if not rows:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    nt = max(r["threads"] for r in rows)
    kinds = sorted({r["extra"]["kind"] for r in rows})
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.5), squeeze=False)
    styles = {"pixrank": "o-", "hnswlib": "s--", "faiss": "^:"}
    for ax, kind in zip(axes[0], kinds):
        sel = sorted((r for r in rows if r["threads"] == nt and r["extra"]["kind"] == kind), key=lambda r: r["extra"]["ef"])
        libs = []
        for r in sel:
            for s in r["extra"].get("qps", {}):
                if s not in libs:
                    libs.append(s)
        for lib in libs:
            pts = [(r["extra"]["recall"][lib], r["extra"]["qps"][lib], r["extra"]["ef"]) for r in sel
                   if lib in r["extra"].get("qps", {}) and lib in r["extra"].get("recall", {})]
            if not pts:
                continue
            ax.plot([p[1] for p in pts], [p[0] for p in pts], styles.get(lib, "x-"), label=lib)
            if lib == "pixrank":
                for rc, qps, ef in pts:
                    ax.annotate(f"ef={ef}", (qps, rc), fontsize=7, textcoords="offset points", xytext=(3, 3))
        ax.set_xscale("log")
        ax.set_xlabel(f"queries/s ({nt} threads, batched)")
        ax.set_ylabel("recall@10")
        ax.set_title(f"HNSW, {kind} data (M=16, efC=200)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(suite, out_dir, plots=True) -> list[str]:
    """Write results.json, the plots and BENCHMARKS.md into ``out_dir``; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    files = []
    suite["_plots"] = []
    if plots:
        for name, fn in (("gemm.png", plot_gemm), ("hnsw.png", plot_hnsw)):
            try:
                if fn(suite, os.path.join(out_dir, name)):
                    suite["_plots"].append(name)
                    files.append(os.path.join(out_dir, name))
            except ImportError as exc:
                print(f"[bench] no {name}: {exc}")
    jpath = os.path.join(out_dir, "results.json")
    with open(jpath + ".tmp", "w") as f:
        json.dump({k: v for k, v in suite.items() if not k.startswith("_") and k != "rows"}, f, indent=1, default=float)
    os.replace(jpath + ".tmp", jpath)
    files.append(jpath)
    mpath = os.path.join(out_dir, "BENCHMARKS.md")
    write_markdown(suite, mpath)
    files.append(mpath)
    return files


def merge_results(paths: list[str], append: bool = False) -> dict:
    """One suite from several ``results.json`` files: later files replace earlier ones'
    groups (``append``: their child-process results are added to the group instead, and
    children that ended with an error and no rows are dropped); the machine and run facts
    come from the last file."""
    suite = None
    for p in paths:
        with open(p) as f:
            s = json.load(f)
        for res in (r for g in s.get("groups", {}).values() for r in g):
            res.setdefault("command", s.get("command"))
            res.setdefault("started", s.get("started"))
        if suite is None:
            suite = s
        else:
            if bool(s.get("quick")) != bool(suite.get("quick")):
                raise ValueError(f"{p}: cannot merge quick and full results")
            groups = dict(suite["groups"])
            for g, res in s["groups"].items():
                groups[g] = (groups.get(g, []) + res) if append else res
            suite = {**s, "groups": groups}
    if append:
        for g, res in suite["groups"].items():
            suite["groups"][g] = [r for r in res if r.get("rows") or not r.get("error")]
    from . import GROUPS
    suite["groups"] = {g: suite["groups"][g] for g in GROUPS if g in suite["groups"]}
    suite.setdefault("seconds", 0.0)
    return suite


def main(argv=None) -> int:
    """``python -m bench.report RESULTS.json [MORE.json ...] --out DIR``: re-render the report
    (BENCHMARKS.md, plots, a merged results.json) from saved results, merging groups."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    p.add_argument("results", nargs="+", help="results.json files; later ones replace earlier groups")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--append", action="store_true",
                   help="add later files' results to a group instead of replacing it")
    a = p.parse_args(argv)
    try:
        suite = merge_results(a.results, append=a.append)
    except (OSError, ValueError) as exc:
        p.error(str(exc))
    files = write_report(suite, a.out, plots=not a.no_plots)
    print("wrote " + ", ".join(files))
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
