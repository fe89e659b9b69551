"""Optimizers with Keras names and defaults (``pixrank.optimizers``).

* :class:`SGD` (``learning_rate=0.01, momentum=0.0, nesterov=False``),
* :class:`Adam` (``1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7``; Kingma & Ba 2015),
* :class:`AdamW` (Adam with decoupled ``weight_decay=0.004``; Loshchilov & Hutter 2019),
* :class:`RMSprop` (``1e-3, rho=0.9, momentum=0.0, epsilon=1e-7``; Keras' compile default).

``learning_rate`` may be a float or a schedule from :mod:`pixrank.optimizers.schedules`
(called with :attr:`Optimizer.iterations`). Common options: ``weight_decay`` (decoupled:
``p -= lr * wd * p`` before the update), ``clipnorm`` (per-gradient L2 norm), ``clipvalue``,
``global_clipnorm``.

Updates are in place on ``Parameter.data`` with a few vectorised numpy calls per parameter
(``out=`` buffers kept per parameter, no allocation per step). Adam and AdamW update
float32 contiguous parameters with the compiled :func:`pixrank.ops.adam_update` (one pass
over memory, weight decay included), which computes the numpy path's float32 arithmetic
operation by operation (same bits); AMSGrad and other dtypes take the numpy path.

Using an optimizer outside ``fit`` (a custom loss, e.g. a contrastive one)::

    from pixrank import autograd as ag
    opt = pixrank.optimizers.Adam(1e-3)
    params = model.trainable_weights            # include free Parameters stored on the model
    for xb, yb in batches:
        loss = my_loss(model(xb, training=True), yb)   # a scalar Tensor
        # Keras style: gradients explicitly
        grads = ag.grad(loss, params)
        opt.apply_gradients(zip(grads, params))
        # or PyTorch style: accumulate into .grad, then step (step clears .grad)
        # loss.backward(); opt.step(params)

``opt.minimize(loss, params)`` does the Keras-style pair in one call. ``zero_grad(params)``
clears ``.grad`` (``step`` already does, so gradients never leak into the next step).
"""
from __future__ import annotations

import math

import numpy as np

from .. import autograd as ag
from . import schedules
from .schedules import LearningRateSchedule

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "get", "serialize", "schedules"]

_F32 = np.float32


