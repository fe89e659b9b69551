"""Every compiled SIMD path of pixrank._kernels against float64 numpy, at 1 and 2 threads.

For each variant in ``_kernels.available_simd()`` (generic always; avx2 / avx512 where the CPU has
them) the test forces it with ``_kernels.set_simd`` and checks matmul (every trans/bias/ReLU
combination at odd shapes 1, 67, 131, 257, 1000 that are not multiples of the micro-tile or block
sizes), conv2d and cosine_topk. Tolerances follow the standard forward error bound of a float32 dot
product of length K: |fl(a.b) - a.b| <= K * eps * |a|.|b| (Higham, "Accuracy and Stability of Numerical
Algorithms", 2nd ed., sec. 3.1).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

k = pytest.importorskip("pixrank._kernels")

VARIANTS = k.available_simd()
THREADS = [1, 2]
EPS32 = float(np.finfo(np.float32).eps)

# (M, N, K) triples: each odd size appears in every position; 1000 crosses the MC/NC block edges.
SHAPES = [
    (1, 1, 1),
    (1, 257, 67),
    (67, 1, 131),
    (67, 131, 257),
    (131, 257, 1),
    (257, 67, 1000),
    (1000, 131, 67),
    (131, 1000, 257),
    (257, 257, 0),
]


@pytest.fixture(params=[(v, t) for v in VARIANTS for t in THREADS], ids=lambda p: f"{p[0]}-{p[1]}t")
def variant(request):
    simd, threads = request.param
    old_simd, old_threads = k.info()["simd"], k.get_num_threads()
    k.set_simd(simd)
    k.set_num_threads(threads)
    assert k.info()["simd"] == simd
    yield simd
    k.set_simd(old_simd)
    k.set_num_threads(old_threads)


def assert_close(got, ref, bound, what):
    """|got - ref| <= bound elementwise; the message reports the worst element."""
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}"
    err = np.abs(got.astype(np.float64) - ref)
    excess = err - bound
    if excess.size and excess.max() > 0:
        i = np.unravel_index(int(np.argmax(excess)), err.shape)
        raise AssertionError(f"{what}: worst element {i}: got {got[i]}, want {ref[i]}, |err| {err[i]:.3g} > {bound[i]:.3g}")


@pytest.mark.parametrize("M,N,K", SHAPES)
def test_matmul_every_combination(variant, M, N, K):
    rng = np.random.default_rng(M * 1_000_003 + N * 1009 + K)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    exact = a64 @ b64
    mag = np.abs(a64) @ np.abs(b64)
    for trans_a in (False, True):
        for trans_b in (False, True):
            # The transposed operands are stored transposed (contiguous), as the kernels expect.
            a_in = np.ascontiguousarray(a.T) if trans_a else a
            b_in = np.ascontiguousarray(b.T) if trans_b else b
            for use_bias in (False, True):
                for relu in (False, True):
                    ref = exact + bias if use_bias else exact.copy()
                    bound = 2 * (K + 2) * EPS32 * (mag + (np.abs(bias) if use_bias else 0)) + 1e-30
                    if relu:
                        ref = np.maximum(ref, 0.0)
                    got = k.matmul(a_in, b_in, bias if use_bias else None, relu, trans_a, trans_b)
                    assert_close(got, ref, bound,
                                 f"matmul[{variant}] M,N,K={M},{N},{K} trans=({trans_a},{trans_b}) "
                                 f"bias={use_bias} relu={relu}")


def test_matmul_matches_naive_twin(variant):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((67, 131)).astype(np.float32)
    b = rng.standard_normal((257, 131)).astype(np.float32)
    bias = rng.standard_normal(257).astype(np.float32)
    fast = k.matmul(a, b, bias, True, False, True)
    slow = k.matmul_naive(a, b, bias, True, False, True)
    mag = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)).T + np.abs(bias)
    assert_close(fast, slow.astype(np.float64), 4 * 133 * EPS32 * mag, f"matmul vs naive [{variant}]")


def _conv_ref(x, w, bias, stride, pads, relu):
    (sh, sw), (pt, pb, pl, pr) = stride, pads
    B, H, W, C = x.shape
    kh, kw, _, F = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    OH, OW = (H + pt + pb - kh) // sh + 1, (W + pl + pr - kw) // sw + 1
    out = np.zeros((B, OH, OW, F))
    mag = np.zeros((B, OH, OW, F))
    w64 = w.astype(np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i:i + sh * (OH - 1) + 1:sh, j:j + sw * (OW - 1) + 1:sw, :]
            out += patch @ w64[i, j]
            mag += np.abs(patch) @ np.abs(w64[i, j])
    if bias is not None:
        out += bias
        mag += np.abs(bias)
    if relu:
        out = np.maximum(out, 0)
    return out, mag


@pytest.mark.parametrize(
    "xshape,wshape,stride,pads",
    [
        ((2, 28, 28, 1), (3, 3, 1, 32), (1, 1), (1, 1, 1, 1)),
        ((3, 14, 14, 32), (3, 3, 32, 64), (1, 1), (1, 1, 1, 1)),
        ((2, 9, 11, 5), (2, 3, 5, 7), (2, 1), (0, 1, 2, 0)),
        ((1, 5, 7, 67), (1, 1, 67, 131), (1, 1), (0, 0, 0, 0)),
        ((40, 6, 6, 3), (3, 3, 3, 17), (2, 2), (1, 1, 1, 1)),
    ],
)
def test_conv2d(variant, xshape, wshape, stride, pads):
    rng = np.random.default_rng(sum(xshape) * 31 + sum(wshape))
    x = rng.standard_normal(xshape).astype(np.float32)
    w = rng.standard_normal(wshape).astype(np.float32)
    bias = rng.standard_normal(wshape[3]).astype(np.float32)
    kk = wshape[0] * wshape[1] * wshape[2]
    for use_bias, relu in ((False, False), (True, True)):
        ref, mag = _conv_ref(x, w, bias if use_bias else None, stride, pads, relu)
        got = k.conv2d(x, w, bias if use_bias else None, *stride, *pads, relu)
        assert_close(got, ref, 2 * (kk + 2) * EPS32 * mag + 1e-30, f"conv2d[{variant}] {xshape} {wshape}")


@pytest.mark.parametrize("Q,n,d,kk", [(1, 1, 1, 1), (5, 1000, 131, 10), (131, 2000, 67, 1),
                                      (67, 257, 257, 300), (3, 3000, 16, 100)])
def test_cosine_topk(variant, Q, n, d, kk):
    rng = np.random.default_rng(Q + n + d + kk)
    q = rng.standard_normal((Q, d)).astype(np.float32)
    db = rng.standard_normal((n, d)).astype(np.float32)
    db[n // 2] = 0.0  # a zero vector scores 0, never NaN
    if n > 3:
        db[3] = db[1]  # an exact tie: the lower index comes first
    idx, scores = k.cosine_topk(q, db, kk)
    m = min(kk, n)
    assert idx.shape == (Q, m) and scores.shape == (Q, m)
    assert idx.dtype == np.int64 and scores.dtype == np.float32
    q64, d64 = q.astype(np.float64), db.astype(np.float64)
    qn = np.linalg.norm(q64, axis=1, keepdims=True)
    dn = np.linalg.norm(d64, axis=1, keepdims=True)
    s = (q64 / np.where(qn > 0, qn, 1)) @ (d64 / np.where(dn > 0, dn, 1)).T
    tol = 4 * (d + 4) * EPS32
    for r in range(Q):
        order = np.lexsort((np.arange(n), -s[r]))[:m]
        np.testing.assert_allclose(scores[r], s[r][order], atol=tol, err_msg=f"cosine_topk[{variant}] row {r}")
        # the returned indices carry the returned scores, in non-increasing order, without repeats
        np.testing.assert_allclose(s[r][idx[r]], scores[r], atol=tol)
        assert len(set(idx[r].tolist())) == m
        assert np.all(np.diff(scores[r]) <= 0)
        # every score above the k-th by more than the tolerance must be present
        must = np.flatnonzero(s[r] > s[r][order[-1]] + 2 * tol)
        assert set(must.tolist()) <= set(idx[r].tolist())
    if n > 3 and kk >= n:
        # all ties present: index 1 (lower) precedes its duplicate 3
        pos = {int(v): p for p, v in enumerate(idx[0])}
        assert pos[1] < pos[3]


def test_set_simd_rejects_unknown():
    with pytest.raises(ValueError, match="set_simd"):
        k.set_simd("sse9")
    assert k.available_simd()[0] == "generic"
    assert k.info()["simd"] in k.available_simd()


def test_env_forces_variant():
    for simd in VARIANTS:
        env = dict(os.environ, PIXRANK_SIMD=simd)
        out = subprocess.run([sys.executable, "-c", "import pixrank._kernels as k; print(k.info()['simd'])"],
                             env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == simd


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_does_not_hang():
    # GNU OpenMP cannot run parallel regions in a child forked after the parent used its threads;
    # the kernels must then run serially in the child instead of hanging.
    script = (
        "import os, numpy as np, pixrank._kernels as k\n"
        "a = np.ones((256, 256), np.float32)\n"
        "k.set_num_threads(2); k.matmul(a, a)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    c = k.matmul(a, a); i, s = k.cosine_topk(a, a, 3)\n"
        "    os._exit(0 if c[0, 0] == 256.0 and k.get_num_threads() == 1 else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "raise SystemExit(os.waitstatus_to_exitcode(status))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_matmul_crosses_every_block_edge_of_the_variant(variant):
    """M, N and K just past the variant's own MC, NC and 2*KC (info()['gemm_blocks']) and not multiples
    of its register tile (info()['gemm_tile']): every packing edge and blocking loop of that path wraps."""
    mr, nr = k.info()["gemm_tile"]
    mc, kc, nc = k.info()["gemm_blocks"]
    M, N, K = mc + mr + 1, nc + nr - 1, 2 * kc + 3
    rng = np.random.default_rng(mc * 31 + nc + kc)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref = np.maximum(a64 @ b64 + bias, 0.0)
    bound = 2 * (K + 2) * EPS32 * (np.abs(a64) @ np.abs(b64) + np.abs(bias)) + 1e-30
    for trans_a, trans_b in ((False, False), (True, True)):
        a_in = np.ascontiguousarray(a.T) if trans_a else a
        b_in = np.ascontiguousarray(b.T) if trans_b else b
        got = k.matmul(a_in, b_in, bias, True, trans_a, trans_b)
        assert_close(got, ref, bound, f"matmul[{variant}] M,N,K={M},{N},{K} trans=({trans_a},{trans_b})")


def test_matmul_every_edge_tile_of_the_variant(variant):
    """Every edge-tile width 1 .. 2*NR+1 and height 1 .. MR of the variant's register tile, each over
    three K blocks (accumulation) with bias and ReLU in the epilogue: the masked vector stores, the
    half-width (nr <= NR/2) and reduced-row k loops, and the packing of partial panels."""
    mr, nr = k.info()["gemm_tile"]
    _, kc, _ = k.info()["gemm_blocks"]
    K = 2 * kc + 3
    rng = np.random.default_rng(mr * 100 + nr)
    for N in range(1, 2 * nr + 2):
        M = mr + 1 + (N * 5) % mr  # a full row panel, then an edge panel of height 1 .. mr
        a = rng.standard_normal((M, K)).astype(np.float32)
        b = rng.standard_normal((K, N)).astype(np.float32)
        bias = rng.standard_normal(N).astype(np.float32)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        ref = np.maximum(a64 @ b64 + bias, 0.0)
        bound = 2 * (K + 2) * EPS32 * (np.abs(a64) @ np.abs(b64) + np.abs(bias)) + 1e-30
        trans_a, trans_b = N % 2 == 1, N % 3 == 1
        a_in = np.ascontiguousarray(a.T) if trans_a else a
        b_in = np.ascontiguousarray(b.T) if trans_b else b
        got = k.matmul(a_in, b_in, bias, True, trans_a, trans_b)
        assert_close(got, ref, bound, f"matmul[{variant}] M,N,K={M},{N},{K} trans=({trans_a},{trans_b})")


@pytest.mark.parametrize("user_env,want", [
    ({}, "1000 None"),
    ({"GOMP_SPINCOUNT": "5"}, "5 None"),
    ({"OMP_WAIT_POLICY": "ACTIVE"}, "None ACTIVE"),
])
def test_ops_bounds_the_openmp_spin_unless_the_user_set_it(user_env, want):
    """pixrank.ops sets GOMP_SPINCOUNT=1000 before libgomp loads (busy-waiting threads made 2-thread
    kernels many times slower than 1 thread on a loaded machine), but never overrides the user's
    OMP_WAIT_POLICY / GOMP_SPINCOUNT."""
    env = {key: v for key, v in os.environ.items() if key not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(user_env)
    code = ("import os, pixrank.ops; "
            "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == want
