"""Time pixrank's SGEMM on every SIMD path this CPU offers, beside numpy and PyTorch (if installed).

A quick look for machines other than the benchmark machine (e.g. one with AVX-512: run by
tools/avx512-native.sh), not the benchmark suite (``python -m bench``): one process, medians of
5 repeats after a warm-up, 1 thread and all cores. Checks each product against numpy's
(max relative error). Usage: ``python tools/gemm_paths.py``.
"""
from __future__ import annotations

import os
import time

import numpy as np

import pixrank
from pixrank import _kernels as K
from pixrank import ops

try:
    import torch
except ImportError:  # optional reference
    torch = None

try:
    from threadpoolctl import threadpool_limits
except ImportError:
    threadpool_limits = None

SHAPES = [(128, 784, 200), (1024, 784, 200), (1024, 1024, 1024), (2048, 2048, 2048)]


def median_time(fn, reps=5):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
        time.sleep(0.02)  # let other libraries' spinning worker threads go idle
    return float(np.median(ts))


def main():
    ncpu = os.cpu_count() or 1
    print(f"pixrank {pixrank.__version__}; simd available {K.available_simd()}; cores {ncpu}; "
          f"numpy {np.__version__}; torch {torch.__version__ if torch else 'absent'}")
    rng = np.random.default_rng(0)
    print(f"{'shape':>16} {'thr':>4} {'side':>16} {'time ms':>9} {'GFLOP/s':>8} {'max rel err':>11}")
    for m, k, n in SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        ref = a.astype(np.float64) @ b.astype(np.float64)
        scale = np.abs(ref).max()
        flop = 2.0 * m * k * n
        for thr in sorted({1, ncpu}):
            rows = []
            for path in K.available_simd():
                K.set_simd(path)
                pixrank.set_num_threads(thr)
                out = ops.matmul(a, b)
                err = float(np.abs(out - ref).max() / scale)
                rows.append((f"pixrank {path}", median_time(lambda: ops.matmul(a, b)), err))
            if threadpool_limits is not None:
                with threadpool_limits(limits=thr, user_api="blas"):
                    rows.append(("numpy", median_time(lambda: a @ b), float(np.abs(a @ b - ref).max() / scale)))
            if torch is not None:
                torch.set_num_threads(thr)
                ta, tb = torch.from_numpy(a), torch.from_numpy(b)
                rows.append(("torch", median_time(lambda: ta @ tb),
                             float(np.abs((ta @ tb).numpy() - ref).max() / scale)))
            for side, t, err in rows:
                print(f"{f'{m}x{k}x{n}':>16} {thr:>4} {side:>16} {t * 1e3:9.3f} {flop / t / 1e9:8.1f} {err:11.1e}")
    K.set_simd(K.available_simd()[-1])


if __name__ == "__main__":
    main()
