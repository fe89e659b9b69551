"""Losses with Keras names (``pixrank.losses``).

A loss object is called as ``loss(y_true, y_pred) -> scalar Tensor`` (the mean over the
batch) and is differentiable in ``y_pred`` (a :class:`pixrank.autograd.Tensor`).

* :class:`CategoricalCrossentropy` (``'categorical_crossentropy'``): one-hot (or soft) targets
  ``(N, C)``. :class:`SparseCategoricalCrossentropy` (``'sparse_categorical_crossentropy'``):
  integer targets ``(N,)``. Both take probabilities by default or logits with
  ``from_logits=True``. When the probabilities come from a softmax (``Dense(10,
  activation='softmax')``), the loss reads the logits the softmax remembers and runs the
  fused, stable ``ops.softmax_cross_entropy`` kernel (one-hot targets are turned into class
  ids); the softmax is never differentiated. Without logits (probabilities made some other
  way) it computes ``-sum(y * log(clip(p / sum(p), 1e-7, 1 - 1e-7)))`` as Keras does.
* :class:`MeanSquaredError` (``'mean_squared_error'``, ``'mse'``).
* :class:`BinaryCrossentropy` (``'binary_crossentropy'``).

Functions of the same names return per-example losses (Tensors of shape ``(N,)``).

``get(identifier)`` resolves names, classes and instances; an unknown name raises
``ValueError`` listing the known ones.
"""
from __future__ import annotations

import numpy as np

from .. import autograd as ag
from ..autograd import Tensor

__all__ = ["Loss", "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "MeanSquaredError",
           "BinaryCrossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy",
           "mean_squared_error", "mse", "binary_crossentropy", "get", "serialize"]

_EPS = 1e-7


def _onehot_to_labels(y: np.ndarray):
    """Class ids if every row of ``y`` is exactly one-hot, else None."""
    if y.ndim != 2 or y.shape[0] == 0:
        return None
    am = y.argmax(axis=1)
    if not np.all(y[np.arange(len(y)), am] == 1):
        return None
    if not np.all(y.sum(axis=1) == 1) or y.min() < 0:
        return None
    return am.astype(np.int64)


def _int_labels(y, who: str, num_classes: int | None = None) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{who}: expected integer class ids of shape (N,), got shape {y.shape}"
                         + (" (one-hot targets: use categorical_crossentropy)" if y.ndim == 2 else ""))
    if y.dtype.kind == "f":
        if y.size and (not np.all(np.isfinite(y)) or np.any(y != np.round(y))):
            raise ValueError(f"{who}: targets must be integer class ids, got non-integer values")
    elif y.dtype.kind not in "iu":
        raise ValueError(f"{who}: targets must be integer class ids, got dtype {y.dtype}")
    y = y.astype(np.int64, copy=False)
    if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise ValueError(f"{who}: label {bad} is outside the classes 0..{num_classes - 1} "
                         f"(the model has {num_classes} outputs)")
    return y


def _logits_of(y_pred: Tensor):
    return getattr(y_pred, "_logits", None)


class Loss:
    """Base class: ``__call__(y_true, y_pred) -> scalar Tensor`` (mean over the batch).

    ``prepare_targets(y, output_shape)`` validates a whole target array once (``fit``
    calls it) and returns the form ``__call__`` takes fastest.
    """

    name = "loss"

    def __call__(self, y_true, y_pred) -> Tensor:
        raise NotImplementedError

    def prepare_targets(self, y, output_shape) -> np.ndarray:
        return np.asarray(y, dtype=np.float32)

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class CategoricalCrossentropy(Loss):
    """``-sum_c y_c log p_c`` averaged over the batch; targets one-hot or soft ``(N, C)``.

    Args:
        from_logits: ``y_pred`` are logits (else probabilities).
        label_smoothing: ``y <- y * (1 - s) + s / C``.

    Raises:
        ValueError: targets not ``(N, C)`` matching the predictions, negative targets.
    """

    name = "categorical_crossentropy"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0):
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"CategoricalCrossentropy: label_smoothing must be in [0, 1), got {label_smoothing}")

    def prepare_targets(self, y, output_shape):
        y = np.asarray(y)
        c = output_shape[-1]
        if y.ndim != 2 or y.shape[1] != c:
            hint = (" (integer labels: use sparse_categorical_crossentropy or pixrank.utils.to_categorical)"
                    if y.ndim == 1 else "")
            raise ValueError(f"{self.name}: targets must be one-hot of shape (N, {c}) to match the model's "
                             f"{c} outputs, got shape {y.shape}{hint}")
        if y.dtype.kind not in "fiub":
            raise ValueError(f"{self.name}: targets must be numeric, got dtype {y.dtype}")
        if y.size and y.min() < 0:
            raise ValueError(f"{self.name}: targets must be >= 0 (probabilities), got {y.min()}")
        if self.label_smoothing == 0:
            lab = _onehot_to_labels(y)
            if lab is not None:
                return lab
        return y.astype(np.float32)

    def __call__(self, y_true, y_pred):
        y_pred = ag.as_tensor(y_pred)
        logits = y_pred if self.from_logits else _logits_of(y_pred)
        y = np.asarray(y_true)
        if y.ndim == 1 and y.dtype.kind in "iu" and self.label_smoothing == 0:
            labels = y
        else:
            if y.shape != y_pred.shape:
                raise ValueError(f"{self.name}: targets of shape {y.shape} do not match predictions of shape {y_pred.shape}")
            labels = _onehot_to_labels(y) if self.label_smoothing == 0 else None
            if labels is None:
                y = y.astype(np.float32)
                if self.label_smoothing:
                    y = y * (1 - self.label_smoothing) + self.label_smoothing / y.shape[-1]
        if logits is not None:
            if labels is not None:
                return ag.softmax_cross_entropy(logits, labels)
            return ag.mean(ag.neg(ag.sum(ag.mul(y, ag.log_softmax(logits)), axis=-1)))
        p = ag.div(y_pred, ag.sum(y_pred, axis=-1, keepdims=True))
        logp = ag.log(ag.clip(p, _EPS, 1 - _EPS))
        if labels is not None:
            return ag.neg(ag.mean(ag.take(ag.reshape(logp, (-1,)), np.arange(len(labels)) * logp.shape[-1] + labels)))
        return ag.mean(ag.neg(ag.sum(ag.mul(y, logp), axis=-1)))

    def get_config(self):
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


