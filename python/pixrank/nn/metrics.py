"""Metrics with Keras names (``pixrank.metrics``).

Stateful metric objects: ``update_state(y_true, y_pred)`` accumulates over batches,
``result()`` returns a float, ``reset_state()`` starts again. ``y_pred`` are the model's
outputs (probabilities or logits: the arg-max and the top-k are the same); ``y_true`` are
integer class ids ``(N,)`` or one-hot rows ``(N, C)``.

* ``'accuracy'`` / ``'acc'``: Keras chooses by the loss — :class:`SparseCategoricalAccuracy`
  for ``sparse_categorical_crossentropy``, :class:`CategoricalAccuracy` for
  ``categorical_crossentropy``, :class:`BinaryAccuracy` for a one-output model; the logs
  keep the name ``accuracy``.
* :class:`SparseCategoricalAccuracy`, :class:`CategoricalAccuracy`, :class:`BinaryAccuracy`.
* :class:`TopKCategoricalAccuracy` / :class:`SparseTopKCategoricalAccuracy` (``k=5``).
* :class:`MeanSquaredError` (``'mse'``), :class:`MeanAbsoluteError` (``'mae'``), :class:`Mean`.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Metric", "Mean", "CategoricalAccuracy", "SparseCategoricalAccuracy", "BinaryAccuracy",
           "TopKCategoricalAccuracy", "SparseTopKCategoricalAccuracy", "MeanSquaredError",
           "MeanAbsoluteError", "get", "accuracy", "sparse_categorical_accuracy",
           "categorical_accuracy", "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy"]


def _data(x):
    return x.data if hasattr(x, "data") and not isinstance(x, np.ndarray) else np.asarray(x)


def _labels(y_true, n_classes=None) -> np.ndarray:
    y = _data(y_true)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        return y.argmax(axis=1)
    return y.astype(np.int64, copy=False)


class Metric:
    """Base class of stateful metrics (a running, example-weighted mean)."""

    def __init__(self, name: str | None = None):
        self.name = name or type(self).__name__.lower()
        self.reset_state()

    def reset_state(self):
        self._total = 0.0
        self._count = 0

    def update_state(self, y_true, y_pred):
        raise NotImplementedError

    def result(self) -> float:
        return float(self._total / self._count) if self._count else 0.0

    def get_config(self):
        return {"name": self.name}

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


class Mean(Metric):
    """Running mean of the values given to ``update_state(values)``."""

    def update_state(self, values, y_pred=None):
        v = np.asarray(_data(values), dtype=np.float64)
        self._total += float(v.sum())
        self._count += int(v.size)


class CategoricalAccuracy(Metric):
    """Fraction of examples whose arg-max prediction equals the true class."""

    def __init__(self, name="categorical_accuracy"):
        super().__init__(name)

    def update_state(self, y_true, y_pred):
        p = _data(y_pred)
        pred = p.argmax(axis=-1) if p.ndim > 1 else p
        lab = _labels(y_true)
        self._total += int(np.count_nonzero(pred.reshape(-1) == lab.reshape(-1)))
        self._count += int(lab.size)


class SparseCategoricalAccuracy(CategoricalAccuracy):
    def __init__(self, name="sparse_categorical_accuracy"):
        super().__init__(name)


class BinaryAccuracy(Metric):
    """Fraction of elements with ``(y_pred > threshold) == y_true``."""

    def __init__(self, name="binary_accuracy", threshold=0.5):
        self.threshold = float(threshold)
        super().__init__(name)

    def update_state(self, y_true, y_pred):
        p = _data(y_pred)
        y = _data(y_true).reshape(p.shape)
        self._total += int(np.count_nonzero((p > self.threshold) == (y > 0.5)))
        self._count += int(p.size)


class TopKCategoricalAccuracy(Metric):
    """Fraction of examples whose true class is among the ``k`` highest predictions
    (ties counted in the true class's favour only if strictly inside the top k)."""

    def __init__(self, k: int = 5, name="top_k_categorical_accuracy"):
        if int(k) < 1:
            raise ValueError(f"{type(self).__name__}: k must be >= 1, got {k}")
        self.k = int(k)
        super().__init__(name)

    def update_state(self, y_true, y_pred):
        p = _data(y_pred)
        lab = _labels(y_true)
        true_score = p[np.arange(len(p)), lab]
        rank = (p > true_score[:, None]).sum(axis=1)  # how many classes beat the true one
        self._total += int(np.count_nonzero(rank < self.k))
        self._count += int(len(p))

    def get_config(self):
        return {"k": self.k, "name": self.name}


class SparseTopKCategoricalAccuracy(TopKCategoricalAccuracy):
    def __init__(self, k: int = 5, name="sparse_top_k_categorical_accuracy"):
        super().__init__(k, name)


class MeanSquaredError(Metric):
    def __init__(self, name="mean_squared_error"):
        super().__init__(name)

    def update_state(self, y_true, y_pred):
        p = _data(y_pred)
        y = _data(y_true).reshape(p.shape)
        d = (p.astype(np.float64) - y)
        self._total += float((d * d).sum())
        self._count += int(d.size)


class MeanAbsoluteError(Metric):
    def __init__(self, name="mean_absolute_error"):
        super().__init__(name)

    def update_state(self, y_true, y_pred):
        p = _data(y_pred)
        y = _data(y_true).reshape(p.shape)
        self._total += float(np.abs(p.astype(np.float64) - y).sum())
        self._count += int(p.size)


# ---- functional forms (per-example values, numpy)

def categorical_accuracy(y_true, y_pred) -> np.ndarray:
    return (_data(y_pred).argmax(axis=-1) == _labels(y_true)).astype(np.float32)


sparse_categorical_accuracy = categorical_accuracy


def top_k_categorical_accuracy(y_true, y_pred, k: int = 5) -> np.ndarray:
    p = _data(y_pred)
    lab = _labels(y_true)
    return ((p > p[np.arange(len(p)), lab][:, None]).sum(axis=1) < k).astype(np.float32)


sparse_top_k_categorical_accuracy = top_k_categorical_accuracy


def accuracy(y_true, y_pred) -> np.ndarray:
    return categorical_accuracy(y_true, y_pred)


_BY_NAME = {
    "categorical_accuracy": CategoricalAccuracy, "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy, "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
}
_CLASSES = {c.__name__: c for c in set(_BY_NAME.values())}


def get(identifier, loss=None, output_shape=None) -> Metric:
    """A Metric from a name, class or instance. ``'accuracy'``/``'acc'`` picks the variant
    from ``loss`` (see the module docstring) and keeps the name ``accuracy``.

    Raises:
        ValueError: unknown name (lists the known ones).
    """
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if isinstance(identifier, str):
        if identifier in ("accuracy", "acc"):
            lname = getattr(loss, "name", "")
            if lname == "sparse_categorical_crossentropy":
                return SparseCategoricalAccuracy(name=identifier)
            if lname == "binary_crossentropy" or (output_shape is not None and tuple(output_shape[1:]) == (1,)):
                return BinaryAccuracy(name=identifier)
            return CategoricalAccuracy(name=identifier)
        cls = _BY_NAME.get(identifier) or _CLASSES.get(identifier)
        if cls is None:
            raise ValueError(f"unknown metric {identifier!r}; known: accuracy, {', '.join(sorted(_BY_NAME))}")
        return cls(name=identifier) if identifier in _BY_NAME else cls()
    raise TypeError(f"metric must be a name or a Metric, got {type(identifier).__name__}")
