"""Layers with Keras names and arguments (``pixrank.layers``).

A :class:`Layer` creates its weights (:class:`pixrank.autograd.Parameter`) in ``build``
the first time it is called (or at construction when ``input_shape=`` is given), and its
``call`` is a thin line into :mod:`pixrank.autograd`. Shapes include the batch axis
(``None`` in summaries). Images are NHWC; convolution kernels HWIO.

Layers: :class:`InputLayer` (and :func:`Input`), :class:`Dense`, :class:`Flatten`,
:class:`Reshape`, :class:`Activation`, :class:`Conv2D`, :class:`MaxPool2D`
(alias ``MaxPooling2D``), :class:`GlobalAveragePooling2D`, :class:`Dropout`,
:class:`BatchNormalization`, :class:`Add`, :class:`Concatenate`, :class:`Embedding`,
:class:`EmbeddingBag`.

Fused paths: ``Dense(activation='relu')`` is one ``ops.matmul(..., relu=True)`` forward and
one ``ops.linear_backward(..., relu=True)`` backward; ``Conv2D(activation='relu')`` likewise
with ``ops.conv2d`` / ``ops.conv2d_backward``. ``activation='softmax'`` returns the
probabilities tagged with their logits (the cross-entropy losses train on the logits).

Training vs inference: ``layer(x, training=True)``; when ``training`` is not given, the
value of the enclosing call is used (``fit`` calls the model with ``training=True``,
``predict``/``evaluate`` with ``False``). Dropout and BatchNormalization behave differently.

Weight discovery: every :class:`Parameter` or :class:`Layer` stored as an attribute
(also inside lists, tuples and dicts) of a layer is tracked, in assignment order.

Custom layers subclass :class:`Layer` (``build(input_shape)`` + ``call(inputs)``); every
subclass is registered by its module and name for :func:`pixrank.load_model`.
"""
from __future__ import annotations

import inspect
import math
import re

import numpy as np

from .. import autograd as ag
from .. import utils
from ..autograd import Parameter, Tensor
from . import activations, initializers

__all__ = ["Layer", "InputLayer", "Input", "Dense", "Flatten", "Reshape", "Activation", "Conv2D",
           "Convolution2D", "MaxPool2D", "MaxPooling2D", "GlobalAveragePooling2D", "Dropout",
           "BatchNormalization", "Add", "Concatenate", "Embedding", "EmbeddingBag",
           "get_registered", "register_serializable"]

# ----------------------------------------------------------------------------- registry & naming

_REGISTRY: dict[str, type] = {}
_NAME_COUNTS: dict[str, int] = {}


def _snake(name: str) -> str:
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()
    return re.sub(r"(\d)_d\b", r"\1d", s)