class SparseCategoricalCrossentropy(Loss):
    """``-log p[label]`` averaged over the batch; targets integer class ids ``(N,)`` (or ``(N, 1)``).

    Args:
        from_logits: ``y_pred`` are logits (else probabilities).

    Raises:
        ValueError: non-integer targets, labels outside ``[0, C)``.
    """

    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits: bool = False):
        self.from_logits = bool(from_logits)

    def prepare_targets(self, y, output_shape):
        return _int_labels(y, self.name, output_shape[-1])

    def __call__(self, y_true, y_pred):
        y_pred = ag.as_tensor(y_pred)
        labels = y_true if (isinstance(y_true, np.ndarray) and y_true.ndim == 1 and y_true.dtype == np.int64) \
            else _int_labels(y_true, self.name, y_pred.shape[-1])
        logits = y_pred if self.from_logits else _logits_of(y_pred)
        if logits is not None:
            return ag.softmax_cross_entropy(logits, labels)
        n, c = y_pred.shape[0], y_pred.shape[-1]
        if labels.size and (labels.min() < 0 or labels.max() >= c):
            raise ValueError(f"{self.name}: labels outside the classes 0..{c - 1}")
        p = ag.div(y_pred, ag.sum(y_pred, axis=-1, keepdims=True))
        logp = ag.log(ag.clip(p, _EPS, 1 - _EPS))
        return ag.neg(ag.mean(ag.take(ag.reshape(logp, (-1,)), np.arange(n) * c + labels)))

    def get_config(self):
        return {"from_logits": self.from_logits}


class MeanSquaredError(Loss):
    """``mean((y_true - y_pred)**2)`` over all elements.

    Raises:
        ValueError: shapes differ (``(N,)`` targets for ``(N, 1)`` outputs are accepted).
    """

    name = "mean_squared_error"

    def prepare_targets(self, y, output_shape):
        y = np.asarray(y, dtype=np.float32)
        want = tuple(output_shape[1:])
        if tuple(y.shape[1:]) != want:
            if want == (1,) and y.ndim == 1:
                return y[:, None]
            raise ValueError(f"{self.name}: targets of shape {y.shape} do not match the model's output "
                             f"shape (N, {', '.join(map(str, want))})")
        return y

    def __call__(self, y_true, y_pred):
        y_pred = ag.as_tensor(y_pred)
        y = np.asarray(y_true, dtype=np.float32)
        if y.shape != y_pred.shape:
            if y.ndim == 1 and y_pred.shape == (len(y), 1):
                y = y[:, None]
            else:
                raise ValueError(f"{self.name}: targets of shape {y.shape} do not match predictions {y_pred.shape}")
        return ag.mean(ag.square(ag.sub(y_pred, y)))


class BinaryCrossentropy(Loss):
    """``-mean(y log p + (1 - y) log(1 - p))``; with ``from_logits`` the stable form
    ``max(z, 0) - z y + log(1 + exp(-|z|))``."""

    name = "binary_crossentropy"

    def __init__(self, from_logits: bool = False):
        self.from_logits = bool(from_logits)

    def prepare_targets(self, y, output_shape):
        return MeanSquaredError.prepare_targets(self, y, output_shape)

    def __call__(self, y_true, y_pred):
        y_pred = ag.as_tensor(y_pred)
        y = np.asarray(y_true, dtype=np.float32)
        if y.shape != y_pred.shape:
            if y.ndim == 1 and y_pred.shape == (len(y), 1):
                y = y[:, None]
            else:
                raise ValueError(f"{self.name}: targets of shape {y.shape} do not match predictions {y_pred.shape}")
        if self.from_logits:
            z = y_pred
            return ag.mean(ag.add(ag.sub(ag.relu(z), ag.mul(z, y)), ag.softplus(ag.neg(ag.abs(z)))))
        p = ag.clip(y_pred, _EPS, 1 - _EPS)
        return ag.neg(ag.mean(ag.add(ag.mul(y, ag.log(p)), ag.mul(1 - y, ag.log(ag.sub(1.0, p))))))

    def get_config(self):
        return {"from_logits": self.from_logits}


