"""Property-based tests (hypothesis) of pixrank.ops over random shapes, layouts, dtypes,
strides, paddings and thread counts, against the float64 oracles.

Shapes are drawn by hypothesis; array contents come from a numpy Generator seeded by a
drawn integer (fast, and still reproducible from hypothesis' report). The example
budget is set by the ``pixrank`` profile in conftest.py (40 per test, derandomised).
"""
from __future__ import annotations

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

from pixrank import ops
from reference import (
    EPS32,
    assert_close,
    assert_topk_correct,
    col2im_ref,
    conv2d_abs_bound,
    conv2d_backward_ref,
    conv2d_ref,
    f32in,
    gemm_atol,
    im2col_ref,
    matmul_ref,
    max_pool2d_backward_ref,
    max_pool2d_ref,
    num_threads,
    resolve_pads,
    softmax_cross_entropy_ref,
    softmax_ref,
)

seeds = st.integers(0, 2**32 - 1)
thread_counts = st.sampled_from([1, 2])
pairs = lambda lo, hi: st.one_of(st.integers(lo, hi), st.tuples(st.integers(lo, hi), st.integers(lo, hi)))  # noqa: E731
paddings = st.one_of(st.sampled_from(["same", "valid"]), pairs(0, 3))


def _layout(rng, shape, kind, dtype):
    """An array of ``shape`` stored as ``kind``: C order, F order (a transposed view), a
    strided slice of a bigger array, or reversed; in ``dtype``."""
    if dtype == "int":
        make = lambda s: rng.integers(-4, 5, size=s).astype(np.int32)  # noqa: E731
    else:
        make = lambda s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    if kind == "C":
        return make(shape)
    if kind == "F":
        return make(shape[::-1]).T
    if kind == "strided":
        big = make(tuple(2 * s + 1 for s in shape))
        return big[tuple(slice(1, None, 2) for _ in shape)][tuple(slice(0, s) for s in shape)]
    return make(shape)[tuple(slice(None, None, -1) for _ in shape)]


layouts = st.sampled_from(["C", "F", "strided", "reversed"])
dtypes = st.sampled_from([np.float32, np.float64, "int"])


@given(
    m=st.integers(0, 70), k=st.integers(0, 70), n=st.integers(0, 70),
    ta=st.booleans(), tb=st.booleans(), use_bias=st.booleans(), relu=st.booleans(),
    la=layouts, lb=layouts, dt=dtypes, threads=thread_counts, seed=seeds,
)
def test_matmul_property(m, k, n, ta, tb, use_bias, relu, la, lb, dt, threads, seed):
    rng = np.random.default_rng(seed)
    a = _layout(rng, (k, m) if ta else (m, k), la, dt)
    b = _layout(rng, (n, k) if tb else (k, n), lb, dt)
    bias = rng.standard_normal(n) if use_bias else None
    with num_threads(threads):
        y = ops.matmul(a, b, bias=bias, relu=relu, trans_a=ta, trans_b=tb)
    assert y.shape == (m, n) and y.dtype == np.float32
    absa = np.abs(f32in(a).T if ta else f32in(a))
    absb = np.abs(f32in(b).T if tb else f32in(b))
    extra = 0.0 if bias is None else np.abs(f32in(bias))
    assert_close(y, matmul_ref(a, b, bias, relu, ta, tb), 0.0, gemm_atol(absa, absb, k, extra))


@st.composite
def conv_geometry(draw):
    b = draw(st.integers(0, 3))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    c, f = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = draw(pairs(1, 3))
    padding = draw(paddings)
    pads = resolve_pads(padding, h, w, kh, kw, stride)
    assume(h + pads[0] + pads[1] >= kh and w + pads[2] + pads[3] >= kw)
    return (b, h, w, c), (kh, kw, c, f), stride, padding


@given(geo=conv_geometry(), relu=st.booleans(), use_bias=st.booleans(), lx=layouts, dt=dtypes,
       threads=thread_counts, seed=seeds)
def test_conv2d_and_backward_property(geo, relu, use_bias, lx, dt, threads, seed):
    xs, ws, stride, padding = geo
    rng = np.random.default_rng(seed)
    x = _layout(rng, xs, lx, dt)
    w = rng.standard_normal(ws).astype(np.float32)
    bias = rng.standard_normal(ws[3]).astype(np.float32) if use_bias else None
    kh, kw, c, f = ws
    with num_threads(threads):
        y = ops.conv2d(x, w, bias, stride, padding, relu=relu)
        ref = conv2d_ref(x, w, bias, stride, padding, relu)
        assert y.shape == ref.shape and y.dtype == np.float32
        bound = conv2d_abs_bound(x, w, bias, stride, padding)
        assert_close(y, ref, 0.0, (kh * kw * c + 4) * EPS32 * bound, what="conv2d")
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx, dw, db = ops.conv2d_backward(x, w, dy, stride, padding, y=y, relu=relu)
    rdx, rdw, rdb = conv2d_backward_ref(x, w, dy, stride, padding, y, relu)
    bdx, bdw, bdb = conv2d_backward_ref(np.abs(f32in(x)), np.abs(w), np.abs(dy), stride, padding)
    n_out = y.shape[0] * y.shape[1] * y.shape[2]
    assert_close(dx, rdx, 0.0, (kh * kw * f + 4) * EPS32 * bdx, what="dx")
    assert_close(dw, rdw, 0.0, (n_out + 4) * EPS32 * bdw, what="dw")
    assert_close(db, rdb, 0.0, (n_out + 4) * EPS32 * bdb, what="db")


