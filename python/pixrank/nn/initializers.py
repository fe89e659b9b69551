"""Weight initialisers with Keras names (``pixrank.initializers``).

Each initialiser is called as ``init(shape) -> float32 array`` and draws from
:func:`pixrank.utils.get_rng` (so :func:`pixrank.utils.set_random_seed` makes it repeatable)
unless it was given its own ``seed``.

Fans: for a Dense kernel ``(K, N)`` fan_in = K, fan_out = N; for a convolution kernel HWIO
``(kh, kw, C, F)`` fan_in = kh*kw*C, fan_out = kh*kw*F (Glorot & Bengio 2010; He et al. 2015).

* ``glorot_uniform`` (Keras' default): U(-l, l), l = sqrt(6 / (fan_in + fan_out)).
* ``glorot_normal``: truncated normal (at 2 sd), sd = sqrt(2 / (fan_in + fan_out)).
* ``he_normal``: truncated normal, sd = sqrt(2 / fan_in); ``he_uniform``: l = sqrt(6 / fan_in).
* ``lecun_normal`` / ``lecun_uniform``: as He with 1 / fan_in.
* ``zeros``, ``ones``, ``constant``, ``random_normal``, ``random_uniform``, ``truncated_normal``.

As in Keras, the truncated normals are rescaled by 1 / 0.87962566 so their standard
deviation is the one stated.
"""
from __future__ import annotations

import math

import numpy as np

from .. import utils

__all__ = ["Initializer", "Zeros", "Ones", "Constant", "RandomNormal", "RandomUniform",
           "TruncatedNormal", "GlorotUniform", "GlorotNormal", "HeNormal", "HeUniform",
           "LecunNormal", "LecunUniform", "get", "serialize"]

_F32 = np.float32


def compute_fans(shape) -> tuple[float, float]:
    """``(fan_in, fan_out)`` of a weight shape (see module docstring)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    if len(shape) == 2:
        return float(shape[0]), float(shape[1])
    receptive = math.prod(shape[:-2])
    return float(receptive * shape[-2]), float(receptive * shape[-1])


class Initializer:
    """Base class: ``__call__(shape, dtype='float32') -> np.ndarray``."""

    def __init__(self, seed: int | None = None):
        self.seed = seed
        self._rng = np.random.default_rng(seed) if seed is not None else None

    def rng(self) -> np.random.Generator:
        return self._rng if self._rng is not None else utils.get_rng()

    def __call__(self, shape, dtype="float32") -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must define __call__")

    def get_config(self) -> dict:
        return {"seed": self.seed} if self.seed is not None else {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"


class Zeros(Initializer):
    def __init__(self):
        super().__init__(None)

    def __call__(self, shape, dtype="float32"):
        return np.zeros(shape, dtype=dtype)

    def get_config(self):
        return {}


class Ones(Zeros):
    def __call__(self, shape, dtype="float32"):
        return np.ones(shape, dtype=dtype)


class Constant(Initializer):
    def __init__(self, value: float = 0.0):
        super().__init__(None)
        self.value = float(value)

    def __call__(self, shape, dtype="float32"):
        return np.full(shape, self.value, dtype=dtype)

    def get_config(self):
        return {"value": self.value}


class RandomNormal(Initializer):
    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None):
        super().__init__(seed)
        self.mean, self.stddev = float(mean), float(stddev)

    def __call__(self, shape, dtype="float32"):
        return self.rng().normal(self.mean, self.stddev, size=shape).astype(dtype)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


class RandomUniform(Initializer):
    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed: int | None = None):
        super().__init__(seed)
        self.minval, self.maxval = float(minval), float(maxval)

    def __call__(self, shape, dtype="float32"):
        return self.rng().uniform(self.minval, self.maxval, size=shape).astype(dtype)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, **super().get_config()}


def _truncated(rng, sd, shape):
    """Normal(0, sd) truncated to +-2 sd by redrawing (as tf.random.truncated_normal)."""
    size = int(np.prod(shape)) if len(shape) else 1
    out = rng.standard_normal(size)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return (out * sd).reshape(shape)


class TruncatedNormal(Initializer):
    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None):
        super().__init__(seed)
        self.mean, self.stddev = float(mean), float(stddev)

    def __call__(self, shape, dtype="float32"):
        return (self.mean + _truncated(self.rng(), self.stddev, tuple(shape))).astype(dtype)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


class VarianceScaling(Initializer):
    """``scale / fan`` variance with ``mode`` fan_in / fan_out / fan_avg and a truncated
    normal or uniform ``distribution`` (Keras' VarianceScaling)."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        super().__init__(seed)
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"VarianceScaling: mode must be fan_in, fan_out or fan_avg, got {mode!r}")
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(f"VarianceScaling: unknown distribution {distribution!r}")
        self.scale, self.mode, self.distribution = float(scale), mode, distribution

    def __call__(self, shape, dtype="float32"):
        fan_in, fan_out = compute_fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        var = self.scale / max(1.0, fan)
        rng = self.rng()
        if self.distribution == "uniform":
            lim = math.sqrt(3.0 * var)
            return rng.uniform(-lim, lim, size=shape).astype(dtype)
        if self.distribution == "untruncated_normal":
            return rng.normal(0.0, math.sqrt(var), size=shape).astype(dtype)
        return _truncated(rng, math.sqrt(var) / 0.87962566103423978, tuple(shape)).astype(dtype)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution,
                **super().get_config()}


