"""Activation functions by Keras name (``Dense(..., activation='relu')``).

Each is a differentiable function of :mod:`pixrank.autograd` tensors. ``softmax`` marks its
output with the logits, so the cross-entropy losses use the fused, stable
``ops.softmax_cross_entropy`` on the logits (the softmax itself is never differentiated
when followed by a cross-entropy loss). ``relu`` after a Dense or Conv2D is fused into the
layer's kernel (the layers check for it).
"""
from __future__ import annotations

from .. import autograd as ag

__all__ = ["get", "serialize", "linear", "relu", "sigmoid", "tanh", "softmax", "softplus",
           "elu", "leaky_relu", "swish", "silu", "log_softmax"]


def linear(x):
    """Identity."""
    return ag.as_tensor(x)


relu, sigmoid, tanh, softmax, softplus = ag.relu, ag.sigmoid, ag.tanh, ag.softmax, ag.softplus
elu, leaky_relu, swish, log_softmax = ag.elu, ag.leaky_relu, ag.swish, ag.log_softmax
silu = swish

_BY_NAME = {"linear": linear, "relu": relu, "sigmoid": sigmoid, "tanh": tanh, "softmax": softmax,
            "softplus": softplus, "elu": elu, "leaky_relu": leaky_relu, "swish": swish, "silu": silu,
            "log_softmax": log_softmax}
_NAMES = {id(f): n for n, f in _BY_NAME.items()}


def get(identifier):
    """A function from a name (``'relu'``), None (identity) or a callable.

    Raises:
        ValueError: unknown name (the message lists the known ones).
        TypeError: neither a string, None nor a callable.
    """
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        f = _BY_NAME.get(identifier.lower())
        if f is None:
            raise ValueError(f"unknown activation {identifier!r}; known: {', '.join(sorted(_BY_NAME))}")
        return f
    if callable(identifier):
        return identifier
    raise TypeError(f"activation must be a name, None or a callable, got {type(identifier).__name__}")


def serialize(fn) -> str:
    """The name of a built-in activation (for saved models).

    Raises:
        ValueError: a custom callable (pass its name or a built-in instead).
    """
    name = _NAMES.get(id(fn))
    if name is None:
        raise ValueError(f"cannot serialize custom activation {fn!r}; use a built-in name")
    return name