@given(geo=conv_geometry(), lx=layouts, threads=thread_counts, seed=seeds)
def test_im2col_col2im_property(geo, lx, threads, seed):
    xs, ws, stride, padding = geo
    kh, kw = ws[:2]
    rng = np.random.default_rng(seed)
    x = _layout(rng, xs, lx, np.float32)
    with num_threads(threads):
        cols = ops.im2col(x, kh, kw, stride, padding)
        np.testing.assert_array_equal(cols, im2col_ref(x, kh, kw, stride, padding).astype(np.float32))
        g = rng.standard_normal(cols.shape).astype(np.float32)
        img = ops.col2im(g, xs, kh, kw, stride, padding)
    bound = col2im_ref(np.abs(g), xs, kh, kw, stride, padding)
    assert_close(img, col2im_ref(g, xs, kh, kw, stride, padding), 0.0, (kh * kw + 2) * EPS32 * bound)


@given(
    b=st.integers(0, 3), h=st.integers(1, 12), w=st.integers(1, 12), c=st.integers(1, 6),
    pool=pairs(1, 4), stride=st.one_of(st.none(), pairs(1, 4)), ties=st.booleans(),
    lx=layouts, threads=thread_counts, seed=seeds,
)
def test_max_pool2d_property(b, h, w, c, pool, stride, ties, lx, threads, seed):
    ph, pw = (pool, pool) if isinstance(pool, int) else pool
    assume(ph <= h and pw <= w)
    rng = np.random.default_rng(seed)
    x = _layout(rng, (b, h, w, c), lx, np.float32)
    if ties:
        x = np.round(x)  # many equal values: the first in the window must win
    with num_threads(threads):
        y, arg = ops.max_pool2d(x, pool, stride)
        ry, rarg = max_pool2d_ref(x, pool, stride)
        np.testing.assert_array_equal(y, ry.astype(np.float32))
        np.testing.assert_array_equal(arg, rarg)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx = ops.max_pool2d_backward(dy, arg, x.shape)
    bound = max_pool2d_backward_ref(np.abs(dy), arg, x.shape)
    assert_close(dx, max_pool2d_backward_ref(dy, arg, x.shape), 0.0, (ph * pw + 1) * EPS32 * bound)


@given(
    n=st.integers(0, 20), c=st.integers(1, 40), log_scale=st.floats(-3, 4),
    neg_inf=st.booleans(), threads=thread_counts, seed=seeds,
)
def test_softmax_cross_entropy_property(n, c, log_scale, neg_inf, threads, seed):
    rng = np.random.default_rng(seed)
    z = (10.0**log_scale * rng.standard_normal((n, c))).astype(np.float32)
    labels = rng.integers(0, c, n)
    if neg_inf and c > 1 and n > 0:
        # -inf on some non-label entries (never a whole row)
        mask = rng.random((n, c)) < 0.3
        mask[np.arange(n), labels] = False
        z[mask] = -np.inf
    with num_threads(threads):
        p = ops.softmax(z)
        loss, d = ops.softmax_cross_entropy(z, labels)
    assert not np.isnan(p).any() and not np.isnan(d).any() and np.isfinite(loss)
    s = f32in(z) - f32in(z).max(axis=1, keepdims=True) if n else np.zeros((0, c))
    smax = np.abs(s[np.isfinite(s)]).max(initial=0.0)
    rtol = 8 * EPS32 * (1 + smax)
    assert_close(p, softmax_ref(z), rtol, 1e-37, what="softmax")
    rloss, rd = softmax_cross_entropy_ref(z, labels)
    zmax = np.abs(f32in(z)[np.isfinite(z)]).max(initial=0.0)
    assert abs(loss - rloss) <= 16 * EPS32 * (zmax + np.log(c) + 1), (loss, rloss)
    assert_close(d, rd, rtol, 4 * EPS32 / max(n, 1), what="dlogits")


@given(
    q=st.integers(0, 6), n=st.integers(0, 80), d=st.integers(1, 24), k=st.integers(1, 90),
    dup=st.booleans(), zeros=st.booleans(), threads=thread_counts, seed=seeds,
)
def test_cosine_topk_property(q, n, d, k, dup, zeros, threads, seed):
    rng = np.random.default_rng(seed)
    if dup:  # small integer vectors with many exact duplicates: exact ties
        protos = rng.integers(-2, 3, size=(4, d)).astype(np.float32)
        db = protos[rng.integers(0, 4, n)]
        queries = protos[rng.integers(0, 4, q)] + rng.integers(-1, 2, size=(q, d))
    else:
        db = rng.standard_normal((n, d)).astype(np.float32)
        queries = rng.standard_normal((q, d)).astype(np.float32)
    if zeros and n:
        db[rng.random(n) < 0.2] = 0
    with num_threads(threads):
        idx, scores = ops.cosine_topk(queries, db, k)
    assert_topk_correct(idx, scores, queries, db, k)
