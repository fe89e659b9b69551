"""Float64 numpy oracles for every op in ``pixrank.ops``, and the comparison helpers.

Each oracle is written the plain way (explicit loops or a direct formula, never the
kernel's algorithm: the convolution here sums shifted slices instead of going through
im2col), in float64, from inputs first rounded to float32 (``f32in``) so that the only
difference left between kernel and oracle is the kernel's own float32 arithmetic.

Helpers:
    assert_close(actual, expected, rtol, atol)  -- tolerance relative to the magnitude,
        reports the worst element (index, both values, the excess) on failure.
    gemm_atol(abs_a, abs_b, k)                  -- rigorous float32 dot-product error bound.
    numerical_grad(f, x, ...)                   -- central differences in float64.
    num_threads(n)                              -- context manager for the kernels' threads.
"""
from __future__ import annotations

import contextlib

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


# --------------------------------------------------------------------------------------
# comparison helpers
# --------------------------------------------------------------------------------------


_ROUND_TO_F32 = [True]


def f32in(x) -> np.ndarray:
    """The float64 values the kernel actually sees: ``x`` rounded to float32.

    Inside ``with exact_inputs():`` the rounding is skipped (finite differences perturb
    inputs by far less than a float32 ulp).
    """
    if _ROUND_TO_F32[0]:
        return np.asarray(x, dtype=np.float32).astype(np.float64)
    return np.asarray(x, dtype=np.float64)


@contextlib.contextmanager
def exact_inputs():
    """Make the oracles compute on their float64 inputs as given (no float32 rounding)."""
    _ROUND_TO_F32[0] = False
    try:
        yield
    finally:
        _ROUND_TO_F32[0] = True


def assert_close(actual, expected, rtol, atol=0.0, *, what: str = "") -> None:
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise.

    ``atol`` may be an array broadcastable to the shape (a per-element error bound).
    Equal infinities and NaN-against-NaN count as equal. On failure the message gives the
    number of bad elements, the worst one (largest ``|diff| / allowed``) with its index,
    both values, the difference and the allowance.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    label = f" ({what})" if what else ""
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {actual.shape} != expected shape {expected.shape}{label}")
    if actual.size == 0:
        return
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    allowed = np.broadcast_to(np.asarray(atol, dtype=np.float64) + rtol * np.abs(e), a.shape)
    with np.errstate(invalid="ignore"):
        diff = np.abs(a - e)
        same = (a == e) | (np.isnan(a) & np.isnan(e))
        ok = same | (diff <= allowed)
    if ok.all():
        return
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = np.where(ok, -np.inf, diff / np.maximum(allowed, 1e-300))
    excess = np.where(np.isnan(excess), np.inf, excess)
    worst = np.unravel_index(int(np.argmax(excess)), a.shape)
    raise AssertionError(
        f"{int((~ok).sum())} of {a.size} elements differ{label}; worst at index "
        f"{tuple(int(i) for i in worst)}: actual {a[worst]!r}, expected {e[worst]!r}, "
        f"|diff| {diff[worst]:.6g} > allowed {allowed[worst]:.6g} (rtol {rtol:g})"
    )


def gemm_atol(abs_a: np.ndarray, abs_b: np.ndarray, k: int, extra=0.0) -> np.ndarray:
    """A rigorous bound on a float32 GEMM's error: ``(K + 4) * eps32 * (|A| @ |B| + extra)``.

    Any summation order of ``K`` float32 products (with or without FMA) has error at most
    ``K * u * sum|a_i b_i|`` with ``u = eps32 / 2``; the bound doubles that and adds slack
    for a bias add, so it never flakes, yet a wrong element (off by O(|value|)) exceeds
    it by orders of magnitude for the ``K`` used in the tests.
    """
    return (k + 4) * EPS32 * (abs_a @ abs_b + extra)


def numerical_grad(f, x: np.ndarray, eps: float = 1e-6, indices=None) -> np.ndarray:
    """Central differences ``(f(x + eps e_i) - f(x - eps e_i)) / (2 eps)`` in float64.

    ``f`` maps a float64 array shaped like ``x`` to a scalar; it runs inside
    ``exact_inputs()`` so the oracles do not round the perturbed inputs to float32. With
    ``indices`` (flat positions), only those entries are computed (the rest stay NaN).
    """
    with exact_inputs():
        return _numerical_grad(f, x, eps, indices)


