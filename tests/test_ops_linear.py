"""ops.linear_backward (the dense layer's fused backward) and autograd's linear against float64 numpy.

linear_backward computes the ReLU mask and the bias gradient in one pass over dy (split by rows
across threads when large), then dx = g @ w.T and dw = x.T @ g (either skipped on request): at
exactly 2 threads one single-threaded GEMM per product, concurrently; otherwise one multi-threaded
GEMM each. Checked on every
SIMD path the module offers (set_simd; AVX-512 under emulation by .ci/avx512-emulated.sh) at 1, 2, 3
and 16 threads, with and without the ReLU, with each product skipped (need_dx / need_dw), at shapes
of 1, just under/over the micro-tile and block sizes, and empty ones. Error bounds: reference.gemm_atol
(the forward error of a float32 dot product of length K, Higham, "Accuracy and Stability of Numerical
Algorithms", 2nd ed., sec. 3.1); db is summed in double, so it is within a few float32 roundings.
"""
from __future__ import annotations

import numpy as np
import pytest
from reference import EPS32, assert_close, f32in, gemm_atol, linear_backward_ref

import pixrank
from pixrank import autograd as ag
from pixrank import ops

# (M, K, N): M batch rows, K inputs, N units. 1s in every position; sizes just under/over the
# micro-tiles (MR 4/6/12, NR 8/16/32) and the balanced K blocks (256); the bench's Dense shapes; one
# product over 64e6 multiply-adds (at exactly 2 threads dx and dw then run concurrently).
SHAPES = [
    (1, 1, 1),
    (1, 13, 5),
    (7, 1, 5),
    (7, 13, 1),
    (7, 13, 5),
    (13, 31, 33),
    (65, 257, 17),
    (128, 784, 200),
    (97, 3, 300),
    (515, 401, 311),
]


# conftest's `threads` fixture, here over 1, 2, 3 (an odd split) and 16 (more threads than rows of work)
over_threads = pytest.mark.parametrize("threads", [1, 2, 3, 16], indirect=True, ids=lambda n: f"threads{n}")


def _data(rng, m, k, n, dead_rows=False):
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    dy = rng.standard_normal((m, n)).astype(np.float32)
    y = rng.standard_normal((m, n)).astype(np.float32)
    if dead_rows and m:
        y[::3] = -np.abs(y[::3])  # rows whose ReLU is off everywhere: g is zero there
        y[:, ::4] = 0.0  # y == 0 blocks the gradient too
    return x, w, dy, y


def assert_linear_backward_matches(x, w, dy, y, relu, dx, dw, db, need_dx=True, need_dw=True):
    m, k = x.shape
    n = w.shape[1]
    rdx, rdw, rdb = linear_backward_ref(x, w, dy, y, relu)
    g = np.abs(f32in(dy) * (f32in(y) > 0)) if relu else np.abs(f32in(dy))
    if need_dx:
        assert dx.shape == (m, k) and dx.dtype == np.float32
        assert_close(dx, rdx, 0.0, gemm_atol(g, np.abs(f32in(w)).T, n), what="dx")
    else:
        assert dx is None
    if need_dw:
        assert dw.shape == (k, n) and dw.dtype == np.float32
        assert_close(dw, rdw, 0.0, gemm_atol(np.abs(f32in(x)).T, g, m), what="dw")
    else:
        assert dw is None
    assert db.shape == (n,) and db.dtype == np.float32
    assert_close(db, rdb, 0.0, 2 * EPS32 * g.sum(axis=0), what="db")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@over_threads
def test_linear_backward_every_path(simd_path, threads, rng, shape, relu):
    x, w, dy, y = _data(rng, *shape, dead_rows=relu)
    for need_dx, need_dw in ((True, True), (False, True), (True, False), (False, False)):
        dx, dw, db = ops.linear_backward(x, w, dy, y if relu else None, relu, need_dx=need_dx, need_dw=need_dw)
        assert_linear_backward_matches(x, w, dy, y, relu, dx, dw, db, need_dx, need_dw)


