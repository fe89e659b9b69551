"""The public functional API over pixrank's C++ kernels: numpy in, numpy out, float32.

Every function here validates its arguments in Python *before* any kernel runs, converts
its array inputs as numpy users expect (float64, integer, bool and non-contiguous arrays
become C-contiguous float32; the conversion is a no-op for arrays that already are), and
calls the compiled module ``pixrank._kernels``, which releases the GIL and runs on
:func:`get_num_threads` threads.

Shape letters used in the docstrings: ``M`` rows, ``K`` inner, ``N`` columns (or batch for
row-wise ops), ``B`` batch, ``H W C`` image height, width and channels, ``F`` filters,
``OH OW`` output height and width, ``Q`` queries, ``n`` database rows, ``d`` dimension.
Images are NHWC ``(B, H, W, C)``; convolution weights are HWIO ``(kh, kw, C, F)``.

Accepted dtypes
    Array arguments must have a real numeric dtype: floating (float16/32/64), signed or
    unsigned integer, or bool (read as 0.0 / 1.0, as ``np.asarray(x, np.float32)`` does).
    Complex, object, string, datetime and structured arrays raise ``TypeError``: there is
    no lossless float32 reading of them. Class ``labels`` must be integers (or floats
    holding whole numbers); bool labels raise ``TypeError``. Index arrays (``argmax``)
    must be integers.

Non-finite values
    NaN and inf in the data propagate as in numpy: a NaN reaching an output stays NaN
    (the fused ReLU keeps it; a pooling window holding a NaN pools to NaN and points at
    it). Labels must be finite, and :func:`cosine_topk` refuses non-finite vectors.

Errors
    ``ValueError`` for a bad value or shape, ``TypeError`` for a bad kind of object; the
    message names the function, the argument, what was expected and what was received,
    e.g. ``conv2d: x must be 4-D (N, H, W, C), got shape (28, 28)``.

Padding (``im2col``, ``col2im``, ``conv2d``, ``conv2d_backward``)
    An int ``p`` (``p`` rows/columns of zeros on every side), a pair ``(ph, pw)``,
    ``'valid'`` (no padding) or ``'same'`` (Keras semantics: ``OH = ceil(H / stride)``,
    total padding ``max((OH - 1) * stride + kh - H, 0)`` of which ``total // 2`` goes on
    top and the rest, one more when odd, at the bottom; likewise left/right).
"""
from __future__ import annotations

import math as _math
import os as _os

import numpy as np

# GNU OpenMP (libgomp, which the compiled kernels use) lets idle threads busy-wait for up to
# GOMP_SPINCOUNT = 300000 iterations (about a millisecond) before sleeping. On a machine whose cores are
# busy with other processes, those spinning threads take the CPU from the threads doing the work, and a
# 2-thread step was measured 8-40x SLOWER than 1 thread. A bounded spin (1000 iterations, the value
# libgomp itself uses when it knows the machine is oversubscribed) kept small products as fast and made
# the loaded case degrade gracefully. libgomp reads the setting once, when it is loaded (the first
# import of pixrank._kernels), and a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT always wins.
# The variable is inherited by child processes, like any environment variable.
# The GEMM does not depend on it: multi-threaded products run on the GEMM's own worker pool
# (cpp/gemm.cpp: spin 50 us, yield to 2 ms, then sleep), because with the short spin every OpenMP
# region pays a futex wake-up at the fork and at the join (a 2-thread 128x784x200 product measured
# 0.77 ms against 0.63 ms on 1 thread and 0.40 ms on the pool). The other parallel loops (elementwise,
# softmax, im2col, top-k selection, Adam) still use OpenMP with this setting: measured on 2 cores, the
# MLP's training epoch was faster with it than with libgomp's default next to the pool (0.98/0.81 s vs
# 1.21/1.14 s, 2 threads).
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = "1000"

try:
    from . import _kernels as _K
except ImportError as _exc:  # pragma: no cover - depends on the build
    raise ImportError(
        "pixrank.ops needs the compiled module pixrank._kernels, which failed to import "
        f"({_exc}). Build and install it with `pip install .` (or, for development, "
        "`pip install --no-build-isolation -e .`) from the repository root."
    ) from _exc

if _K.info().get("simd_env_rejected"):
    import warnings as _warnings

    _warnings.warn(
        f"PIXRANK_SIMD={_K.info()['simd_env_rejected']!r} names no SIMD path this build can run here "
        f"(available: {', '.join(_K.available_simd())}); using {_K.info()['simd']!r}",
        RuntimeWarning, stacklevel=2)

__all__ = [
    "matmul",
    "linear_backward",
    "softmax",
    "log_softmax",
    "softmax_cross_entropy",
    "im2col",
    "col2im",
    "conv2d",
    "conv2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "cosine_topk",
    "CosineDatabase",
    "adam_update",
    "set_num_threads",
    "get_num_threads",
    "info",
]

_F32 = np.dtype(np.float32)
_NUMERIC_KINDS = "fiub"
# Largest element count accepted for an array the kernels must allocate: keeps every
# byte count well inside int64 so that no size computation on the C++ side can overflow.
_MAX_ELEMENTS = 1 << 48
# Largest single size, stride, padding or window the kernels accept (they use 32-bit
# geometry checks); and the most threads the compiled module allows.
_MAX_DIM = (1 << 31) - 1
_MAX_THREADS = 1024


# --------------------------------------------------------------------------------------
# validation helpers (private)
# --------------------------------------------------------------------------------------


def _as_array(fn: str, name: str, x) -> np.ndarray:
    """``x`` as an ndarray (no copy when it is one), with a real numeric dtype."""
    if type(x) is not np.ndarray:
        if x is None:
            raise TypeError(f"{fn}: {name} must be a numeric array, got None")
        try:
            x = np.asarray(x)
        except ValueError as exc:  # ragged nested sequences
            raise ValueError(f"{fn}: {name} could not be read as an array: {exc}") from None
        except TypeError as exc:
            raise TypeError(f"{fn}: {name} could not be read as an array: {exc}") from None
    if x.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(
            f"{fn}: {name} must have a real numeric dtype (float, int or bool), "
            f"got dtype {x.dtype}"
        )
    return x


def _ndim(fn: str, name: str, x: np.ndarray, ndim: int, layout: str) -> None:
    if x.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D {layout}, got shape {x.shape}")


def _f32(x: np.ndarray) -> np.ndarray:
    """C-contiguous, aligned float32 (no copy when ``x`` already is one)."""
    return _contiguous(x, np.float32)


def _contiguous(x: np.ndarray, dtype) -> np.ndarray:
    """``x`` as a C-contiguous, aligned array of ``dtype``, copying only when needed.

    ``np.ascontiguousarray`` alone keeps a misaligned buffer (e.g. ``np.frombuffer`` at an
    odd offset) as it is; the kernels need aligned data, so such arrays are copied.
    """
    x = np.ascontiguousarray(x, dtype=dtype)
    return x if x.flags.aligned else x.copy()


def _int(fn: str, name: str, v, minimum: int, maximum: int | None = None) -> int:
    """An int (or numpy integer, not bool) in ``[minimum, maximum]``.

    ``maximum`` defaults to ``_MAX_DIM``: every size, stride and padding the kernels take
    is below 2**31, so a larger one is refused here with a clear message instead of
    failing inside the bindings.
    """
    if type(v) is not int:  # fast path for plain ints; bool is a subclass, refused below
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{fn}: {name} must be an int, got {type(v).__name__} {v!r}")
        v = int(v)
    if v < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {v}")
    if v > (_MAX_DIM if maximum is None else maximum):
        raise ValueError(
            f"{fn}: {name} must be <= {_MAX_DIM if maximum is None else maximum}, got {v}"
        )
    return v


def _pair(fn: str, name: str, v, minimum: int) -> tuple[int, int]:
    """An int or an ``(h, w)`` pair of ints, each ``>= minimum``."""
    if isinstance(v, np.ndarray):
        v = v.tolist()  # 0-d -> int, 1-d -> list
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{fn}: {name} must be an int or an (h, w) pair, got {v!r}")
        return _int(fn, f"{name}[0]", v[0], minimum), _int(fn, f"{name}[1]", v[1], minimum)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(
            f"{fn}: {name} must be an int or an (h, w) pair of ints, "
            f"got {type(v).__name__} {v!r}"
        )
    v = _int(fn, name, v, minimum)
    return v, v