# ---- functional forms (per-example losses, shape (N,))

def categorical_crossentropy(y_true, y_pred, from_logits: bool = False) -> Tensor:
    """Per-example categorical cross-entropy ``(N,)``."""
    y_pred = ag.as_tensor(y_pred)
    y = np.asarray(y_true, dtype=np.float32)
    logits = y_pred if from_logits else _logits_of(y_pred)
    if logits is not None:
        return ag.neg(ag.sum(ag.mul(y, ag.log_softmax(logits)), axis=-1))
    p = ag.div(y_pred, ag.sum(y_pred, axis=-1, keepdims=True))
    return ag.neg(ag.sum(ag.mul(y, ag.log(ag.clip(p, _EPS, 1 - _EPS))), axis=-1))


def sparse_categorical_crossentropy(y_true, y_pred, from_logits: bool = False) -> Tensor:
    """Per-example sparse categorical cross-entropy ``(N,)``."""
    y_pred = ag.as_tensor(y_pred)
    labels = _int_labels(y_true, "sparse_categorical_crossentropy", y_pred.shape[-1])
    from ..utils import to_categorical
    return categorical_crossentropy(to_categorical(labels, y_pred.shape[-1]), y_pred, from_logits)


def mean_squared_error(y_true, y_pred) -> Tensor:
    """Per-example mean squared error ``(N,)`` (mean over the last axis)."""
    y_pred = ag.as_tensor(y_pred)
    return ag.mean(ag.square(ag.sub(y_pred, np.asarray(y_true, dtype=np.float32))), axis=-1)


mse = mean_squared_error


def binary_crossentropy(y_true, y_pred, from_logits: bool = False) -> Tensor:
    """Per-example binary cross-entropy ``(N,)`` (mean over the last axis)."""
    y_pred = ag.as_tensor(y_pred)
    y = np.asarray(y_true, dtype=np.float32)
    if from_logits:
        z = y_pred
        per = ag.add(ag.sub(ag.relu(z), ag.mul(z, y)), ag.softplus(ag.neg(ag.abs(z))))
    else:
        p = ag.clip(y_pred, _EPS, 1 - _EPS)
        per = ag.neg(ag.add(ag.mul(y, ag.log(p)), ag.mul(1 - y, ag.log(ag.sub(1.0, p)))))
    return ag.mean(per, axis=-1)


_BY_NAME = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "binary_crossentropy": BinaryCrossentropy,
}
_CLASSES = {c.__name__: c for c in (CategoricalCrossentropy, SparseCategoricalCrossentropy,
                                    MeanSquaredError, BinaryCrossentropy)}
_FUNCS = {categorical_crossentropy: CategoricalCrossentropy,
          sparse_categorical_crossentropy: SparseCategoricalCrossentropy,
          mean_squared_error: MeanSquaredError, binary_crossentropy: BinaryCrossentropy}


class _FunctionLoss(Loss):
    """Wraps a user function ``f(y_true, y_pred) -> per-example or scalar Tensor`` (mean taken)."""

    def __init__(self, fn):
        self.fn = fn
        self.name = getattr(fn, "__name__", "loss")

    def __call__(self, y_true, y_pred):
        out = ag.as_tensor(self.fn(y_true, y_pred))
        return out if out.data.ndim == 0 else ag.mean(out)


def get(identifier) -> Loss:
    """A Loss from a name, a class, an instance, a built-in function, or a callable.

    Raises:
        ValueError: unknown name (lists the known ones). TypeError: not a loss.
    """
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier) or _CLASSES.get(identifier)
        if cls is None:
            raise ValueError(f"unknown loss {identifier!r}; known: {', '.join(sorted(_BY_NAME))}")
        return cls()
    if isinstance(identifier, dict):
        cls = _CLASSES.get(identifier.get("class_name"))
        if cls is None:
            raise ValueError(f"unknown loss {identifier.get('class_name')!r}")
        return cls.from_config(identifier.get("config", {}))
    if identifier in _FUNCS:
        return _FUNCS[identifier]()
    if callable(identifier):
        return _FunctionLoss(identifier)
    raise TypeError(f"loss must be a name, a Loss or a callable, got {type(identifier).__name__}")


def serialize(loss):
    """JSON form of a built-in loss, or None for a custom one."""
    if type(loss).__name__ in _CLASSES and type(loss) is _CLASSES[type(loss).__name__]:
        return {"class_name": type(loss).__name__, "config": loss.get_config()}
    return None
