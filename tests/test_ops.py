"""pixrank.ops dense ops, softmax family and runtime, against the float64 oracles.

Convolution and pooling live in test_ops_conv.py, cosine top-k in test_ops_topk.py, bad
input in test_ops_errors.py, finite-difference checks in test_ops_gradients.py and
property-based tests in test_ops_properties.py.
"""
from __future__ import annotations

import doctest
import os
import subprocess
import sys

import numpy as np
import pytest

import pixrank
from pixrank import ops
from reference import (
    EPS32,
    assert_close,
    f32in,
    gemm_atol,
    linear_backward_ref,
    log_softmax_ref,
    matmul_ref,
    softmax_cross_entropy_ref,
    softmax_ref,
)

# (M, K, N): 1, primes, sizes off every SIMD width (8/16) and block size (powers of 2),
# one K past a 512 cache block and one N past a 4096 panel.
GEMM_SHAPES = [
    (1, 1, 1),
    (1, 7, 1),
    (7, 1, 7),
    (1, 67, 131),
    (131, 67, 1),
    (67, 131, 257),
    (257, 513, 7),
    (13, 257, 513),
    (129, 65, 33),
    (16, 32, 48),
]
EPILOGUES = [(False, False), (True, False), (False, True), (True, True)]  # (bias, relu)


def _stored(rng, m, k, n, ta, tb, dtype=np.float32):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    return a, b


def assert_matmul_matches(y, a, b, bias=None, relu=False, trans_a=False, trans_b=False):
    """Compare a kernel result with the oracle under the rigorous GEMM error bound."""
    ref = matmul_ref(a, b, bias, relu, trans_a, trans_b)
    absa = np.abs(f32in(a).T if trans_a else f32in(a))
    absb = np.abs(f32in(b).T if trans_b else f32in(b))
    extra = 0.0 if bias is None else np.abs(f32in(bias))
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    assert y.flags.c_contiguous
    assert_close(y, ref, 0.0, gemm_atol(absa, absb, absa.shape[1], extra), what="matmul")


# --------------------------------------------------------------------------------------
# matmul
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("trans_a", [False, True], ids=["N", "T"])
@pytest.mark.parametrize("trans_b", [False, True], ids=["N", "T"])
@pytest.mark.parametrize("epilogue", EPILOGUES, ids=["plain", "bias", "relu", "bias_relu"])
def test_matmul_matches_reference(rng, threads, shape, trans_a, trans_b, epilogue):
    m, k, n = shape
    use_bias, relu = epilogue
    a, b = _stored(rng, m, k, n, trans_a, trans_b)
    bias = rng.standard_normal(n).astype(np.float32) if use_bias else None
    y = ops.matmul(a, b, bias=bias, relu=relu, trans_a=trans_a, trans_b=trans_b)
    assert y.shape == (m, n)
    assert_matmul_matches(y, a, b, bias, relu, trans_a, trans_b)
    if relu:
        assert (y >= 0).all()


def test_matmul_large_panel(rng, threads):
    """N past a 4096-wide panel and K past 1024: the outer blocking loops wrap."""
    a = rng.standard_normal((37, 1031)).astype(np.float32)
    b = rng.standard_normal((1031, 4099)).astype(np.float32)
    bias = rng.standard_normal(4099).astype(np.float32)
    assert_matmul_matches(ops.matmul(a, b, bias, True), a, b, bias, True)


def test_matmul_square_block_sizes(rng, threads):
    """Exact powers of two and one more: the packing edges at block boundaries."""
    for s in (64, 65, 128, 255, 256):
        a = rng.standard_normal((s, s)).astype(np.float32)
        b = rng.standard_normal((s, s)).astype(np.float32)
        assert_matmul_matches(ops.matmul(a, b), a, b)


def test_matmul_exact_small_integers(rng):
    """Integer inputs small enough that float32 is exact: the result must be exact."""
    a = rng.integers(-8, 9, size=(67, 131))
    b = rng.integers(-8, 9, size=(131, 29))
    bias = rng.integers(-100, 100, size=29)
    y = ops.matmul(a, b, bias=bias, relu=True)
    np.testing.assert_array_equal(y, np.maximum(a @ b + bias, 0).astype(np.float32))


