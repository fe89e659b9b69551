"""The multi-threaded SGEMM driver (cpp/gemm.cpp: output tiles on the GEMM's own worker pool) against
float64 numpy, on every compiled SIMD path and at 1, 2, 3 and 4 threads.

What is checked: shapes just below, at and above the variant's block sizes (MC, KC, NC from
``info()['gemm_blocks']``) and its register tile, sizes 1 and odd sizes, empty products, every
transpose combination with bias and ReLU; thread counts that change between calls (the pool keeps the
workers of the largest count and lets only as many as asked take part); products run at the same time
from several Python threads (one of them gets the pool, the others fall back to OpenMP); a child forked
after the parent used the pool (it must not hang). Accumulation into C (``accumulate``) is not exposed
by ``matmul``; conv2d's weight gradient uses it (tests/test_ops_conv.py, test_ops_gradients.py).

Tolerance: the forward error bound of a float32 dot product of length K,
|fl(a.b) - a.b| <= K * eps * |a|.|b| (Higham, "Accuracy and Stability of Numerical Algorithms",
2nd ed., sec. 3.1), doubled, as in tests/test_kernels_simd.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

k = pytest.importorskip("pixrank._kernels")

VARIANTS = k.available_simd()
EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(params=[(v, t) for v in VARIANTS for t in (1, 2, 3, 4)], ids=lambda p: f"{p[0]}-{p[1]}t")
def variant(request):
    simd, threads = request.param
    old_simd, old_threads = k.info()["simd"], k.get_num_threads()
    k.set_simd(simd)
    k.set_num_threads(threads)
    yield simd, threads
    k.set_simd(old_simd)
    k.set_num_threads(old_threads)


def assert_gemm_matches(M, N, K, trans_a, trans_b, use_bias, relu, seed, what):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32) if use_bias else None
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref = a64 @ b64 + (bias.astype(np.float64) if use_bias else 0.0)
    if relu:
        ref = np.maximum(ref, 0.0)
    bound = 2 * (K + 2) * EPS32 * (np.abs(a64) @ np.abs(b64) + (np.abs(bias) if use_bias else 0.0)) + 1e-30
    a_in = np.ascontiguousarray(a.T) if trans_a else a
    b_in = np.ascontiguousarray(b.T) if trans_b else b
    got = k.matmul(a_in, b_in, bias, relu, trans_a, trans_b)
    assert got.shape == (M, N) and got.dtype == np.float32, what
    err = np.abs(got.astype(np.float64) - ref) - bound
    if err.size and err.max() > 0:
        i = np.unravel_index(int(np.argmax(err)), err.shape)
        raise AssertionError(f"{what} M,N,K={M},{N},{K} trans=({trans_a},{trans_b}) bias={use_bias} "
                             f"relu={relu}: element {i} got {got[i]}, want {ref[i]}")


def block_edge_shapes():
    """(M, N, K) around the active variant's MC / KC / NC and register tile, plus 1, odd and empty."""
    mr, nr = k.info()["gemm_tile"]
    mc, kc, nc = k.info()["gemm_blocks"]
    shapes = [(1, 1, 1), (1, 37, 5), (37, 1, 5), (3, 5, 1), (0, 7, 3), (7, 0, 3), (7, 5, 0),
              (mr - 1, nr + 1, kc - 1), (mr + 1, nr - 1, kc + 1), (mc - 1, 2 * nr + 3, kc),
              (mc, 3 * nr, 2 * kc), (mc + 1, 4 * nr - 1, 2 * kc + 1), (2 * mc + mr + 1, 5 * nr + 1, 3 * kc - 5),
              (2 * mr + 1, nc - 1, 9), (mr + 3, nc + 1, 17), (13, 2 * nc + nr + 3, 5),
              (128, 200, 784), (128, 60, 200), (257, 131, 67)]
    return shapes


def test_block_edges_every_variant_and_thread_count(variant):
    simd, threads = variant
    for i, (M, N, K) in enumerate(block_edge_shapes()):
        trans_a, trans_b = bool(i & 1), bool(i & 2)
        assert_gemm_matches(M, N, K, trans_a, trans_b, use_bias=i % 3 != 0, relu=i % 2 == 0, seed=i,
              what=f"[{simd} {threads}t]")


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_every_transpose_with_epilogue(variant, trans_a, trans_b):
    simd, threads = variant
    mc, kc, nc = k.info()["gemm_blocks"]
    assert_gemm_matches(mc + 7, 203, kc + 9, trans_a, trans_b, use_bias=True, relu=True, seed=7, what=f"[{simd} {threads}t]")


def test_thread_count_changes_between_calls():
    """4 threads (the pool starts 3 workers), then 2, 3, 1, 2: every product right."""
    old = k.get_num_threads()
    try:
        for seed, threads in enumerate((4, 2, 3, 1, 2, 4)):
            k.set_num_threads(threads)
            assert_gemm_matches(301, 277, 263, seed % 2 == 1, False, use_bias=True, relu=False, seed=seed,
                  what=f"[{threads}t]")
    finally:
        k.set_num_threads(old)


def test_concurrent_calls_from_python_threads():
    """matmul releases the GIL: four Python threads multiply at once, each at 2 threads (one gets the
    worker pool, the others fall back to OpenMP); every result equals the same product computed alone."""
    old = k.get_num_threads()
    k.set_num_threads(2)
    try:
        rng = np.random.default_rng(3)
        cases = [(rng.standard_normal((m, kk)).astype(np.float32), rng.standard_normal((kk, n)).astype(np.float32))
                 for m, kk, n in ((300, 200, 250), (128, 784, 200), (517, 65, 333), (64, 1000, 96))]
        want = [k.matmul(a, b) for a, b in cases]
        errors = []

        def work(i):
            try:
                a, b = cases[i]
                for _ in range(20):
                    got = k.matmul(a, b)
                    if not np.array_equal(got, want[i]):
                        errors.append(f"case {i}: max diff {np.abs(got - want[i]).max()}")
                        return
            except Exception as exc:  # reported below, not lost in the thread
                errors.append(f"case {i}: {exc!r}")

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a matmul thread hung"
        assert not errors, errors
    finally:
        k.set_num_threads(old)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("explicit_threads", [False, True])
def test_forked_child_after_pool_use(explicit_threads):
    """The parent multiplies at 3 threads (pool workers running), then forks; the child's products are
    right and it exits (no worker of the parent exists there to wait for)."""
    script = (
        "import os, numpy as np, pixrank._kernels as k\n"
        "rng = np.random.default_rng(0)\n"
        "a = rng.standard_normal((300, 260)).astype(np.float32)\n"
        "b = rng.standard_normal((260, 290)).astype(np.float32)\n"
        "k.set_num_threads(3); want = k.matmul(a, b)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        f"    {'k.set_num_threads(2)' if explicit_threads else 'pass'}\n"
        "    ok = all(np.allclose(k.matmul(a, b), want, rtol=1e-4, atol=1e-3) for _ in range(3))\n"
        "    os._exit(0 if ok else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "raise SystemExit(os.waitstatus_to_exitcode(status))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
