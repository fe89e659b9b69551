"""Reverse-mode automatic differentiation over a recorded graph of float32 numpy arrays.

A :class:`Tensor` holds ``data`` (a float32 numpy array), ``grad`` (None or an array of the
same shape) and, when it was computed from tensors that need gradients, the backward
closure of the operation that made it. ``loss.backward()`` walks the recorded graph in
reverse topological order and *accumulates* into ``.grad`` of every leaf tensor with
``requires_grad=True`` (e.g. a :class:`Parameter`). :func:`grad` returns the gradients
instead, touching no ``.grad``. The graph is freed after the backward pass.

Every differentiable function has its gradient beside its forward (micrograd / tinygrad
style). The heavy ones call the C++ kernels through :mod:`pixrank.ops` and stay fused:

* :func:`linear` with ``relu=True`` is one ``ops.matmul(x, w, bias, relu=True)`` forward and
  one ``ops.linear_backward(x, w, dy, y, relu=True)`` backward;
* :func:`conv2d` likewise with ``ops.conv2d`` / ``ops.conv2d_backward``;
* :func:`softmax_cross_entropy` (logits + integer labels -> mean loss) is one
  ``ops.softmax_cross_entropy`` call whose ``dlogits`` is kept for the backward pass;
  the softmax is never differentiated on its own.

Functions: :func:`matmul`, :func:`linear`, :func:`conv2d`, :func:`max_pool2d`,
:func:`global_avg_pool2d`, :func:`relu`, :func:`sigmoid`, :func:`tanh`, :func:`softplus`,
:func:`elu`, :func:`leaky_relu`, :func:`swish`, :func:`softmax`, :func:`log_softmax`,
:func:`softmax_cross_entropy`, :func:`add`, :func:`sub`, :func:`mul`, :func:`div`,
:func:`neg`, :func:`exp`, :func:`log`, :func:`sqrt`, :func:`square`, :func:`power`,
:func:`abs`, :func:`maximum`, :func:`clip`, :func:`sum`, :func:`mean`, :func:`reshape`,
:func:`flatten`, :func:`transpose`, :func:`concat`, :func:`stack`, :func:`take`,
:func:`l2_normalize`, :func:`embedding`, :func:`embedding_bag`, :func:`dropout`,
:func:`batch_norm`. Tensors support ``+ - * / @ **``, unary ``-``, ``.T``, ``.sum()``,
``.mean()``, ``.reshape()`` and slicing (``t[i]``, ``t[:, 1:3]``).

Example (a custom loss with a learned temperature, trained outside ``fit``)::

    from pixrank import autograd as ag
    from pixrank.nn.optimizers import Adam
    w = ag.Parameter(np.random.default_rng(0).normal(size=(8, 4)), name="w")
    t = ag.Parameter(np.array(1.0), name="temperature")
    opt = Adam(1e-2)
    logits = ag.matmul(ag.Tensor(x), w) * ag.exp(t)
    loss = ag.softmax_cross_entropy(logits, labels)
    opt.zero_grad([w, t]); loss.backward(); opt.step([w, t])
    # or, Keras style: grads = ag.grad(loss, [w, t]); opt.apply_gradients(zip(grads, [w, t]))

Broadcasting follows numpy; gradients of broadcast operands are summed back to the
operand's shape. Everything is float32 (inputs of other dtypes are converted).
"""
from __future__ import annotations

import builtins
import contextlib
import threading
import math

import numpy as np

from . import ops

__all__ = [
    "Tensor", "Parameter", "as_tensor", "no_grad", "enable_grad", "is_grad_enabled", "grad",
    "matmul", "linear", "conv2d", "max_pool2d", "global_avg_pool2d",
    "relu", "sigmoid", "tanh", "softplus", "elu", "leaky_relu", "swish", "softmax", "log_softmax",
    "softmax_cross_entropy", "add", "sub", "mul", "div", "neg", "exp", "log", "sqrt", "square",
    "power", "abs", "maximum", "clip", "sum", "mean", "reshape", "flatten", "transpose", "concat",
    "stack", "take", "l2_normalize", "embedding", "embedding_bag", "dropout", "batch_norm",
]

_F32 = np.float32
class _GradMode(threading.local):
    """Grad mode is per thread, as in PyTorch: ``no_grad`` in one thread (say, a web server's
    search) never turns recording off for a training loop in another."""

    enabled = True


_GRAD = _GradMode()


def is_grad_enabled() -> bool:
    """Whether operations are being recorded for differentiation (in this thread)."""
    return _GRAD.enabled


@contextlib.contextmanager
def no_grad():
    """Context manager: operations inside record no graph (inference; faster, less memory).

    The mode is thread-local: it affects only the calling thread."""
    prev, _GRAD.enabled = _GRAD.enabled, False
    try:
        yield
    finally:
        _GRAD.enabled = prev


@contextlib.contextmanager
def enable_grad():
    """Context manager: record operations even inside :func:`no_grad` (thread-local)."""
    prev, _GRAD.enabled = _GRAD.enabled, True
    try:
        yield
    finally:
        _GRAD.enabled = prev