@pytest.mark.parametrize(
    "dtype", [np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_]
)
def test_matmul_converts_dtypes(rng, dtype):
    if dtype == np.bool_:
        a = rng.random((13, 67)) > 0.5
        b = rng.random((67, 9)) > 0.5
    elif np.issubdtype(dtype, np.integer):
        a = rng.integers(0, 5, size=(13, 67)).astype(dtype)
        b = rng.integers(0, 5, size=(67, 9)).astype(dtype)
    else:
        a = rng.standard_normal((13, 67)).astype(dtype)
        b = rng.standard_normal((67, 9)).astype(dtype)
    y = ops.matmul(a, b)
    expected = ops.matmul(np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32))
    np.testing.assert_array_equal(y, expected)
    assert_matmul_matches(y, a, b)


def test_matmul_accepts_lists():
    y = ops.matmul([[1, 2], [3, 4]], [[5, 6], [7, 8]], bias=[1, 1])
    np.testing.assert_array_equal(y, np.array([[20, 23], [44, 51]], np.float32))


def _views(rng, m, k):
    """Non-contiguous views of an (m, k) matrix: sliced, strided, reversed, transposed."""
    big = rng.standard_normal((2 * m + 3, 3 * k + 2)).astype(np.float32)
    yield "sliced", big[1 : m + 1, 2 : k + 2]
    yield "strided", big[::2, ::3][:m, :k]
    yield "reversed", big[:m, :k][::-1, ::-1]
    yield "transposed", np.asarray(rng.standard_normal((k, m)), dtype=np.float32).T
    yield "float64-transposed", rng.standard_normal((k, m)).T
    yield "float64-strided", rng.standard_normal((2 * m, k))[::2]


@pytest.mark.parametrize("trans_a", [False, True], ids=["N", "T"])
@pytest.mark.parametrize("trans_b", [False, True], ids=["N", "T"])
def test_matmul_non_contiguous_inputs(rng, trans_a, trans_b):
    m, k, n = 19, 67, 23
    views_a = dict(_views(rng, *((k, m) if trans_a else (m, k))))
    views_b = dict(_views(rng, *((n, k) if trans_b else (k, n))))
    for name in views_a:
        a, b = views_a[name], views_b[name]
        y = ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
        y_copy = ops.matmul(
            np.ascontiguousarray(a, np.float32),
            np.ascontiguousarray(b, np.float32),
            trans_a=trans_a,
            trans_b=trans_b,
        )
        assert_matmul_matches(y, a, b, trans_a=trans_a, trans_b=trans_b)
        # Same numbers as a contiguous copy, up to the GEMM's own rounding (a flipped
        # transpose flag may take another packing path with another summation order).
        absa = np.abs(f32in(a).T if trans_a else f32in(a))
        absb = np.abs(f32in(b).T if trans_b else f32in(b))
        assert_close(y, y_copy, 0.0, gemm_atol(absa, absb, k), what=name)


class _Spy:
    """Forwards to the real kernels module, recording the arguments of each call."""

    def __init__(self, real):
        self.real = real
        self.calls = []

    def __getattr__(self, name):
        fn = getattr(self.real, name)

        def wrapper(*args):
            self.calls.append((name, args))
            return fn(*args)

        return wrapper


def test_matmul_transposed_view_is_not_copied(rng, monkeypatch):
    """A w.T view goes to the kernel as w itself with the flag flipped."""
    a = rng.standard_normal((5, 7)).astype(np.float32)
    w = rng.standard_normal((3, 7)).astype(np.float32)  # so w.T is (7, 3), F-contiguous
    spy = _Spy(ops._K)
    monkeypatch.setattr(ops, "_K", spy)
    y = ops.matmul(a, w.T)
    (name, args), = spy.calls
    assert name == "matmul"
    assert args[0] is a
    assert args[1] is w or (np.shares_memory(args[1], w) and args[1].shape == w.shape)
    assert args[5] is True  # trans_b flipped
    assert_matmul_matches(y, a, w.T)
    # both flags, both operands as transposed views
    spy.calls.clear()
    at = rng.standard_normal((7, 5)).astype(np.float32).T  # (5, 7) F-contiguous
    y = ops.matmul(at, w, trans_b=True)
    (_, args), = spy.calls
    assert np.shares_memory(args[0], at) and args[0].flags.c_contiguous
    assert args[4] is True and args[5] is True
    assert_matmul_matches(y, at, w, trans_b=True)
    # a float32 C-contiguous operand is passed as is (no copy)
    spy.calls.clear()
    ops.matmul(a, w, trans_b=True)
    assert spy.calls[0][1][0] is a and spy.calls[0][1][1] is w