class Optimizer:
    """Base class. Subclasses implement ``_update(param_data, grad, state, lr)``.

    Attributes:
        iterations: number of update steps applied (one per ``apply_gradients``).
    """

    def __init__(self, learning_rate=0.001, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, name=None):
        self.learning_rate = learning_rate
        self.weight_decay = None if weight_decay in (None, 0) else float(weight_decay)
        self.clipnorm = None if clipnorm is None else float(clipnorm)
        self.clipvalue = None if clipvalue is None else float(clipvalue)
        self.global_clipnorm = None if global_clipnorm is None else float(global_clipnorm)
        self.name = name or type(self).__name__.lower()
        self.iterations = 0
        self._state: dict = {}

    @property
    def learning_rate(self):
        return self._lr

    @learning_rate.setter
    def learning_rate(self, value):
        if isinstance(value, LearningRateSchedule):
            self._lr = value
            return
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            if callable(value):
                self._lr = value
                return
            raise TypeError(f"{type(self).__name__}: learning_rate must be a number or a schedule, got {value!r}")
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"{type(self).__name__}: learning_rate must be a positive number, got {value}")
        self._lr = float(value)

    lr = learning_rate

    def current_learning_rate(self) -> float:
        """The rate the next update will use."""
        lr = self._lr
        return float(lr(self.iterations)) if callable(lr) else lr

    def _clip(self, pairs):
        if self.clipvalue is not None:
            pairs = [(p, np.clip(g, -self.clipvalue, self.clipvalue)) for p, g in pairs]
        if self.clipnorm is not None:
            out = []
            for p, g in pairs:
                n = float(np.sqrt(np.vdot(g, g)))
                out.append((p, g * _F32(self.clipnorm / n) if n > self.clipnorm else g))
            pairs = out
        if self.global_clipnorm is not None:
            n = math.sqrt(sum(float(np.vdot(g, g)) for _, g in pairs))
            if n > self.global_clipnorm:
                s = _F32(self.global_clipnorm / n)
                pairs = [(p, g * s) for p, g in pairs]
        return pairs

    def _apply_pairs(self, pairs) -> None:
        """Apply ``[(param, grad), ...]`` (the fast path ``fit`` uses)."""
        if self.clipvalue is not None or self.clipnorm is not None or self.global_clipnorm is not None:
            pairs = self._clip(pairs)
        lr = self.current_learning_rate()
        self.iterations += 1
        self._prepare_step(lr)
        wd = self.weight_decay
        for p, g in pairs:
            st = self._state.get(id(p))
            if st is None or st[0] is not p:
                st = self._state[id(p)] = (p, self._init_state(p.data))
            if wd is not None and not self._fuses_weight_decay(p.data, g, st[1]):
                p.data *= _F32(1.0 - lr * wd)
            self._update(p.data, g, st[1], lr)

    def apply_gradients(self, grads_and_vars) -> None:
        """Apply ``[(grad, param), ...]`` (Keras order). ``None`` gradients are skipped.

        Raises:
            TypeError: a variable is not a Parameter/Tensor. ValueError: shape mismatch or a
                gradient for a non-trainable Parameter.
        """
        pairs = []
        for g, p in grads_and_vars:
            if g is None:
                continue
            if not isinstance(p, ag.Tensor):
                raise TypeError(f"apply_gradients: variables must be Parameters, got {type(p).__name__}")
            if getattr(p, "trainable", True) is False:
                raise ValueError(f"apply_gradients: {p.name!r} is not trainable")
            g = np.asarray(g, dtype=_F32)
            if g.shape != p.data.shape:
                raise ValueError(f"apply_gradients: gradient of shape {g.shape} for variable {p.name!r} of shape {p.data.shape}")
            pairs.append((p, g))
        self._apply_pairs(pairs)

    def step(self, params) -> None:
        """Apply ``p.grad`` for each param that has one (PyTorch style), then clear ``.grad``."""
        params = list(params)
        self.apply_gradients((p.grad, p) for p in params)
        for p in params:
            p.grad = None

    def zero_grad(self, params) -> None:
        for p in params:
            p.grad = None

    def minimize(self, loss, var_list) -> None:
        """``apply_gradients(zip(autograd.grad(loss, var_list), var_list))``."""
        var_list = list(var_list)
        self.apply_gradients(zip(ag.grad(loss, var_list), var_list))

    # ---- state (saved with the model by ``model.save(..., include_optimizer=True)``)
    #: name -> position in the tuple ``_init_state`` returns, for the entries that carry
    #: state from step to step (the others are scratch buffers, never saved)
    _SLOTS: dict = {}

    def get_slot_state(self, params) -> dict:
        """The optimizer's state for ``params``: ``{"iterations": int, "slots": [...]}``
        where ``slots[i]`` maps slot names (e.g. Adam's ``"m"`` and ``"v"``) to float32
        arrays of ``params[i]``'s shape, or is ``{}`` for a parameter not updated yet.
        Arrays are the live buffers (copy them to keep a snapshot)."""
        out = []
        for p in params:
            st = self._state.get(id(p))
            if st is None or st[0] is not p:
                out.append({})
                continue
            out.append({name: st[1][i] for name, i in self._SLOTS.items() if st[1][i] is not None})
        return {"iterations": int(self.iterations), "slots": out}

    def set_slot_state(self, params, iterations: int, slots) -> None:
        """Restore what :meth:`get_slot_state` returned (e.g. after ``load_model``): the step
        count, and for each parameter its slot arrays (copied; ``{}`` leaves it fresh).

        Raises:
            ValueError: ``slots`` and ``params`` differ in length, a slot name this optimizer
                does not have (or does not use with its current options, e.g. momentum 0),
                or an array whose shape differs from its parameter's. Nothing is changed then.
        """
        params, slots = list(params), list(slots)
        if len(params) != len(slots):
            raise ValueError(f"{type(self).__name__}.set_slot_state: {len(slots)} slot sets for {len(params)} parameters")
        new = {}
        for p, sl in zip(params, slots):
            if not sl:
                continue
            st = self._init_state(p.data)
            for name, arr in sl.items():
                i = self._SLOTS.get(name)
                if i is None or st[i] is None:
                    raise ValueError(f"{type(self).__name__}.set_slot_state: no slot {name!r} for {p.name!r} "
                                     f"(this optimizer has {sorted(k for k, j in self._SLOTS.items() if st[j] is not None)})")
                arr = np.asarray(arr)
                if arr.shape != p.data.shape:
                    raise ValueError(f"{type(self).__name__}.set_slot_state: slot {name!r} of shape {arr.shape} "
                                     f"for {p.name!r} of shape {p.data.shape}")
                np.copyto(st[i], arr, casting="same_kind")
            new[id(p)] = (p, st)
        self._state.update(new)
        self.iterations = int(iterations)

    # ---- subclass hooks
    def _prepare_step(self, lr):
        pass

    def _init_state(self, w: np.ndarray):
        return ()

    def _fuses_weight_decay(self, w, g, state) -> bool:
        """True when ``_update`` applies the decoupled weight decay itself (a fused kernel)."""
        return False

    def _update(self, w, g, state, lr):
        raise NotImplementedError

    def get_config(self) -> dict:
        lr = self._lr
        return {"learning_rate": schedules.serialize(lr) if isinstance(lr, LearningRateSchedule) else lr,
                "weight_decay": self.weight_decay, "clipnorm": self.clipnorm, "clipvalue": self.clipvalue,
                "global_clipnorm": self.global_clipnorm}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = schedules.get(config["learning_rate"])
        return cls(**config)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, Keras form:
    ``v = momentum * v - lr * g``; ``w += v`` (Nesterov: ``w += momentum * v - lr * g``)."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.momentum = float(momentum)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum}")
        self.nesterov = bool(nesterov)

    _SLOTS = {"momentum": 0}

    def _init_state(self, w):
        return (np.zeros_like(w), np.empty_like(w)) if self.momentum else (None, np.empty_like(w))

    def _update(self, w, g, state, lr):
        v, tmp = state
        np.multiply(g, _F32(lr), out=tmp)
        if v is None:
            w -= tmp
            return
        v *= _F32(self.momentum)
        v -= tmp
        if self.nesterov:
            w -= tmp
            np.multiply(v, _F32(self.momentum), out=tmp)
            w += tmp
        else:
            w += v

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), Keras form: ``m = b1 m + (1-b1) g``; ``v = b2 v + (1-b2) g^2``;
    ``w -= lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + epsilon)``.

    Args:
        learning_rate: 0.001. beta_1: 0.9. beta_2: 0.999. epsilon: 1e-7.
        amsgrad: keep the running maximum of ``v``.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        if not (0 <= self.beta_1 < 1 and 0 <= self.beta_2 < 1 and self.epsilon > 0):
            raise ValueError(f"{type(self).__name__}: need 0 <= beta_1, beta_2 < 1 and epsilon > 0")
        self.amsgrad = bool(amsgrad)

    _SLOTS = {"m": 0, "v": 1, "vhat": 3}

    def _init_state(self, w):
        return (np.zeros_like(w), np.zeros_like(w), np.empty_like(w),
                np.zeros_like(w) if self.amsgrad else None)

    def _prepare_step(self, lr):
        t = self.iterations
        self._alpha = _F32(lr * math.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t))
        self._b1, self._b2 = _F32(self.beta_1), _F32(self.beta_2)
        self._c1, self._c2 = _F32(1 - self.beta_1), _F32(1 - self.beta_2)
        self._eps = _F32(self.epsilon)

    def _fused(self, w, g, state) -> bool:
        """Whether this update runs in the compiled ``ops.adam_update`` (one pass over memory,
        weight decay included): float32 C-contiguous parameter and gradient, no AMSGrad, and
        ``_update`` not overridden by a subclass. It computes the numpy path's float32
        arithmetic below operation by operation, so both give the same bits."""
        return (state[3] is None and type(self)._update is Adam._update
                and w.dtype == _F32 and g.dtype == _F32
                and w.flags.c_contiguous and g.flags.c_contiguous and w.flags.writeable)

    def _fuses_weight_decay(self, w, g, state) -> bool:
        return self._fused(w, g, state)

    def _update(self, w, g, state, lr):
        m, v, tmp, vmax = state
        if self._fused(w, g, state):
            _ops().adam_update(w, g, m, v, lr=lr, beta_1=self.beta_1, beta_2=self.beta_2,
                               epsilon=self.epsilon, weight_decay=self.weight_decay or 0.0,
                               step=self.iterations)
            return
        m *= self._b1
        np.multiply(g, self._c1, out=tmp)
        m += tmp
        v *= self._b2
        np.multiply(g, g, out=tmp)
        tmp *= self._c2
        v += tmp
        if vmax is not None:
            np.maximum(vmax, v, out=vmax)
            np.sqrt(vmax, out=tmp)
        else:
            np.sqrt(v, out=tmp)
        tmp += self._eps
        np.divide(m, tmp, out=tmp)
        tmp *= self._alpha
        w -= tmp

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