def _numerical_grad(f, x, eps, indices):
    x = np.array(x, dtype=np.float64)
    g = np.full(x.shape, np.nan)
    flat = x.reshape(-1)
    gflat = g.reshape(-1)
    for i in range(flat.size) if indices is None else indices:
        old = flat[i]
        flat[i] = old + eps
        fp = f(x)
        flat[i] = old - eps
        fm = f(x)
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


@contextlib.contextmanager
def num_threads(n: int):
    """Run the body with the kernels on ``n`` threads, restoring the count afterwards."""
    import pixrank

    old = pixrank.get_num_threads()
    pixrank.set_num_threads(n)
    try:
        yield n
    finally:
        pixrank.set_num_threads(old)


# --------------------------------------------------------------------------------------
# dense
# --------------------------------------------------------------------------------------


def matmul_ref(a, b, bias=None, relu=False, trans_a=False, trans_b=False) -> np.ndarray:
    a = f32in(a)
    b = f32in(b)
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    y = a @ b
    if bias is not None:
        y = y + f32in(bias)
    return np.maximum(y, 0.0) if relu else y


def linear_backward_ref(x, w, dy, y=None, relu=False):
    x, w, dy = f32in(x), f32in(w), f32in(dy)
    g = dy * (f32in(y) > 0) if relu else dy
    return g @ w.T, x.T @ g, g.sum(axis=0)


# --------------------------------------------------------------------------------------
# softmax
# --------------------------------------------------------------------------------------


def log_softmax_ref(z) -> np.ndarray:
    z = f32in(z)
    if z.shape[0] == 0:
        return z.copy()
    m = z.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        s = z - m
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def softmax_ref(z) -> np.ndarray:
    z = f32in(z)
    if z.shape[0] == 0:
        return z.copy()
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy_ref(z, labels):
    """``(mean loss, (softmax - onehot) / N)``; N == 0 gives ``(0.0, empty)``."""
    z = f32in(z)
    n, c = z.shape
    if n == 0:
        return 0.0, np.zeros((0, c))
    labels = np.asarray(labels).astype(np.int64)
    logp = log_softmax_ref(z)
    loss = -logp[np.arange(n), labels].mean()
    d = softmax_ref(z)
    d[np.arange(n), labels] -= 1.0
    return float(loss), d / n


# --------------------------------------------------------------------------------------
# convolution geometry
# --------------------------------------------------------------------------------------


def as_pair(v):
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def resolve_pads(padding, h, w, kh, kw, stride):
    """(top, bottom, left, right) as in TensorFlow/Keras' documentation of 'SAME'."""
    sh, sw = as_pair(stride)
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        pads = []
        for size, k, s in ((h, kh, sh), (w, kw, sw)):
            out = (size + s - 1) // s
            need = max((out - 1) * s + k - size, 0)
            pads += [need // 2, need - need // 2]
        return tuple(pads)
    ph, pw = as_pair(padding)
    return ph, ph, pw, pw


def out_hw(h, w, kh, kw, stride, pads):
    sh, sw = as_pair(stride)
    pt, pb, pl, pr = pads
    return (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1


def _pad_nhwc(x, pads):
    pt, pb, pl, pr = pads
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))


# --------------------------------------------------------------------------------------
# im2col / col2im
# --------------------------------------------------------------------------------------


def im2col_ref(x, kh, kw, stride=1, padding=0) -> np.ndarray:
    x = f32in(x)
    b, h, w, c = x.shape
    pads = resolve_pads(padding, h, w, kh, kw, stride)
    sh, sw = as_pair(stride)
    oh, ow = out_hw(h, w, kh, kw, stride, pads)
    xp = _pad_nhwc(x, pads)
    cols = np.zeros((b, oh, ow, kh, kw, c))
    for i in range(oh):
        for j in range(ow):
            cols[:, i, j] = xp[:, i * sh : i * sh + kh, j * sw : j * sw + kw, :]
    return cols.reshape(b * oh * ow, kh * kw * c)