@pytest.mark.parametrize("epilogue", EPILOGUES, ids=["plain", "bias", "relu", "bias_relu"])
def test_matmul_empty(epilogue):
    use_bias, relu = epilogue
    bias = np.array([1.0, -2.0, 3.0], np.float32) if use_bias else None
    y = ops.matmul(np.zeros((0, 4)), np.ones((4, 3)), bias=bias, relu=relu)
    assert y.shape == (0, 3) and y.dtype == np.float32
    y = ops.matmul(np.zeros((4, 0)), np.ones((3, 4)), bias=bias, relu=relu, trans_a=True, trans_b=True)
    assert y.shape == (0, 3) and y.dtype == np.float32
    # K == 0: the empty sum is 0, so every row is relu?(bias)
    y = ops.matmul(np.zeros((2, 0)), np.zeros((0, 3)), bias=bias, relu=relu)
    expected = np.zeros((2, 3)) + (0 if bias is None else bias)
    np.testing.assert_array_equal(y, np.maximum(expected, 0) if relu else expected)
    assert y.dtype == np.float32
    # N == 0
    y = ops.matmul(np.ones((2, 5)), np.ones((5, 0)), relu=relu)
    assert y.shape == (2, 0) and y.dtype == np.float32


def test_matmul_does_not_modify_inputs(rng):
    a = rng.standard_normal((9, 11)).astype(np.float32)
    b = rng.standard_normal((11, 5)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    copies = a.copy(), b.copy(), bias.copy()
    ops.matmul(a, b, bias, True)
    for x, c in zip((a, b, bias), copies):
        np.testing.assert_array_equal(x, c)


def test_matmul_nonfinite_propagates():
    a = np.array([[1.0, np.nan], [1.0, 2.0]], np.float32)
    b = np.array([[1.0], [1.0]], np.float32)
    y = ops.matmul(a, b)
    assert np.isnan(y[0, 0]) and y[1, 0] == 3.0
    y = ops.matmul(np.array([[np.inf, 1.0]]), b)
    assert y[0, 0] == np.inf


def test_nan_propagates_through_every_op():
    """A NaN is never silently turned into a number (ReLU keeps it, pooling picks it)."""
    a = np.array([[np.nan, 1.0], [1.0, 1.0]], np.float32)
    y = ops.matmul(a, np.eye(2), bias=[1.0, -5.0], relu=True)
    assert np.isnan(y[0]).all() and y[1, 0] == 2.0 and y[1, 1] == 0.0
    y = ops.conv2d(np.full((1, 2, 2, 1), np.nan), np.ones((1, 1, 1, 1)), relu=True)
    assert np.isnan(y).all()
    for pos in range(4):
        x = np.arange(4, dtype=np.float32)
        x[pos] = np.nan
        y, arg = ops.max_pool2d(x.reshape(1, 2, 2, 1))
        assert np.isnan(y).all() and arg.ravel()[0] == pos
    p = ops.softmax([[np.nan, 1.0], [1.0, 2.0]])
    assert np.isnan(p[0]).all() and np.isfinite(p[1]).all()
    loss, d = ops.softmax_cross_entropy([[np.nan, 1.0], [1.0, 2.0]], [0, 1])
    assert np.isnan(loss) and np.isnan(d[0]).all() and np.isfinite(d[1]).all()


# --------------------------------------------------------------------------------------
# linear_backward
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", [(1, 1, 1), (7, 67, 1), (67, 131, 29), (131, 7, 257), (257, 33, 65)],
    ids=lambda s: "x".join(map(str, s)),
)
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
def test_linear_backward_matches_reference(rng, threads, shape, relu):
    m, k, n = shape
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    dy = rng.standard_normal((m, n)).astype(np.float32)
    y = ops.matmul(x, w, b, relu) if relu else None
    dx, dw, db = ops.linear_backward(x, w, dy, y=y, relu=relu)
    rdx, rdw, rdb = linear_backward_ref(x, w, dy, y, relu)
    for got, shape_ in ((dx, (m, k)), (dw, (k, n)), (db, (n,))):
        assert got.shape == shape_ and got.dtype == np.float32
    g = np.abs(f32in(dy))
    assert_close(dx, rdx, 0.0, gemm_atol(g, np.abs(f32in(w)).T, n), what="dx")
    assert_close(dw, rdw, 0.0, gemm_atol(np.abs(f32in(x)).T, g, m), what="dw")
    assert_close(db, rdb, 0.0, (m + 4) * EPS32 * g.sum(axis=0), what="db")


