"""Learning-rate schedules (``pixrank.optimizers.schedules``), Keras semantics.

A schedule is called with the optimizer's step count (``optimizer.iterations``, the number
of updates applied so far) and returns the learning rate for the next update. Pass one as
``learning_rate=`` to any optimizer.

* :class:`ExponentialDecay`: ``lr0 * rate ** (step / decay_steps)`` (``staircase`` floors the exponent).
* :class:`StepDecay`: ``lr0 * gamma ** floor(step / step_size)`` (PyTorch's StepLR, counted in updates).
* :class:`PiecewiseConstantDecay`: ``values[i]`` while ``step <= boundaries[i]``.
* :class:`CosineDecay`: optional linear warm-up to ``warmup_target``, then
  ``alpha + (1 - alpha) * (1 + cos(pi * t / decay_steps)) / 2`` times the peak
  (Loshchilov & Hutter 2017, SGDR, without restarts).
"""
from __future__ import annotations

import math

__all__ = ["LearningRateSchedule", "ExponentialDecay", "StepDecay", "PiecewiseConstantDecay",
           "CosineDecay", "get", "serialize"]


class LearningRateSchedule:
    """Base class: ``__call__(step) -> float``."""

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _pos(v, what, who):
    v = float(v)
    if not v > 0:
        raise ValueError(f"{who}: {what} must be > 0, got {v}")
    return v


class ExponentialDecay(LearningRateSchedule):
    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        self.initial_learning_rate = _pos(initial_learning_rate, "initial_learning_rate", "ExponentialDecay")
        self.decay_steps = _pos(decay_steps, "decay_steps", "ExponentialDecay")
        self.decay_rate = _pos(decay_rate, "decay_rate", "ExponentialDecay")
        self.staircase = bool(staircase)

    def __call__(self, step):
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate ** p

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase}


class StepDecay(LearningRateSchedule):
    """``lr0 * gamma ** floor(step / step_size)``.

    Args:
        initial_learning_rate: lr0 > 0. step_size: updates between drops (> 0). gamma: factor (default 0.1).
    """

    def __init__(self, initial_learning_rate, step_size, gamma=0.1):
        self.initial_learning_rate = _pos(initial_learning_rate, "initial_learning_rate", "StepDecay")
        self.step_size = int(_pos(step_size, "step_size", "StepDecay"))
        self.gamma = _pos(gamma, "gamma", "StepDecay")

    def __call__(self, step):
        return self.initial_learning_rate * self.gamma ** (step // self.step_size)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "step_size": self.step_size,
                "gamma": self.gamma}


class PiecewiseConstantDecay(LearningRateSchedule):
    def __init__(self, boundaries, values):
        self.boundaries, self.values = [int(b) for b in boundaries], [float(v) for v in values]
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError("PiecewiseConstantDecay: need len(values) == len(boundaries) + 1")
        if self.boundaries != sorted(self.boundaries):
            raise ValueError("PiecewiseConstantDecay: boundaries must be increasing")

    def __call__(self, step):
        for b, v in zip(self.boundaries, self.values):
            if step <= b:
                return v
        return self.values[-1]

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values}


class CosineDecay(LearningRateSchedule):
    """Cosine decay from the peak to ``alpha * peak`` over ``decay_steps`` updates, after an
    optional linear warm-up (``warmup_steps`` from ``initial_learning_rate`` to
    ``warmup_target``); constant ``alpha * peak`` afterwards."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
        self.initial_learning_rate = float(initial_learning_rate)
        if self.initial_learning_rate < 0:
            raise ValueError("CosineDecay: initial_learning_rate must be >= 0")
        self.decay_steps = int(_pos(decay_steps, "decay_steps", "CosineDecay"))
        self.alpha = float(alpha)
        self.warmup_target = None if warmup_target is None else float(warmup_target)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        peak = self.initial_learning_rate if self.warmup_target is None else self.warmup_target
        if self.warmup_target is not None and step < self.warmup_steps:
            return self.initial_learning_rate + (peak - self.initial_learning_rate) * step / self.warmup_steps
        t = min(max(step - self.warmup_steps, 0), self.decay_steps)
        cos = 0.5 * (1 + math.cos(math.pi * t / self.decay_steps))
        return peak * ((1 - self.alpha) * cos + self.alpha)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "warmup_target": self.warmup_target, "warmup_steps": self.warmup_steps}


_CLASSES = {c.__name__: c for c in (ExponentialDecay, StepDecay, PiecewiseConstantDecay, CosineDecay)}


def serialize(s):
    if type(s).__name__ in _CLASSES:
        return {"class_name": type(s).__name__, "config": s.get_config()}
    return None


def get(d):
    if isinstance(d, LearningRateSchedule):
        return d
    cls = _CLASSES.get(d.get("class_name")) if isinstance(d, dict) else None
    if cls is None:
        raise ValueError(f"unknown learning-rate schedule {d!r}")
    return cls.from_config(d.get("config", {}))
