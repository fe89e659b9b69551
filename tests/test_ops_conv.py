"""pixrank.ops convolution and pooling (im2col, col2im, conv2d and its backward,
max_pool2d and its backward) against the float64 oracles in reference.py."""
from __future__ import annotations

import numpy as np
import pytest

from pixrank import ops
from reference import (
    EPS32,
    assert_close,
    col2im_ref,
    conv2d_abs_bound,
    conv2d_backward_ref,
    conv2d_ref,
    f32in,
    im2col_ref,
    max_pool2d_backward_ref,
    max_pool2d_ref,
    out_hw,
    resolve_pads,
)

# (B, H, W, C, kh, kw, F, stride, padding): 1s, primes, odd sizes, even kernels with
# asymmetric 'same' padding, strides 1-3, padding wider than the kernel.
CONV_CASES = [
    (1, 1, 1, 1, 1, 1, 1, 1, 0),
    (2, 7, 7, 3, 3, 3, 5, 1, "same"),
    (2, 7, 7, 3, 3, 3, 5, 2, "same"),
    (1, 28, 28, 1, 5, 5, 8, 1, "valid"),
    (3, 13, 11, 4, 3, 2, 7, (2, 1), (1, 0)),
    (2, 9, 9, 2, 4, 4, 3, 2, "same"),
    (1, 8, 8, 3, 2, 2, 4, 2, "same"),
    (2, 6, 5, 67, 3, 3, 1, 1, 1),
    (1, 5, 5, 3, 5, 5, 131, 1, 2),
    (2, 17, 17, 16, 3, 3, 33, 3, "same"),
    (1, 3, 3, 1, 3, 3, 1, 1, 3),
    (2, 10, 10, 3, 1, 1, 4, 2, 0),
    (1, 19, 23, 3, 7, 7, 16, 2, 3),
    (2, 12, 12, 8, 3, 3, 16, 2, "valid"),
]


def _case_id(case):
    b, h, w, c, kh, kw, f, s, p = case
    return f"x{b}x{h}x{w}x{c}-k{kh}x{kw}x{f}-s{s}-p{p}".replace(" ", "")


def _conv_inputs(rng, case, dtype=np.float32):
    b, h, w, c, kh, kw, f, stride, padding = case
    x = rng.standard_normal((b, h, w, c)).astype(dtype)
    wt = rng.standard_normal((kh, kw, c, f)).astype(dtype)
    bias = rng.standard_normal(f).astype(dtype)
    return x, wt, bias, stride, padding


def check_conv(y, x, w, bias, stride, padding, relu):
    ref = conv2d_ref(x, w, bias, stride, padding, relu)
    k = w.shape[0] * w.shape[1] * w.shape[2]
    atol = (k + 4) * EPS32 * conv2d_abs_bound(x, w, bias, stride, padding)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    assert_close(y, ref, 0.0, atol, what="conv2d")


# --------------------------------------------------------------------------------------
# im2col / col2im
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CONV_CASES, ids=_case_id)
def test_im2col_matches_reference(rng, threads, case):
    x, w, _, stride, padding = _conv_inputs(rng, case)
    kh, kw = w.shape[:2]
    cols = ops.im2col(x, kh, kw, stride=stride, padding=padding)
    ref = im2col_ref(x, kh, kw, stride, padding)
    assert cols.dtype == np.float32 and cols.shape == ref.shape
    np.testing.assert_array_equal(cols, ref.astype(np.float32))  # a pure copy: exact