def test_linear_backward_relu_mask_applied_once(rng):
    """Where y == 0 the gradient is blocked; where y > 0 it passes unchanged."""
    x = np.eye(3, dtype=np.float32)
    w = np.array([[1.0, -1.0], [2.0, 0.5], [-3.0, 1.0]], np.float32)
    y = ops.matmul(x, w, relu=True)
    dy = np.full((3, 2), 2.0, np.float32)
    dx, dw, db = ops.linear_backward(x, w, dy, y=y, relu=True)
    g = dy * (y > 0)
    np.testing.assert_allclose(db, g.sum(0))
    np.testing.assert_allclose(dw, x.T @ g)
    np.testing.assert_allclose(dx, g @ w.T)


def test_linear_backward_converts_inputs(rng):
    x = rng.standard_normal((23, 67))
    w = rng.standard_normal((31, 67)).T  # F-contiguous float64 view
    dy = rng.integers(-3, 4, size=(23, 31))
    got = ops.linear_backward(x, w, dy)
    want = ops.linear_backward(*(np.ascontiguousarray(t, np.float32) for t in (x, w, dy)))
    for g, e in zip(got, want):
        np.testing.assert_array_equal(g, e)


def test_linear_backward_empty():
    dx, dw, db = ops.linear_backward(np.zeros((0, 4)), np.ones((4, 3)), np.zeros((0, 3)))
    assert dx.shape == (0, 4) and dw.shape == (4, 3) and db.shape == (3,)
    np.testing.assert_array_equal(dw, 0)
    np.testing.assert_array_equal(db, 0)
    for t in (dx, dw, db):
        assert t.dtype == np.float32
    dx, dw, db = ops.linear_backward(
        np.zeros((0, 4)), np.ones((4, 3)), np.zeros((0, 3)), y=np.zeros((0, 3)), relu=True
    )
    assert dx.shape == (0, 4) and dw.shape == (4, 3) and db.shape == (3,)
    # K == 0: no weights, db still sums dy
    dx, dw, db = ops.linear_backward(np.zeros((2, 0)), np.zeros((0, 3)), np.ones((2, 3)))
    assert dx.shape == (2, 0) and dw.shape == (0, 3)
    np.testing.assert_array_equal(db, [2, 2, 2])


# --------------------------------------------------------------------------------------
# softmax, log_softmax, softmax_cross_entropy
# --------------------------------------------------------------------------------------

SOFTMAX_SHAPES = [(1, 1), (1, 7), (7, 1), (67, 131), (131, 10), (5, 1031), (257, 17)]


def _softmax_rtol(z):
    """exp amplifies the rounding of z - max(z) by |z - max|: relative error ~ eps * |s|."""
    z = f32in(z)
    s = z - z.max(axis=1, keepdims=True)
    return 8 * EPS32 * (1.0 + np.abs(s[np.isfinite(s)]).max(initial=0.0))


@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_softmax_matches_reference(rng, threads, shape, scale):
    z = (scale * rng.standard_normal(shape)).astype(np.float32)
    p = ops.softmax(z)
    assert p.shape == shape and p.dtype == np.float32
    assert_close(p, softmax_ref(z), _softmax_rtol(z), 1e-37, what="softmax")
    assert_close(p.sum(axis=1), np.ones(shape[0]), shape[1] * 4 * EPS32, what="row sums")
    lp = ops.log_softmax(z)
    assert lp.shape == shape and lp.dtype == np.float32
    ref = log_softmax_ref(z)
    atol = 8 * EPS32 * (np.abs(f32in(z)).max() + np.log(shape[1]) + 1)
    assert_close(lp, ref, 4 * EPS32, atol, what="log_softmax")