def col2im_ref(cols, x_shape, kh, kw, stride=1, padding=0) -> np.ndarray:
    b, h, w, c = x_shape
    pads = resolve_pads(padding, h, w, kh, kw, stride)
    pt, pb, pl, pr = pads
    sh, sw = as_pair(stride)
    oh, ow = out_hw(h, w, kh, kw, stride, pads)
    cols = f32in(cols).reshape(b, oh, ow, kh, kw, c)
    xp = np.zeros((b, h + pt + pb, w + pl + pr, c))
    for i in range(oh):
        for j in range(ow):
            xp[:, i * sh : i * sh + kh, j * sw : j * sw + kw, :] += cols[:, i, j]
    return xp[:, pt : pt + h, pl : pl + w, :]


# --------------------------------------------------------------------------------------
# conv2d (direct: a sum of shifted, strided slices times one weight tap each)
# --------------------------------------------------------------------------------------


def conv2d_ref(x, w, bias=None, stride=1, padding=0, relu=False) -> np.ndarray:
    x, w = f32in(x), f32in(w)
    b, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    pads = resolve_pads(padding, h, wd, kh, kw, stride)
    sh, sw = as_pair(stride)
    oh, ow = out_hw(h, wd, kh, kw, stride, pads)
    xp = _pad_nhwc(x, pads)
    y = np.zeros((b, oh, ow, f))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :]
            y += patch @ w[i, j]
    if bias is not None:
        y += f32in(bias)
    return np.maximum(y, 0.0) if relu else y


def conv2d_abs_bound(x, w, bias=None, stride=1, padding=0) -> np.ndarray:
    """``|x| (*) |w| + |bias|``: the magnitude that scales a float32 conv's rounding error."""
    return conv2d_ref(np.abs(f32in(x)), np.abs(f32in(w)), None if bias is None else np.abs(f32in(bias)), stride, padding)


def conv2d_backward_ref(x, w, dy, stride=1, padding=0, y=None, relu=False):
    x, w, dy = f32in(x), f32in(w), f32in(dy)
    if relu:
        dy = dy * (f32in(y) > 0)
    b, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    pads = resolve_pads(padding, h, wd, kh, kw, stride)
    pt, pb, pl, pr = pads
    sh, sw = as_pair(stride)
    oh, ow = out_hw(h, wd, kh, kw, stride, pads)
    xp = _pad_nhwc(x, pads)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + sh * (oh - 1) + 1, sh)
            colsl = slice(j, j + sw * (ow - 1) + 1, sw)
            dw[i, j] = np.einsum("bhwc,bhwf->cf", xp[:, rows, colsl, :], dy)
            dxp[:, rows, colsl, :] += dy @ w[i, j].T
    return dxp[:, pt : pt + h, pl : pl + wd, :], dw, dy.sum(axis=(0, 1, 2))


# --------------------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------------------


def max_pool2d_ref(x, pool=2, stride=None):
    """``(y, argmax)``; argmax = flat index into ``x`` (batch included), first max wins."""
    x = f32in(x)
    b, h, w, c = x.shape
    ph, pw = as_pair(pool)
    sh, sw = as_pair(pool if stride is None else stride)
    oh, ow = (h - ph) // sh + 1, (w - pw) // sw + 1
    y = np.zeros((b, oh, ow, c))
    arg = np.zeros((b, oh, ow, c), dtype=np.int64)
    flat = np.arange(x.size).reshape(x.shape)
    for i in range(oh):
        for j in range(ow):
            win = x[:, i * sh : i * sh + ph, j * sw : j * sw + pw, :].reshape(b, ph * pw, c)
            ids = flat[:, i * sh : i * sh + ph, j * sw : j * sw + pw, :].reshape(b, ph * pw, c)
            first = np.argmax(win, axis=1)  # numpy's argmax returns the first maximum
            y[:, i, j, :] = np.take_along_axis(win, first[:, None, :], axis=1)[:, 0, :]
            arg[:, i, j, :] = np.take_along_axis(ids, first[:, None, :], axis=1)[:, 0, :]
    return y, arg


def max_pool2d_backward_ref(dy, argmax, x_shape) -> np.ndarray:
    dx = np.zeros(int(np.prod(x_shape)))
    np.add.at(dx, np.asarray(argmax).reshape(-1), f32in(dy).reshape(-1))
    return dx.reshape(x_shape)


# --------------------------------------------------------------------------------------
# retrieval
# --------------------------------------------------------------------------------------


