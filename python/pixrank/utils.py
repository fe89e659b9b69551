"""Keras-style utilities: :func:`to_categorical` and :func:`set_random_seed`.

Randomness in pixrank (weight initialisation, shuffling in ``fit``, dropout masks,
``validation_split`` is not random) comes from one module-level ``numpy.random.Generator``
returned by :func:`get_rng`. :func:`set_random_seed` re-seeds it (and numpy's and Python's
legacy global generators, for user code), so a training run repeats bit for bit on the same
machine and thread count.
"""
from __future__ import annotations

import random

import numpy as np

__all__ = ["to_categorical", "set_random_seed", "get_rng"]

_RNG = np.random.default_rng()


def get_rng() -> np.random.Generator:
    """The generator all of pixrank's randomness is drawn from (re-seeded by :func:`set_random_seed`)."""
    return _RNG


def set_random_seed(seed: int) -> None:
    """Seed pixrank's generator, ``numpy.random`` and Python's ``random``.

    Args:
        seed: a non-negative integer.

    Raises:
        TypeError: ``seed`` is not an integer. ValueError: it is negative.
    """
    global _RNG
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"set_random_seed: seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"set_random_seed: seed must be >= 0, got {seed}")
    _RNG = np.random.default_rng(int(seed))
    np.random.seed(int(seed) % 2**32)
    random.seed(int(seed))


def to_categorical(y, num_classes: int | None = None, dtype="float32") -> np.ndarray:
    """One-hot encode integer class ids, like ``keras.utils.to_categorical``.

    Args:
        y: integer class ids, any shape ``S`` (a trailing axis of size 1 is dropped, as Keras does).
        num_classes: number of classes C; default ``max(y) + 1``.
        dtype: output dtype (default float32).

    Returns:
        Array of shape ``S + (C,)`` with a 1 at each id.

    Raises:
        ValueError: non-integer values, negative ids, ids >= ``num_classes``, or ``num_classes`` < 1.
    """
    y = np.asarray(y)
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y.reshape(y.shape[:-1])
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError("to_categorical: y must hold integer class ids, got non-integer values")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "iub":
        raise ValueError(f"to_categorical: y must hold integer class ids, got dtype {y.dtype}")
    y = y.astype(np.int64, copy=False)
    if y.size and y.min() < 0:
        raise ValueError(f"to_categorical: class ids must be >= 0, got {int(y.min())}")
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    num_classes = int(num_classes)
    if num_classes < 1 and y.size:
        raise ValueError(f"to_categorical: num_classes must be >= 1, got {num_classes}")
    if y.size and y.max() >= num_classes:
        raise ValueError(
            f"to_categorical: class id {int(y.max())} is out of range for num_classes={num_classes}")
    out = np.zeros(y.shape + (num_classes,), dtype=dtype)
    if y.size:
        np.put_along_axis(out, y[..., None], 1, axis=-1)
    return out
