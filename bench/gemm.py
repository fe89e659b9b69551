"""GEMM: pixrank's SGEMM (``ops.matmul``) against numpy's OpenBLAS and PyTorch's MKL.

Rows: square ``n x n x n`` for n in 64 ... 2048 and the MLP's shapes ``M x K x N``
(128x784x200, 128x200x60, 1024x784x200), float32, C-contiguous operands drawn from
N(0, 1) with a fixed seed. Each side allocates its output, as a user's ``a @ b`` does.
Throughput is ``2 M N K / time`` in GFLOP/s.

Check: pixrank's product against the reference's, ``max |diff| / max |ref| <= 1e-4``
(float32 accumulation over K <= 2048 of N(0,1) products stays far below).
"""
from __future__ import annotations

import numpy as np

from .common import (NotAvailable, check_close, import_optional, import_pixrank_ops, make_row,
                     paired_time, raiser, set_threads)

GROUP = "gemm"
#: which references run in which process environment (see bench.child)
PROFILES = {"numpy": ["numpy"], "machine": ["torch"]}

SQUARE = (64, 128, 256, 512, 1024, 2048)
MLP = ((128, 784, 200), (128, 200, 60), (1024, 784, 200))
QUICK_SHAPES = ((64, 64, 64), (128, 128, 128), (128, 200, 60))


def shapes(quick: bool) -> list[tuple[int, int, int]]:
    return list(QUICK_SHAPES) if quick else [(n, n, n) for n in SQUARE] + list(MLP)


def _label(m, k, n):
    return f"{m}³" if m == k == n else f"{m}x{k}x{n} (MLP)"


def run(refs: list[str], threads: list[int], quick: bool, log=print) -> list[dict]:
    rows = []
    rng = np.random.default_rng(1234)
    try:
        ops = import_pixrank_ops()
        pix_err = None
    except NotAvailable as exc:
        ops, pix_err = None, exc
    libs = {}
    for ref in refs:
        try:
            libs[ref] = np if ref == "numpy" else import_optional(ref)
        except NotAvailable as exc:
            libs[ref] = exc
    for m, k, n in shapes(quick):
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        flops = 2.0 * m * n * k
        for nt in threads:
            set_threads(nt)
            sides, check = {}, {}

            sides["pixrank"] = raiser(pix_err) if ops is None else (lambda a=a, b=b: ops.matmul(a, b))
            outs = {}
            for ref in refs:
                lib = libs[ref]
                if isinstance(lib, Exception):
                    sides[ref] = raiser(lib)
                    continue
                if ref == "numpy":
                    sides[ref] = (lambda a=a, b=b: a @ b)
                    outs[ref] = a @ b
                elif ref == "torch":
                    ta, tb = lib.from_numpy(a), lib.from_numpy(b)
                    sides[ref] = (lambda ta=ta, tb=tb, torch=lib: torch.mm(ta, tb))
                    outs[ref] = lib.mm(ta, tb).numpy()
            if ops is not None:
                c = ops.matmul(a, b)
                for ref, want in outs.items():
                    check[ref] = check_close("C", c, want, 1e-4)
            reps = 1 if quick else (7 if flops < 5e9 else 5)
            timing = paired_time(sides, repeats=reps, warmup=1 if quick else 2,
                                 min_sample_s=0.002 if quick else 0.05)
            row = make_row(GROUP, _label(m, k, n), nt, timing, refs, flops=flops, check=check,
                           extra={"shape": [m, k, n]})
            rows.append(row)
            log(f"  gemm {_label(m, k, n)} t={nt}: " + ", ".join(
                f"{s} {flops / t['median_s'] / 1e9:.1f} GFLOP/s" for s, t in timing.items() if "median_s" in t))
    return rows
