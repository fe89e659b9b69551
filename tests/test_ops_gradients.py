"""Finite-difference checks of every backward in pixrank.ops.

The loss is ``L = sum(R * f(inputs))`` for a fixed random ``R`` (so ``dL/df = R``). The
kernel's gradients (float32) are compared with central differences of the float64
reference forward (``numerical_grad``, eps 1e-6: truncation error is nil for the
(piecewise) linear ops and tiny for softmax), so the check does not depend on any
backward formula. ReLU kinks and max-pool ties are kept away from the probed points.
The float64 reference backwards used elsewhere are checked the same way, and one
directional check per op runs the float32 kernel's own forward.
"""
from __future__ import annotations

import numpy as np
import pytest

from pixrank import ops
from reference import (
    EPS32,
    assert_close,
    conv2d_backward_ref,
    conv2d_ref,
    linear_backward_ref,
    matmul_ref,
    max_pool2d_ref,
    numerical_grad,
    softmax_cross_entropy_ref,
)


def grad_tol(fd):
    """float32 kernel vs float64 differences: relative to the gradient's magnitude."""
    return 1e-4, 256 * EPS32 * (np.abs(fd).max() + 1.0)


def away_from_kink(rng, make_pre, margin=0.05, tries=100):
    """Draw inputs until every pre-activation is at least ``margin`` from 0."""
    for _ in range(tries):
        args = make_pre(rng)
        if np.abs(args[-1]).min() > margin:
            return args[:-1]
    raise RuntimeError("could not draw inputs away from the ReLU kink")


# --------------------------------------------------------------------------------------
# linear
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 7, 4), (3, 17, 9)], ids=lambda s: "x".join(map(str, s)))
def test_linear_backward_finite_differences(rng, threads, relu, shape):
    m, k, n = shape

    def draw(r):
        x = r.standard_normal((m, k)).astype(np.float32)
        w = r.standard_normal((k, n)).astype(np.float32)
        b = r.standard_normal(n).astype(np.float32)
        return x, w, b, matmul_ref(x, w, b)

    x, w, b = away_from_kink(rng, draw) if relu else draw(rng)[:3]
    R = rng.standard_normal((m, n))

    def loss(x_, w_, b_):
        return float(np.sum(R * matmul_ref(x_, w_, b_, relu)))

    y = ops.matmul(x, w, b, relu)
    dx, dw, db = ops.linear_backward(x, w, R.astype(np.float32), y=y, relu=relu)
    x64, w64, b64 = (t.astype(np.float64) for t in (x, w, b))
    fdx = numerical_grad(lambda t: loss(t, w64, b64), x64)
    fdw = numerical_grad(lambda t: loss(x64, t, b64), w64)
    fdb = numerical_grad(lambda t: loss(x64, w64, t), b64)
    assert_close(dx, fdx, *grad_tol(fdx), what="dx")
    assert_close(dw, fdw, *grad_tol(fdw), what="dw")
    assert_close(db, fdb, *grad_tol(fdb), what="db")
    # the oracle's backward agrees with the same differences
    rdx, rdw, rdb = linear_backward_ref(x, w, R, matmul_ref(x, w, b, relu), relu)
    for r, fd in ((rdx, fdx), (rdw, fdw), (rdb, fdb)):
        assert_close(r, fd, 1e-6, 1e-6)  # R is rounded to float32 in the oracle


def test_linear_directional_derivative_through_the_kernel(rng):
    """The kernel's forward is linear in x: (L(x + v) - L(x - v)) / 2 == <dx, v>."""
    x = rng.standard_normal((6, 33)).astype(np.float32)
    w = rng.standard_normal((33, 5)).astype(np.float32)
    v = rng.standard_normal((6, 33)).astype(np.float32)
    R = rng.standard_normal((6, 5)).astype(np.float32)
    lp = float(np.sum(R.astype(np.float64) * ops.matmul(x + v, w)))
    lm = float(np.sum(R.astype(np.float64) * ops.matmul(x - v, w)))
    dx, _, _ = ops.linear_backward(x, w, R)
    want = float(np.sum(dx.astype(np.float64) * v))
    scale = float(np.abs(R).sum() * (np.abs(x) + np.abs(v)).max() * np.abs(w).sum(axis=0).max())
    assert abs((lp - lm) / 2 - want) <= 64 * EPS32 * scale


# --------------------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------------------

# (x shape, w shape, stride, padding)
CONV_GRAD_CASES = [
    ((2, 5, 6, 2), (3, 3, 2, 3), 1, "same"),
    ((2, 5, 6, 2), (3, 3, 2, 3), 2, "same"),
    ((1, 6, 6, 2), (2, 2, 2, 2), 2, "same"),  # even kernel: asymmetric padding
    ((2, 5, 6, 2), (3, 3, 2, 3), 1, "valid"),
    ((1, 7, 5, 3), (3, 2, 3, 2), 2, "valid"),
    ((2, 4, 5, 2), (3, 3, 2, 2), 1, 1),
    ((1, 6, 7, 1), (3, 3, 1, 2), 2, (2, 1)),
    ((1, 3, 3, 1), (1, 1, 1, 1), 1, 0),
]