@pytest.mark.parametrize("shape", [(0, 5, 3), (0, 0, 0), (4, 0, 3), (4, 5, 0), (0, 300, 200)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@over_threads
def test_linear_backward_empty(threads, rng, shape, relu):
    """M == 0: empty dx, zero dw and db; K == 0: empty dx and dw, db sums dy; N == 0: zero dx."""
    x, w, dy, y = _data(rng, *shape)
    dx, dw, db = ops.linear_backward(x, w, dy, y if relu else None, relu)
    assert_linear_backward_matches(x, w, dy, y, relu, dx, dw, db)
    for got in (dx, dw, db):  # exact zeros where the reference has no terms
        assert np.isfinite(got).all()


def test_linear_backward_all_threads_agree(rng):
    """Every thread count (the mask pass split by rows, the GEMMs' own tilings) stays within the
    GEMM's own error bound."""
    x, w, dy, y = _data(rng, 128, 784, 200, dead_rows=True)
    old = pixrank.get_num_threads()
    try:
        for nt in (1, 2, 3, 4, 7, 16):
            pixrank.set_num_threads(nt)
            dx, dw, db = ops.linear_backward(x, w, dy, y, True)
            assert_linear_backward_matches(x, w, dy, y, True, dx, dw, db)
    finally:
        pixrank.set_num_threads(old)


def test_linear_backward_flags_are_bools():
    x, w, dy = np.ones((2, 3)), np.ones((3, 4)), np.ones((2, 4))
    for name in ("need_dx", "need_dw"):
        with pytest.raises(TypeError, match=name):
            ops.linear_backward(x, w, dy, **{name: 1})


def test_linear_backward_does_not_touch_its_inputs(rng):
    x, w, dy, y = _data(rng, 37, 41, 43, dead_rows=True)
    before = [a.copy() for a in (x, w, dy, y)]
    ops.linear_backward(x, w, dy, y, True)
    for a, b in zip((x, w, dy, y), before):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------- autograd


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("x_grad,w_grad,with_bias", [(True, True, True), (False, True, True), (True, False, True),
                                                     (True, True, False), (False, False, True)])
@over_threads
def test_autograd_linear_grads(threads, rng, relu, x_grad, w_grad, with_bias):
    x, w, dy, _ = _data(rng, 67, 131, 29)
    b = rng.standard_normal(29).astype(np.float32)
    X = ag.Tensor(x, requires_grad=x_grad)
    W = ag.Parameter(w, trainable=w_grad)
    B = ag.Parameter(b) if with_bias else None
    out = ag.linear(X, W, B, relu=relu)
    out.backward(dy)
    y = out.data
    rdx, rdw, rdb = linear_backward_ref(x, w, dy, y, relu)
    g = np.abs(f32in(dy) * (f32in(y) > 0)) if relu else np.abs(f32in(dy))
    if x_grad:
        assert_close(X.grad, rdx, 0.0, gemm_atol(g, np.abs(f32in(w)).T, 29), what="dx")
    else:
        assert X.grad is None
    if w_grad:
        assert_close(W.grad, rdw, 0.0, gemm_atol(np.abs(f32in(x)).T, g, 67), what="dw")
    else:
        assert W.grad is None
    if with_bias:
        assert_close(B.grad, rdb, 0.0, 2 * EPS32 * g.sum(axis=0), what="db")


def test_autograd_stored_gradients_are_owned(rng):
    """A leaf's first gradient is the kernel's new array (no copy): writable, distinct per leaf, and
    never the caller's seed or another leaf's array; later backward passes add into a new array."""
    x, w, dy, _ = _data(rng, 5, 7, 3)
    b = rng.standard_normal(3).astype(np.float32)
    X, W, B = ag.Tensor(x, requires_grad=True), ag.Parameter(w), ag.Parameter(b)
    out = ag.linear(X, W, B)
    out.backward(dy, retain_graph=True)
    grads = [X.grad, W.grad, B.grad]
    for gr in grads:
        assert gr.flags.writeable and gr.flags.owndata and gr.dtype == np.float32
        assert not np.shares_memory(gr, dy)
    assert len({id(gr) for gr in grads}) == 3
    first = [gr.copy() for gr in grads]
    grads[1][...] = 0  # the caller may change a stored gradient in place: nothing else sees it
    out.backward(dy)  # the retained graph again: accumulates
    np.testing.assert_allclose(X.grad, 2 * first[0], rtol=1e-6)
    np.testing.assert_allclose(W.grad, first[1], rtol=1e-6)
    np.testing.assert_allclose(B.grad, 2 * first[2], rtol=1e-6)
    assert W.grad is not grads[1]


def test_autograd_same_tensor_twice_sums(rng):
    """linear(t, t): the x and w gradients of one leaf are added."""
    a = rng.standard_normal((6, 6)).astype(np.float32)
    dy = rng.standard_normal((6, 6)).astype(np.float32)
    T = ag.Tensor(a, requires_grad=True)
    ag.linear(T, T).backward(dy)
    a64, g = f32in(a), f32in(dy)
    np.testing.assert_allclose(T.grad, g @ a64.T + a64.T @ g, rtol=1e-5, atol=1e-5)


def test_autograd_seed_and_shared_gradients_are_copied(rng):
    """Gradients that are not a kernel's new array (the caller's seed on a leaf root; one array
    handed to two leaves by add) are still copied."""
    a = rng.standard_normal((3, 4)).astype(np.float32)
    seed = np.ones((3, 4), np.float32)
    T = ag.Tensor(a, requires_grad=True)
    T.backward(seed)
    assert not np.shares_memory(T.grad, seed)
    P, Q = ag.Tensor(a, requires_grad=True), ag.Tensor(a, requires_grad=True)
    (P + Q).backward(seed)
    assert not np.shares_memory(P.grad, Q.grad) and not np.shares_memory(P.grad, seed)
