"""The compiled module ``pixrank._kernels`` on its own: every SIMD path against the
oracles and the naive twin, the C++ side's own argument checks (no input reachable from
Python may crash the process), concurrency from Python threads, and ``adam_update``.

``pixrank.ops`` validates before calling these; here they are called directly with what
ops would never pass, to prove the second line of defence. (Named ``test_ops_*`` so that
``.ci/sanitize.sh`` runs it under AddressSanitizer + UBSan too.)
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pixrank import _kernels as K
from pixrank import ops
from reference import (
    EPS32,
    assert_close,
    assert_topk_correct,
    conv2d_abs_bound,
    conv2d_ref,
    f32in,
    gemm_atol,
    matmul_ref,
    num_threads,
)

F = np.float32


def f32(*shape):
    return np.zeros(shape, F)


# --------------------------------------------------------------------------------------
# every SIMD path
# --------------------------------------------------------------------------------------


def test_simd_paths_reported():
    info = K.info()
    assert info["simd"] in K.available_simd()
    assert "generic" in K.available_simd()
    assert set(K.available_simd()) <= {"generic", "avx2", "avx512"}


@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 67, 131), (131, 257, 67), (6, 16, 16), (97, 513, 45)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("trans", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["NN", "TN", "NT", "TT"])
def test_matmul_every_simd_path(rng, simd_path, shape, trans):
    if simd_path != "default":
        assert K.info()["simd"] == simd_path
    m, k, n = shape
    ta, tb = trans
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(F)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(F)
    bias = rng.standard_normal(n).astype(F)
    for t in (1, 2):
        with num_threads(t):
            y = K.matmul(a, b, bias, True, ta, tb)
            naive = K.matmul_naive(a, b, bias, True, ta, tb)
        absa = np.abs(f32in(a).T if ta else f32in(a))
        absb = np.abs(f32in(b).T if tb else f32in(b))
        atol = gemm_atol(absa, absb, k, np.abs(f32in(bias)))
        assert_close(y, matmul_ref(a, b, bias, True, ta, tb), 0.0, atol, what=f"{simd_path} vs oracle")
        assert_close(y, naive, 0.0, 2 * atol, what=f"{simd_path} vs naive twin")


def test_conv_and_topk_every_simd_path(rng, simd_path):
    x = rng.standard_normal((2, 11, 9, 5)).astype(F)
    w = rng.standard_normal((3, 3, 5, 7)).astype(F)
    bias = rng.standard_normal(7).astype(F)
    y = ops.conv2d(x, w, bias, stride=2, padding="same", relu=True)
    bound = conv2d_abs_bound(x, w, bias, 2, "same")
    assert_close(y, conv2d_ref(x, w, bias, 2, "same", True), 0.0, 49 * EPS32 * bound)
    q = rng.standard_normal((5, 33)).astype(F)
    db = rng.standard_normal((3001, 33)).astype(F)
    idx, scores = ops.cosine_topk(q, db, 12)
    assert_topk_correct(idx, scores, q, db, 12)


def test_set_simd_rejects_unknown_paths():
    with pytest.raises(ValueError, match=re.escape("set_simd: 'sse' is not available")):
        K.set_simd("sse")
    for name in ("generic", "avx2", "avx512"):
        if name not in K.available_simd():
            with pytest.raises(ValueError, match=re.escape(f"set_simd: '{name}' is not available")):
                K.set_simd(name)


# --------------------------------------------------------------------------------------
# the C++ side's own checks: ValueError (or TypeError from pybind11), never a crash
# --------------------------------------------------------------------------------------

I64 = np.int64
misaligned = np.frombuffer(bytearray(17), dtype=F, offset=1).reshape(2, 2)

HOSTILE = [
    ("matmul-float64", lambda: K.matmul(np.zeros((2, 2)), f32(2, 2), None, False, False, False),
     "matmul: a must have dtype float32, got float64"),
    ("matmul-strided", lambda: K.matmul(f32(2, 4)[:, ::2], f32(2, 2), None, False, False, False),
     "matmul: a must be C-contiguous"),
    ("matmul-list", lambda: K.matmul([[1.0]], f32(1, 1), None, False, False, False),
     "matmul: a must be a numpy.ndarray of dtype float32, got list"),
    ("matmul-misaligned", lambda: K.matmul(misaligned, f32(2, 2), None, False, False, False),
     "matmul: a must be aligned to 4 bytes"),
    ("matmul-byteswapped", lambda: K.matmul(np.zeros((2, 2), ">f4"), f32(2, 2), None, False, False, False),
     "matmul: a must have dtype float32, got >f4"),
    ("matmul-inner", lambda: K.matmul(f32(2, 3), f32(4, 2), None, False, False, False),
     "matmul: inner dimensions differ"),
    ("matmul-bias", lambda: K.matmul(f32(2, 3), f32(3, 2), f32(3), False, False, False), "matmul: bias must have shape (2,)"),
    ("matmul-3d", lambda: K.matmul(f32(2, 3, 1), f32(3, 2), None, False, False, False), "matmul: a must be 2-D"),
    ("naive-inner", lambda: K.matmul_naive(f32(2, 3), f32(4, 2), None, False, False, False),
     "matmul_naive: inner dimensions differ"),
    ("linbwd-relu-no-y", lambda: K.linear_backward(f32(2, 3), f32(3, 4), f32(2, 4), None, True),
     "linear_backward: relu=True needs y"),
    ("linbwd-dy", lambda: K.linear_backward(f32(2, 3), f32(3, 4), f32(2, 3), None, False), "linear_backward: dy must have shape (2, 4)"),
    ("softmax-1d", lambda: K.softmax(f32(3)), "softmax: logits must be 2-D"),
    ("ce-label-high", lambda: K.softmax_cross_entropy(f32(2, 3), np.array([0, 3], I64)),
     "softmax_cross_entropy: labels[1] = 3 is outside [0, 3)"),
    ("ce-label-negative", lambda: K.softmax_cross_entropy(f32(2, 3), np.array([-1, 0], I64)),
     "softmax_cross_entropy: labels[0] = -1 is outside [0, 3)"),
    ("ce-no-classes", lambda: K.softmax_cross_entropy(f32(2, 0), np.zeros(2, I64)), "softmax_cross_entropy: labels[0] = 0 is outside [0, 0)"),
    ("ce-int32-labels", lambda: K.softmax_cross_entropy(f32(2, 3), np.zeros(2, np.int32)),
     "softmax_cross_entropy: labels must have dtype int64, got int32"),
    ("ce-label-count", lambda: K.softmax_cross_entropy(f32(2, 3), np.zeros(3, I64)), "softmax_cross_entropy: labels must have shape (2,)"),
    ("im2col-kh0", lambda: K.im2col(f32(1, 3, 3, 1), 0, 1, 1, 1, 0, 0, 0, 0), "im2col: window sizes must be >= 1"),
    ("im2col-stride0", lambda: K.im2col(f32(1, 3, 3, 1), 1, 1, 0, 1, 0, 0, 0, 0), "im2col: strides must be >= 1"),
    ("im2col-pad-negative", lambda: K.im2col(f32(1, 3, 3, 1), 1, 1, 1, 1, -1, 0, 0, 0), "im2col: paddings must be >= 0"),
    ("im2col-pad-huge", lambda: K.im2col(f32(1, 3, 3, 1), 1, 1, 1, 1, 2**62, 2**62, 0, 0), "im2col: sizes must be < 2^31"),
    ("im2col-window", lambda: K.im2col(f32(1, 3, 3, 1), 5, 5, 1, 1, 0, 0, 0, 0), "im2col: window larger than the padded input"),
    ("col2im-cols", lambda: K.col2im(f32(9, 1), 1, 3, 3, 1, 1, 1, 1, 1, 0, 0, 0, 1), "col2im: cols must have shape (12, 1)"),
    ("col2im-batch-negative", lambda: K.col2im(f32(0, 1), -1, 3, 3, 1, 1, 1, 1, 1, 0, 0, 0, 0), "col2im: sizes must be >= 0"),
    ("col2im-huge", lambda: K.col2im(f32(9, 1), 2**40, 2**40, 3, 1, 1, 1, 1, 1, 0, 0, 0, 0), "col2im: sizes must be < 2^31"),
    ("conv-channels", lambda: K.conv2d(f32(1, 3, 3, 2), f32(1, 1, 1, 2), None, 1, 1, 0, 0, 0, 0, False),
     "conv2d: w must have shape (kh, kw, C, F) with C = x.shape[3] = 2"),
    ("conv-bias", lambda: K.conv2d(f32(1, 3, 3, 1), f32(1, 1, 1, 2), f32(3), 1, 1, 0, 0, 0, 0, False), "conv2d: bias must have shape (2,)"),
    ("convbwd-dy", lambda: K.conv2d_backward(f32(1, 3, 3, 1), f32(1, 1, 1, 2), f32(1, 2, 2, 2), 1, 1, 0, 0, 0, 0, None, False),
     "conv2d_backward: dy must have shape (1, 3, 3, 2)"),
    ("convbwd-relu-no-y", lambda: K.conv2d_backward(f32(1, 3, 3, 1), f32(1, 1, 1, 2), f32(1, 3, 3, 2), 1, 1, 0, 0, 0, 0, None, True),
     "conv2d_backward: relu=True needs y"),
    ("pool-window0", lambda: K.max_pool2d(f32(1, 3, 3, 1), 0, 1, 1, 1), "max_pool2d: window sizes must be >= 1"),
    ("pool-window-big", lambda: K.max_pool2d(f32(1, 3, 3, 1), 4, 1, 1, 1), "max_pool2d: pool size (4, 1) is larger than the input"),
    ("pool-stride0", lambda: K.max_pool2d(f32(1, 3, 3, 1), 2, 2, 0, 1), "max_pool2d: strides must be >= 1"),
    ("poolbwd-index-high", lambda: K.max_pool2d_backward(np.ones((1, 1, 1, 1), F), np.full((1, 1, 1, 1), 9, I64), 1, 3, 3, 1),
     "max_pool2d_backward: argmax[0] = 9 does not index image 0"),
    ("poolbwd-index-negative", lambda: K.max_pool2d_backward(np.ones((1, 1, 1, 1), F), np.full((1, 1, 1, 1), -1, I64), 1, 3, 3, 1),
     "max_pool2d_backward: argmax[0] = -1 does not index image 0"),
    ("poolbwd-other-image", lambda: K.max_pool2d_backward(np.ones((2, 1, 1, 1), F), np.zeros((2, 1, 1, 1), I64), 2, 3, 3, 1),
     "max_pool2d_backward: argmax[1] = 0 does not index image 1"),
    ("poolbwd-argmax-shape", lambda: K.max_pool2d_backward(np.ones((1, 1, 1, 1), F), np.zeros((1, 1, 1, 2), I64), 1, 3, 3, 1),
     "max_pool2d_backward: argmax must have shape (1, 1, 1, 1)"),
    ("poolbwd-huge", lambda: K.max_pool2d_backward(np.ones((1, 1, 1, 1), F), np.zeros((1, 1, 1, 1), I64), 2**31, 2**31, 2**31, 1),
     "max_pool2d_backward: dy (1, 1, 1, 1) does not match x_shape"),
    ("topk-k0", lambda: K.cosine_topk(f32(2, 3), f32(3, 3), 0), "cosine_topk: k must be >= 1, got 0"),
    ("topk-d", lambda: K.cosine_topk(f32(2, 3), f32(3, 4), 1), "cosine_topk: queries and database must have the same dimension d"),
    ("topk-nan", lambda: K.cosine_topk(np.ones((1, 3), F), np.array([[np.nan, 1, 1]], F), 1),
     "cosine_topk: database row 0 contains a non-finite value"),
    ("threads-0", lambda: K.set_num_threads(0), "set_num_threads: n must be in [1, 1024], got 0"),
    ("adam-t0", lambda: K.adam_update(f32(3), f32(3), f32(3), f32(3), 1e-3, 0.9, 0.999, 1e-8, 0.0, 0),
     "adam_update: t must be >= 1, got 0"),
    ("adam-readonly", lambda: K.adam_update(np.frombuffer(bytes(12), F), f32(3), f32(3), f32(3), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1),
     "adam_update: param, m and v must be writeable"),
    ("adam-shape", lambda: K.adam_update(f32(3), f32(4), f32(3), f32(3), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1),
     "adam_update: grad, m and v must have the shape of param"),
    ("adam-beta", lambda: K.adam_update(f32(3), f32(3), f32(3), f32(3), 1e-3, 1.0, 0.999, 1e-8, 0.0, 1),
     "adam_update: need lr >= 0, 0 <= beta1, beta2 < 1"),
]


@pytest.mark.parametrize("thunk, message", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_kernels_reject_bad_arguments(thunk, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        thunk()


def test_kernels_reject_wrong_python_types():
    with pytest.raises(TypeError):
        K.im2col(f32(1, 3, 3, 1), "3", 1, 1, 1, 0, 0, 0, 0)
    with pytest.raises(TypeError):
        K.matmul(f32(2, 2), f32(2, 2), None, "yes", False, False)
    with pytest.raises(TypeError):
        K.cosine_topk(f32(2, 3), f32(3, 3), 2.5)


def test_kernel_empty_and_degenerate_sizes():
    """Sizes ops never passes (K == 0, N == 0) still give exact, initialised results."""
    bias = np.arange(4, dtype=F)
    np.testing.assert_array_equal(K.matmul(f32(3, 0), f32(0, 4), bias, False, False, False), np.tile(bias, (3, 1)))
    big = K.matmul(f32(300, 0), f32(0, 400), None, False, False, False)
    np.testing.assert_array_equal(big, 0)  # no uninitialised memory
    assert K.matmul(f32(3, 5), f32(5, 0), None, False, False, False).shape == (3, 0)
    dx, dw, db = K.linear_backward(f32(0, 2), f32(2, 3), f32(0, 3), None, False)
    assert dx.shape == (0, 2)
    np.testing.assert_array_equal(dw, 0)
    np.testing.assert_array_equal(db, 0)
    loss, d = K.softmax_cross_entropy(f32(0, 3), np.zeros(0, I64))
    assert loss == 0.0 and d.shape == (0, 3)
    idx, s = K.cosine_topk(f32(2, 3), f32(0, 3), 2)
    assert idx.shape == (2, 0) and s.shape == (2, 0)


# --------------------------------------------------------------------------------------
# concurrency: kernels called from several Python threads at once (GIL released)
# --------------------------------------------------------------------------------------


def test_concurrent_calls_from_python_threads(rng):
    a = [rng.standard_normal((67, 131)).astype(F) for _ in range(6)]
    b = rng.standard_normal((131, 45)).astype(F)
    q = rng.standard_normal((4, 45)).astype(F)
    want_mm = [K.matmul(x, b, None, False, False, False) for x in a]
    want_topk = [ops.cosine_topk(q, y, 5) for y in want_mm]

    def work(i):
        y = ops.matmul(a[i], b)
        return y, ops.cosine_topk(q, y, 5)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(5):
            for i, (y, (idx, s)) in enumerate(pool.map(work, range(6))):
                np.testing.assert_array_equal(y, want_mm[i])
                np.testing.assert_array_equal(idx, want_topk[i][0])
                np.testing.assert_array_equal(s, want_topk[i][1])


def test_kernels_release_the_gil(rng):
    """While a long kernel runs, another Python thread keeps executing bytecode."""
    import threading
    import time

    a = rng.standard_normal((1200, 1200)).astype(F)
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.0005)

    thread = threading.Thread(target=ticker)
    thread.start()
    inside = 0
    try:
        with num_threads(1):  # leave a core for the ticker
            for _ in range(10):  # stops at the first call during which the ticker ran
                t0 = time.perf_counter()
                ops.matmul(a, a)
                t1 = time.perf_counter()
                inside += sum(t0 < t < t1 for t in list(ticks))
                if inside:
                    break
    finally:
        stop.set()
        thread.join()
    assert inside > 0, "no Python thread ran during the kernel: the GIL was held"


# --------------------------------------------------------------------------------------
# adam_update (optional kernel of the contract, used by the framework's optimizer)
# --------------------------------------------------------------------------------------


def adam_ref(p, g, m, v, lr, b1, b2, eps, wd, t):
    """Keras' AdamW step in float64: the "efficient version" of Kingma & Ba 2015 (end of
    sec. 2: epsilon added to sqrt(v), bias correction folded into the step size) after
    decoupled weight decay (Loshchilov & Hutter 2019), with the coefficients beta and
    1 - beta rounded to float32 as the kernel (and pixrank.optimizers.Adam) uses them.

    Returns the new (param, m, v) and, for tolerances, the magnitudes of the terms each
    is summed from (a float32 sum of cancelling terms errs relative to the terms).
    """
    alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
    c1, c2 = float(np.float32(1 - b1)), float(np.float32(1 - b2))
    b1, b2 = float(np.float32(b1)), float(np.float32(b2))
    p, g, m, v = (np.asarray(x, np.float64) for x in (p, g, m, v))
    m_terms = np.abs(b1 * m) + np.abs(c1 * g)
    m = b1 * m + c1 * g
    v = b2 * v + c2 * g * g
    step = alpha * m / (np.sqrt(v) + eps)
    p_terms = np.abs(p) + np.abs(step) * (1 + m_terms / np.maximum(np.abs(m), 1e-30)) + np.abs(lr * wd * p)
    return p * (1 - lr * wd) - step, m, v, m_terms, p_terms


@pytest.mark.parametrize("shape", [(1,), (7,), (67, 131), (3, 5, 7)], ids=str)
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_adam_update_matches_reference(rng, threads, shape, wd):
    p = rng.standard_normal(shape).astype(F)
    m = (0.1 * rng.standard_normal(shape)).astype(F)
    v = np.abs(0.01 * rng.standard_normal(shape)).astype(F)
    for t in (1, 2, 10):
        g = rng.standard_normal(shape).astype(F)
        rp, rm, rv, m_terms, p_terms = adam_ref(p, g, m, v, 1e-2, 0.9, 0.999, 1e-8, wd, t)
        K.adam_update(p, g, m, v, 1e-2, 0.9, 0.999, 1e-8, wd, t)  # in place
        assert_close(m, rm, 0.0, 4 * EPS32 * m_terms, what="m")
        assert_close(v, rv, 6 * EPS32, 1e-30, what="v")
        assert_close(p, rp, 0.0, 64 * EPS32 * p_terms, what="param")


def test_adam_update_zero_gradient_keeps_params_without_decay():
    p = np.linspace(-1, 1, 9, dtype=F)
    before = p.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    K.adam_update(p, np.zeros_like(p), m, v, 0.1, 0.9, 0.999, 1e-8, 0.0, 1)
    np.testing.assert_array_equal(p, before)
    np.testing.assert_array_equal(m, 0)
    np.testing.assert_array_equal(v, 0)


# --------------------------------------------------------------------------------------
# start-up: PIXRANK_SIMD and the default thread count (fresh interpreters)
# --------------------------------------------------------------------------------------


def _fresh(code, env_extra=None, preexec_fn=None):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PIXRANK_SIMD"}
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         preexec_fn=preexec_fn, timeout=120, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize("name", ["generic", "avx2", "avx512", "sse"])
def test_pixrank_simd_environment_variable(name):
    code = "import pixrank._kernels as k; i = k.info(); print(i['simd'], i.get('simd_env_rejected'))"
    if name in K.available_simd():
        assert _fresh(code, {"PIXRANK_SIMD": name}) == f"{name} None"
    else:  # not on this CPU (or no such path): the detected best path is kept, and said so
        assert _fresh(code, {"PIXRANK_SIMD": name}) == f"{K.available_simd()[-1]} {name}"


@pytest.mark.parametrize("name", ["avx2", "avx512", "sse"])
def test_a_rejected_pixrank_simd_warns_when_ops_is_imported(name):
    code = ("import warnings\nwith warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n    import pixrank.ops\n"
            "print([str(x.message) for x in w if x.category is RuntimeWarning])")
    out = _fresh(code, {"PIXRANK_SIMD": name})
    if name in K.available_simd():
        assert out == "[]"
    else:
        assert f"PIXRANK_SIMD='{name}' names no SIMD path this build can run here" in out
        assert f"using '{K.available_simd()[-1]}'" in out


def test_default_threads_follow_the_cpu_affinity():
    import os

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 usable CPUs")
    code = "import pixrank; print(pixrank.get_num_threads())"
    assert _fresh(code, preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})) == "1"