@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_softmax_cross_entropy_matches_reference(rng, threads, shape):
    n, c = shape
    z = (3 * rng.standard_normal(shape)).astype(np.float32)
    labels = rng.integers(0, c, size=n)
    loss, d = ops.softmax_cross_entropy(z, labels)
    rloss, rd = softmax_cross_entropy_ref(z, labels)
    assert type(loss) is float
    assert d.shape == shape and d.dtype == np.float32
    scale = np.abs(f32in(z)).max() + np.log(c) + 1
    assert abs(loss - rloss) <= 16 * EPS32 * scale, (loss, rloss)
    assert_close(d, rd, _softmax_rtol(z), 4 * EPS32 / n, what="dlogits")
    # the gradient of a mean: every row sums to 0
    assert_close(d.sum(axis=1), np.zeros(n), 0.0, c * 4 * EPS32 / n, what="row sums")


def test_softmax_cross_entropy_label_dtypes(rng):
    z = rng.standard_normal((13, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=13)
    want = ops.softmax_cross_entropy(z, labels)
    for lab in (
        labels.astype(np.int32),
        labels.astype(np.uint8),
        labels.astype(np.int16),
        labels.astype(np.float64),  # whole numbers stored as floats
        labels.astype(np.float32),
        list(labels),
        np.repeat(labels, 2)[::2],  # non-contiguous
    ):
        loss, d = ops.softmax_cross_entropy(z, lab)
        assert loss == want[0]
        np.testing.assert_array_equal(d, want[1])
    loss, d = ops.softmax_cross_entropy(z.astype(np.float64), labels)
    assert loss == want[0]
    np.testing.assert_array_equal(d, want[1])


def test_softmax_stable_at_1e4():
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4 - 1, 1e4 - 2]], np.float32)
    p = ops.softmax(z)
    assert np.isfinite(p).all()
    assert_close(p, softmax_ref(z), 1e-5, 1e-30)
    lp = ops.log_softmax(z)
    assert np.isfinite(lp).all()
    assert_close(lp, log_softmax_ref(z), 1e-6, 1e-3)
    labels = np.array([1, 2, 2])
    loss, d = ops.softmax_cross_entropy(z, labels)
    rloss, rd = softmax_cross_entropy_ref(z, labels)
    assert np.isfinite(loss) and np.isfinite(d).all()
    assert abs(loss - rloss) <= 1e-6 * abs(rloss) + 1e-4
    assert_close(d, rd, 1e-5, 1e-7)
    # all logits huge and equal magnitude
    loss, d = ops.softmax_cross_entropy(np.full((4, 8), -1e4, np.float32), [0, 1, 2, 7])
    assert abs(loss - np.log(8)) < 1e-5
    assert_close(d, softmax_cross_entropy_ref(np.full((4, 8), -1e4), [0, 1, 2, 7])[1], 1e-5, 1e-8)


def test_softmax_with_minus_inf_entries():
    z = np.array([[0.0, -np.inf, 1.0], [-np.inf, 2.0, -np.inf], [-np.inf, 0.0, 0.0]], np.float32)
    p = ops.softmax(z)
    assert not np.isnan(p).any()
    assert_close(p, softmax_ref(z), 1e-6, 1e-30)
    assert p[0, 1] == 0 and p[1, 0] == 0 and p[1, 1] == 1
    lp = ops.log_softmax(z)
    assert not np.isnan(lp).any()
    assert lp[0, 1] == -np.inf and lp[1, 1] == 0
    assert_close(lp, log_softmax_ref(z), 1e-6, 1e-6)
    labels = np.array([2, 1, 2])
    loss, d = ops.softmax_cross_entropy(z, labels)
    rloss, rd = softmax_cross_entropy_ref(z, labels)
    assert np.isfinite(loss) and abs(loss - rloss) < 1e-6
    assert not np.isnan(d).any()
    assert_close(d, rd, 1e-6, 1e-7)
    assert d[0, 1] == 0 and d[1, 0] == 0