def unique_name(base: str) -> str:
    """``base``, then ``base_1``, ``base_2``... (Keras-style auto names)."""
    n = _NAME_COUNTS.get(base, 0)
    _NAME_COUNTS[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


def clear_session() -> None:
    """Reset the automatic layer names (``dense``, ``dense_1``...)."""
    _NAME_COUNTS.clear()


def register_serializable(cls=None, *, name: str | None = None):
    """Class decorator registering ``cls`` under ``name`` (default ``module.QualName``) for
    :func:`pixrank.load_model`. Layer and Model subclasses are registered automatically;
    use this to register them under an extra, stable name."""
    def deco(c):
        _REGISTRY[name or f"{c.__module__}.{c.__qualname__}"] = c
        return c
    return deco(cls) if cls is not None else deco


def get_registered(key: str):
    return _REGISTRY.get(key)


def _shape_of(x):
    if isinstance(x, (list, tuple)):
        return [_shape_of(v) for v in x]
    if isinstance(x, (Tensor, np.ndarray)):
        return tuple(x.shape)
    return tuple(np.shape(x))


# the training flag of the innermost enclosing explicit call
_PHASE = [False]


class Layer:
    """Base class of layers and models.

    Args (all layers):
        name: unique name (default: the snake-case class name, numbered).
        trainable: False freezes the layer's weights (optimizers skip them).
        input_shape: shape of one example (no batch axis); builds the layer at once.
        dtype: accepted for Keras compatibility; only float32 is supported.

    Subclasses define ``build(input_shape)`` (creating weights with :meth:`add_weight`) and
    ``call(inputs, training=None)`` (``training`` optional in the signature).
    """

    _call_has_training = False
    built = False
    _out_shape = None
    _build_shape = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _REGISTRY[f"{cls.__module__}.{cls.__qualname__}"] = cls
        _REGISTRY.setdefault(cls.__name__, cls)
        try:
            params = inspect.signature(cls.call).parameters
            cls._call_has_training = "training" in params or any(
                p.kind is p.VAR_KEYWORD for p in params.values())
        except (TypeError, ValueError):
            cls._call_has_training = False

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj._init_args = args
        obj._init_kwargs = dict(kwargs)
        return obj

    def __init__(self, name: str | None = None, trainable: bool = True, input_shape=None,
                 dtype=None, batch_input_shape=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) {sorted(kwargs)}")
        if dtype not in (None, "float32", np.float32):
            raise ValueError(f"{type(self).__name__}: only dtype float32 is supported, got {dtype!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{type(self).__name__}: name must be a string, got {type(name).__name__}")
        self.name = name or unique_name(_snake(type(self).__name__))
        self.trainable = bool(trainable)
        self.built = False
        if batch_input_shape is not None:
            input_shape = tuple(batch_input_shape)[1:]
        self._input_shape_arg = None if input_shape is None else _as_shape(input_shape, self.name)

    # ---- weights
    def add_weight(self, name: str, shape, initializer="glorot_uniform", trainable: bool = True) -> Parameter:
        """Create a :class:`Parameter` named ``<layer>/<name>`` initialised by ``initializer``."""
        init = initializers.get(initializer)
        value = np.asarray(init(tuple(shape)), dtype=np.float32)
        if value.shape != tuple(shape):
            raise ValueError(f"{self.name}: initializer returned shape {value.shape}, expected {tuple(shape)}")
        return Parameter(value, name=f"{self.name}/{name}", trainable=trainable)

    def _tracked(self):
        """Yield ``(kind, obj)`` for directly tracked Parameters and Layers, in order."""
        seen = set()

        def walk(v):
            if isinstance(v, Parameter) or isinstance(v, Layer):
                if id(v) not in seen:
                    seen.add(id(v))
                    yield v
            elif isinstance(v, (list, tuple)):
                for e in v:
                    yield from walk(e)
            elif isinstance(v, dict):
                for e in v.values():
                    yield from walk(e)

        for k, v in vars(self).items():
            if k in ("_init_args", "_init_kwargs"):
                continue
            yield from walk(v)

    @property
    def layers(self) -> list:
        """Directly nested layers (in assignment order)."""
        return [v for v in self._tracked() if isinstance(v, Layer)]

    def _collect(self, trainable_only: bool, out: list, seen: set, parent_trainable=True):
        tr = parent_trainable and self.trainable
        for v in self._tracked():
            if isinstance(v, Layer):
                v._collect(trainable_only, out, seen, tr)
            elif id(v) not in seen:
                if not trainable_only or (tr and v.trainable):
                    seen.add(id(v))
                    out.append(v)
        return out

    @property
    def weights(self) -> list:
        """All Parameters (trainable and not), nested layers included, in creation order."""
        return self._collect(False, [], set())

    variables = weights

    @property
    def trainable_weights(self) -> list:
        return self._collect(True, [], set())

    trainable_variables = trainable_weights

    @property
    def non_trainable_weights(self) -> list:
        tr = {id(p) for p in self.trainable_weights}
        return [p for p in self.weights if id(p) not in tr]

    def parameters(self) -> list:
        """Trainable parameters (PyTorch-style alias of :attr:`trainable_weights`)."""
        return self.trainable_weights

    def count_params(self) -> int:
        return int(sum(p.data.size for p in self.weights))

    def get_weights(self) -> list:
        """Copies of all weights as numpy arrays (order of :attr:`weights`)."""
        return [p.data.copy() for p in self.weights]

    def set_weights(self, weights) -> None:
        """Set all weights from a list of arrays in the order of :attr:`weights`.

        Raises:
            ValueError: wrong number of arrays or a shape mismatch (named).
        """
        ws = self.weights
        weights = list(weights)
        if len(weights) != len(ws):
            raise ValueError(f"{self.name}: set_weights got {len(weights)} arrays, the layer has {len(ws)} weights"
                             + ("" if ws else " (is it built? call it once or give input_shape)"))
        for p, w in zip(ws, weights):
            w = np.asarray(w)
            if w.shape != p.data.shape:
                raise ValueError(f"{self.name}: weight {p.name!r} has shape {p.data.shape}, got an array of shape {w.shape}")
        for p, w in zip(ws, weights):
            p.assign(w)

    # ---- building and calling
    def build(self, input_shape) -> None:
        """Create weights for ``input_shape`` (with batch axis). Default: none."""

    def _build_from(self, shape) -> None:
        self._build_shape = shape
        self.build(shape)
        self.built = True

    def call(self, inputs, training=None):
        raise NotImplementedError(f"{type(self).__name__} must define call()")

    def __call__(self, inputs, *args, training=None, **kwargs):
        if not self.built:
            self._build_from(_shape_of(inputs))
        if training is None:
            out = (self.call(inputs, *args, training=_PHASE[-1], **kwargs) if self._call_has_training
                   else self.call(inputs, *args, **kwargs))
        else:
            _PHASE.append(bool(training))
            try:
                out = (self.call(inputs, *args, training=bool(training), **kwargs) if self._call_has_training
                       else self.call(inputs, *args, **kwargs))
            finally:
                _PHASE.pop()
        if self._out_shape is None:
            s = _shape_of(out)
            self._out_shape = [(None,) + tuple(x[1:]) for x in s] if isinstance(s, list) else \
                ((None,) + tuple(s[1:]) if s else ())
        return out

    def compute_output_shape(self, input_shape):
        """Output shape (with batch axis) for ``input_shape``, by a dry run on zeros."""
        shape = tuple(1 if d is None else d for d in input_shape)
        with ag.no_grad():
            out = self(np.zeros(shape, np.float32), training=False)
        return (input_shape[0],) + tuple(out.shape[1:])

    @property
    def output_shape(self):
        if self._out_shape is None:
            raise AttributeError(f"layer {self.name!r} has not been called yet, so it has no output shape")
        return self._out_shape

    @property
    def input_shape(self):
        if self._build_shape is None:
            raise AttributeError(f"layer {self.name!r} is not built yet")
        return self._build_shape

    # ---- config (serialisation)
    def get_config(self) -> dict:
        """Constructor arguments as JSON-able values.

        The default returns the arguments the layer was constructed with (recorded
        automatically); override it (and ``from_config``) when they are not JSON values.
        """
        try:
            bound = inspect.signature(type(self).__init__).bind(None, *self._init_args, **self._init_kwargs)
        except TypeError:
            return dict(self._init_kwargs)
        cfg = {}
        for k, v in list(bound.arguments.items())[1:]:
            p = inspect.signature(type(self).__init__).parameters[k]
            if p.kind is p.VAR_KEYWORD:
                cfg.update(v)
            elif p.kind is p.VAR_POSITIONAL:
                if v:
                    raise TypeError(f"{type(self).__name__}: cannot make a config from *args; define get_config()")
            else:
                cfg[k] = v
        return cfg

    def _base_config(self) -> dict:
        cfg = {"name": self.name, "trainable": self.trainable}
        if self._input_shape_arg is not None:
            cfg["input_shape"] = list(self._input_shape_arg)
        return cfg

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r}, built={self.built}>"