def _f32(x) -> np.ndarray:
    if isinstance(x, np.ndarray) and x.dtype == _F32:
        return x
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"autograd: expected numeric data, got dtype {a.dtype}")
    return a.astype(_F32)


class Tensor:
    """A float32 array that records the operations applied to it.

    Args:
        data: array-like (converted to float32 numpy).
        requires_grad: a leaf whose gradient is wanted (``.grad`` is filled by ``backward``).
        name: optional label (shown in ``repr``).

    Attributes:
        data: ``np.ndarray`` float32.
        grad: ``None`` or float32 array of ``data.shape`` (accumulated by :meth:`backward`).
        requires_grad: whether gradients flow to/through this tensor.
    """

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "name", "_logits", "__weakref__")
    __array_priority__ = 1000  # ndarray <op> Tensor -> Tensor.__r<op>__

    def __init__(self, data, requires_grad: bool = False, name: str | None = None):
        self.data = _f32(data)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None  # (backward_fn, parents) for a non-leaf
        self.name = name
        self._logits = None  # set by softmax(): the logits this probability tensor came from

    # ---- numpy-like properties
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    dtype = property(lambda self: self.data.dtype)

    def __len__(self):
        return len(self.data)

    def numpy(self) -> np.ndarray:
        """The data (not a copy)."""
        return self.data

    def item(self) -> float:
        return self.data.item()

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    def __repr__(self):
        extra = f", name={self.name!r}" if self.name else ""
        rg = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.data.shape}{rg}{extra})"

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    def detach(self) -> "Tensor":
        """A new leaf sharing ``data``, with no graph."""
        return Tensor(self.data)

    def zero_grad(self) -> None:
        self.grad = None

    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Back-propagate from this tensor, accumulating into ``.grad`` of the leaves.

        Args:
            grad: the gradient of the final objective w.r.t. this tensor; default 1 for a
                one-element tensor.
            retain_graph: keep the graph for another backward pass (default frees it).

        Raises:
            RuntimeError: the tensor does not require grad, or it has several elements and
                no ``grad`` is given.
        """
        fresh: set = set()
        leaves = _backprop(self, grad, retain_graph, fresh)
        for t, g in leaves:
            if (t.grad is None and id(t) in fresh and type(g) is np.ndarray and g.dtype == _F32
                    and g.shape == t.data.shape):
                t.grad = g  # a new array nothing else refers to: stored as it is, not copied
                continue
            if g.shape != t.data.shape:
                g = np.broadcast_to(g, t.data.shape)
            # own, writable copies: a gradient array may be shared between leaves (add), or be
            # the caller's seed gradient or an array an op keeps for its backward pass
            t.grad = np.array(g, dtype=_F32) if t.grad is None else t.grad + g

    # ---- operators
    def __add__(self, o): return add(self, o)
    def __radd__(self, o): return add(o, self)
    def __sub__(self, o): return sub(self, o)
    def __rsub__(self, o): return sub(o, self)
    def __mul__(self, o): return mul(self, o)
    def __rmul__(self, o): return mul(o, self)
    def __truediv__(self, o): return div(self, o)
    def __rtruediv__(self, o): return div(o, self)
    def __neg__(self): return neg(self)
    def __matmul__(self, o): return matmul(self, o)
    def __rmatmul__(self, o): return matmul(o, self)
    def __pow__(self, p): return power(self, p)
    def __getitem__(self, idx): return _getitem(self, idx)

    @property
    def T(self) -> "Tensor":
        return transpose(self)

    def sum(self, axis=None, keepdims=False): return sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return mean(self, axis, keepdims)
    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return reshape(self, shape)
    def transpose(self, axes=None): return transpose(self, axes)


class Parameter(Tensor):
    """A trainable leaf tensor (``requires_grad=True``), e.g. a layer's kernel or a free
    scalar such as a learned temperature. Models discover Parameters stored as attributes.

    Args:
        data: initial value (copied to float32).
        name: label used in summaries and saved files.
        trainable: False for state updated outside gradient descent (BatchNormalization's
            moving statistics); optimizers skip such parameters.
    """

    __slots__ = ("trainable",)

    def __init__(self, data, name: str | None = None, trainable: bool = True):
        super().__init__(np.array(data, dtype=_F32, copy=True), requires_grad=trainable, name=name)
        self.trainable = bool(trainable)

    def assign(self, value) -> None:
        """Copy ``value`` into the data in place (shape must match)."""
        value = np.asarray(value, dtype=_F32)
        if value.shape != self.data.shape:
            raise ValueError(f"Parameter {self.name!r}: cannot assign shape {value.shape} to shape {self.data.shape}")
        np.copyto(self.data, value)

    def __repr__(self):
        return f"Parameter(name={self.name!r}, shape={self.data.shape}, trainable={self.trainable})"


def as_tensor(x) -> Tensor:
    """``x`` if it is a Tensor, else a constant (no-grad) Tensor of it as float32."""
    return x if isinstance(x, Tensor) else Tensor(x)


_t = as_tensor


def _make(data: np.ndarray, backward, parents) -> Tensor:
    """A result tensor; records ``backward`` if grad mode is on and any parent needs grad.

    ``backward(g)`` returns one gradient (or None) per parent, each of the parent's shape.
    """
    out = Tensor.__new__(Tensor)
    out.data = data
    out.grad = None
    out.name = None
    out._logits = None
    out.requires_grad = False
    out._ctx = None
    if _GRAD.enabled:
        for p in parents:  # a plain loop: any(generator) costs ~1 us per op
            if p.requires_grad:
                out.requires_grad = True
                out._ctx = (backward, parents)
                break
    return out


def _needs(*ts) -> bool:
    if not _GRAD.enabled:
        return False
    for t in ts:
        if t.requires_grad:
            return True
    return False


def _topo(root: Tensor) -> list:
    """Non-leaf nodes reachable from ``root`` in topological order (parents first)."""
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen or node._ctx is None:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for p in node._ctx[1]:
            if p.requires_grad and p._ctx is not None and id(p) not in seen:
                stack.append((p, False))
    return order


def _fresh(backward):
    """Mark an op's backward closure as returning new arrays that nothing else refers to (e.g.
    straight from a kernel), one per parent: a leaf's first gradient is then stored as it is
    by :meth:`Tensor.backward` instead of copied."""
    backward.fresh = True
    return backward


def _backprop(root: Tensor, grad, retain_graph: bool, fresh: set | None = None) -> list:
    """Run the backward pass; return ``[(leaf, grad), ...]`` for leaves requiring grad.

    When ``fresh`` is a set, the ids of the leaves whose returned gradient is a new array that
    nothing else refers to (from a :func:`_fresh` backward, or a sum made here) are added to it.
    """
    if not root.requires_grad:
        raise RuntimeError("backward: this tensor does not require grad (no Parameter or "
                           "requires_grad=True tensor was used to compute it, or it was made under no_grad)")
    if grad is None:
        if root.data.size != 1:
            raise RuntimeError(f"backward: grad must be given for a non-scalar tensor of shape {root.data.shape}")
        g0 = np.ones(root.data.shape, dtype=_F32)
    else:
        g0 = _f32(grad)
        if g0.shape != root.data.shape:
            raise ValueError(f"backward: grad shape {g0.shape} differs from the tensor's {root.data.shape}")
    if root._ctx is None:
        return [(root, g0)]
    grads = {id(root): g0}
    leaves: dict = {}
    for node in reversed(_topo(root)):
        g = grads.pop(id(node), None)
        fn, parents = node._ctx
        if not retain_graph:
            node._ctx = None
        if g is None:
            continue
        pgs = fn(g)
        owned = fresh is not None and getattr(fn, "fresh", False)
        for p, pg in zip(parents, pgs):
            if pg is None or not p.requires_grad:
                continue
            k = id(p)
            if p._ctx is None:
                if k in leaves:
                    leaves[k] = (p, leaves[k][1] + pg)
                    if fresh is not None:
                        fresh.add(k)  # the sum is a new array
                else:
                    leaves[k] = (p, pg)
                    if owned:
                        fresh.add(k)
            elif k in grads:
                grads[k] = grads[k] + pg
            else:
                grads[k] = pg
    return list(leaves.values())


def grad(output: Tensor, inputs, grad_output=None, retain_graph: bool = False) -> list:
    """Gradients of ``output`` w.r.t. each tensor of ``inputs`` (``.grad`` is not touched).

    Args:
        output: a tensor (one element unless ``grad_output`` is given).
        inputs: leaf tensors (e.g. Parameters).
        grad_output: seed gradient for a non-scalar output.

    Returns:
        A list of float32 arrays, zeros for inputs the output does not depend on.
    """
    inputs = list(inputs)
    got = {id(t): g for t, g in _backprop(output, grad_output, retain_graph)}
    out = []
    for t in inputs:
        g = got.get(id(t))
        if g is None:
            g = np.zeros_like(t.data)
        elif g.shape != t.data.shape:
            g = np.array(np.broadcast_to(g, t.data.shape))
        out.append(g)
    return out


# ----------------------------------------------------------------------------- helpers

def _unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``g`` down to ``shape`` (the adjoint of numpy broadcasting)."""
    if g.shape == shape:
        return g
    nd = g.ndim - len(shape)
    if nd > 0:
        g = g.sum(axis=tuple(range(nd)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def _check_2d(name, **arrays):
    for k, a in arrays.items():
        if a.ndim != 2:
            raise ValueError(f"{name}: {k} must be 2-D, got shape {a.shape}")


# ----------------------------------------------------------------------------- linear algebra

def matmul(a, b, trans_a: bool = False, trans_b: bool = False) -> Tensor:
    """``op(a) @ op(b)`` for 2-D tensors, ``op`` = transpose when the flag is set (``ops.matmul``).

    Shapes: a ``(M, K)`` (``(K, M)`` if trans_a), b ``(K, N)`` (``(N, K)`` if trans_b) -> ``(M, N)``.
    """
    a, b = _t(a), _t(b)
    _check_2d("matmul", a=a.data, b=b.data)
    y = ops.matmul(a.data, b.data, trans_a=trans_a, trans_b=trans_b)
    if not _needs(a, b):
        return Tensor(y)
    A, B = a.data, b.data

    def backward(g):
        da = db = None
        if a.requires_grad:
            if not trans_a:
                da = ops.matmul(g, B, trans_b=not trans_b)
            else:
                da = ops.matmul(B, g, trans_a=trans_b, trans_b=True)
        if b.requires_grad:
            if not trans_b:
                db = ops.matmul(A, g, trans_a=not trans_a)
            else:
                db = ops.matmul(g, A, trans_a=True, trans_b=trans_a)
        return da, db

    return _make(y, backward, (a, b))


def linear(x, w, b=None, relu: bool = False) -> Tensor:
    """Fully connected layer ``y = x @ w + b`` (then ``max(y, 0)`` if ``relu``), fused.

    One ``ops.matmul(x, w, b, relu)`` forward; one ``ops.linear_backward(x, w, dy, y, relu)``
    backward, which skips the ``dx`` product when ``x`` needs no gradient (a first layer) and
    the ``dw`` product when ``w`` needs none (a frozen kernel).

    Shapes: x ``(M, K)``, w ``(K, N)``, b ``(N,)`` or None -> ``(M, N)``.
    """
    x, w = _t(x), _t(w)
    _check_2d("linear", x=x.data, w=w.data)
    bt = _t(b) if b is not None else None
    y = ops.matmul(x.data, w.data, bias=None if bt is None else bt.data, relu=relu)
    parents = (x, w) if bt is None else (x, w, bt)
    if not _needs(*parents):
        return Tensor(y)
    X, W = x.data, w.data

    @_fresh
    def backward(g):
        dx, dw, db = ops.linear_backward(X, W, g, y if relu else None, relu,
                                         need_dx=x.requires_grad, need_dw=w.requires_grad)
        return (dx, dw) if bt is None else (dx, dw, db)

    return _make(y, backward, parents)


def conv2d(x, w, b=None, stride=1, padding="valid", relu: bool = False) -> Tensor:
    """2-D convolution (cross-correlation) over NHWC input with HWIO weights, fused bias+ReLU.

    One ``ops.conv2d`` forward, one ``ops.conv2d_backward`` backward.

    Shapes: x ``(B, H, W, C)``, w ``(kh, kw, C, F)``, b ``(F,)`` or None -> ``(B, OH, OW, F)``.
    ``stride`` an int or (sh, sw); ``padding`` 'valid', 'same' or an int.
    """
    x, w = _t(x), _t(w)
    bt = _t(b) if b is not None else None
    y = ops.conv2d(x.data, w.data, bias=None if bt is None else bt.data, stride=stride,
                   padding=padding, relu=relu)
    parents = (x, w) if bt is None else (x, w, bt)
    if not _needs(*parents):
        return Tensor(y)
    X, W = x.data, w.data

    @_fresh
    def backward(g):
        dx, dw, db = ops.conv2d_backward(X, W, g, stride=stride, padding=padding,
                                         y=y if relu else None, relu=relu)
        if not x.requires_grad:
            dx = None
        return (dx, dw) if bt is None else (dx, dw, db)

    return _make(y, backward, parents)


def max_pool2d(x, pool=2, stride=None) -> Tensor:
    """Max pooling over NHWC windows, no padding (``ops.max_pool2d``; backward routes the
    gradient to the arg-max of each window via ``ops.max_pool2d_backward``)."""
    x = _t(x)
    y, arg = ops.max_pool2d(x.data, pool=pool, stride=stride)
    if not _needs(x):
        return Tensor(y)
    shape = x.data.shape

    def backward(g):
        return (ops.max_pool2d_backward(g, arg, shape),)

    return _make(y, backward, (x,))


def global_avg_pool2d(x) -> Tensor:
    """Mean over H and W of NHWC input: ``(B, H, W, C) -> (B, C)``."""
    x = _t(x)
    if x.data.ndim != 4:
        raise ValueError(f"global_avg_pool2d: x must be 4-D (B, H, W, C), got shape {x.data.shape}")
    return mean(x, axis=(1, 2))


# ----------------------------------------------------------------------------- activations

def relu(x) -> Tensor:
    """``max(x, 0)``."""
    x = _t(x)
    y = np.maximum(x.data, 0)
    if not _needs(x):
        return Tensor(y)
    return _make(y, lambda g: (g * (y > 0),), (x,))


def sigmoid(x) -> Tensor:
    """``1 / (1 + exp(-x))``, computed stably."""
    x = _t(x)
    d = x.data
    e = np.exp(-np.abs(d))
    y = np.where(d >= 0, 1 / (1 + e), e / (1 + e)).astype(_F32)
    if not _needs(x):
        return Tensor(y)
    return _make(y, lambda g: (g * y * (1 - y),), (x,))


def tanh(x) -> Tensor:
    x = _t(x)
    y = np.tanh(x.data)
    if not _needs(x):
        return Tensor(y)
    return _make(y, lambda g: (g * (1 - y * y),), (x,))


def softplus(x) -> Tensor:
    """``log(1 + exp(x))``, stably."""
    x = _t(x)
    d = x.data
    y = (np.maximum(d, 0) + np.log1p(np.exp(-np.abs(d)))).astype(_F32)
    if not _needs(x):
        return Tensor(y)
    return _make(y, lambda g: (g * sigmoid(d).data,), (x,))


def elu(x, alpha: float = 1.0) -> Tensor:
    x = _t(x)
    d = x.data
    em = np.expm1(np.minimum(d, 0))
    y = np.where(d > 0, d, alpha * em).astype(_F32)
    if not _needs(x):
        return Tensor(y)
    return _make(y, lambda g: (g * np.where(d > 0, 1, alpha * (em + 1)).astype(_F32),), (x,))


def leaky_relu(x, negative_slope: float = 0.2) -> Tensor:
    """``x`` if ``x > 0`` else ``negative_slope * x`` (Keras' default slope 0.2)."""
    x = _t(x)
    d = x.data
    y = np.where(d > 0, d, d * _F32(negative_slope)).astype(_F32)
    if not _needs(x):
        return Tensor(y)
    return _make(y, lambda g: (np.where(d > 0, g, g * _F32(negative_slope)),), (x,))


def swish(x) -> Tensor:
    """``x * sigmoid(x)`` (SiLU)."""
    x = _t(x)
    return mul(x, sigmoid(x))


def _rows(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x


def softmax(x) -> Tensor:
    """Softmax over the last axis (``ops.softmax``).

    The result remembers its logits (``result._logits``): the cross-entropy losses use them
    through the fused, stable ``ops.softmax_cross_entropy`` instead of differentiating the
    softmax. Differentiating the softmax directly is also supported
    (``dx = y * (g - sum(g * y))``).
    """
    x = _t(x)
    if x.data.ndim == 0:
        raise ValueError("softmax: needs at least 1 dimension")
    y = ops.softmax(_rows(x.data)).reshape(x.data.shape)
    if not _needs(x):
        out = Tensor(y)
    else:
        out = _make(y, lambda g: (y * (g - (g * y).sum(axis=-1, keepdims=True)),), (x,))
    out._logits = x
    return out


def log_softmax(x) -> Tensor:
    """``x - logsumexp(x)`` over the last axis (``ops.log_softmax``); backward
    ``g - softmax(x) * sum(g)``."""
    x = _t(x)
    if x.data.ndim == 0:
        raise ValueError("log_softmax: needs at least 1 dimension")
    y = ops.log_softmax(_rows(x.data)).reshape(x.data.shape)
    if not _needs(x):
        return Tensor(y)
    return _make(y, lambda g: (g - np.exp(y) * g.sum(axis=-1, keepdims=True),), (x,))


def softmax_cross_entropy(logits, labels) -> Tensor:
    """Mean softmax cross-entropy of ``logits`` against integer ``labels`` (fused kernel).

    ``loss = mean_i( logsumexp(z_i) - z_i[labels_i] )``; backward
    ``g * (softmax(z) - onehot(labels)) / N`` from the kernel's ``dlogits``.

    Shapes: logits ``(N, C)`` float; labels ``(N,)`` integers in ``[0, C)`` -> scalar tensor.

    Raises:
        ValueError: wrong shapes, labels out of range or not whole numbers; TypeError:
            labels of a non-numeric dtype (``ops.softmax_cross_entropy`` names them).
    """
    z = _t(logits)
    # ops validates the labels (integer ids, or floats holding whole numbers, in [0, C))
    loss, dlogits = ops.softmax_cross_entropy(z.data, labels)
    y = np.array(loss, dtype=_F32)
    if not _needs(z):
        return Tensor(y)
    return _make(y, lambda g: (dlogits * g if float(g) != 1.0 else dlogits,), (z,))


# ----------------------------------------------------------------------------- elementwise

def add(a, b) -> Tensor:
    """``a + b`` with numpy broadcasting."""
    a, b = _t(a), _t(b)
    y = a.data + b.data
    if not _needs(a, b):
        return Tensor(y)
    sa, sb = a.data.shape, b.data.shape
    return _make(y, lambda g: (_unbroadcast(g, sa), _unbroadcast(g, sb)), (a, b))


def sub(a, b) -> Tensor:
    a, b = _t(a), _t(b)
    y = a.data - b.data
    if not _needs(a, b):
        return Tensor(y)
    sa, sb = a.data.shape, b.data.shape
    return _make(y, lambda g: (_unbroadcast(g, sa), _unbroadcast(-g, sb)), (a, b))


def mul(a, b) -> Tensor:
    """``a * b`` with numpy broadcasting."""
    a, b = _t(a), _t(b)
    A, B = a.data, b.data
    y = A * B
    if not _needs(a, b):
        return Tensor(y)

    def backward(g):
        return (_unbroadcast(g * B, A.shape) if a.requires_grad else None,
                _unbroadcast(g * A, B.shape) if b.requires_grad else None)

    return _make(y, backward, (a, b))


def div(a, b) -> Tensor:
    a, b = _t(a), _t(b)
    A, B = a.data, b.data
    y = A / B
    if not _needs(a, b):
        return Tensor(y)

    def backward(g):
        return (_unbroadcast(g / B, A.shape) if a.requires_grad else None,
                _unbroadcast(-g * y / B, B.shape) if b.requires_grad else None)

    return _make(y, backward, (a, b))


def neg(x) -> Tensor:
    x = _t(x)
    return _make(-x.data, lambda g: (-g,), (x,)) if _needs(x) else Tensor(-x.data)


def exp(x) -> Tensor:
    x = _t(x)
    y = np.exp(x.data)
    return _make(y, lambda g: (g * y,), (x,)) if _needs(x) else Tensor(y)


def log(x) -> Tensor:
    x = _t(x)
    d = x.data
    y = np.log(d)
    return _make(y, lambda g: (g / d,), (x,)) if _needs(x) else Tensor(y)


def sqrt(x) -> Tensor:
    x = _t(x)
    y = np.sqrt(x.data)
    return _make(y, lambda g: (g * 0.5 / y,), (x,)) if _needs(x) else Tensor(y)


def square(x) -> Tensor:
    x = _t(x)
    d = x.data
    return _make(d * d, lambda g: (2 * g * d,), (x,)) if _needs(x) else Tensor(d * d)


def power(x, p: float) -> Tensor:
    """``x ** p`` for a constant exponent ``p``."""
    x = _t(x)
    if isinstance(p, Tensor):
        raise TypeError("power: the exponent must be a Python number")
    d = x.data
    p = float(p)
    y = np.power(d, p).astype(_F32)
    return _make(y, lambda g: (g * p * np.power(d, p - 1),), (x,)) if _needs(x) else Tensor(y)


def abs(x) -> Tensor:  # noqa: A001 - mirrors numpy's name
    x = _t(x)
    d = x.data
    y = np.abs(d)
    return _make(y, lambda g: (g * np.sign(d),), (x,)) if _needs(x) else Tensor(y)


def maximum(a, b) -> Tensor:
    """Elementwise max; ties send the gradient to ``a``."""
    a, b = _t(a), _t(b)
    m = a.data >= b.data
    y = np.where(m, a.data, b.data)
    if not _needs(a, b):
        return Tensor(y)
    sa, sb = a.data.shape, b.data.shape
    return _make(y, lambda g: (_unbroadcast(g * m, sa), _unbroadcast(g * ~m, sb)), (a, b))


def clip(x, lo: float, hi: float) -> Tensor:
    """Clip to ``[lo, hi]``; the gradient is zero outside."""
    x = _t(x)
    d = x.data
    y = np.clip(d, lo, hi)
    inside = (d >= lo) & (d <= hi)
    return _make(y, lambda g: (g * inside,), (x,)) if _needs(x) else Tensor(y)


# ----------------------------------------------------------------------------- reductions / shape

def _norm_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(a % ndim for a in axis)


def sum(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Sum over ``axis`` (all axes by default)."""
    x = _t(x)
    y = np.asarray(x.data.sum(axis=axis, keepdims=keepdims), dtype=_F32)
    if not _needs(x):
        return Tensor(y)
    shape = x.data.shape
    axes = _norm_axes(axis, x.data.ndim)

    def backward(g):
        if not keepdims:
            g = np.expand_dims(g, axes)
        return (np.broadcast_to(g, shape),)

    return _make(y, backward, (x,))


def mean(x, axis=None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis`` (all axes by default)."""
    x = _t(x)
    axes = _norm_axes(axis, x.data.ndim)
    n = 1
    for a in axes:
        n *= x.data.shape[a]
    y = np.asarray(x.data.mean(axis=axis, keepdims=keepdims), dtype=_F32)
    if not _needs(x):
        return Tensor(y)
    shape = x.data.shape
    inv = _F32(1.0 / max(n, 1))

    def backward(g):
        if not keepdims:
            g = np.expand_dims(g, axes)
        return (np.broadcast_to(g * inv, shape),)

    return _make(y, backward, (x,))


def reshape(x, shape) -> Tensor:
    """Reshape (``-1`` allowed). Raises ValueError when the sizes differ."""
    x = _t(x)
    try:
        y = x.data.reshape(shape)
    except ValueError:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {x.data.shape} "
                         f"({x.data.size} elements) to {tuple(shape)}") from None
    if not _needs(x):
        return Tensor(y)
    s = x.data.shape
    return _make(y, lambda g: (g.reshape(s),), (x,))


def flatten(x) -> Tensor:
    """``(B, ...) -> (B, prod(...))``."""
    x = _t(x)
    return reshape(x, (x.data.shape[0], -1))


def transpose(x, axes=None) -> Tensor:
    """Permute axes (reverse them by default)."""
    x = _t(x)
    y = np.transpose(x.data, axes)
    if not _needs(x):
        return Tensor(y)
    inv = None if axes is None else tuple(np.argsort(axes))
    return _make(y, lambda g: (np.transpose(g, inv),), (x,))


def concat(tensors, axis: int = -1) -> Tensor:
    """Concatenate along ``axis``."""
    ts = [_t(t) for t in tensors]
    if not ts:
        raise ValueError("concat: needs at least one tensor")
    y = np.concatenate([t.data for t in ts], axis=axis)
    if not _needs(*ts):
        return Tensor(y)
    ax = axis % y.ndim
    bounds = np.cumsum([t.data.shape[ax] for t in ts])[:-1]

    def backward(g):
        return tuple(np.split(g, bounds, axis=ax))

    return _make(y, backward, tuple(ts))


def stack(tensors, axis: int = 0) -> Tensor:
    """Stack along a new ``axis``."""
    ts = [_t(t) for t in tensors]
    if not ts:
        raise ValueError("stack: needs at least one tensor")
    y = np.stack([t.data for t in ts], axis=axis)
    if not _needs(*ts):
        return Tensor(y)
    ax = axis % y.ndim
    return _make(y, lambda g: tuple(np.take(g, i, axis=ax) for i in range(len(ts))), tuple(ts))


def take(x, indices, axis: int = 0) -> Tensor:
    """Gather slices ``x[indices]`` along ``axis`` (repeated indices accumulate gradients)."""
    x = _t(x)
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise ValueError(f"take: indices must be integers, got dtype {idx.dtype}")
    n = x.data.shape[axis]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise ValueError(f"take: index out of range for axis {axis} of size {n}")
    y = np.take(x.data, idx, axis=axis)
    if not _needs(x):
        return Tensor(y)
    shape = x.data.shape

    def backward(g):
        gx = np.zeros(shape, dtype=_F32)
        gm = np.moveaxis(gx, axis, 0)
        gg = np.moveaxis(g, axis, 0) if idx.ndim == 1 else g
        if idx.ndim != 1:
            gg = np.moveaxis(g.reshape(g.shape[:axis] + (-1,) + g.shape[axis + idx.ndim:]), axis, 0)
        np.add.at(gm, idx.reshape(-1), gg)
        return (gx,)

    return _make(y, backward, (x,))


def _getitem(x: Tensor, idx) -> Tensor:
    y = x.data[idx]
    if not _needs(x):
        return Tensor(y)
    shape = x.data.shape

    def backward(g):
        gx = np.zeros(shape, dtype=_F32)
        np.add.at(gx, idx, g)
        return (gx,)

    return _make(np.array(y, dtype=_F32), backward, (x,))


def l2_normalize(x, axis: int = -1, epsilon: float = 1e-12) -> Tensor:
    """``x / sqrt(max(sum(x**2, axis), epsilon))`` (as ``tf.math.l2_normalize``).

    Backward: where ``sum(x**2) > epsilon``, ``(g - y * sum(g * y)) / norm``; else ``g / sqrt(epsilon)``.
    """
    x = _t(x)
    d = x.data
    ss = (d * d).sum(axis=axis, keepdims=True)
    big = ss > epsilon
    norm = np.sqrt(np.maximum(ss, _F32(epsilon))).astype(_F32)
    y = d / norm
    if not _needs(x):
        return Tensor(y)

    def backward(g):
        proj = (g * y).sum(axis=axis, keepdims=True)
        return (np.where(big, (g - y * proj) / norm, g / norm).astype(_F32),)

    return _make(y, backward, (x,))


# ----------------------------------------------------------------------------- embeddings

def _check_ids(name, ids: np.ndarray, n: int) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"{name}: ids must be integers, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        bad = ids.min() if ids.min() < 0 else ids.max()
        raise ValueError(f"{name}: id {int(bad)} out of range for a table of {n} rows (expected 0..{n - 1})")
    return ids


def _row_scatter_plan(flat_ids: np.ndarray):
    """Sort-and-segment plan for adding rows into a table by id (faster than ``np.add.at``)."""
    order = np.argsort(flat_ids, kind="stable")
    sid = flat_ids[order]
    first = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]]) if len(sid) else np.zeros(0, np.int64)
    return order, first, sid[first]