def test_softmax_cross_entropy_minus_inf_on_the_label():
    """The true class at -inf: the loss is +inf, and no NaN appears anywhere."""
    z = np.array([[0.0, -np.inf], [1.0, 2.0]], np.float32)
    loss, d = ops.softmax_cross_entropy(z, [1, 0])
    assert loss == np.inf
    assert not np.isnan(d).any()
    rd = softmax_cross_entropy_ref(z, [1, 0])[1]
    assert_close(d, rd, 1e-6, 1e-7)


def test_softmax_empty_batch():
    for fn in (ops.softmax, ops.log_softmax):
        out = fn(np.zeros((0, 5)))
        assert out.shape == (0, 5) and out.dtype == np.float32
    loss, d = ops.softmax_cross_entropy(np.zeros((0, 5)), np.zeros(0, dtype=np.int64))
    assert loss == 0.0 and type(loss) is float
    assert d.shape == (0, 5) and d.dtype == np.float32
    loss, d = ops.softmax_cross_entropy(np.zeros((0, 5)), [])
    assert d.shape == (0, 5)


def test_softmax_single_class_is_one():
    z = np.array([[3.0], [-1e4], [0.0]])
    np.testing.assert_array_equal(ops.softmax(z), np.ones((3, 1), np.float32))
    np.testing.assert_array_equal(ops.log_softmax(z), np.zeros((3, 1), np.float32))
    loss, d = ops.softmax_cross_entropy(z, [0, 0, 0])
    assert loss == 0.0
    np.testing.assert_array_equal(d, np.zeros((3, 1), np.float32))


# --------------------------------------------------------------------------------------
# runtime: threads, info, docstring examples
# --------------------------------------------------------------------------------------


def test_set_and_get_num_threads():
    old = pixrank.get_num_threads()
    try:
        for n in (1, 2, 3, np.int64(2)):
            pixrank.set_num_threads(n)
            assert pixrank.get_num_threads() == int(n)
            assert pixrank.info()["threads"] == int(n)
    finally:
        pixrank.set_num_threads(old)
    assert pixrank.get_num_threads() == old


def test_default_thread_count_is_the_usable_cpus():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PIXRANK_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", "import pixrank; print(pixrank.get_num_threads())"],
        capture_output=True, text=True, env=env, check=True, timeout=120,
    )
    assert int(out.stdout) == len(os.sched_getaffinity(0))


def test_info_fields():
    d = pixrank.info()
    assert d["version"] == pixrank.__version__
    assert isinstance(d["simd"], str) and d["simd"]
    assert isinstance(d["simd_available"], (list, tuple)) and d["simd"] in d["simd_available"]
    assert d["threads"] == pixrank.get_num_threads()
    assert d["threading"] in ("openmp", "serial")
    assert isinstance(d["compiler"], str) and d["compiler"]
    assert ops.info() == d