def _as_shape(shape, who) -> tuple:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    try:
        out = tuple(None if d is None else int(d) for d in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: input_shape must be a tuple of ints, got {shape!r}") from None
    if any(d is not None and d < 1 for d in out):
        raise ValueError(f"{who}: input_shape dimensions must be >= 1, got {shape!r}")
    return out


def _pair(v, what, who) -> tuple:
    if isinstance(v, (int, np.integer)):
        v = (int(v), int(v))
    v = tuple(int(e) for e in v)
    if len(v) != 2 or min(v) < 1:
        raise ValueError(f"{who}: {what} must be a positive int or a pair of them, got {v!r}")
    return v


def _padding(p, who, allowed=("valid", "same")) -> str:
    if not isinstance(p, str) or p.lower() not in allowed:
        raise ValueError(f"{who}: padding must be one of {allowed}, got {p!r}")
    return p.lower()


# ----------------------------------------------------------------------------- layers

class InputLayer(Layer):
    """Declares the input shape of a :class:`~pixrank.nn.Sequential` model (identity).

    Args:
        input_shape / shape: shape of one example, without the batch axis.
    """

    def __init__(self, input_shape=None, shape=None, batch_size=None, name=None, **kwargs):
        shape = input_shape if input_shape is not None else shape
        if shape is None:
            raise ValueError("InputLayer: input_shape (or shape) is required")
        super().__init__(name=name, input_shape=shape, **kwargs)

    def call(self, inputs):
        return inputs

    def get_config(self):
        return {"input_shape": list(self._input_shape_arg), "name": self.name}


def Input(shape=None, batch_size=None, name=None, **kwargs) -> InputLayer:
    """``keras.Input(shape=...)``: an :class:`InputLayer` for the start of a Sequential model.
    (pixrank has no symbolic functional API; subclass Model for graphs.)"""
    return InputLayer(shape=shape, name=name)


class Dense(Layer):
    """Fully connected layer: ``y = activation(x @ kernel + bias)``.

    Args:
        units: output size N.
        activation: name or callable (None = linear). 'relu' is fused into the kernel.
        use_bias: add a bias vector.
        kernel_initializer: default 'glorot_uniform' (Keras); bias_initializer default 'zeros'.
        input_dim: shorthand for ``input_shape=(input_dim,)``.

    Shape: ``(B, ..., K) -> (B, ..., N)`` (leading axes are flattened for the product).

    Raises:
        ValueError: units < 1; an input whose last axis differs from the built K.
    """

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", input_dim=None, **kwargs):
        if input_dim is not None and "input_shape" not in kwargs:
            kwargs["input_shape"] = (int(input_dim),)
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"Dense: units must be a positive int, got {units!r}")
        self.units = int(units)
        self.activation = activations.get(activation)
        self._relu = self.activation is activations.relu
        self._softmax = self.activation is activations.softmax
        self._linear = self.activation is activations.linear
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel = self.bias = None
        self._k = None
        if self._input_shape_arg is not None:
            self._build_from((None,) + self._input_shape_arg)

    def build(self, input_shape):
        k = input_shape[-1]
        if k is None:
            raise ValueError(f"Dense {self.name!r}: the last input dimension must be known, got {input_shape}")
        self._k = int(k)
        self.kernel = self.add_weight("kernel", (self._k, self.units), self.kernel_initializer)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.units,), self.bias_initializer)

    def call(self, inputs):
        x = inputs if isinstance(inputs, Tensor) else Tensor(inputs)
        shape = x.data.shape
        if len(shape) < 2 or shape[-1] != self._k:
            raise ValueError(f"Dense {self.name!r}: expected input of shape (batch, ..., {self._k}), got {shape}")
        if len(shape) != 2:
            x = ag.reshape(x, (-1, self._k))
        y = ag.linear(x, self.kernel, self.bias, relu=self._relu)
        if len(shape) != 2:
            y = ag.reshape(y, shape[:-1] + (self.units,))
        if self._relu or self._linear:
            return y
        return self.activation(y)

    def get_config(self):
        return {**self._base_config(), "units": self.units,
                "activation": activations.serialize(self.activation), "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer)}


class Flatten(Layer):
    """``(B, d1, d2, ...) -> (B, d1*d2*...)``."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"Flatten: only data_format='channels_last' is supported, got {data_format!r}")

    def call(self, inputs):
        x = inputs if isinstance(inputs, Tensor) else Tensor(inputs)
        if x.data.ndim < 1:
            raise ValueError(f"Flatten {self.name!r}: input needs a batch axis, got shape {x.data.shape}")
        return ag.reshape(x, (x.data.shape[0], -1))

    def get_config(self):
        return self._base_config()


class Reshape(Layer):
    """Reshape each example to ``target_shape`` (one entry may be -1)."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)

    def call(self, inputs):
        x = inputs if isinstance(inputs, Tensor) else Tensor(inputs)
        try:
            return ag.reshape(x, (x.data.shape[0],) + self.target_shape)
        except ValueError:
            raise ValueError(f"Reshape {self.name!r}: cannot reshape examples of shape {x.data.shape[1:]} "
                             f"to {self.target_shape}") from None

    def get_config(self):
        return {**self._base_config(), "target_shape": list(self.target_shape)}


class Activation(Layer):
    """Apply an activation by name (``Activation('relu')``)."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def call(self, inputs):
        return self.activation(inputs if isinstance(inputs, Tensor) else Tensor(inputs))

    def get_config(self):
        return {**self._base_config(), "activation": activations.serialize(self.activation)}


class Conv2D(Layer):
    """2-D convolution over NHWC images: ``y = activation(conv(x, kernel) + bias)``.

    Args:
        filters: output channels F.
        kernel_size: int or (kh, kw).
        strides: int or (sh, sw), default 1.
        padding: 'valid' (default) or 'same' (Keras: output ``ceil(H / stride)``).
        activation: name or callable; 'relu' is fused into the kernel.
        use_bias, kernel_initializer ('glorot_uniform'), bias_initializer ('zeros').

    Shape: ``(B, H, W, C) -> (B, OH, OW, F)``; kernel HWIO ``(kh, kw, C, F)``.

    Raises:
        ValueError: bad arguments; input not 4-D or with a channel count other than built.
    """

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters < 1:
            raise ValueError(f"Conv2D: filters must be a positive int, got {filters!r}")
        if data_format not in (None, "channels_last"):
            raise ValueError(f"Conv2D: only data_format='channels_last' (NHWC) is supported, got {data_format!r}")
        if _pair(dilation_rate, "dilation_rate", "Conv2D") != (1, 1):
            raise ValueError(f"Conv2D: dilation_rate other than 1 is not supported, got {dilation_rate!r}")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size", "Conv2D")
        self.strides = _pair(strides, "strides", "Conv2D")
        self.padding = _padding(padding, "Conv2D")
        self.activation = activations.get(activation)
        self._relu = self.activation is activations.relu
        self._linear = self.activation is activations.linear
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel = self.bias = None
        self._c = None
        if self._input_shape_arg is not None:
            self._build_from((None,) + self._input_shape_arg)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"Conv2D {self.name!r}: expected 4-D input (batch, H, W, C), got shape {tuple(input_shape)}")
        self._c = int(input_shape[-1])
        self.kernel = self.add_weight("kernel", self.kernel_size + (self._c, self.filters), self.kernel_initializer)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer)

    def call(self, inputs):
        x = inputs if isinstance(inputs, Tensor) else Tensor(inputs)
        s = x.data.shape
        if len(s) != 4 or s[3] != self._c:
            raise ValueError(f"Conv2D {self.name!r}: expected input of shape (batch, H, W, {self._c}), got {s}")
        y = ag.conv2d(x, self.kernel, self.bias, stride=self.strides, padding=self.padding, relu=self._relu)
        return y if (self._relu or self._linear) else self.activation(y)

    def get_config(self):
        return {**self._base_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding,
                "activation": activations.serialize(self.activation), "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer)}


Convolution2D = Conv2D


class MaxPool2D(Layer):
    """Max pooling over NHWC windows (``ops.max_pool2d``).

    Args:
        pool_size: int or pair, default (2, 2). strides: default = pool_size.
        padding: 'valid' (default) or 'same' (pads with -inf so that ``OH = ceil(H / stride)``).
    """

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"MaxPool2D: only data_format='channels_last' is supported, got {data_format!r}")
        self.pool_size = _pair(pool_size, "pool_size", "MaxPool2D")
        self.strides = self.pool_size if strides is None else _pair(strides, "strides", "MaxPool2D")
        self.padding = _padding(padding, "MaxPool2D")

    def call(self, inputs):
        x = inputs if isinstance(inputs, Tensor) else Tensor(inputs)
        s = x.data.shape
        if len(s) != 4:
            raise ValueError(f"MaxPool2D {self.name!r}: expected 4-D input (batch, H, W, C), got {s}")
        if self.padding == "same":
            return _max_pool_same(x, self.pool_size, self.strides)
        if s[1] < self.pool_size[0] or s[2] < self.pool_size[1]:
            raise ValueError(f"MaxPool2D {self.name!r}: input {s[1]}x{s[2]} is smaller than the pool {self.pool_size}")
        return ag.max_pool2d(x, self.pool_size, self.strides)

    def get_config(self):
        return {**self._base_config(), "pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding}


MaxPooling2D = MaxPool2D


def _max_pool_same(x: Tensor, pool, stride) -> Tensor:
    from .. import ops
    _, h, w, _ = x.data.shape
    pads = []
    for size, k, st in ((h, pool[0], stride[0]), (w, pool[1], stride[1])):
        out = -(-size // st)
        need = max((out - 1) * st + k - size, 0)
        pads.append((need // 2, need - need // 2))
    xp = np.pad(x.data, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-np.inf)
    y, arg = ops.max_pool2d(xp, pool=pool, stride=stride)
    if not (ag.is_grad_enabled() and x.requires_grad):
        return Tensor(y)
    (pt, _), (pl, _) = pads

    def backward(g):
        dxp = ops.max_pool2d_backward(g, arg, xp.shape)
        return (dxp[:, pt:pt + h, pl:pl + w, :],)

    return ag._make(y, backward, (x,))


class GlobalAveragePooling2D(Layer):
    """Mean over H and W: ``(B, H, W, C) -> (B, C)`` (``keepdims=True`` keeps ``(B, 1, 1, C)``)."""

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        if data_format not in (None, "channels_last"):
            raise ValueError("GlobalAveragePooling2D: only channels_last is supported")
        self.keepdims = bool(keepdims)

    def call(self, inputs):
        x = inputs if isinstance(inputs, Tensor) else Tensor(inputs)
        if x.data.ndim != 4:
            raise ValueError(f"GlobalAveragePooling2D {self.name!r}: expected 4-D input, got {x.data.shape}")
        return ag.mean(x, axis=(1, 2), keepdims=self.keepdims)

    def get_config(self):
        return {**self._base_config(), "keepdims": self.keepdims}


class Dropout(Layer):
    """Inverted dropout (Srivastava et al. 2014): in training, zero each element with
    probability ``rate`` and scale the others by ``1/(1-rate)``; identity at inference.

    Args:
        rate: in [0, 1). seed: own generator seed (default: :func:`pixrank.utils.get_rng`).
    """

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        rate = float(rate)
        if not 0 <= rate < 1:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate}")
        if noise_shape is not None:
            raise ValueError("Dropout: noise_shape is not supported")
        self.rate, self.seed = rate, seed
        self._rng = np.random.default_rng(seed) if seed is not None else None

    def call(self, inputs, training=None):
        x = inputs if isinstance(inputs, Tensor) else Tensor(inputs)
        if not training or self.rate == 0:
            return x
        return ag.dropout(x, self.rate, self._rng if self._rng is not None else utils.get_rng(), True)

    def get_config(self):
        return {**self._base_config(), "rate": self.rate, "seed": self.seed}


class BatchNormalization(Layer):
    """Batch normalisation over the last axis (Ioffe & Szegedy 2015), Keras semantics.

    Training: normalise with the batch mean and (biased) variance and update
    ``moving = momentum * moving + (1 - momentum) * batch``. Inference: use the moving
    statistics. ``y = gamma * (x - mean) / sqrt(var + epsilon) + beta``.

    Args:
        axis: -1 only (channels last). momentum: 0.99. epsilon: 1e-3. center/scale: use beta/gamma.
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", moving_mean_initializer="zeros",
                 moving_variance_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        if axis not in (-1, [-1], (-1,)):
            raise ValueError(f"BatchNormalization: only axis=-1 (channels last) is supported, got {axis!r}")
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        if not 0 <= self.momentum <= 1 or self.epsilon <= 0:
            raise ValueError(f"BatchNormalization: need 0 <= momentum <= 1 and epsilon > 0, got {momentum}, {epsilon}")
        self.center, self.scale = bool(center), bool(scale)
        self._inits = [initializers.get(i) for i in (beta_initializer, gamma_initializer,
                                                      moving_mean_initializer, moving_variance_initializer)]
        self.gamma = self.beta = self.moving_mean = self.moving_variance = None
        if self._input_shape_arg is not None:
            self._build_from((None,) + self._input_shape_arg)

    def build(self, input_shape):
        c = input_shape[-1]
        if c is None:
            raise ValueError(f"BatchNormalization {self.name!r}: the channel dimension must be known")
        self._c = int(c)
        if self.scale:
            self.gamma = self.add_weight("gamma", (c,), self._inits[1])
        if self.center:
            self.beta = self.add_weight("beta", (c,), self._inits[0])
        self.moving_mean = self.add_weight("moving_mean", (c,), self._inits[2], trainable=False)
        self.moving_variance = self.add_weight("moving_variance", (c,), self._inits[3], trainable=False)

    def call(self, inputs, training=None):
        x = inputs if isinstance(inputs, Tensor) else Tensor(inputs)
        if x.data.ndim < 2 or x.data.shape[-1] != self._c:
            raise ValueError(f"BatchNormalization {self.name!r}: expected input (..., {self._c}), got {x.data.shape}")
        if training and self.trainable:
            y, mu, var = ag.batch_norm(x, self.gamma, self.beta, self.epsilon)
            m = np.float32(self.momentum)
            mm, mv = self.moving_mean.data, self.moving_variance.data
            mm *= m
            mm += (1 - m) * mu
            mv *= m
            mv += (1 - m) * var
            return y
        inv = (1.0 / np.sqrt(self.moving_variance.data.astype(np.float64) + self.epsilon)).astype(np.float32)
        scale = Tensor(inv) if self.gamma is None else ag.mul(self.gamma, inv)
        shift = ag.mul(scale, -self.moving_mean.data)
        if self.beta is not None:
            shift = ag.add(shift, self.beta)
        return ag.add(ag.mul(x, scale), shift)

    def get_config(self):
        return {**self._base_config(), "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale,
                "beta_initializer": initializers.serialize(self._inits[0]),
                "gamma_initializer": initializers.serialize(self._inits[1]),
                "moving_mean_initializer": initializers.serialize(self._inits[2]),
                "moving_variance_initializer": initializers.serialize(self._inits[3])}


class Add(Layer):
    """Element-wise sum of a list of same-shape tensors (residual connections)."""

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
            raise ValueError(f"Add {self.name!r}: expects a list of at least 2 tensors")
        shapes = {tuple(np.shape(t.data if isinstance(t, Tensor) else t)) for t in inputs}
        if len(shapes) != 1:
            raise ValueError(f"Add {self.name!r}: inputs must have the same shape, got {sorted(shapes)}")
        out = inputs[0]
        for t in inputs[1:]:
            out = ag.add(out, t)
        return out

    def get_config(self):
        return self._base_config()


class Concatenate(Layer):
    """Concatenate a list of tensors along ``axis`` (default -1)."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 1:
            raise ValueError(f"Concatenate {self.name!r}: expects a list of tensors")
        return ag.concat(list(inputs), axis=self.axis)

    def get_config(self):
        return {**self._base_config(), "axis": self.axis}


class Embedding(Layer):
    """Lookup table: integer ids ``S`` -> vectors ``S + (output_dim,)``.

    Args:
        input_dim: vocabulary size V. output_dim: D.
        embeddings_initializer: default 'uniform' = U(-0.05, 0.05) (Keras).

    Raises:
        ValueError: non-integer ids or ids outside ``[0, V)``.

    Also :meth:`bag` (mean/sum of rows per ragged bag, see :func:`pixrank.autograd.embedding_bag`).
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", input_length=None, **kwargs):
        kwargs.pop("mask_zero", None)
        super().__init__(**kwargs)
        if int(input_dim) < 1 or int(output_dim) < 1:
            raise ValueError(f"Embedding: input_dim and output_dim must be >= 1, got {input_dim}, {output_dim}")
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.embeddings = self.add_weight("embeddings", (self.input_dim, self.output_dim),
                                          self.embeddings_initializer)
        self.built = True

    def call(self, inputs):
        ids = inputs.data if isinstance(inputs, Tensor) else np.asarray(inputs)
        if ids.dtype.kind == "f":
            if not np.all(ids == np.round(ids)):
                raise ValueError(f"Embedding {self.name!r}: ids must be integers")
            ids = ids.astype(np.int64)
        return ag.embedding(ids, self.embeddings)

    def bag(self, ids, offsets, mode="mean") -> Tensor:
        """Mean (or sum) of the rows of each bag ``ids[offsets[i]:offsets[i+1]]`` -> ``(B, D)``."""
        return ag.embedding_bag(ids, offsets, self.embeddings, mode=mode)

    def get_config(self):
        return {**self._base_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "embeddings_initializer": initializers.serialize(self.embeddings_initializer)}


class EmbeddingBag(Embedding):
    """Bags of ids -> the mean (or sum) of their embeddings (PyTorch's ``EmbeddingBag``).

    Call with ``(ids, offsets)``: ids ``(T,)``, offsets ``(B,)`` (bag i =
    ``ids[offsets[i]:offsets[i+1]]``) -> ``(B, output_dim)``; empty bags give zeros.
    """

    def __init__(self, input_dim, output_dim, mode="mean", embeddings_initializer="uniform", **kwargs):
        super().__init__(input_dim, output_dim, embeddings_initializer=embeddings_initializer, **kwargs)
        if mode not in ("mean", "sum"):
            raise ValueError(f"EmbeddingBag: mode must be 'mean' or 'sum', got {mode!r}")
        self.mode = mode

    def call(self, inputs, offsets=None):
        if offsets is None:
            if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
                raise ValueError(f"EmbeddingBag {self.name!r}: call with (ids, offsets)")
            inputs, offsets = inputs
        return ag.embedding_bag(np.asarray(inputs), np.asarray(offsets), self.embeddings, mode=self.mode)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
