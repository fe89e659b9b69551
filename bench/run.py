"""Run pixrank's paired benchmarks and write ``BENCHMARKS.md`` and PNG plots.

Usage (from the repository root, after ``pip install '.[bench]'``)::

    python -m bench                      # everything, 1 and 2 threads (~28 min on 2 quiet cores)
    python -m bench --only gemm,ranking  # some groups
    python -m bench --threads 2          # one thread count
    python -m bench --quick              # small sizes, one repeat (what the tests run)

Groups (one module each): ``gemm`` (numpy, PyTorch), ``layers`` (PyTorch), ``training``
(PyTorch), ``ranking`` (numpy, PyTorch, FAISS), ``hnsw`` (hnswlib, FAISS). Each group runs
in child processes (:mod:`bench.child`): numpy's rows with ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` removed from the environment, the others with the machine's.

The full run writes to ``bench/results/`` by default; ``--quick`` writes to a fresh
temporary folder unless ``--out`` is given, so that a quick run never overwrites the
committed results.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

from . import GROUPS
from .common import OPENBLAS_VARS, machine_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "bench", "results")


def child_env(profile: str, base: dict | None = None) -> dict:
    """The environment of a child process of ``profile`` (from ``base``, default os.environ).

    ``numpy``: ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` removed; ``machine``: as is.
    ``PYTHONPATH`` gains the repository root so that ``bench`` imports from this checkout.
    """
    env = dict(os.environ if base is None else base)
    if profile == "numpy":
        for k in OPENBLAS_VARS:
            env.pop(k, None)
    # the children import `bench` from this checkout and pixrank as installed
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_group(group: str, threads: list[int], quick: bool, refs_filter=None, log=print,
              timeout_s: float | None = None) -> list[dict]:
    """Run one group's children; returns their results (one dict per profile)."""
    import importlib
    mod = importlib.import_module(f"bench.{group}")
    results = []
    for profile, refs in mod.PROFILES.items():
        if refs_filter is not None:
            refs = [r for r in refs if r in refs_filter]
            if not refs:
                continue
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "rows.json")
            cmd = [sys.executable, "-m", "bench.child", group, profile, "--refs", ",".join(refs),
                   "--threads", ",".join(map(str, threads)), "--out", out] + (["--quick"] if quick else [])
            log(f"[bench] {group}/{profile} ({', '.join(refs)}) ...")
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, env=child_env(profile), cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=None, text=True, timeout=timeout_s)
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
            if os.path.exists(out):
                with open(out) as f:
                    res = json.load(f)
            else:
                res = {"group": group, "profile": profile, "refs": refs, "rows": [], "meta": {},
                       "error": f"child process ended without results (exit status {rc})"}
            res["profile_env_note"] = ("OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from this process's environment"
                                       if profile == "numpy" else "environment as the machine sets it")
            log(f"[bench] {group}/{profile}: {time.perf_counter() - t0:.1f} s"
                + (f"  ERROR: {res['error'].strip().splitlines()[-1]}" if res.get("error") else ""))
            results.append(res)
    return results


def run_suite(groups=GROUPS, threads=(1, 2), quick=False, out_dir=None, plots=True, log=print,
              command: str | None = None, merge: bool = False) -> dict:
    """Run the suite and write the report; returns everything measured.

    Args:
        groups: names from :data:`bench.GROUPS`.
        threads: thread counts to run every row at.
        quick: small sizes, one repeat (for the tests).
        out_dir: where ``BENCHMARKS.md``, ``results.json`` and the PNGs go (created).
        plots: draw the PNGs (needs matplotlib).
        merge: keep the other groups of ``out_dir/results.json`` (from earlier runs, each
            with its own command and date) and replace only the groups run now.

    Returns:
        ``{"machine", "groups": {name: [child results]}, "rows": [...], "files": [...]}``.
    """
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        raise ValueError(f"unknown group(s) {bad}; choose from {list(GROUPS)}")
    threads = [int(t) for t in threads]
    if not threads or min(threads) < 1:
        raise ValueError(f"threads must be positive ints, got {threads}")
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc)
    machine = machine_info()
    log(f"[bench] machine: {machine['cpu']}, {machine['cores']} cores, {machine['simd']}, "
        f"clock {machine['clock_ghz'] or 0:.2f} GHz ({machine['clock_how']}); "
        f"fp32 peak {machine['peak_gflops_1'] or 0:.0f} GFLOP/s per core ({machine['peak_how']})")
    suite = {"machine": machine, "groups": {}, "quick": quick, "threads": threads,
             "command": command or "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
             "started": started.isoformat(timespec="seconds")}
    if merge and out_dir is not None and os.path.exists(os.path.join(out_dir, "results.json")):
        with open(os.path.join(out_dir, "results.json")) as f:
            old = json.load(f)
        if bool(old.get("quick")) != bool(quick):
            raise ValueError("--merge: the results in the output folder are from a "
                             f"{'quick' if old.get('quick') else 'full'} run; do not mix them")
        for g in GROUPS:  # keep the suite's group order
            if g in old.get("groups", {}) and g not in groups:
                suite["groups"][g] = old["groups"][g]
    for g in groups:
        g0 = time.perf_counter()
        res = run_group(g, threads, quick, log=log)
        for r in res:
            r["command"] = suite["command"]
            r["started"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            r["group_seconds"] = time.perf_counter() - g0
        suite["groups"][g] = res
    suite["groups"] = {g: suite["groups"][g] for g in GROUPS if g in suite["groups"]}
    suite["seconds"] = time.perf_counter() - t0
    suite["rows"] = [r for g in suite["groups"].values() for res in g for r in res["rows"]]
    if out_dir is not None:
        from .report import write_report
        suite["files"] = write_report(suite, out_dir, plots=plots)
        log(f"[bench] wrote {', '.join(suite['files'])}")
    return suite


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(GROUPS),
                   help=f"comma-separated groups to run (default: all of {','.join(GROUPS)})")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat (for tests)")
    p.add_argument("--out", default=None,
                   help="output folder (default bench/results; with --quick a temporary folder)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--hnsw-n", type=int, default=None,
                   help="database size of the hnsw group (default 100,000; smaller for a loaded machine)")
    p.add_argument("--merge", action="store_true",
                   help="keep the other groups already in the output folder's results.json")
    a = p.parse_args(argv)
    groups = [g.strip() for g in a.only.split(",") if g.strip()]
    bad = [g for g in groups if g not in GROUPS]
    if bad or not groups:
        p.error(f"unknown group(s) {bad} in --only; choose from {','.join(GROUPS)}")
    try:
        threads = [int(t) for t in a.threads.split(",") if t.strip()]
    except ValueError:
        p.error(f"--threads takes comma-separated ints, got {a.threads!r}")
    if a.hnsw_n is not None:
        if a.hnsw_n < 1000:
            p.error(f"--hnsw-n must be >= 1000, got {a.hnsw_n}")
        os.environ["PIXRANK_BENCH_HNSW_N"] = str(a.hnsw_n)  # inherited by the hnsw child
    out = a.out or (tempfile.mkdtemp(prefix="pixrank-bench-") if a.quick else DEFAULT_OUT)
    try:
        suite = run_suite(groups, threads, a.quick, out, plots=not a.no_plots, merge=a.merge,
                          command="python -m bench " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:])))
    except ValueError as exc:
        p.error(str(exc))
    errors = [res for g in suite["groups"].values() for res in g if res.get("error")]
    print(f"[bench] done in {suite['seconds']:.0f} s; report: {os.path.join(out, 'BENCHMARKS.md')}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
