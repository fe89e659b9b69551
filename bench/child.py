"""One benchmark group, against some references, in a process of its own.

``python -m bench.child GROUP PROFILE --refs a,b --threads 1,2 [--quick] --out FILE.json``

The parent (:mod:`bench.run`) starts one child per group and *profile*: the ``numpy``
profile runs with ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` removed from the
environment (numpy's OpenBLAS then picks the best kernel for the CPU; as many machines set
them it runs a slower one), the ``machine`` profile with the environment as the machine
sets it (FAISS's bundled OpenBLAS needs them; PyTorch's MKL ignores them). A separate
process per group also keeps the OpenMP runtimes of PyTorch and FAISS, and numpy's
OpenBLAS threads, from meeting where they need not, and a crash from taking the whole
suite down.

The child writes ``{"rows": [...], "meta": {...}}`` as JSON: the rows of
:mod:`bench.common` and what this process saw (BLAS libraries and the kernel OpenBLAS
chose, OPENBLAS_* values, library versions, pixrank's SIMD path).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback


def library_meta() -> dict:
    """Versions and compute paths of the libraries loaded in this process."""
    from .common import blas_info, openblas_env
    meta = {"openblas_env": openblas_env(), "blas": blas_info()}
    import numpy
    meta["numpy"] = numpy.__version__
    if "pixrank.ops" in sys.modules:
        try:
            meta["pixrank"] = sys.modules["pixrank.ops"].info()
        except Exception as exc:  # pragma: no cover
            meta["pixrank"] = {"error": str(exc)}
    else:
        try:
            from pixrank import ops
            meta["pixrank"] = ops.info()
        except Exception as exc:
            meta["pixrank"] = {"error": f"pixrank.ops does not import: {exc}"}
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        cfg = torch.__config__.show()
        keep = [ln.strip(" -") for ln in cfg.splitlines()
                if any(w in ln for w in ("Math Kernel", "MKL-DNN", "oneDNN", "CPU capability", "OpenMP"))
                and "Build settings" not in ln]
        meta["torch"] = {"version": torch.__version__, "config": keep,
                         "mkldnn": bool(torch.backends.mkldnn.is_available()),
                         "mkl": bool(torch.backends.mkl.is_available()),
                         "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if "faiss" in sys.modules:
        faiss = sys.modules["faiss"]
        opts = faiss.get_compile_options() if hasattr(faiss, "get_compile_options") else ""
        meta["faiss"] = {"version": faiss.__version__, "compile_options": opts,
                         "distance_compute_blas_threshold": int(faiss.cvar.distance_compute_blas_threshold)}
    if "hnswlib" in sys.modules:
        try:
            from importlib.metadata import version
            meta["hnswlib"] = {"version": version("hnswlib")}
        except Exception:
            meta["hnswlib"] = {"version": "unknown"}
    return meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.child")
    p.add_argument("group")
    p.add_argument("profile")
    p.add_argument("--refs", default="")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    import importlib
    refs = [r for r in a.refs.split(",") if r]
    threads = [int(t) for t in a.threads.split(",") if t]
    mod = importlib.import_module(f"bench.{a.group}")
    t0 = time.perf_counter()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    result = {"group": a.group, "profile": a.profile, "refs": refs, "rows": [], "error": None,
              "loadavg_start": os.getloadavg()}
    try:
        result["rows"] = mod.run(refs, threads, a.quick, log=log)
    except Exception:
        result["error"] = traceback.format_exc()
        log(result["error"])
    result["seconds"] = time.perf_counter() - t0
    result["loadavg_end"] = os.getloadavg()
    try:
        result["meta"] = library_meta()
    except Exception:
        result["meta"] = {"error": traceback.format_exc()}
    with open(a.out, "w") as f:
        json.dump(result, f, default=float)
    return 0 if result["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