def _flag(fn: str, name: str, v) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    raise TypeError(f"{fn}: {name} must be a bool, got {type(v).__name__} {v!r}")


def _image_shape(fn: str, name: str, x: np.ndarray) -> tuple[int, int, int, int]:
    """Check an NHWC array: 4-D, H, W, C >= 1 (the batch may be 0)."""
    _ndim(fn, name, x, 4, "(N, H, W, C)")
    b, h, w, c = x.shape
    if h < 1 or w < 1 or c < 1:
        raise ValueError(
            f"{fn}: {name} must have H, W, C >= 1 in its shape (N, H, W, C), got shape {x.shape}"
        )
    return b, h, w, c


def _x_shape(fn: str, x_shape) -> tuple[int, int, int, int]:
    """The ``x_shape`` argument of the adjoint ops: 4 ints (B >= 0; H, W, C >= 1)."""
    if isinstance(x_shape, np.ndarray):
        x_shape = x_shape.tolist()
    if not isinstance(x_shape, (tuple, list)):
        raise TypeError(
            f"{fn}: x_shape must be a tuple of 4 ints (N, H, W, C), "
            f"got {type(x_shape).__name__} {x_shape!r}"
        )
    if len(x_shape) != 4:
        raise ValueError(
            f"{fn}: x_shape must be a tuple of 4 ints (N, H, W, C), got {tuple(x_shape)!r}"
        )
    b = _int(fn, "x_shape[0] (N)", x_shape[0], 0)
    h = _int(fn, "x_shape[1] (H)", x_shape[1], 1)
    w = _int(fn, "x_shape[2] (W)", x_shape[2], 1)
    c = _int(fn, "x_shape[3] (C)", x_shape[3], 1)
    return b, h, w, c