def cosine_scores_ref(queries, database) -> np.ndarray:
    """The full ``(Q, n)`` cosine matrix; rows with a zero vector score 0."""
    q, d = f32in(queries), f32in(database)
    qn = np.linalg.norm(q, axis=1, keepdims=True)
    dn = np.linalg.norm(d, axis=1, keepdims=True)
    qn[qn == 0] = 1.0
    dn[dn == 0] = 1.0
    return (q / qn) @ (d / dn).T


def cosine_topk_ref(queries, database, k):
    """``(indices, scores)``: descending score, ties by lower index, ``min(k, n)`` columns."""
    s = cosine_scores_ref(queries, database)
    qn, n = s.shape
    kk = min(k, n)
    idx = np.zeros((qn, kk), dtype=np.int64)
    for r in range(qn):
        order = np.lexsort((np.arange(n), -s[r]))  # primary: -score; secondary: index
        idx[r] = order[:kk]
    return idx, np.take_along_axis(s, idx, axis=1) if qn else np.zeros((0, kk))


def assert_topk_correct(idx, scores, queries, database, k):
    """Validate a top-k answer against the float64 scores, allowing float32 near-ties.

    Exact order is only required between entries whose float64 scores differ by more than
    the float32 error bound; equal returned scores must come in increasing index order.
    """
    q = np.asarray(queries)
    db = np.asarray(database)
    nq, n, d = q.shape[0], db.shape[0], q.shape[1]
    kk = min(k, n)
    assert idx.shape == (nq, kk) and scores.shape == (nq, kk)
    assert idx.dtype == np.int64 and scores.dtype == np.float32
    if nq == 0 or kk == 0:
        return
    s = cosine_scores_ref(q, db)
    tol = (d + 16) * EPS32
    assert ((idx >= 0) & (idx < n)).all()
    for r in range(nq):
        assert len(set(idx[r].tolist())) == kk, f"duplicate indices in row {r}: {idx[r]}"
    assert not np.isnan(scores).any()
    assert_close(scores, np.take_along_axis(s, idx, axis=1), 0.0, tol, what="scores")
    assert (np.diff(scores, axis=1) <= 0).all(), "scores not descending"
    tie = np.diff(scores, axis=1) == 0
    assert (np.diff(idx, axis=1)[tie] > 0).all(), "equal scores not in increasing index order"
    kth = np.sort(s, axis=1)[:, ::-1][:, kk - 1]
    got = np.take_along_axis(s, idx, axis=1)
    assert (got >= kth[:, None] - 2 * tol).all(), "a returned row scores below the k-th best"
    mask = np.ones_like(s, dtype=bool)
    np.put_along_axis(mask, idx, False, axis=1)
    worst_kept = got.min(axis=1, keepdims=True)
    assert (np.where(mask, s, -np.inf) <= worst_kept + 2 * tol).all(), "a better row was left out"


# --------------------------------------------------------------------------------------
# optimisation
# --------------------------------------------------------------------------------------


def adam_ref64(w, grads, lr, beta_1, beta_2, epsilon, weight_decay=0.0):
    """Keras' Adam(W) in float64 over the gradients ``grads`` (steps 1, 2, ...), from ``w``.

    ``w *= 1 - lr*wd``; ``m = b1 m + (1-b1) g``; ``v = b2 v + (1-b2) g^2``;
    ``w -= lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v) + eps)`` (Kingma & Ba 2015, end of sec. 2).
    Returns ``(w, m, v)``.
    """
    import math

    w = np.asarray(w, np.float64).copy()
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, 1):
        g = np.asarray(g, np.float64)
        w *= 1.0 - lr * weight_decay
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        w -= lr * math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t) * m / (np.sqrt(v) + epsilon)
    return w, m, v


def adam_step_f32(w, g, m, v, lr, beta_1, beta_2, epsilon, weight_decay, t):
    """One Adam(W) step in place on float32 ``w, m, v``, one numpy float32 operation at a time
    in the documented order (the arithmetic ``ops.adam_update`` must reproduce bit for bit)."""
    import math

    f = np.float32
    if weight_decay:
        w *= f(1.0 - lr * weight_decay)
    alpha = f(lr * math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t))
    m *= f(beta_1)
    m += g * f(1 - beta_1)
    v *= f(beta_2)
    g2 = g * g
    g2 *= f(1 - beta_2)
    v += g2
    den = np.sqrt(v)
    den += f(epsilon)
    step = m / den
    step *= alpha
    w -= step