def _scatter_rows(plan, rows: np.ndarray, shape) -> np.ndarray:
    """``out[ids[i]] += rows[i]`` into zeros of ``shape`` using a :func:`_row_scatter_plan`."""
    order, first, uniq = plan
    out = np.zeros(shape, dtype=_F32)
    if len(order):
        out[uniq] = np.add.reduceat(rows[order], first, axis=0)
    return out


def embedding(ids, table) -> Tensor:
    """Row lookup ``table[ids]``: ids any integer shape ``S``, table ``(V, D)`` -> ``S + (D,)``.

    Backward scatters-adds the gradient rows into a dense ``(V, D)`` gradient.

    Raises:
        ValueError: non-integer ids, ids outside ``[0, V)``.
    """
    table = _t(table)
    if table.data.ndim != 2:
        raise ValueError(f"embedding: table must be 2-D (V, D), got shape {table.data.shape}")
    ids = _check_ids("embedding", ids, table.data.shape[0])
    y = table.data[ids]
    if not _needs(table):
        return Tensor(y)
    shape = table.data.shape
    plan = _row_scatter_plan(ids.reshape(-1))

    def backward(g):
        return (_scatter_rows(plan, g.reshape(-1, shape[1]), shape),)

    return _make(y, backward, (table,))


def embedding_bag(ids, offsets, table, mode: str = "mean") -> Tensor:
    """Per-bag mean (or sum) of embedding rows, for ragged bags (PyTorch's ``EmbeddingBag``).

    Bag ``i`` holds ``ids[offsets[i]:offsets[i+1]]`` (the last bag runs to the end of ``ids``).
    An empty bag gives a zero row.

    Shapes: ids ``(T,)`` integers in ``[0, V)``; offsets ``(B,)`` non-decreasing, starting at 0,
    each ``<= T``; table ``(V, D)`` -> ``(B, D)``.

    Raises:
        ValueError: bad ids, offsets not 1-D / not starting at 0 / decreasing / beyond ``T``,
            unknown ``mode``.
    """
    table = _t(table)
    if mode not in ("mean", "sum"):
        raise ValueError(f"embedding_bag: mode must be 'mean' or 'sum', got {mode!r}")
    if table.data.ndim != 2:
        raise ValueError(f"embedding_bag: table must be 2-D (V, D), got shape {table.data.shape}")
    ids = _check_ids("embedding_bag", ids, table.data.shape[0])
    if ids.ndim != 1:
        raise ValueError(f"embedding_bag: ids must be 1-D (T,), got shape {ids.shape}")
    off = np.asarray(offsets)
    if off.ndim != 1 or off.dtype.kind not in "iu":
        raise ValueError(f"embedding_bag: offsets must be a 1-D integer array, got shape {off.shape} dtype {off.dtype}")
    T, B = len(ids), len(off)
    if B and (off[0] != 0 or np.any(np.diff(off) < 0) or off[-1] > T):
        raise ValueError(f"embedding_bag: offsets must start at 0, be non-decreasing and <= len(ids)={T}, "
                         f"got {off.tolist() if B <= 10 else off}")
    lengths = np.diff(np.append(off, T)).astype(np.int64)
    D = table.data.shape[1]
    y = np.zeros((B, D), dtype=_F32)
    full = lengths > 0
    if T:
        # each non-empty bag's segment ends where the next non-empty one starts
        y[full] = np.add.reduceat(table.data[ids], off[full], axis=0)
    scale = (1.0 / np.maximum(lengths, 1)).astype(_F32)[:, None] if mode == "mean" else None
    if scale is not None:
        y *= scale
    if not _needs(table):
        return Tensor(y)
    shape = table.data.shape
    seg = np.repeat(np.arange(B), lengths)
    plan = _row_scatter_plan(ids)

    def backward(g):
        gr = (g * scale)[seg] if scale is not None else g[seg]
        return (_scatter_rows(plan, gr, shape),)

    return _make(y, backward, (table,))