def _vs(name, scale, mode, dist, doc):
    def __init__(self, seed=None):
        VarianceScaling.__init__(self, scale, mode, dist, seed)

    def get_config(self):
        return {"seed": self.seed} if self.seed is not None else {}

    return type(name, (VarianceScaling,), {"__init__": __init__, "get_config": get_config, "__doc__": doc})


GlorotUniform = _vs("GlorotUniform", 1.0, "fan_avg", "uniform", "U(-l, l), l = sqrt(6/(fan_in+fan_out)) (Glorot & Bengio 2010).")
GlorotNormal = _vs("GlorotNormal", 1.0, "fan_avg", "truncated_normal", "Truncated normal, sd sqrt(2/(fan_in+fan_out)).")
HeNormal = _vs("HeNormal", 2.0, "fan_in", "truncated_normal", "Truncated normal, sd sqrt(2/fan_in) (He et al. 2015).")
HeUniform = _vs("HeUniform", 2.0, "fan_in", "uniform", "U(-l, l), l = sqrt(6/fan_in) (He et al. 2015).")
LecunNormal = _vs("LecunNormal", 1.0, "fan_in", "truncated_normal", "Truncated normal, sd sqrt(1/fan_in).")
LecunUniform = _vs("LecunUniform", 1.0, "fan_in", "uniform", "U(-l, l), l = sqrt(3/fan_in).")
for _c in (GlorotUniform, GlorotNormal, HeNormal, HeUniform, LecunNormal, LecunUniform):
    _c.__module__ = __name__

_BY_NAME = {
    "zeros": Zeros, "ones": Ones, "constant": Constant, "random_normal": RandomNormal,
    "random_uniform": RandomUniform, "uniform": RandomUniform, "truncated_normal": TruncatedNormal,
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal, "he_normal": HeNormal,
    "he_uniform": HeUniform, "lecun_normal": LecunNormal, "lecun_uniform": LecunUniform,
    "variance_scaling": VarianceScaling,
}
_CLASSES = {c.__name__: c for c in set(_BY_NAME.values())}


def get(identifier) -> Initializer:
    """An initialiser from a name (``'he_normal'``), a class name, a serialized dict, an
    Initializer, or a callable ``f(shape) -> array``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if isinstance(identifier, Initializer) or (callable(identifier) and not isinstance(identifier, type)):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if isinstance(identifier, dict):
        cls = _CLASSES.get(identifier.get("class_name"))
        if cls is None:
            raise ValueError(f"unknown initializer {identifier.get('class_name')!r}")
        return cls.from_config(identifier.get("config", {}))
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in _BY_NAME:
            return _BY_NAME[key]()
        if identifier in _CLASSES:
            return _CLASSES[identifier]()
        raise ValueError(f"unknown initializer {identifier!r}; known: {', '.join(sorted(_BY_NAME))}")
    raise TypeError(f"initializer must be a name, an Initializer or a callable, got {type(identifier).__name__}")


def serialize(init) -> dict | str:
    """JSON form of an initialiser (for saved models)."""
    if isinstance(init, Initializer):
        return {"class_name": type(init).__name__, "config": init.get_config()}
    raise TypeError(f"cannot serialize initializer {init!r}: use a built-in Initializer")