@pytest.mark.parametrize("case", CONV_CASES, ids=_case_id)
def test_col2im_matches_reference_and_is_the_adjoint(rng, threads, case):
    x, w, _, stride, padding = _conv_inputs(rng, case)
    kh, kw = w.shape[:2]
    b, h, wd, c = x.shape
    pads = resolve_pads(padding, h, wd, kh, kw, stride)
    oh, ow = out_hw(h, wd, kh, kw, stride, pads)
    cols = rng.standard_normal((b * oh * ow, kh * kw * c)).astype(np.float32)
    img = ops.col2im(cols, x.shape, kh, kw, stride=stride, padding=padding)
    assert img.shape == x.shape and img.dtype == np.float32
    ref = col2im_ref(cols, x.shape, kh, kw, stride, padding)
    # each pixel sums at most kh*kw (overlapping) entries
    bound = col2im_ref(np.abs(cols), x.shape, kh, kw, stride, padding)
    assert_close(img, ref, 0.0, (kh * kw + 2) * EPS32 * bound, what="col2im")
    # <im2col(x), cols> == <x, col2im(cols)>
    lhs = float(np.sum(f32in(ops.im2col(x, kh, kw, stride, padding)) * f32in(cols)))
    rhs = float(np.sum(f32in(x) * f32in(img)))
    scale = float(np.sum(np.abs(f32in(x)) * bound))
    assert abs(lhs - rhs) <= (kh * kw + 2) * EPS32 * scale + 1e-12