# ----------------------------------------------------------------------------- regularisation / norm

def dropout(x, rate: float, rng: np.random.Generator, training: bool = True) -> Tensor:
    """Inverted dropout: zero each element with probability ``rate``, scale the rest by
    ``1 / (1 - rate)`` (Srivastava et al. 2014). Identity when not training or ``rate == 0``."""
    x = _t(x)
    if not 0 <= rate < 1:
        raise ValueError(f"dropout: rate must be in [0, 1), got {rate}")
    if not training or rate == 0:
        return x
    keep = rng.random(x.data.shape, dtype=_F32) >= _F32(rate)
    m = keep * _F32(1.0 / (1.0 - rate))
    y = x.data * m
    if not _needs(x):
        return Tensor(y)
    return _make(y, lambda g: (g * m,), (x,))


def batch_norm(x, gamma, beta, epsilon: float = 1e-3):
    """Batch normalisation in training mode over all axes but the last (Ioffe & Szegedy 2015).

    ``y = gamma * (x - mean) / sqrt(var + epsilon) + beta`` with the batch's mean and biased
    variance.

    Shapes: x ``(..., C)``; gamma, beta ``(C,)`` (either may be None: 1 / 0).

    Returns:
        ``(y, batch_mean, batch_var)`` — ``y`` a Tensor, the statistics float32 arrays ``(C,)``
        (for the moving averages).
    """
    x = _t(x)
    g_t = _t(gamma) if gamma is not None else None
    b_t = _t(beta) if beta is not None else None
    d = x.data
    axes = tuple(range(d.ndim - 1))
    n = d.size // d.shape[-1]
    mu = d.mean(axis=axes, dtype=np.float64).astype(_F32)
    xc = d - mu
    var = (xc * xc).mean(axis=axes, dtype=np.float64).astype(_F32)
    inv = (1.0 / np.sqrt(var.astype(np.float64) + epsilon)).astype(_F32)
    xhat = xc * inv
    y = xhat * g_t.data if g_t is not None else xhat.copy()
    if b_t is not None:
        y += b_t.data
    parents = tuple(p for p in (x, g_t, b_t) if p is not None)
    if not _needs(*parents):
        return Tensor(y), mu, var

    def backward(g):
        dgamma = (g * xhat).sum(axis=axes) if g_t is not None else None
        dbeta = g.sum(axis=axes) if b_t is not None else None
        dx = None
        if x.requires_grad:
            dxhat = g * g_t.data if g_t is not None else g
            s1 = dxhat.sum(axis=axes)
            s2 = (dxhat * xhat).sum(axis=axes)
            dx = (inv / n) * (n * dxhat - s1 - xhat * s2)
        out = [dx]
        if g_t is not None:
            out.append(dgamma)
        if b_t is not None:
            out.append(dbeta)
        return tuple(out)

    return _make(y, backward, parents), mu, var