def _conv_id(case):
    xs, ws, s, p = case
    return f"x{'x'.join(map(str, xs))}-w{'x'.join(map(str, ws))}-s{s}-p{p}".replace(" ", "")


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("case", CONV_GRAD_CASES, ids=_conv_id)
def test_conv2d_backward_finite_differences(rng, threads, case, relu):
    xs, ws, stride, padding = case

    def draw(r):
        x = r.standard_normal(xs).astype(np.float32)
        w = r.standard_normal(ws).astype(np.float32)
        b = r.standard_normal(ws[3]).astype(np.float32)
        return x, w, b, conv2d_ref(x, w, b, stride, padding)

    x, w, b = away_from_kink(rng, draw, margin=0.02) if relu else draw(rng)[:3]
    R = rng.standard_normal(conv2d_ref(x, w, b, stride, padding).shape)

    def loss(x_, w_, b_):
        return float(np.sum(R * conv2d_ref(x_, w_, b_, stride, padding, relu)))

    y = ops.conv2d(x, w, b, stride, padding, relu=relu)
    dx, dw, db = ops.conv2d_backward(
        x, w, R.astype(np.float32), stride=stride, padding=padding, y=y, relu=relu
    )
    x64, w64, b64 = (t.astype(np.float64) for t in (x, w, b))
    fdx = numerical_grad(lambda t: loss(t, w64, b64), x64)
    fdw = numerical_grad(lambda t: loss(x64, t, b64), w64)
    fdb = numerical_grad(lambda t: loss(x64, w64, t), b64)
    assert_close(dx, fdx, *grad_tol(fdx), what="dx")
    assert_close(dw, fdw, *grad_tol(fdw), what="dw")
    assert_close(db, fdb, *grad_tol(fdb), what="db")
    rdx, rdw, rdb = conv2d_backward_ref(
        x, w, R, stride, padding, conv2d_ref(x, w, b, stride, padding, relu), relu
    )
    for r, fd in ((rdx, fdx), (rdw, fdw), (rdb, fdb)):
        assert_close(r, fd, 1e-6, 1e-6)  # R is rounded to float32 in the oracle


def test_conv2d_directional_derivative_through_the_kernel(rng):
    """conv2d is bilinear: the kernel's own forward differences match its backward."""
    x = rng.standard_normal((2, 9, 8, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    vx = rng.standard_normal(x.shape).astype(np.float32)
    vw = rng.standard_normal(w.shape).astype(np.float32)
    R = rng.standard_normal(ops.conv2d(x, w, stride=2, padding="same").shape)

    def L(x_, w_):
        return float(np.sum(R * ops.conv2d(x_, w_, stride=2, padding="same")))

    dx, dw, _ = ops.conv2d_backward(x, w, R.astype(np.float32), stride=2, padding="same")
    scale = float(np.abs(R).sum() * 27 * 4 * 4)  # |R| * taps * |x + v| * |w + v| (generous)
    assert abs((L(x + vx, w) - L(x - vx, w)) / 2 - np.sum(dx * vx, dtype=np.float64)) <= 64 * EPS32 * scale
    assert abs((L(x, w + vw) - L(x, w - vw)) / 2 - np.sum(dw * vw, dtype=np.float64)) <= 64 * EPS32 * scale


# --------------------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, pool, stride",
    [((2, 4, 4, 3), 2, None), ((1, 7, 7, 2), 3, 2), ((2, 5, 6, 1), (2, 3), 1), ((1, 1, 1, 1), 1, None)],
    ids=["p2", "p3s2-overlap", "p2x3s1-overlap", "1x1"],
)
def test_max_pool2d_backward_finite_differences(rng, threads, shape, pool, stride):
    # distinct values at least 1/7 apart: a 1e-6 step never changes a window's argmax
    x = (rng.permutation(int(np.prod(shape))).reshape(shape) / 7.0).astype(np.float32)
    y, arg = ops.max_pool2d(x, pool, stride)
    R = rng.standard_normal(y.shape)
    dx = ops.max_pool2d_backward(R.astype(np.float32), arg, x.shape)
    fd = numerical_grad(lambda t: float(np.sum(R * max_pool2d_ref(t, pool, stride)[0])), x.astype(np.float64))
    assert_close(dx, fd, *grad_tol(fd), what="dx")


# --------------------------------------------------------------------------------------
# softmax cross-entropy
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, scale", [((1, 1), 1.0), ((1, 3), 1.0), ((4, 7), 1.0), ((9, 2), 5.0), ((6, 10), 20.0)],
    ids=["1x1", "1x3", "4x7", "9x2-x5", "6x10-x20"],
)
def test_softmax_cross_entropy_finite_differences(rng, threads, shape, scale):
    n, c = shape
    z = (scale * rng.standard_normal(shape)).astype(np.float32)
    labels = rng.integers(0, c, n)
    loss, d = ops.softmax_cross_entropy(z, labels)
    fd = numerical_grad(lambda t: softmax_cross_entropy_ref(t, labels)[0], z.astype(np.float64))
    assert_close(d, fd, 1e-4, 64 * EPS32 / n)
    assert_close(softmax_cross_entropy_ref(z, labels)[1], fd, 1e-6, 1e-8)


def test_softmax_cross_entropy_gradient_through_the_kernel(rng):
    """Central differences of the kernel's own float32 loss (eps 1e-2) match its gradient."""
    z = rng.standard_normal((5, 6)).astype(np.float32)
    labels = rng.integers(0, 6, 5)
    _, d = ops.softmax_cross_entropy(z, labels)
    eps = 1e-2
    fd = np.zeros_like(d, dtype=np.float64)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            zp, zm = z.copy(), z.copy()
            zp[i, j] += eps
            zm[i, j] -= eps
            fd[i, j] = (ops.softmax_cross_entropy(zp, labels)[0] - ops.softmax_cross_entropy(zm, labels)[0]) / (
                float(zp[i, j]) - float(zm[i, j])
            )
    # truncation ~ eps^2 |f'''| / 6 and rounding ~ 1e-7 / eps
    assert_close(d, fd, 0.0, 2e-4)
