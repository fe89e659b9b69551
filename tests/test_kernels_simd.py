"""Every compiled SIMD path of pixrank._kernels against float64 numpy, at 1 and 2 threads.

For each variant in ``_kernels.available_simd()`` (generic always; avx2 / avx512 where the CPU has
them) the test forces it with ``_kernels.set_simd`` and checks matmul (every trans/bias/ReLU
combination at odd shapes 1, 67, 131, 257, 1000 that are not multiples of the micro-tile or block
sizes), conv2d, cosine_topk, and the softmax family with its vectorised expf (exp_f32). GEMM
tolerances follow the standard forward error bound of a float32 dot product of length K:
|fl(a.b) - a.b| <= K * eps * |a|.|b| (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
sec. 3.1); the softmax ones those of tests/test_ops.py (exp amplifies the rounding of x - max).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from reference import log_softmax_ref, softmax_cross_entropy_ref, softmax_ref

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


# --------------------------------------------------------------------------------------
# softmax family and its vectorised expf, on every SIMD path
# --------------------------------------------------------------------------------------

SOFTMAX_C = [1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 1000]  # around the 8/16-float vectors and 32/64 unrolls
SOFTMAX_N = [1, 5, 128]
TINY = 2.0**-149  # the smallest subnormal float32: one ulp in the subnormal range


@pytest.fixture(params=VARIANTS)
def simd_only(request):
    old = k.info()["simd"]
    k.set_simd(request.param)
    yield request.param
    k.set_simd(old)


def _ulp_error(got, x):
    """|got - exp(x)| in units of the float32 spacing at exp(x) (TINY for subnormal results)."""
    ref = np.exp(x.astype(np.float64))
    with np.errstate(over="ignore"):
        spacing = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - ref) / np.maximum(spacing, TINY)


def test_vectorised_exp(simd_only):
    """The Cody-Waite + minimax expf (Cephes/Moshier, cpp/ukernel.hpp) of this path: at most 2 ulp from
    float64 exp on a dense grid of [-104, 0] (every result of the softmax family: x - max <= 0),
    including the subnormal range (gradual underflow, correctly rounded within 1 ulp of the subnormal
    spacing) and [0, 88.72] (up to FLT_MAX); exact at the special values."""
    rng = np.random.default_rng(7)
    x = np.concatenate([
        np.linspace(-104.0, 0.0, 2_000_003),
        rng.uniform(-104.0, 0.0, 500_000),
        -(2.0 ** rng.uniform(-30, 1, 100_000)),    # near 0 from below: exp close to 1
        np.linspace(-87.5, -87.2, 20_001),          # the normal/subnormal boundary (FLT_MIN)
        np.linspace(-104.0, -103.9, 20_001),        # the last subnormal, then 0
        np.linspace(0.0, 88.72, 300_007),
    ]).astype(np.float32)
    got = k.exp_f32(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    err = _ulp_error(got, x)
    worst = int(np.argmax(err))
    assert err[worst] <= 2.0, f"exp[{simd_only}]({x[worst]!r}) = {got[worst]!r}: {err[worst]:.3f} ulp"
    # the subnormal results are correctly rounded to within one subnormal ulp (no garbage exponent)
    sub = np.exp(x.astype(np.float64)) < 2.0**-126
    assert sub.sum() > 10_000
    assert np.all(np.abs(got[sub].astype(np.float64) - np.exp(x[sub].astype(np.float64))) <= TINY)
    assert np.all(got >= 0)

    f32max = float(np.finfo(np.float32).max)
    special = np.array([0.0, -0.0, -np.inf, np.inf, np.nan, -np.nan, 1e-45, -1e-45, -1e-8, 1e-8,
                        -103.98, -104.0, -105.0, -150.0, -1e4, -1e30, -f32max, 88.72, 88.7228, 88.73,
                        89.0, 100.0, 1e30, f32max, -87.33654, 1.0, -1.0, 0.5, -0.5], np.float32)
    # each special value at every lane of a vector and in a masked tail (lengths 1 .. 33)
    for n in (1, 7, 8, 9, 15, 16, 17, 33):
        for v in special:
            xs = np.full(n, v, np.float32)
            g = k.exp_f32(xs)
            with np.errstate(over="ignore"):
                want = np.float32(np.exp(np.float64(v)))
            if np.isnan(v):
                assert np.isnan(g).all(), (simd_only, v, g)
            elif np.isinf(want) or want == 0 or v == 0:
                np.testing.assert_array_equal(g, np.full(n, want), err_msg=f"exp[{simd_only}]({v!r})")
            else:
                assert _ulp_error(g, xs).max() <= 2.0, (simd_only, v, g, want)
    assert k.exp_f32(np.array([0.0], np.float32))[0] == 1.0
    assert k.exp_f32(np.array([-np.inf, -104.0, -110.0], np.float32)).tolist() == [0.0, 0.0, 0.0]
    assert k.exp_f32(np.array([np.inf, 88.73], np.float32)).tolist() == [np.inf, np.inf]
    assert np.isfinite(k.exp_f32(np.array([88.72], np.float32))[0])
    assert k.exp_f32(np.zeros(0, np.float32)).shape == (0,)


def _rtol(z):
    """As tests/test_ops.py: exp amplifies the rounding of z - max(z) by |z - max|."""
    z = z.astype(np.float64)
    s = z - z.max(axis=1, keepdims=True)
    return 8 * EPS32 * (1.0 + np.abs(s[np.isfinite(s)]).max(initial=0.0))


def _rel_bound(ref, rtol, atol):
    return rtol * np.abs(ref) + atol


@pytest.mark.parametrize("C", SOFTMAX_C)
@pytest.mark.parametrize("N", SOFTMAX_N)
def test_softmax_family(variant, N, C):
    """softmax, log_softmax and softmax_cross_entropy of this path against the float64 references
    (tests/reference.py) at widths around every vector length, masked tail and unroll of the row
    kernels, at logit scales 1 (typical) and 40 (exp underflows to subnormals and 0)."""
    rng = np.random.default_rng(N * 1000 + C)
    for scale in (1.0, 40.0):
        z = (scale * rng.standard_normal((N, C))).astype(np.float32)
        labels = rng.integers(0, C, N)
        rtol = _rtol(z)
        what = f"[{variant}] N={N} C={C} scale={scale}"
        p = k.softmax(z)
        assert_close(p, softmax_ref(z), _rel_bound(softmax_ref(z), rtol, 1e-37), "softmax" + what)
        assert_close(p.sum(axis=1), np.ones(N), np.full(N, C * 4 * EPS32), "softmax row sums" + what)
        lp = k.log_softmax(z)
        ref = log_softmax_ref(z)
        atol = 8 * EPS32 * (np.abs(z).max() + np.log(C) + 1)
        assert_close(lp, ref, _rel_bound(ref, 4 * EPS32, atol), "log_softmax" + what)
        loss, d = k.softmax_cross_entropy(z, labels)
        rloss, rd = softmax_cross_entropy_ref(z, labels)
        assert abs(loss - rloss) <= 16 * EPS32 * (np.abs(z).max() + np.log(C) + 1), (what, loss, rloss)
        assert_close(d, rd, _rel_bound(rd, rtol, 4 * EPS32 / N), "dlogits" + what)
        assert_close(d.sum(axis=1), np.zeros(N), np.full(N, C * 4 * EPS32 / N), "dlogits row sums" + what)


@pytest.mark.parametrize("C", [1, 3, 8, 9, 16, 17, 33, 1000])
def test_softmax_family_special_rows(variant, C):
    """Rows with NaN, +inf, -inf, all -inf, overflowing differences and subnormal results, placed at
    the start, inside a vector and in the masked tail of the row: a NaN makes its row NaN; +inf entries
    share the mass equally; -inf entries get 0 (log: -inf); an all -inf row is NaN; ordinary rows in
    the same batch are unaffected."""
    nan, inf = np.nan, np.inf
    rows, kinds = [], []

    def add(row, kind, pos=None):
        rows.append(np.asarray(row, np.float32))
        kinds.append((kind, pos))

    positions = sorted({0, C // 2, max(C - 2, 0), C - 1})
    for pos in positions:
        for v, kind in ((nan, "nan"), (inf, "inf"), (-inf, "finite")):
            if kind == "finite" and C == 1:
                continue  # that row would be all -inf
            r = np.linspace(-2.0, 1.0, C).astype(np.float32)
            r[pos] = v
            add(r, kind, pos)
    if C > 1:
        r = np.zeros(C, np.float32)
        r[positions[0]] = r[positions[-1]] = inf  # two +inf entries: 1/2 each
        add(r, "inf")
        r = np.full(C, -3e38, np.float32)
        r[positions[-1]] = 3e38  # x - max overflows to -inf in float32: exp gives 0
        add(r, "huge")
        add(-np.linspace(0.0, 103.5, C), "finite")  # exp(x - max) down into the subnormals
    add(np.full(C, -inf), "allneg")
    add(np.linspace(-1.0, 1.0, C), "finite")
    z = np.stack(rows)
    N = len(rows)
    labels = np.array([C - 1 if kd == "allneg" else int(np.argmax(np.where(np.isnan(r), -1, r)))
                       for r, (kd, _) in zip(rows, kinds)])
    p, lp = k.softmax(z), k.log_softmax(z)
    loss, d = k.softmax_cross_entropy(z, labels)
    with np.errstate(invalid="ignore", over="ignore"):
        rp, rlp = softmax_ref(z), log_softmax_ref(z)
        rd = softmax_cross_entropy_ref(z, labels)[1]
        rlp32 = rlp.astype(np.float32)  # -6e38 is -inf in float32
    want_loss = 0.0
    for i, (kind, pos) in enumerate(kinds):
        what = f"[{variant}] C={C} row {i} {kind} at {pos}: {z[i][:40]}"
        if kind in ("nan", "allneg"):
            assert np.isnan(p[i]).all() and np.isnan(lp[i]).all() and np.isnan(d[i]).all(), what
            continue
        if kind == "inf":
            hot = np.isposinf(z[i])
            want = np.where(hot, 1.0 / hot.sum(), 0.0)
            np.testing.assert_array_equal(p[i], want.astype(np.float32), err_msg=what)
            np.testing.assert_array_equal(lp[i], np.where(hot, np.float32(-np.log(hot.sum())), -inf), err_msg=what)
            assert_close(d[i], (want - np.eye(C)[labels[i]]) / N, np.full(C, 2 * EPS32 / N), "dlogits" + what)
            want_loss += np.log(hot.sum())
            continue
        assert not np.isnan(p[i]).any() and not np.isnan(lp[i]).any() and not np.isnan(d[i]).any(), what
        rtol = _rtol(z[i:i + 1])
        assert_close(p[i], rp[i], _rel_bound(rp[i], rtol, 2 * TINY), "softmax" + what)
        inf_at = np.isinf(rlp32[i])
        np.testing.assert_array_equal(lp[i][inf_at], rlp32[i][inf_at], err_msg=what)
        atol = 8 * EPS32 * (np.abs(z[i][np.isfinite(z[i])]).max() + np.log(C) + 1)
        assert_close(lp[i][~inf_at], rlp[i][~inf_at], _rel_bound(rlp[i][~inf_at], 4 * EPS32, atol),
                     "log_softmax" + what)
        assert_close(d[i], rd[i], _rel_bound(rd[i], rtol, 4 * EPS32 / N), "dlogits" + what)
        want_loss -= rlp[i, labels[i]]  # the label's entry is finite in these rows
    assert np.isnan(loss)  # the NaN and all -inf rows
    # without those rows, the mean loss matches the reference
    keep = [i for i, (kd, _) in enumerate(kinds) if kd not in ("nan", "allneg")]
    loss_k, _ = k.softmax_cross_entropy(z[keep], labels[keep])
    want_loss /= len(keep)
    zk = z[keep]
    zmax = np.abs(zk[np.isfinite(zk) & (np.abs(zk) < 1e30)]).max(initial=0.0)
    assert abs(loss_k - want_loss) <= 16 * EPS32 * (zmax + np.log(C) + 1), (variant, C, loss_k, want_loss)