def _pads(fn, padding, h, w, kh, kw, sh, sw) -> tuple[int, int, int, int]:
    """Resolve ``padding`` to explicit (top, bottom, left, right)."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return 0, 0, 0, 0
        if mode == "same":
            oh = -(-h // sh)
            ow = -(-w // sw)
            th = max((oh - 1) * sh + kh - h, 0)
            tw = max((ow - 1) * sw + kw - w, 0)
            return th // 2, th - th // 2, tw // 2, tw - tw // 2
        raise ValueError(
            f"{fn}: padding must be an int, an (h, w) pair, 'same' or 'valid', got {padding!r}"
        )
    if not isinstance(padding, (tuple, list, np.ndarray, int, np.integer)) or isinstance(
        padding, (bool, np.bool_)
    ):
        raise TypeError(
            f"{fn}: padding must be an int, an (h, w) pair, 'same' or 'valid', "
            f"got {type(padding).__name__} {padding!r}"
        )
    ph, pw = _pair(fn, "padding", padding, 0)
    return ph, ph, pw, pw


def _out_hw(fn, h, w, kh, kw, sh, sw, pads, what="kernel") -> tuple[int, int]:
    pt, pb, pl, pr = pads
    hp, wp = h + pt + pb, w + pl + pr
    if hp < kh or wp < kw:
        if pads == (0, 0, 0, 0):
            where = f"the input (H, W) = ({h}, {w})"
        else:
            where = (
                f"the padded input (H + {pt} + {pb}, W + {pl} + {pr}) = ({hp}, {wp})"
            )
        raise ValueError(f"{fn}: the {what} ({kh}, {kw}) is larger than {where}")
    return (hp - kh) // sh + 1, (wp - kw) // sw + 1


def _check_size(fn: str, what: str, shape) -> None:
    count = 1
    for s in shape:
        count *= int(s)
    if count > _MAX_ELEMENTS:
        raise ValueError(
            f"{fn}: {what} would have shape {tuple(shape)} ({count} elements), "
            f"more than the {_MAX_ELEMENTS} this library accepts"
        )


def _conv_geometry(fn, x_shape, kh, kw, stride, padding):
    """(sh, sw, pads, oh, ow) for a convolution-like op on an (N, H, W, C) input."""
    sh, sw = _pair(fn, "stride", stride, 1)
    _, h, w, _ = x_shape
    pads = _pads(fn, padding, h, w, kh, kw, sh, sw)
    oh, ow = _out_hw(fn, h, w, kh, kw, sh, sw, pads)
    return sh, sw, pads, oh, ow


def _gemm_operand(x: np.ndarray, trans: bool) -> tuple[np.ndarray, bool]:
    """A C-contiguous float32 operand for the GEMM, flipping ``trans`` for F-order input.

    A transposed view (F-contiguous) is passed as its C-contiguous base with the flag
    flipped: no copy for float32, and a single converting pass otherwise.
    """
    if x.flags.c_contiguous:
        return (x if x.dtype == _F32 and x.flags.aligned else x.astype(np.float32)), trans
    if x.flags.f_contiguous:
        xt = x.T
        return (xt if xt.dtype == _F32 and xt.flags.aligned else xt.astype(np.float32)), not trans
    return _f32(x), trans


def _labels(fn: str, labels, n: int, c: int) -> np.ndarray:
    """Class ids as C-contiguous int64 ``(N,)``, each in ``[0, C)``."""
    if type(labels) is not np.ndarray:
        if labels is None:
            raise TypeError(f"{fn}: labels must be an array of integer class ids, got None")
        try:
            labels = np.asarray(labels)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{fn}: labels could not be read as an array: {exc}") from None
    kind = labels.dtype.kind
    if kind not in "iuf":
        raise TypeError(
            f"{fn}: labels must be integer class ids, got dtype {labels.dtype}"
        )
    if labels.ndim != 1:
        hint = ""
        if labels.ndim == 2 and labels.shape == (n, c):
            hint = " (for one-hot labels pass labels.argmax(axis=1))"
        raise ValueError(
            f"{fn}: labels must be 1-D (N,) = ({n},) integer class ids, "
            f"got shape {labels.shape}{hint}"
        )
    if labels.shape[0] != n:
        raise ValueError(
            f"{fn}: labels must have shape (N,) = ({n},) to match logits of shape "
            f"({n}, {c}), got shape {labels.shape}"
        )
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if kind == "f":
        bad = ~np.isfinite(labels)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{fn}: labels must be integer class ids, got {labels[i]} at index {i}"
            )
        frac = labels != np.floor(labels)
        if frac.any():
            i = int(np.argmax(frac))
            raise ValueError(
                f"{fn}: labels must be integer class ids, got {labels[i]} at index {i}"
            )
    lo, hi = labels.min(), labels.max()
    if lo < 0 or hi >= c:
        bad = (labels < 0) | (labels >= c)
        i = int(np.argmax(bad))
        raise ValueError(
            f"{fn}: labels must lie in [0, C) = [0, {c}), got {labels[i]} at index {i}"
        )
    return _contiguous(labels, np.int64)


# --------------------------------------------------------------------------------------
# dense layers
# --------------------------------------------------------------------------------------


def matmul(a, b, bias=None, relu=False, trans_a=False, trans_b=False) -> np.ndarray:
    """Matrix product with a fused epilogue: ``y = relu?(op(a) @ op(b) + bias)``.

    ``op(x)`` is ``x.T`` when the matching ``trans_*`` flag is set, else ``x``; the
    transpose is never materialised (the packing step of the GEMM reads the stored
    layout either way). The bias add and the ReLU happen in the GEMM's epilogue, while the
    output tile is still in registers, so the output is written once. A transposed view
    (an F-contiguous array such as ``w.T``) is passed to the kernel as its C-contiguous
    base with the flag flipped: no copy.

    Args:
        a: left operand, real numeric, ``(M, K)`` (or ``(K, M)`` when ``trans_a``).
        b: right operand, real numeric, ``(K, N)`` (or ``(N, K)`` when ``trans_b``).
        bias: optional ``(N,)`` added to every row.
        relu: apply ``max(., 0)`` after the bias.
        trans_a, trans_b: use the transpose of ``a`` / ``b``.

    Shape:
        ``op(a)`` ``(M, K)``, ``op(b)`` ``(K, N)``, bias ``(N,)`` -> ``(M, N)``.
        ``M``, ``K`` or ``N`` may be 0 (``K == 0`` gives ``relu?(bias)`` in every row).

    Returns:
        float32 ``(M, N)``, a new C-contiguous array.

    Raises:
        ValueError: an operand is not 2-D, the inner dimensions differ, or ``bias`` is
            not ``(N,)``.
        TypeError: an operand has a non-numeric dtype, or a flag is not a bool.

    Example:
        >>> import numpy as np
        >>> from pixrank import ops
        >>> ops.matmul([[1, 2], [3, 4]], [[5, 6], [7, 8]], bias=[0, -50], relu=True)
        array([[19.,  0.],
               [43.,  0.]], dtype=float32)

    Reference:
        K. Goto and R. A. van de Geijn, "Anatomy of High-Performance Matrix
        Multiplication", ACM Trans. Math. Softw. 34(3), 2008 (packed, cache-blocked GEMM);
        F. G. Van Zee and R. A. van de Geijn, "BLIS", ACM TOMS 41(3), 2015 (micro-kernels).
    """
    fn = "matmul"
    a = _as_array(fn, "a", a)
    b = _as_array(fn, "b", b)
    ta = _flag(fn, "trans_a", trans_a)
    tb = _flag(fn, "trans_b", trans_b)
    relu = _flag(fn, "relu", relu)
    _ndim(fn, "a", a, 2, "(K, M) with trans_a=True" if ta else "(M, K)")
    _ndim(fn, "b", b, 2, "(N, K) with trans_b=True" if tb else "(K, N)")
    m, k = (a.shape[1], a.shape[0]) if ta else a.shape
    k2, n = (b.shape[1], b.shape[0]) if tb else b.shape
    if k != k2:
        raise ValueError(
            f"{fn}: inner dimensions differ: op(a) has shape ({m}, {k}) and op(b) has shape "
            f"({k2}, {n}) (a shape {a.shape}, trans_a={ta}; b shape {b.shape}, trans_b={tb})"
        )
    if bias is not None:
        bias = _as_array(fn, "bias", bias)
        if bias.shape != (n,):
            raise ValueError(f"{fn}: bias must have shape (N,) = ({n},), got shape {bias.shape}")
        bias = _f32(bias)
    if k == 0 or n == 0:
        out = np.zeros((m, n), dtype=np.float32)
        if bias is not None:
            out += bias
        return np.maximum(out, 0, out=out) if relu else out
    a, ta = _gemm_operand(a, ta)
    b, tb = _gemm_operand(b, tb)
    return _K.matmul(a, b, bias, relu, ta, tb)


def linear_backward(x, w, dy, y=None, relu=False, *, need_dx=True, need_dw=True):
    """Gradients of a dense layer ``y = relu?(x @ w + b)``: ``(dx, dw, db)``.

    With ``g = dy * (y > 0)`` when ``relu`` (the mask is applied once) and ``g = dy``
    otherwise: ``dx = g @ w.T``, ``dw = x.T @ g``, ``db = g.sum(axis=0)`` (summed in
    float64), computed by the transposing GEMM without materialising any transpose. The mask
    and ``db`` are one pass over ``dy``.

    Args:
        x: the layer's input ``(M, K)``.
        w: the weight ``(K, N)``.
        dy: the gradient of the loss with respect to the layer's output ``(M, N)``.
        y: the layer's output ``(M, N)``; required when ``relu`` (its mask is ``y > 0``),
            ignored otherwise.
        relu: the layer applied a ReLU.
        need_dx: compute ``dx`` (False: ``dx`` is returned as None and its product skipped,
            e.g. for a first layer whose input needs no gradient).
        need_dw: compute ``dw`` (False: returned as None, e.g. for a frozen kernel).

    Shape:
        x ``(M, K)``, w ``(K, N)``, dy and y ``(M, N)`` -> dx ``(M, K)``, dw ``(K, N)``,
        db ``(N,)``. ``M == 0`` gives an empty dx and zero dw, db.

    Returns:
        ``(dx, dw, db)``, float32 (``dx`` / ``dw`` None when not asked for).

    Raises:
        ValueError: wrong ranks or mismatched shapes, or ``relu=True`` without ``y``.
        TypeError: a non-numeric dtype, or ``relu``, ``need_dx`` or ``need_dw`` not a bool.

    Example:
        >>> from pixrank import ops
        >>> dx, dw, db = ops.linear_backward([[1, 2]], [[1], [1]], [[1]])
        >>> dx
        array([[1., 1.]], dtype=float32)
        >>> dw.ravel(), db
        (array([1., 2.], dtype=float32), array([1.], dtype=float32))

    Reference:
        D. E. Rumelhart, G. E. Hinton and R. J. Williams, "Learning representations by
        back-propagating errors", Nature 323, 1986; I. Goodfellow, Y. Bengio and
        A. Courville, "Deep Learning", MIT Press 2016, section 6.5.
    """
    fn = "linear_backward"
    x = _as_array(fn, "x", x)
    w = _as_array(fn, "w", w)
    dy = _as_array(fn, "dy", dy)
    relu = _flag(fn, "relu", relu)
    need_dx = _flag(fn, "need_dx", need_dx)
    need_dw = _flag(fn, "need_dw", need_dw)
    _ndim(fn, "x", x, 2, "(M, K)")
    _ndim(fn, "w", w, 2, "(K, N)")
    _ndim(fn, "dy", dy, 2, "(M, N)")
    m, k = x.shape
    if w.shape[0] != k:
        raise ValueError(
            f"{fn}: w must have shape (K, N) with K = {k} to match x of shape {x.shape}, "
            f"got shape {w.shape}"
        )
    n = w.shape[1]
    if dy.shape != (m, n):
        raise ValueError(
            f"{fn}: dy must have shape (M, N) = ({m}, {n}) (x {x.shape}, w {w.shape}), "
            f"got shape {dy.shape}"
        )
    if relu:
        if y is None:
            raise ValueError(
                f"{fn}: y (the layer's output, shape ({m}, {n})) is required when relu=True"
            )
        y = _as_array(fn, "y", y)
        if y.shape != (m, n):
            raise ValueError(f"{fn}: y must have shape (M, N) = ({m}, {n}), got shape {y.shape}")
        y = _f32(y)
    else:
        y = None
    x, w, dy = _f32(x), _f32(w), _f32(dy)
    if k == 0 or n == 0:
        g = dy * (y > 0) if relu else dy
        return (
            np.zeros((m, k), dtype=np.float32) if need_dx else None,
            np.zeros((k, n), dtype=np.float32) if need_dw else None,
            g.sum(axis=0, dtype=np.float64).astype(np.float32),
        )
    return _K.linear_backward(x, w, dy, y, relu, need_dx, need_dw)


# --------------------------------------------------------------------------------------
# softmax and the loss
# --------------------------------------------------------------------------------------


def _logits(fn: str, logits) -> np.ndarray:
    logits = _as_array(fn, "logits", logits)
    if logits.ndim != 2:
        hint = " (for a single row use logits[None, :])" if logits.ndim == 1 else ""
        raise ValueError(f"{fn}: logits must be 2-D (N, C), got shape {logits.shape}{hint}")
    if logits.shape[1] < 1:
        raise ValueError(
            f"{fn}: logits must have at least one class (C >= 1), got shape {logits.shape}"
        )
    return _f32(logits)


def softmax(logits) -> np.ndarray:
    """Row-wise softmax: ``p[i, j] = exp(z[i, j] - max_j z[i]) / sum_j exp(z[i, j] - max_j z[i])``.

    Subtracting the row maximum keeps every exponent ``<= 0``, so logits of any finite
    magnitude (and ``-inf`` entries, which get probability 0) are safe.

    Args:
        logits: ``(N, C)`` real numeric scores.

    Shape:
        ``(N, C)`` -> ``(N, C)``; ``N`` may be 0, ``C >= 1``.

    Returns:
        float32 ``(N, C)``, each row summing to 1.

    Raises:
        ValueError: logits not 2-D or ``C == 0``.
        TypeError: a non-numeric dtype.

    Example:
        >>> from pixrank import ops
        >>> ops.softmax([[0.0, 0.0], [1e4, -1e4]])
        array([[0.5, 0.5],
               [1. , 0. ]], dtype=float32)

    Reference:
        J. S. Bridle, "Probabilistic interpretation of feedforward classification network
        outputs", Neurocomputing, 1990; P. Blanchard, D. J. Higham and N. J. Higham,
        "Accurately computing the log-sum-exp and softmax functions", IMA J. Numer. Anal.
        41(4), 2021.
    """
    return _K.softmax(_logits("softmax", logits))


def log_softmax(logits) -> np.ndarray:
    """Row-wise log-softmax: ``z[i, j] - max_j z[i] - log(sum_j exp(z[i, j] - max_j z[i]))``.

    Computed directly (not as ``log(softmax)``), so tiny probabilities keep their
    logarithm instead of underflowing to ``-inf``.

    Args:
        logits: ``(N, C)`` real numeric scores.

    Shape:
        ``(N, C)`` -> ``(N, C)``; ``N`` may be 0, ``C >= 1``.

    Returns:
        float32 ``(N, C)``, every entry ``<= 0``.

    Raises:
        ValueError: logits not 2-D or ``C == 0``.
        TypeError: a non-numeric dtype.

    Example:
        >>> from pixrank import ops
        >>> ops.log_softmax([[0.0, 0.0], [100.0, 0.0]])
        array([[  -0.6931472,   -0.6931472],
               [   0.       , -100.       ]], dtype=float32)

    Reference:
        P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the log-sum-exp
        and softmax functions", IMA J. Numer. Anal. 41(4), 2021.
    """
    return _K.log_softmax(_logits("log_softmax", logits))


def softmax_cross_entropy(logits, labels):
    """Mean softmax cross-entropy and its gradient, in one fused pass.

    ``loss = -(1/N) sum_i log_softmax(z)[i, labels[i]]`` and
    ``dlogits = (softmax(z) - onehot(labels)) / N``. Stable for logits of magnitude 1e4
    and for ``-inf`` entries (a ``-inf`` logit on the true class gives ``loss = inf``;
    other rows stay finite).

    Args:
        logits: ``(N, C)`` real numeric scores.
        labels: ``(N,)`` integer class ids in ``[0, C)`` (floats holding whole numbers
            are accepted; NaN, fractions and bool are not).

    Shape:
        logits ``(N, C)``, labels ``(N,)`` -> loss scalar, dlogits ``(N, C)``.
        ``N == 0`` gives ``(0.0, empty (0, C))``.

    Returns:
        ``(loss, dlogits)``: a Python float (mean over the batch, in nats) and float32
        ``(N, C)``.

    Raises:
        ValueError: logits not 2-D or ``C == 0``; labels not ``(N,)``; a label outside
            ``[0, C)``, NaN or not a whole number.
        TypeError: a non-numeric logits dtype, or labels not integer (or whole float).

    Example:
        >>> from pixrank import ops
        >>> loss, d = ops.softmax_cross_entropy([[0.0, 0.0]], [1])
        >>> round(loss, 6), d
        (0.693147, array([[ 0.5, -0.5]], dtype=float32))

    Reference:
        I. Goodfellow, Y. Bengio and A. Courville, "Deep Learning", MIT Press 2016,
        sections 6.2.2.3 and 4.1 (softmax units, log-sum-exp stabilisation).
    """
    fn = "softmax_cross_entropy"
    logits = _logits(fn, logits)
    n, c = logits.shape
    labels = _labels(fn, labels, n, c)
    loss, dlogits = _K.softmax_cross_entropy(logits, labels)
    return float(loss), dlogits


# --------------------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------------------


def im2col(x, kh, kw, stride=1, padding=0) -> np.ndarray:
    """NHWC patches as rows: ``cols[(b, oh, ow), (i, j, c)] = xpad[b, oh*sh + i, ow*sw + j, c]``.

    ``xpad`` is ``x`` with zero padding; ``OH = (H + pt + pb - kh) // sh + 1`` (likewise
    ``OW``). The column order ``(i, j, c)`` matches an HWIO weight reshaped to
    ``(kh * kw * C, F)``, so ``im2col(x) @ w.reshape(-1, F)`` is the convolution.

    Args:
        x: ``(N, H, W, C)`` input images.
        kh, kw: kernel height and width, ``>= 1``.
        stride: int or ``(sh, sw)``, ``>= 1``.
        padding: int, ``(ph, pw)``, ``'valid'`` or ``'same'`` (see the module docstring).

    Shape:
        ``(N, H, W, C)`` -> ``(N * OH * OW, kh * kw * C)``.

    Returns:
        float32 ``(N * OH * OW, kh * kw * C)``.

    Raises:
        ValueError: x not 4-D or with ``H, W, C == 0``; a size ``< 1``; negative padding;
            a kernel larger than the padded input.
        TypeError: a non-numeric dtype; a non-int size or stride; a bad padding kind.

    Example:
        >>> import numpy as np
        >>> from pixrank import ops
        >>> x = np.arange(9.0).reshape(1, 3, 3, 1)
        >>> ops.im2col(x, 2, 2)
        array([[0., 1., 3., 4.],
               [1., 2., 4., 5.],
               [3., 4., 6., 7.],
               [4., 5., 7., 8.]], dtype=float32)

    Reference:
        K. Chellapilla, S. Puri and P. Simard, "High Performance Convolutional Neural
        Networks for Document Processing", IWFHR 2006.
    """
    fn = "im2col"
    x = _as_array(fn, "x", x)
    shape = _image_shape(fn, "x", x)
    kh = _int(fn, "kh", kh, 1)
    kw = _int(fn, "kw", kw, 1)
    sh, sw, pads, oh, ow = _conv_geometry(fn, shape, kh, kw, stride, padding)
    _check_size(fn, "the patch matrix", (shape[0] * oh * ow, kh * kw * shape[3]))
    return _K.im2col(_f32(x), kh, kw, sh, sw, *pads)


def col2im(cols, x_shape, kh, kw, stride=1, padding=0) -> np.ndarray:
    """The adjoint of :func:`im2col`: scatter-add patch rows back into an NHWC image.

    ``x[b, oh*sh + i - pt, ow*sw + j - pl, c] += cols[(b, oh, ow), (i, j, c)]`` for every
    position that falls inside the (unpadded) image; overlapping patches accumulate.
    ``<im2col(x), cols> == <x, col2im(cols)>`` for all ``x``, ``cols``.

    Args:
        cols: ``(N * OH * OW, kh * kw * C)``.
        x_shape: the image shape ``(N, H, W, C)`` (4 ints).
        kh, kw, stride, padding: as for :func:`im2col`.

    Shape:
        ``(N * OH * OW, kh * kw * C)`` -> ``x_shape``.

    Returns:
        float32 array of shape ``x_shape``.

    Raises:
        ValueError: cols not 2-D or not ``(N * OH * OW, kh * kw * C)``; a bad
            ``x_shape``, size or padding.
        TypeError: a non-numeric dtype; non-int sizes; a bad padding kind.

    Example:
        >>> import numpy as np
        >>> from pixrank import ops
        >>> ops.col2im(np.ones((4, 4)), (1, 3, 3, 1), 2, 2)[0, :, :, 0]
        array([[1., 2., 1.],
               [2., 4., 2.],
               [1., 2., 1.]], dtype=float32)

    Reference:
        K. Chellapilla, S. Puri and P. Simard, "High Performance Convolutional Neural
        Networks for Document Processing", IWFHR 2006.
    """
    fn = "col2im"
    cols = _as_array(fn, "cols", cols)
    shape = _x_shape(fn, x_shape)
    kh = _int(fn, "kh", kh, 1)
    kw = _int(fn, "kw", kw, 1)
    sh, sw, pads, oh, ow = _conv_geometry(fn, shape, kh, kw, stride, padding)
    b, h, w, c = shape
    _check_size(fn, "the image", shape)
    expected = (b * oh * ow, kh * kw * c)
    if cols.ndim != 2 or cols.shape != expected:
        raise ValueError(
            f"{fn}: cols must have shape (N * OH * OW, kh * kw * C) = {expected} for "
            f"x_shape {shape}, kernel ({kh}, {kw}), stride ({sh}, {sw}), pads "
            f"(top, bottom, left, right) {pads}; got shape {cols.shape}"
        )
    return _K.col2im(_f32(cols), b, h, w, c, kh, kw, sh, sw, *pads)


def _conv_args(fn, x, w, stride, padding):
    x = _as_array(fn, "x", x)
    w = _as_array(fn, "w", w)
    shape = _image_shape(fn, "x", x)
    _ndim(fn, "w", w, 4, "(kh, kw, C, F) (HWIO)")
    kh, kw, c, f = w.shape
    if kh < 1 or kw < 1 or f < 1:
        raise ValueError(
            f"{fn}: w must have kh, kw, F >= 1 in its shape (kh, kw, C, F), got shape {w.shape}"
        )
    if c != shape[3]:
        raise ValueError(
            f"{fn}: w must have shape (kh, kw, C, F) with C = {shape[3]} to match x of "
            f"shape {x.shape}, got shape {w.shape}"
        )
    sh, sw, pads, oh, ow = _conv_geometry(fn, shape, kh, kw, stride, padding)
    _check_size(fn, "the patch matrix", (shape[0] * oh * ow, kh * kw * c))
    return x, w, shape, (kh, kw, c, f), sh, sw, pads, oh, ow


def conv2d(x, w, bias=None, stride=1, padding=0, relu=False) -> np.ndarray:
    """2-D convolution (cross-correlation), NHWC x HWIO, with a fused bias and ReLU.

    ``y[b, oh, ow, f] = relu?(bias[f] + sum_{i, j, c} xpad[b, oh*sh + i, ow*sw + j, c] *
    w[i, j, c, f])``, computed as ``im2col(x) @ w.reshape(kh * kw * C, F)`` by the packed
    SGEMM with the bias/ReLU in its epilogue. Like Keras' ``Conv2D`` (no kernel flip).

    Args:
        x: ``(N, H, W, C)`` input images.
        w: ``(kh, kw, C, F)`` filters (HWIO).
        bias: optional ``(F,)``.
        stride: int or ``(sh, sw)``, ``>= 1``.
        padding: int, ``(ph, pw)``, ``'valid'`` or ``'same'`` (see the module docstring).
        relu: apply ``max(., 0)`` after the bias.

    Shape:
        x ``(N, H, W, C)``, w ``(kh, kw, C, F)`` -> ``(N, OH, OW, F)`` with
        ``OH = (H + pt + pb - kh) // sh + 1`` (``ceil(H / sh)`` for ``'same'``).

    Returns:
        float32 ``(N, OH, OW, F)``.

    Raises:
        ValueError: wrong ranks; channel mismatch; bias not ``(F,)``; zero sizes; a
            kernel larger than the padded input; negative padding.
        TypeError: a non-numeric dtype; a non-int stride; a bad padding kind; relu not a
            bool.

    Example:
        >>> import numpy as np
        >>> from pixrank import ops
        >>> x = np.arange(9.0).reshape(1, 3, 3, 1)
        >>> ops.conv2d(x, np.ones((2, 2, 1, 1)), bias=[1.0])[0, :, :, 0]
        array([[ 9., 13.],
               [21., 25.]], dtype=float32)

    Reference:
        K. Chellapilla, S. Puri and P. Simard, "High Performance Convolutional Neural
        Networks for Document Processing", IWFHR 2006 (im2col + GEMM); V. Dumoulin and
        F. Visin, "A guide to convolution arithmetic for deep learning", arXiv:1603.07285.
    """
    fn = "conv2d"
    x, w, shape, wshape, sh, sw, pads, oh, ow = _conv_args(fn, x, w, stride, padding)
    relu = _flag(fn, "relu", relu)
    f = wshape[3]
    if bias is not None:
        bias = _as_array(fn, "bias", bias)
        if bias.shape != (f,):
            raise ValueError(f"{fn}: bias must have shape (F,) = ({f},), got shape {bias.shape}")
        bias = _f32(bias)
    return _K.conv2d(_f32(x), _f32(w), bias, sh, sw, *pads, relu)


def conv2d_backward(x, w, dy, stride=1, padding=0, y=None, relu=False):
    """Gradients of :func:`conv2d`: ``(dx, dw, db)``.

    With ``g = dy * (y > 0)`` when ``relu`` (the fused ReLU's mask, an extension of the
    issue's API) and ``g = dy`` otherwise, reshaped to ``(N * OH * OW, F)``:
    ``dw = im2col(x).T @ g``, ``dx = col2im(g @ w.reshape(-1, F).T)``, ``db = g.sum(0)``.

    Args:
        x: the forward input ``(N, H, W, C)``.
        w: the filters ``(kh, kw, C, F)``.
        dy: the gradient with respect to the output ``(N, OH, OW, F)``.
        stride, padding: as passed to :func:`conv2d`.
        y: the forward output ``(N, OH, OW, F)``; required when ``relu``.
        relu: the forward pass applied a ReLU.

    Shape:
        x ``(N, H, W, C)``, w ``(kh, kw, C, F)``, dy and y ``(N, OH, OW, F)`` -> dx
        ``(N, H, W, C)``, dw ``(kh, kw, C, F)``, db ``(F,)``. ``N == 0`` gives an empty dx
        and zero dw, db.

    Returns:
        ``(dx, dw, db)``, float32.

    Raises:
        ValueError: as :func:`conv2d`, plus dy (or y) not ``(N, OH, OW, F)``, or
            ``relu=True`` without ``y``.
        TypeError: as :func:`conv2d`.

    Example:
        >>> import numpy as np
        >>> from pixrank import ops
        >>> x = np.arange(9.0).reshape(1, 3, 3, 1)
        >>> dx, dw, db = ops.conv2d_backward(x, np.ones((2, 2, 1, 1)), np.ones((1, 2, 2, 1)))
        >>> dw[:, :, 0, 0], db
        (array([[ 8., 12.],
               [20., 24.]], dtype=float32), array([4.], dtype=float32))

    Reference:
        K. Chellapilla, S. Puri and P. Simard, "High Performance Convolutional Neural
        Networks for Document Processing", IWFHR 2006.
    """
    fn = "conv2d_backward"
    x, w, shape, wshape, sh, sw, pads, oh, ow = _conv_args(fn, x, w, stride, padding)
    relu = _flag(fn, "relu", relu)
    out_shape = (shape[0], oh, ow, wshape[3])
    dy = _as_array(fn, "dy", dy)
    if dy.shape != out_shape:
        raise ValueError(
            f"{fn}: dy must have the output shape (N, OH, OW, F) = {out_shape} for x "
            f"{shape}, w {wshape}, stride ({sh}, {sw}), pads (top, bottom, left, right) "
            f"{pads}; got shape {dy.shape}"
        )
    if relu:
        if y is None:
            raise ValueError(
                f"{fn}: y (the forward output, shape {out_shape}) is required when relu=True"
            )
        y = _as_array(fn, "y", y)
        if y.shape != out_shape:
            raise ValueError(
                f"{fn}: y must have the output shape (N, OH, OW, F) = {out_shape}, "
                f"got shape {y.shape}"
            )
        y = _f32(y)
    else:
        y = None
    return _K.conv2d_backward(_f32(x), _f32(w), _f32(dy), sh, sw, *pads, y, relu)


# --------------------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------------------


def max_pool2d(x, pool=2, stride=None):
    """NHWC max pooling: ``y[b, oh, ow, c] = max_{i<ph, j<pw} x[b, oh*sh + i, ow*sw + j, c]``.

    No padding (Keras' ``'valid'``): ``OH = (H - ph) // sh + 1``, and trailing rows or
    columns that fit no window are dropped. Also returns where each maximum came from, for
    the backward pass.

    Args:
        x: ``(N, H, W, C)``.
        pool: int or ``(ph, pw)``, ``>= 1`` and no larger than ``(H, W)``.
        stride: int or ``(sh, sw)``, ``>= 1``; defaults to ``pool``.

    Shape:
        ``(N, H, W, C)`` -> y and argmax ``(N, OH, OW, C)``.

    Returns:
        ``(y, argmax)``: float32 maxima and int64 flat indices into ``x`` (indices into
        ``x.ravel()`` of the C-contiguous input, batch included), the first maximum in
        row-major window order on ties.

    Raises:
        ValueError: x not 4-D or with a zero H, W or C; pool or stride ``< 1``; a window
            larger than the input.
        TypeError: a non-numeric dtype; a non-int pool or stride.

    Example:
        >>> import numpy as np
        >>> from pixrank import ops
        >>> y, idx = ops.max_pool2d(np.arange(16.0).reshape(1, 4, 4, 1))
        >>> y[0, :, :, 0], idx[0, :, :, 0]
        (array([[ 5.,  7.],
               [13., 15.]], dtype=float32), array([[ 5,  7],
               [13, 15]]))

    Reference:
        Y.-L. Boureau, J. Ponce and Y. LeCun, "A Theoretical Analysis of Feature Pooling in
        Visual Recognition", ICML 2010; Keras ``MaxPooling2D``.
    """
    fn = "max_pool2d"
    x = _as_array(fn, "x", x)
    shape = _image_shape(fn, "x", x)
    ph, pw = _pair(fn, "pool", pool, 1)
    sh, sw = (ph, pw) if stride is None else _pair(fn, "stride", stride, 1)
    _out_hw(fn, shape[1], shape[2], ph, pw, sh, sw, (0, 0, 0, 0), what="pooling window")
    return _K.max_pool2d(_f32(x), ph, pw, sh, sw)


def max_pool2d_backward(dy, argmax, x_shape) -> np.ndarray:
    """Gradient of :func:`max_pool2d`: ``dx.ravel()[argmax] += dy`` (scatter-add).

    Each output gradient goes to the input element that held the window's maximum;
    overlapping windows (stride < pool) accumulate.

    Args:
        dy: gradient with respect to the pooled output ``(N, OH, OW, C)``.
        argmax: the int64 (any integer dtype) flat indices into ``x`` returned by
            :func:`max_pool2d`, same shape as ``dy``; those of image ``b`` must point into
            image ``b``.
        x_shape: the forward input's shape ``(N, H, W, C)``.

    Shape:
        dy, argmax ``(N, OH, OW, C)`` -> dx ``x_shape``.

    Returns:
        float32 array of shape ``x_shape``.

    Raises:
        ValueError: wrong ranks; dy and argmax shapes differ; N or C differ from
            ``x_shape``; ``OH > H`` or ``OW > W``; an index of image ``b`` outside that
            image, ``[b*H*W*C, (b+1)*H*W*C)``.
        TypeError: a non-numeric dy; a non-integer argmax; a bad ``x_shape``.

    Example:
        >>> import numpy as np
        >>> from pixrank import ops
        >>> x = np.arange(16.0).reshape(1, 4, 4, 1)
        >>> y, idx = ops.max_pool2d(x)
        >>> ops.max_pool2d_backward(np.ones_like(y), idx, x.shape)[0, :, :, 0]
        array([[0., 0., 0., 0.],
               [0., 1., 0., 1.],
               [0., 0., 0., 0.],
               [0., 1., 0., 1.]], dtype=float32)

    Reference:
        Y.-L. Boureau, J. Ponce and Y. LeCun, "A Theoretical Analysis of Feature Pooling in
        Visual Recognition", ICML 2010.
    """
    fn = "max_pool2d_backward"
    dy = _as_array(fn, "dy", dy)
    if type(argmax) is not np.ndarray:
        argmax = _as_array(fn, "argmax", argmax)
    if argmax.dtype.kind not in "iu":
        raise TypeError(f"{fn}: argmax must be an integer array, got dtype {argmax.dtype}")
    shape = _x_shape(fn, x_shape)
    _ndim(fn, "dy", dy, 4, "(N, OH, OW, C)")
    if argmax.shape != dy.shape:
        raise ValueError(
            f"{fn}: argmax must have the shape of dy {dy.shape}, got shape {argmax.shape}"
        )
    b, h, w, c = shape
    if dy.shape[0] != b or dy.shape[3] != c or dy.shape[1] > h or dy.shape[2] > w:
        raise ValueError(
            f"{fn}: dy must have shape (N, OH, OW, C) with N = {b}, C = {c}, OH <= {h}, "
            f"OW <= {w} for x_shape {shape}, got shape {dy.shape}"
        )
    _check_size(fn, "the input gradient", shape)
    if argmax.size:
        # each image's indices must point into that image (what max_pool2d returns)
        img = h * w * c
        lo = (np.arange(b, dtype=np.int64) * img).reshape(b, 1, 1, 1)
        bad = (argmax < lo) | (argmax >= lo + img)
        if bad.any():
            pos = np.unravel_index(int(np.argmax(bad)), argmax.shape)
            first = int(pos[0]) * img
            raise ValueError(
                f"{fn}: argmax must hold flat indices into x (of shape {shape}) that lie in "
                f"their own image, [{first}, {first + img}) for image {int(pos[0])}; got "
                f"{argmax[pos]} at position {tuple(int(p) for p in pos)}"
            )
    return _K.max_pool2d_backward(
        _f32(dy), _contiguous(argmax, np.int64), b, h, w, c
    )


# --------------------------------------------------------------------------------------
# retrieval
# --------------------------------------------------------------------------------------


def cosine_topk(queries, database, k):
    """Exact cosine top-k: the ``k`` database rows most similar to each query.

    ``score[q, r] = <queries[q], database[r]> / (|queries[q]| |database[r]|)`` (0 when
    either vector is zero, never NaN); returns the ``min(k, n)`` best per query, scores
    descending, ties broken by the lower database index. Blocked and multi-threaded over
    the database so the full ``(Q, n)`` score matrix is never held for large ``n``.

    An array ``database`` is normalised and packed for the multiply block by block during
    every call (about a third of the time at ``Q = 100``); a :class:`CosineDatabase` has
    that done once, and a call then costs only the multiply and the selection. Both give
    the same indices and the same scores, bit for bit.

    Args:
        queries: ``(Q, d)``.
        database: ``(n, d)`` array, or a :class:`CosineDatabase` of dimension ``d``.
        k: number of neighbours, an int ``>= 1`` (at most ``2**62``); ``k > n`` returns
            ``n`` columns.

    Shape:
        queries ``(Q, d)``, database ``(n, d)`` -> ``(Q, min(k, n))``; ``Q`` or ``n`` may
        be 0, ``d >= 1``.

    Returns:
        ``(indices, scores)``: int64 row numbers into ``database`` and float32 cosine
        similarities in ``[-1, 1]`` up to float32 rounding (a vector against itself may
        score ``1 + 4e-7``; scores are not clipped, so that equal scores always come in
        index order). Ties are exact ties of these float32 scores, such as duplicate
        vectors; parallel vectors of different lengths may differ in the last bit.

    Raises:
        ValueError: wrong ranks; ``d`` differs or is 0; ``k < 1``; a query or database row
            holding NaN or inf (found by the kernel while it computes the norms, so a
            large database is not scanned twice).
        TypeError: a non-numeric dtype; ``k`` not an int.

    Example:
        >>> from pixrank import ops
        >>> idx, s = ops.cosine_topk([[1.0, 0.0]], [[0, 1], [2, 0], [1, 1], [-1, 0]], k=2)
        >>> idx, s.round(4)
        (array([[1, 2]]), array([[1.    , 0.7071]], dtype=float32))

    Reference:
        C. D. Manning, P. Raghavan and H. Schuetze, "Introduction to Information
        Retrieval", Cambridge 2008, chapter 6 (cosine similarity, top-k retrieval);
        J. Johnson, M. Douze and H. Jegou, "Billion-scale similarity search with GPUs",
        IEEE Trans. Big Data 2019 (blocked exact k-selection).
    """
    fn = "cosine_topk"
    queries = _as_array(fn, "queries", queries)
    k = _int(fn, "k", k, 1, maximum=1 << 62)
    _ndim(fn, "queries", queries, 2, "(Q, d)")
    if isinstance(database, CosineDatabase):
        if queries.shape[1] != database.dim:
            raise ValueError(
                f"{fn}: queries must have shape (Q, d) with d = {database.dim} to match the "
                f"CosineDatabase, got shape {queries.shape}"
            )
        return database._db.topk(_f32(queries), k)
    database = _as_array(fn, "database", database)
    _ndim(fn, "database", database, 2, "(n, d)")
    d = queries.shape[1]
    if database.shape[1] != d:
        raise ValueError(
            f"{fn}: database must have shape (n, d) with d = {d} to match queries of shape "
            f"{queries.shape}, got shape {database.shape}"
        )
    if d < 1:
        raise ValueError(
            f"{fn}: the vectors must have d >= 1 components, got queries of shape {queries.shape}"
        )
    # min(k, n) columns either way; clamping keeps a huge k inside the kernel's int64
    return _K.cosine_topk(_f32(queries), _f32(database), min(k, max(database.shape[0], 1)))


def _rows(fn: str, name: str, x, d: int) -> np.ndarray:
    """``x`` as C-contiguous float32 ``(m, d)``."""
    x = _as_array(fn, name, x)
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"{fn}: {name} must have shape (m, {d}), got shape {x.shape}")
    return _f32(x)


class CosineDatabase:
    """A database prepared once for many :func:`cosine_topk` calls.

    Holds its rows L2-normalised (norms in float64, as :func:`cosine_topk` computes them;
    a zero row stays zero and scores 0 against every query) and packed in the layout the
    C++ multiply reads, so that ``cosine_topk(queries, db, k)`` skips the per-call
    normalisation and packing of the database: results are identical, bit for bit, to
    ``cosine_topk(queries, rows, k)`` over the same rows in the same order. Rows can be
    appended (amortised ``O(d)`` each: the storage at least doubles when it grows),
    replaced in place and dropped from the end; row numbers are the order of insertion.

    Memory: about ``4 * d`` bytes per row (plus up to one block of padding, and spare
    capacity after growth): a second copy next to the original vectors. The layout belongs
    to the SIMD path in use; after ``_kernels.set_simd`` the next query re-packs it once.
    Thread-safe: queries run concurrently; ``append``/``replace``/``truncate`` wait for
    running queries and block new ones while they change the rows.

    Args:
        vectors: optional ``(n, d)`` initial rows (any real dtype, stored float32).
        dim: ``d``, required when ``vectors`` is not given (and checked against it if both).

    Raises:
        ValueError: neither ``vectors`` nor ``dim``; a shape that is not ``(n, d)``;
            ``d < 1``; a row holding NaN or inf (nothing is added then).
        TypeError: non-numeric vectors, ``dim`` not an int.

    Example:
        >>> import numpy as np
        >>> from pixrank import ops
        >>> db = ops.CosineDatabase([[0, 1], [2, 0], [1, 1]])
        >>> db.append([[-1, 0]]); len(db)
        4
        >>> idx, s = ops.cosine_topk([[1.0, 0.0]], db, k=2)
        >>> idx, s.round(4)
        (array([[1, 2]]), array([[1.    , 0.7071]], dtype=float32))

    Reference:
        K. Goto and R. van de Geijn, "Anatomy of high-performance matrix multiplication",
        ACM TOMS 34(3), 2008 (the packed operand layout); J. Johnson, M. Douze and
        H. Jegou, "Billion-scale similarity search with GPUs", IEEE Trans. Big Data 2019
        (a flat index that keeps its vectors ready for a blocked multiply and k-selection).
    """

    __slots__ = ("_db",)

    def __init__(self, vectors=None, *, dim=None):
        fn = "CosineDatabase"
        if dim is not None:
            dim = _int(fn, "dim", dim, 1)
        if vectors is None:
            if dim is None:
                raise ValueError(f"{fn}: give vectors (n, d) or dim")
            self._db = _K.CosineDatabase(dim)
            return
        x = _as_array(fn, "vectors", vectors)
        if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
            want = f"(n, {dim})" if dim is not None else "(n, d)"
            raise ValueError(f"{fn}: vectors must have shape {want}, got shape {x.shape}")
        if x.shape[1] < 1:
            raise ValueError(f"{fn}: the vectors must have d >= 1 components, got shape {x.shape}")
        self._db = _K.CosineDatabase(x.shape[1])
        if x.shape[0]:
            _check_size(fn, "vectors", x.shape)
            self._db.append(_f32(x))

    @property
    def dim(self) -> int:
        """The dimension ``d``."""
        return self._db.dim

    def __len__(self) -> int:
        """The number of rows."""
        return len(self._db)

    @property
    def capacity(self) -> int:
        """Rows the storage holds before it grows again."""
        return self._db.capacity

    @property
    def nbytes(self) -> int:
        """Bytes of packed storage (``capacity * d * 4``)."""
        return self._db.capacity * self._db.dim * 4

    def __repr__(self) -> str:
        return f"CosineDatabase(n={len(self)}, dim={self.dim}, layout='{self._db.layout}')"

    def append(self, vectors) -> None:
        """Add rows ``len(self) .. len(self) + m - 1``.

        Args:
            vectors: ``(m, d)``, any real dtype (stored float32).

        Raises:
            ValueError: shape not ``(m, d)``; a row holding NaN or inf (the message names
                the row of ``vectors``; nothing is added).
            TypeError: non-numeric vectors.
        """
        x = _rows("CosineDatabase.append", "vectors", vectors, self.dim)
        if x.shape[0]:
            self._db.append(x)

    def replace(self, positions, vectors) -> None:
        """Replace the rows at ``positions`` (each in ``[0, len(self))``; applied in order).

        Args:
            positions: ``(m,)`` integers.
            vectors: ``(m, d)``, any real dtype.

        Raises:
            ValueError: shapes that do not match; a position out of range or a row holding
                NaN or inf (nothing is replaced then).
            TypeError: non-integer positions, non-numeric vectors.
        """
        fn = "CosineDatabase.replace"
        pos = _as_array(fn, "positions", positions)
        if pos.dtype.kind not in "iu" or pos.ndim != 1:
            raise TypeError(f"{fn}: positions must be a 1-D array of integers, got dtype {pos.dtype} "
                            f"and shape {pos.shape}")
        x = _rows(fn, "vectors", vectors, self.dim)
        if x.shape[0] != pos.shape[0]:
            raise ValueError(f"{fn}: got {pos.shape[0]} positions but {x.shape[0]} vectors")
        if pos.size:
            if pos.dtype.kind == "u" and pos.max() > np.iinfo(np.int64).max:
                raise ValueError(f"{fn}: position {int(pos.max())} out of range [0, {len(self)})")
            self._db.set_rows(_contiguous(pos, np.int64), x)

    def truncate(self, n) -> None:
        """Keep the first ``n`` rows (``0 <= n <= len(self)``); the storage stays allocated.

        Raises:
            ValueError: ``n`` out of range. TypeError: ``n`` not an int.
        """
        n = _int("CosineDatabase.truncate", "n", n, 0, maximum=1 << 62)
        self._db.truncate(n)

    def reserve(self, rows) -> None:
        """Allocate room for ``rows`` rows now (appends up to it then never copy the storage)."""
        rows = _int("CosineDatabase.reserve", "rows", rows, 0, maximum=1 << 62)
        self._db.reserve(rows)

    def vector(self, i) -> np.ndarray:
        """Row ``i`` as stored: the L2-normalised float32 ``(d,)`` vector (zeros for a zero row).

        Raises:
            ValueError: ``i`` out of range. TypeError: ``i`` not an int.
        """
        i = _int("CosineDatabase.vector", "i", i, 0, maximum=1 << 62)
        return self._db.row(i)


# --------------------------------------------------------------------------------------
# optimisation
# --------------------------------------------------------------------------------------


def _real(fn: str, name: str, v, low: float, high: float | None = None,
          low_open: bool = False) -> float:
    """A finite real number (int, float or numpy scalar; not bool) in the given range."""
    if type(v) is not float:  # fast path for plain floats; bool is refused below
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{fn}: {name} must be a real number, got {type(v).__name__} {v!r}")
        v = float(v)
    if not _math.isfinite(v):
        raise ValueError(f"{fn}: {name} must be finite, got {v}")
    if v < low or (low_open and v == low) or (high is not None and v >= high):
        want = (f"in [{low:g}, {high:g})" if high is not None
                else f"{'>' if low_open else '>='} {low:g}")
        raise ValueError(f"{fn}: {name} must be {want}, got {v}")
    return v


def _state_array(fn: str, name: str, x) -> np.ndarray:
    """An array the kernel updates in place: float32, C-contiguous, aligned and writeable."""
    if type(x) is not np.ndarray and not isinstance(x, np.ndarray):
        raise TypeError(
            f"{fn}: {name} must be a numpy.ndarray of dtype float32 (it is updated in place), "
            f"got {type(x).__name__}"
        )
    if x.dtype != _F32:
        raise TypeError(
            f"{fn}: {name} must have dtype float32 (it is updated in place, so it cannot be "
            f"converted), got dtype {x.dtype}"
        )
    flags = x.flags
    if not (flags.c_contiguous and flags.aligned):
        raise ValueError(
            f"{fn}: {name} must be C-contiguous and aligned (it is updated in place); "
            f"use np.ascontiguousarray and keep the copy"
        )
    if not flags.writeable:
        raise ValueError(f"{fn}: {name} must be writeable (it is updated in place)")
    return x


def adam_update(param, grad, m, v, *, lr, beta_1, beta_2, epsilon, weight_decay=0.0, step):
    """One Adam (or AdamW) step, in place: Keras' update rule in one pass over memory.

    With ``t = step`` and every operation rounded to float32 separately::

        alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)      # in float64, then float32
        param *= 1 - lr * weight_decay                           # only if weight_decay != 0
        m = beta_1 * m + (1 - beta_1) * grad
        v = beta_2 * v + (1 - beta_2) * grad**2
        param -= alpha * m / (sqrt(v) + epsilon)

    This is the "efficient version" of Adam at the end of section 2 of Kingma & Ba, which
    Keras (``keras.optimizers.Adam``) implements: ``epsilon`` is added to ``sqrt(v)``,
    not to the bias-corrected ``sqrt(v_hat)`` as in PyTorch, so the two differ while
    ``v`` is small. The weight decay is decoupled (AdamW, applied to ``param`` before the
    Adam step, as Keras does). The result is bit-for-bit the float32 numpy computation of
    the same formula in this order (:class:`pixrank.optimizers.Adam`), on every SIMD path
    and thread count. ``step`` counts from 1 (the first update); the caller keeps it.

    Args:
        param: the parameters, updated in place.
        grad: the gradient of the loss with respect to ``param`` (read only; converted to
            float32 like the other ops' inputs).
        m: the first-moment estimate, updated in place (zeros before the first step).
        v: the second-moment estimate, updated in place (zeros before the first step).
        lr: learning rate, finite, ``>= 0`` (a schedule may reach 0).
        beta_1: first-moment decay, in ``[0, 1)`` (Keras: 0.9).
        beta_2: second-moment decay, in ``[0, 1)`` (Keras: 0.999).
        epsilon: finite, ``> 0`` (Keras: 1e-7).
        weight_decay: decoupled decay rate, finite, ``>= 0`` (AdamW; Keras: 0.004).
        step: the step number ``t``, an int ``>= 1``.

    Shape:
        ``param``, ``grad``, ``m`` and ``v`` share one shape, any rank (size 0 is a no-op).
        ``param``, ``m`` and ``v`` must be float32, C-contiguous, aligned, writeable and
        non-overlapping numpy arrays (they are written in place, so they are never
        converted or copied).

    Returns:
        None; ``param``, ``m`` and ``v`` hold the new values.

    Raises:
        TypeError: ``param``/``m``/``v`` not a float32 ndarray; ``grad`` not numeric;
            a hyper-parameter not a real number, ``step`` not an int.
        ValueError: shapes differ; ``param``/``m``/``v`` non-contiguous, read-only or
            sharing memory with each other or with ``grad``; a hyper-parameter out of
            range or not finite; ``step < 1``.

    Example:
        >>> import numpy as np
        >>> from pixrank import ops
        >>> w = np.ones(3, np.float32); m = np.zeros(3, np.float32); v = np.zeros(3, np.float32)
        >>> ops.adam_update(w, np.array([1, -1, 0], np.float32), m, v, lr=0.1,
        ...                 beta_1=0.9, beta_2=0.999, epsilon=1e-7, step=1)
        >>> w.round(4)
        array([0.9, 1.1, 1. ], dtype=float32)

    Reference:
        D. P. Kingma and J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
        sec. 2 (the efficient version) and Algorithm 1; I. Loshchilov and F. Hutter,
        "Decoupled Weight Decay Regularization", ICLR 2019 (AdamW); Keras 3
        ``keras/src/optimizers/adam.py``.
    """
    fn = "adam_update"
    param = _state_array(fn, "param", param)
    m = _state_array(fn, "m", m)
    v = _state_array(fn, "v", v)
    grad = _as_array(fn, "grad", grad)
    shape = param.shape
    for name, x in (("grad", grad), ("m", m), ("v", v)):
        if x.shape != shape:
            raise ValueError(
                f"{fn}: {name} must have the shape of param {shape}, got shape {x.shape}"
            )
    lr = _real(fn, "lr", lr, 0.0)
    beta_1 = _real(fn, "beta_1", beta_1, 0.0, 1.0)
    beta_2 = _real(fn, "beta_2", beta_2, 0.0, 1.0)
    epsilon = _real(fn, "epsilon", epsilon, 0.0, low_open=True)
    weight_decay = _real(fn, "weight_decay", weight_decay, 0.0)
    step = _int(fn, "step", step, 1, maximum=(1 << 63) - 1)
    if not (grad.dtype == _F32 and grad.flags.c_contiguous and grad.flags.aligned):
        grad = _f32(grad).reshape(shape)  # (np.ascontiguousarray makes a 0-d array 1-d)
    if param.size == 0:
        return None
    # The kernel re-checks shapes and writeability, and refuses any two of param, m, v and grad
    # that share memory (ValueError "adam_update: param and m must not share memory"): that
    # check is a pointer comparison there, and cost more than the update of a small tensor here.
    _K.adam_update(param, grad, m, v, lr, beta_1, beta_2, epsilon, weight_decay, step)
    return None


# --------------------------------------------------------------------------------------
# runtime
# --------------------------------------------------------------------------------------


def set_num_threads(n) -> None:
    """Set the number of threads every kernel uses (process-wide).

    Args:
        n: an int ``>= 1``.

    Raises:
        TypeError: n is not an int.
        ValueError: ``n < 1`` or ``n > 1024`` (the compiled module's limit).

    Example:
        >>> import pixrank
        >>> pixrank.set_num_threads(1); pixrank.get_num_threads()
        1
    """
    n = _int("set_num_threads", "n", n, 1, maximum=_MAX_THREADS)
    _K.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads the kernels use.

    The default is the number of CPUs this process may run on (its affinity mask, as
    ``len(os.sched_getaffinity(0))``), read when the kernels load; ``OMP_NUM_THREADS``
    does not change it, :func:`set_num_threads` does.

    Example:
        >>> import os, pixrank
        >>> 1 <= pixrank.get_num_threads() <= 1024
        True
    """
    return int(_K.get_num_threads())


def info() -> dict:
    """Build and runtime facts: version, SIMD path, threads, compiler.

    Returns:
        dict with ``version`` (``pixrank.__version__``), ``simd`` (the path in use, e.g.
        ``'avx2'``), ``simd_available`` (list), ``threads`` (int), ``threading``
        (``'openmp'`` or ``'serial'``), ``compiler`` and ``numpy`` (its version), plus any
        further fields the compiled module reports.

    Example:
        >>> import pixrank
        >>> {"version", "simd", "threads", "compiler"} <= set(pixrank.info())
        True
    """
    from . import __version__

    out = dict(_K.info())
    out["kernels_version"] = out.get("version", __version__)
    out["version"] = __version__
    out["numpy"] = np.__version__
    out["threads"] = get_num_threads()
    return out