def _ops():
    """pixrank.ops, imported at the first fused Adam step (not at import of this module)."""
    from .. import ops
    return ops


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): ``w -= lr * wd * w``
    before each Adam update. Default ``weight_decay=0.004`` (Keras)."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, **kwargs):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay=weight_decay, **kwargs)


class RMSprop(Optimizer):
    """RMSprop (Tieleman & Hinton 2012), Keras form: ``v = rho v + (1-rho) g^2``;
    ``w -= lr * g / sqrt(v + epsilon)`` (with momentum: through a velocity)."""

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.rho, self.momentum, self.epsilon = float(rho), float(momentum), float(epsilon)

    _SLOTS = {"rms": 0, "momentum": 2}

    def _init_state(self, w):
        return (np.zeros_like(w), np.empty_like(w), np.zeros_like(w) if self.momentum else None)

    def _update(self, w, g, state, lr):
        v, tmp, mom = state
        v *= _F32(self.rho)
        np.multiply(g, g, out=tmp)
        tmp *= _F32(1 - self.rho)
        v += tmp
        np.add(v, _F32(self.epsilon), out=tmp)
        np.sqrt(tmp, out=tmp)
        np.divide(g, tmp, out=tmp)
        tmp *= _F32(lr)
        if mom is not None:
            mom *= _F32(self.momentum)
            mom += tmp
            w -= mom
        else:
            w -= tmp

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon}


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}
_CLASSES = {c.__name__: c for c in (SGD, Adam, AdamW, RMSprop)}


def get(identifier) -> Optimizer:
    """An optimizer from a name ('adam'), a class, an instance or a serialized dict.

    Raises:
        ValueError: unknown name (lists the known ones). TypeError: not an optimizer.
    """
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Optimizer):
        return identifier()
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier.lower()) or _CLASSES.get(identifier)
        if cls is None:
            raise ValueError(f"unknown optimizer {identifier!r}; known: {', '.join(sorted(_BY_NAME))}")
        return cls()
    if isinstance(identifier, dict):
        cls = _CLASSES.get(identifier.get("class_name"))
        if cls is None:
            raise ValueError(f"unknown optimizer {identifier.get('class_name')!r}")
        return cls.from_config(identifier.get("config", {}))
    raise TypeError(f"optimizer must be a name or an Optimizer, got {type(identifier).__name__}")


def serialize(opt):
    if type(opt).__name__ in _CLASSES:
        try:
            return {"class_name": type(opt).__name__, "config": opt.get_config()}
        except (TypeError, ValueError):
            return None
    return None