def test_im2col_column_order_matches_hwio():
    """im2col(x) @ w.reshape(-1, F) is the convolution (columns ordered (i, j, c))."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 6, 7, 3)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 4)).astype(np.float32)
    cols = ops.im2col(x, 3, 2, stride=(1, 2), padding=(1, 0))
    y = (f32in(cols) @ f32in(w).reshape(-1, 4)).reshape(2, 6, 3, 4)
    assert_close(y, conv2d_ref(x, w, None, (1, 2), (1, 0)), 1e-12, 1e-12)


def test_im2col_known_values():
    x = np.arange(2 * 3 * 3 * 2, dtype=np.float32).reshape(2, 3, 3, 2)
    cols = ops.im2col(x, 2, 2, stride=1, padding=0)
    assert cols.shape == (2 * 2 * 2, 2 * 2 * 2)
    # first patch of image 0: pixels (0,0), (0,1), (1,0), (1,1), channels interleaved
    np.testing.assert_array_equal(cols[0], [0, 1, 2, 3, 6, 7, 8, 9])
    # last patch of image 1
    np.testing.assert_array_equal(cols[-1], x[1, 1:3, 1:3, :].reshape(-1))
    padded = ops.im2col(x[:1], 3, 3, stride=2, padding=1)
    assert padded.shape == (4, 18)
    np.testing.assert_array_equal(padded[0, :6], 0)  # the top row of the window is padding


@pytest.mark.parametrize("h", range(1, 10))
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("s", [1, 2, 3])
def test_same_padding_output_size(h, k, s):
    """'same' gives OH = ceil(H / stride) for every kernel size, as Keras does."""
    x = np.ones((1, h, h + 1, 1), np.float32)
    cols = ops.im2col(x, k, k, stride=s, padding="same")
    oh, ow = -(-h // s), -(-(h + 1) // s)
    assert cols.shape == (oh * ow, k * k)
    assert cols.shape == im2col_ref(x, k, k, s, "same").shape


def test_padding_string_is_case_insensitive(rng):
    x = rng.standard_normal((1, 5, 5, 2)).astype(np.float32)
    np.testing.assert_array_equal(ops.im2col(x, 3, 3, padding="SAME"), ops.im2col(x, 3, 3, padding="same"))
    np.testing.assert_array_equal(ops.im2col(x, 3, 3, padding="Valid"), ops.im2col(x, 3, 3))


# --------------------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CONV_CASES, ids=_case_id)
@pytest.mark.parametrize("epilogue", [(False, False), (True, False), (True, True)], ids=["plain", "bias", "bias_relu"])
def test_conv2d_matches_reference(rng, threads, case, epilogue):
    x, w, bias, stride, padding = _conv_inputs(rng, case)
    use_bias, relu = epilogue
    bias = bias if use_bias else None
    y = ops.conv2d(x, w, bias=bias, stride=stride, padding=padding, relu=relu)
    b, h, wd, _ = x.shape
    pads = resolve_pads(padding, h, wd, w.shape[0], w.shape[1], stride)
    assert y.shape == (b, *out_hw(h, wd, w.shape[0], w.shape[1], stride, pads), w.shape[3])
    check_conv(y, x, w, bias, stride, padding, relu)


def test_conv2d_relu_only(rng):
    x, w, _, stride, padding = _conv_inputs(rng, CONV_CASES[4])
    y = ops.conv2d(x, w, stride=stride, padding=padding, relu=True)
    check_conv(y, x, w, None, stride, padding, True)
    assert (y >= 0).all()


def test_conv2d_converts_layout_and_dtype(rng):
    """An NCHW float64 batch transposed to NHWC, OIHW weights transposed to HWIO."""
    x_nchw = rng.standard_normal((2, 3, 9, 8))
    w_oihw = rng.standard_normal((5, 3, 3, 3))
    x = x_nchw.transpose(0, 2, 3, 1)
    w = w_oihw.transpose(2, 3, 1, 0)
    bias = rng.standard_normal(10)[::2]
    y = ops.conv2d(x, w, bias=bias, stride=2, padding="same", relu=True)
    want = ops.conv2d(
        np.ascontiguousarray(x, np.float32), np.ascontiguousarray(w, np.float32),
        np.ascontiguousarray(bias, np.float32), stride=2, padding="same", relu=True,
    )
    np.testing.assert_array_equal(y, want)
    check_conv(y, x, w, bias, 2, "same", True)
    xi = rng.integers(0, 255, size=(1, 6, 6, 1)).astype(np.uint8)
    wi = rng.integers(-2, 3, size=(3, 3, 1, 2))
    np.testing.assert_array_equal(
        ops.conv2d(xi, wi), conv2d_ref(xi, wi).astype(np.float32)  # small ints: exact
    )


def test_conv2d_empty_batch(rng):
    w = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    y = ops.conv2d(np.zeros((0, 5, 6, 2), np.float32), w, bias=np.ones(4), stride=2, padding="same", relu=True)
    assert y.shape == (0, 3, 3, 4) and y.dtype == np.float32


# --------------------------------------------------------------------------------------
# conv2d_backward
# --------------------------------------------------------------------------------------


def assert_conv_backward_matches(got, x, w, dy, stride, padding, y=None, relu=False):
    dx, dw, db = got
    rdx, rdw, rdb = conv2d_backward_ref(x, w, dy, stride, padding, y, relu)
    ax, aw, ady = np.abs(f32in(x)), np.abs(f32in(w)), np.abs(f32in(dy))
    bdx, bdw, bdb = conv2d_backward_ref(ax, aw, ady, stride, padding)
    kh, kw, c, f = w.shape
    n_out = dy.shape[0] * dy.shape[1] * dy.shape[2]
    for t, ref in ((dx, rdx), (dw, rdw), (db, rdb)):
        assert t.dtype == np.float32 and t.shape == ref.shape and t.flags.c_contiguous
    assert_close(dx, rdx, 0.0, (kh * kw * f + 4) * EPS32 * bdx, what="dx")
    assert_close(dw, rdw, 0.0, (n_out + 4) * EPS32 * bdw, what="dw")
    assert_close(db, rdb, 0.0, (n_out + 4) * EPS32 * bdb, what="db")


@pytest.mark.parametrize("case", CONV_CASES, ids=_case_id)
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
def test_conv2d_backward_matches_reference(rng, threads, case, relu):
    x, w, bias, stride, padding = _conv_inputs(rng, case)
    y = ops.conv2d(x, w, bias, stride, padding, relu=True) if relu else None
    shape = ops.conv2d(x, w, None, stride, padding).shape
    dy = rng.standard_normal(shape).astype(np.float32)
    got = ops.conv2d_backward(x, w, dy, stride=stride, padding=padding, y=y, relu=relu)
    assert_conv_backward_matches(got, x, w, dy, stride, padding, y, relu)


def test_conv2d_backward_converts_inputs(rng):
    x = rng.standard_normal((2, 3, 7, 7)).transpose(0, 2, 3, 1)  # float64, non-contiguous
    w = rng.standard_normal((4, 3, 3, 3)).transpose(2, 3, 1, 0)
    dy = rng.integers(-3, 4, size=(2, 4, 4, 4))
    got = ops.conv2d_backward(x, w, dy, stride=2, padding="same")
    want = ops.conv2d_backward(
        *(np.ascontiguousarray(t, np.float32) for t in (x, w, dy)), stride=2, padding="same"
    )
    for g, e in zip(got, want):
        np.testing.assert_array_equal(g, e)
    assert_conv_backward_matches(got, x, w, dy, 2, "same")


def test_conv2d_backward_empty_batch(rng):
    w = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    x = np.zeros((0, 5, 6, 2), np.float32)
    dx, dw, db = ops.conv2d_backward(x, w, np.zeros((0, 5, 6, 4)), padding="same")
    assert dx.shape == (0, 5, 6, 2) and dw.shape == (3, 3, 2, 4) and db.shape == (4,)
    np.testing.assert_array_equal(dw, 0)
    np.testing.assert_array_equal(db, 0)
    dx, dw, db = ops.conv2d_backward(
        x, w, np.zeros((0, 5, 6, 4)), padding="same", y=np.zeros((0, 5, 6, 4)), relu=True
    )
    assert dx.shape == (0, 5, 6, 2) and dw.shape == (3, 3, 2, 4)


def test_col2im_empty_batch():
    img = ops.col2im(np.zeros((0, 18)), (0, 4, 4, 2), 3, 3, padding=1)
    assert img.shape == (0, 4, 4, 2) and img.dtype == np.float32
    cols = ops.im2col(np.zeros((0, 4, 4, 2)), 3, 3, padding=1)
    assert cols.shape == (0, 18) and cols.dtype == np.float32


# --------------------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------------------

# (B, H, W, C, pool, stride)
POOL_CASES = [
    (1, 1, 1, 1, 1, None),
    (2, 28, 28, 3, 2, None),
    (1, 7, 7, 5, 3, 2),
    (3, 13, 11, 67, (2, 3), (1, 2)),
    (2, 5, 5, 1, 5, None),
    (1, 9, 9, 2, 2, 3),
    (2, 8, 8, 16, 2, None),
    (1, 15, 14, 131, 3, None),
]


def _pool_id(case):
    return "x".join(map(str, case[:4])) + f"-p{case[4]}-s{case[5]}".replace(" ", "")


def _distinct(rng, shape):
    """Values with no ties (a shuffled arange), so the max is unique in every window."""
    return rng.permutation(int(np.prod(shape))).reshape(shape).astype(np.float32) / 7.0


@pytest.mark.parametrize("case", POOL_CASES, ids=_pool_id)
def test_max_pool2d_matches_reference(rng, threads, case):
    b, h, w, c, pool, stride = case
    for x in (_distinct(rng, (b, h, w, c)), rng.standard_normal((b, h, w, c)).astype(np.float32)):
        y, arg = ops.max_pool2d(x, pool=pool, stride=stride)
        ry, rarg = max_pool2d_ref(x, pool, stride)
        assert y.dtype == np.float32 and arg.dtype == np.int64
        assert y.shape == ry.shape and arg.shape == ry.shape
        np.testing.assert_array_equal(y, ry.astype(np.float32))
        np.testing.assert_array_equal(arg, rarg)
        np.testing.assert_array_equal(x.reshape(-1)[arg], y)  # flat indices into x


@pytest.mark.parametrize("case", POOL_CASES, ids=_pool_id)
def test_max_pool2d_backward_matches_reference(rng, threads, case):
    b, h, w, c, pool, stride = case
    x = _distinct(rng, (b, h, w, c))
    y, arg = ops.max_pool2d(x, pool=pool, stride=stride)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = ops.max_pool2d_backward(dy, arg, x.shape)
    assert dx.shape == x.shape and dx.dtype == np.float32
    ref = max_pool2d_backward_ref(dy, arg, x.shape)
    bound = max_pool2d_backward_ref(np.abs(dy), arg, x.shape)
    ph, pw = (pool, pool) if isinstance(pool, int) else pool
    assert_close(dx, ref, 0.0, (ph * pw + 1) * EPS32 * bound, what="dx")


def test_max_pool2d_ties_pick_the_first_in_the_window():
    x = np.zeros((1, 4, 4, 2), np.float32)
    x[0, 1, 1, 1] = 1.0
    x[0, 0, 1, 1] = 1.0  # tie in window (0, 0), channel 1: (0,1) comes first (row-major)
    y, arg = ops.max_pool2d(x)
    flat = np.arange(x.size).reshape(x.shape)
    # channel 0 is all zeros: every window's first element wins
    np.testing.assert_array_equal(arg[0, :, :, 0], flat[0, ::2, ::2, 0])
    assert arg[0, 0, 0, 1] == flat[0, 0, 1, 1]
    np.testing.assert_array_equal(arg, max_pool2d_ref(x)[1])
    # overlapping windows (stride 1): ties everywhere
    x = np.ones((2, 5, 4, 3), np.float32)
    y, arg = ops.max_pool2d(x, pool=3, stride=1)
    np.testing.assert_array_equal(arg, max_pool2d_ref(x, 3, 1)[1])


def test_max_pool2d_backward_accumulates_overlaps():
    x = np.zeros((1, 3, 3, 1), np.float32)
    x[0, 1, 1, 0] = 5.0  # the max of all four overlapping 2x2 windows
    y, arg = ops.max_pool2d(x, pool=2, stride=1)
    np.testing.assert_array_equal(arg.reshape(-1), [4, 4, 4, 4])
    dx = ops.max_pool2d_backward(np.ones_like(y), arg, x.shape)
    assert dx[0, 1, 1, 0] == 4.0 and dx.sum() == 4.0


def test_max_pool2d_converts_inputs(rng):
    x = rng.standard_normal((2, 3, 8, 6)).transpose(0, 2, 3, 1)  # float64 NCHW -> NHWC view
    y, arg = ops.max_pool2d(x, pool=(2, 3))
    y2, arg2 = ops.max_pool2d(np.ascontiguousarray(x, np.float32), pool=(2, 3))
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(arg, arg2)
    for dtype in (np.int32, np.int64, np.uint8):
        dy = rng.integers(0, 5, size=y.shape)
        dx = ops.max_pool2d_backward(dy, arg.astype(dtype) if dtype != np.uint8 else arg, x.shape)
        np.testing.assert_array_equal(dx, max_pool2d_backward_ref(dy, arg, x.shape).astype(np.float32))
    xi = rng.integers(0, 255, size=(1, 4, 4, 1)).astype(np.uint8)
    y, _ = ops.max_pool2d(xi)
    np.testing.assert_array_equal(y, max_pool2d_ref(xi)[0].astype(np.float32))


def test_max_pool2d_empty_batch():
    y, arg = ops.max_pool2d(np.zeros((0, 6, 6, 3)), pool=2)
    assert y.shape == (0, 3, 3, 3) and arg.shape == (0, 3, 3, 3)
    assert y.dtype == np.float32 and arg.dtype == np.int64
    dx = ops.max_pool2d_backward(y, arg, (0, 6, 6, 3))
    assert dx.shape == (0, 6, 6, 3) and dx.dtype == np.float32


def test_max_pool2d_stride_default_is_pool(rng):
    x = rng.standard_normal((2, 9, 9, 3)).astype(np.float32)
    for pool in (1, 2, 3, (2, 3)):
        y1, a1 = ops.max_pool2d(x, pool)
        y2, a2 = ops.max_pool2d(x, pool, stride=pool)
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(a1, a2)