def test_results_identical_across_thread_counts(rng):
    """Threads split the output, never a sum: results must not depend on the count."""
    a = rng.standard_normal((131, 257)).astype(np.float32)
    b = rng.standard_normal((257, 67)).astype(np.float32)
    z = rng.standard_normal((67, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 67)
    outs = []
    for n in (1, 2):
        pixrank_threads = pixrank.get_num_threads()
        pixrank.set_num_threads(n)
        try:
            outs.append((ops.matmul(a, b), ops.softmax(z), ops.softmax_cross_entropy(z, labels)[1]))
        finally:
            pixrank.set_num_threads(pixrank_threads)
    for one, two in zip(*outs):
        np.testing.assert_array_equal(one, two)


def test_docstring_examples():
    old = pixrank.get_num_threads()
    try:
        result = doctest.testmod(ops, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    finally:
        pixrank.set_num_threads(old)
    assert result.attempted > 20
    assert result.failed == 0


def test_every_public_function_is_documented():
    for name in ops.__all__:
        doc = getattr(ops, name).__doc__
        assert doc and len(doc.strip()) > 40, name
    for name in ("matmul", "linear_backward", "softmax_cross_entropy", "im2col", "col2im",
                 "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "cosine_topk"):
        doc = getattr(ops, name).__doc__
        for section in ("Args:", "Shape:", "Returns:", "Raises:", "Example:", "Reference:"):
            assert section in doc, (name, section)


# --------------------------------------------------------------------------------------
# every op: unusual buffers in, fresh arrays out, inputs untouched
# --------------------------------------------------------------------------------------


def _misaligned(a):
    """A C-contiguous copy of ``a`` whose data pointer is not aligned to its itemsize."""
    a = np.ascontiguousarray(a)
    buf = bytearray(a.nbytes + 1)
    out = np.frombuffer(buf, dtype=a.dtype, offset=1, count=a.size).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


def _readonly(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def _all_ops_calls(rng):
    """(name, function, args) covering every op, with float32 C-contiguous inputs."""
    x = rng.standard_normal((2, 6, 5, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    y = ops.conv2d(x, w, padding="same", relu=True)
    cols = ops.im2col(x, 3, 3, padding=1)
    a = rng.standard_normal((7, 5)).astype(np.float32)
    b = rng.standard_normal((5, 3)).astype(np.float32)
    z = rng.standard_normal((7, 3)).astype(np.float32)
    pooled, arg = ops.max_pool2d(x)
    labels = np.array([0, 2, 1, 1, 0, 2, 2])
    return [
        ("matmul", ops.matmul, (a, b, np.ones(3, np.float32), True)),
        ("linear_backward", ops.linear_backward, (a, b, z, np.abs(z), True)),
        ("softmax", ops.softmax, (z,)),
        ("log_softmax", ops.log_softmax, (z,)),
        ("softmax_cross_entropy", ops.softmax_cross_entropy, (z, labels)),
        ("im2col", ops.im2col, (x, 3, 3, 1, 1)),
        ("col2im", ops.col2im, (cols, x.shape, 3, 3, 1, 1)),
        ("conv2d", ops.conv2d, (x, w, np.ones(4, np.float32), 1, "same", True)),
        ("conv2d_backward", ops.conv2d_backward, (x, w, y, 1, "same", y, True)),
        ("max_pool2d", ops.max_pool2d, (x,)),
        ("max_pool2d_backward", ops.max_pool2d_backward, (pooled, arg, x.shape)),
        ("cosine_topk", ops.cosine_topk, (a, z.T @ np.ones((7, 5), np.float32), 2)),
    ]


def _arrays(out):
    return [t for t in (out if isinstance(out, tuple) else (out,)) if isinstance(t, np.ndarray)]


@pytest.mark.parametrize("variant", ["misaligned", "readonly", "big-endian"])
def test_every_op_accepts_unusual_buffers(rng, variant):
    """Misaligned, read-only and byte-swapped arrays give the same results as plain ones."""
    for name, fn, args in _all_ops_calls(rng):
        want = fn(*args)
        changed = []
        for arg in args:
            if isinstance(arg, np.ndarray) and arg.ndim:
                if variant == "misaligned":
                    arg = _misaligned(arg)
                elif variant == "readonly":
                    arg = _readonly(arg)
                else:
                    arg = arg.astype(arg.dtype.newbyteorder(">"))
            changed.append(arg)
        got = fn(*changed)
        if name == "softmax_cross_entropy":
            assert got[0] == want[0]
        for g, e in zip(_arrays(got), _arrays(want)):
            np.testing.assert_array_equal(g, e, err_msg=f"{name} ({variant})")


def test_every_op_returns_fresh_arrays_and_leaves_inputs_alone(rng):
    for name, fn, args in _all_ops_calls(rng):
        before = [np.copy(t) if isinstance(t, np.ndarray) else t for t in args]
        out = fn(*args)
        for t, saved in zip(args, before):
            if isinstance(t, np.ndarray):
                np.testing.assert_array_equal(t, saved, err_msg=f"{name} modified an input")
        for o in _arrays(out):
            assert o.flags.c_contiguous and o.flags.writeable and o.flags.aligned, name
            for t in args:
                if isinstance(t, np.ndarray):
                    assert not np.shares_memory(o, t), f"{name} returned a view of an input"
