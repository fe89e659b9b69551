"""pixrank's Keras-style neural-network framework.

Modules: :mod:`~pixrank.nn.layers`, :mod:`~pixrank.nn.models` (:class:`Sequential`,
:class:`Model`), :mod:`~pixrank.nn.losses`, :mod:`~pixrank.nn.optimizers` (with
:mod:`~pixrank.nn.schedules`), :mod:`~pixrank.nn.metrics`, :mod:`~pixrank.nn.callbacks`,
:mod:`~pixrank.nn.initializers`, :mod:`~pixrank.nn.activations`, :mod:`~pixrank.nn.saving`
(:func:`load_model`). The differentiable core is :mod:`pixrank.autograd`.
"""
from . import activations, callbacks, initializers, layers, losses, metrics, optimizers, schedules
from .layers import Layer, clear_session, register_serializable
from .models import Model, Sequential
from .saving import load_model

__all__ = ["Model", "Sequential", "Layer", "load_model", "clear_session", "register_serializable",
           "layers", "losses", "optimizers", "schedules", "metrics", "callbacks", "initializers",
           "activations"]
