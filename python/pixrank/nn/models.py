"""Keras-style models: :class:`Model` (subclass it and define ``call``) and :class:`Sequential`.

Both have ``compile``, ``fit``, ``evaluate``, ``predict``, ``summary``, ``save`` /
:func:`pixrank.load_model`, ``get_weights`` / ``set_weights``, ``train_on_batch``,
``test_on_batch`` and ``predict_on_batch``.

Subclassed models::

    class Tower(pixrank.Model):
        def __init__(self, dim=64):
            super().__init__()
            self.conv = pixrank.layers.Conv2D(16, 3, activation="relu", padding="same")
            self.pool = pixrank.layers.GlobalAveragePooling2D()
            self.proj = pixrank.layers.Dense(dim)
            self.log_temp = pixrank.autograd.Parameter(np.log(1 / 0.07), name="log_temp")

        def call(self, x, training=None):
            return pixrank.autograd.l2_normalize(self.proj(self.pool(self.conv(x))))

Every Layer, Parameter (and list/tuple/dict of them) stored as an attribute is tracked:
``model.trainable_weights`` finds nested layers, nested models and free Parameters such
as the temperature above. The constructor arguments are recorded automatically, so
``save``/``load_model`` works for subclassed models whose arguments are JSON values
(otherwise define ``get_config``/``from_config``); the class is found by module and name.

Training (``fit``): each step runs the forward pass with ``training=True``, the loss
(fused softmax cross-entropy on the logits when the output is a softmax), one backward
pass over the recorded graph, and the optimizer's in-place update. Batches are gathered
from a fresh permutation each epoch (``shuffle=True``) drawn from
:func:`pixrank.utils.get_rng`. Defaults as Keras: ``batch_size=32``, ``verbose=1``
(progress bar), ``shuffle=True``.

Errors: ``fit``/``evaluate``/``predict`` raise ``ValueError`` naming the problem for x and y
of different lengths, NaN or infinite values in x or float targets (the first bad example is
named; Keras would train on to a NaN loss), a negative ``epochs``, an input shape the model does not take, labels outside the model's
classes, targets of the wrong shape; ``RuntimeError`` when training an uncompiled model.
"""
from __future__ import annotations

import math
import sys

import numpy as np

from .. import autograd as ag
from .. import utils
from ..autograd import Tensor
from . import callbacks as cbs
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optim_mod
from .layers import InputLayer, Layer, _shape_of

__all__ = ["Model", "Sequential"]


def _to_arrays(x, who, what="x"):
    """``x`` as an ndarray, or a list of ndarrays for multi-input models."""
    if isinstance(x, Tensor):
        return x.data
    if isinstance(x, (list, tuple)):
        if len(x) and all(isinstance(e, (np.ndarray, Tensor)) for e in x):
            return [e.data if isinstance(e, Tensor) else e for e in x]
    if x is None:
        raise ValueError(f"{who}: {what} is required")
    a = np.asarray(x)
    if a.dtype == np.float64:
        a = a.astype(np.float32)
    if a.dtype.kind not in "fiub":
        raise ValueError(f"{who}: {what} must be numeric, got dtype {a.dtype}")
    if a.ndim == 0:
        raise ValueError(f"{who}: {what} must have a batch axis, got a scalar")
    return a


def _check_finite(a, who, what):
    """Raise ``ValueError`` if float array ``a`` holds NaN or +-inf (names the first example)."""
    arrays = a if isinstance(a, list) else [a]
    for k, e in enumerate(arrays):
        if e.dtype.kind != "f":
            continue
        # np.isfinite over the flattened batch: one pass, no copy for contiguous input.
        ok = np.isfinite(e.reshape(len(e), -1)).all(axis=1) if e.ndim > 1 else np.isfinite(e)
        if not ok.all():
            i = int(np.argmin(ok))
            name = what if len(arrays) == 1 else f"{what}[{k}]"
            raise ValueError(f"{who}: {name} contains NaN or infinite values (first at example {i}); "
                             "clean or impute the data first")


def _check_count(value, who, what, minimum):
    """``int(value)`` for an integral ``value >= minimum``; ``TypeError``/``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise TypeError(f"{who}: {what} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{who}: {what} must be >= {minimum}, got {value}")
    return value


def _length(x):
    return len(x[0]) if isinstance(x, list) else len(x)


def _take(x, idx):
    return [e[idx] for e in x] if isinstance(x, list) else x[idx]


def _slice(x, s, e):
    return [a[s:e] for a in x] if isinstance(x, list) else x[s:e]


def _spec(v):
    """JSON description of a call argument, to rebuild a loaded model with zeros."""
    if isinstance(v, (Tensor, np.ndarray)):
        return {"array": list(v.shape), "dtype": str(v.dtype)}
    if isinstance(v, (list, tuple)):
        items = [_spec(e) for e in v]
        return None if any(i is None for i in items) else {"seq": items, "tuple": isinstance(v, tuple)}
    if v is None or isinstance(v, (bool, int, float, str)):
        return {"value": v}
    return None


def _from_spec(s):
    if "array" in s:
        return np.zeros(s["array"], dtype=s["dtype"])
    if "seq" in s:
        items = [_from_spec(e) for e in s["seq"]]
        return tuple(items) if s.get("tuple") else items
    return s["value"]


class Model(Layer):
    """A layer with training, evaluation, prediction and saving.

    Subclass it and define ``call(self, inputs, training=None)``; call ``super().__init__()``
    first in ``__init__`` (accepts ``name=`` and ``trainable=``).

    Raises:
        TypeError: ``Model(inputs, outputs)`` (the symbolic functional API is not provided:
            subclass Model or use Sequential).
    """

    def __init__(self, *args, **kwargs):
        if args or "inputs" in kwargs or "outputs" in kwargs:
            raise TypeError("Model(inputs, outputs): pixrank has no symbolic functional API; subclass "
                            "pixrank.Model and define call(), or use pixrank.Sequential")
        super().__init__(**kwargs)
        self._pxr_compiled = False
        self.optimizer = None
        self.loss = None
        self.stop_training = False
        self.history = None

    # Layers that forgot super().__init__() still work for tracking; compiled state defaults:
    _pxr_compiled = False
    _pxr_input_spec = None
    optimizer = None
    loss = None
    stop_training = False

    def __call__(self, inputs, *args, training=None, **kwargs):
        if self._pxr_input_spec is None:
            self._pxr_input_spec = {"args": [_spec(inputs)] + [_spec(a) for a in args],
                                    "kwargs": {k: _spec(v) for k, v in kwargs.items()}}
        return super().__call__(inputs, *args, training=training, **kwargs)

    # ---------------------------------------------------------------- compile
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None, **kwargs):
        """Configure training.

        Args:
            optimizer: name ('adam', 'sgd', 'adamw', 'rmsprop') or an Optimizer.
            loss: name ('categorical_crossentropy', 'sparse_categorical_crossentropy',
                'mean_squared_error'/'mse', 'binary_crossentropy'), a Loss, or a callable
                ``f(y_true, y_pred) -> Tensor``.
            metrics: list of names ('accuracy', 'sparse_categorical_accuracy',
                'top_k_categorical_accuracy', ...) or Metric objects.

        Raises:
            ValueError: unknown optimizer / loss / metric name; no loss.
        """
        if loss is None:
            raise ValueError("compile: a loss is required (e.g. loss='sparse_categorical_crossentropy')")
        if kwargs:
            raise TypeError(f"compile: unexpected keyword argument(s) {sorted(kwargs)}")
        self.optimizer = optim_mod.get(optimizer)
        self.loss = losses_mod.get(loss)
        if metrics is None:
            metrics = []
        elif isinstance(metrics, (str, metrics_mod.Metric)):
            metrics = [metrics]
        metrics = list(metrics)
        for m in metrics:  # validate names now
            metrics_mod.get(m, self.loss)
        self._pxr_metric_specs = metrics
        self._pxr_compile_args = {"optimizer": optimizer, "loss": loss, "metrics": metrics}
        self._pxr_compiled = True

    def _make_metrics(self, out_shape):
        return [metrics_mod.get(m, self.loss, out_shape) if isinstance(m, str) else m
                for m in self._pxr_metric_specs]

    def _check_compiled(self, who):
        if not self._pxr_compiled:
            raise RuntimeError(f"{who}: the model must be compiled first: model.compile(optimizer=..., loss=...)")

    # ---------------------------------------------------------------- helpers
    def _check_xy(self, x, y, who, need_y=True):
        xs = _to_arrays(x, who)
        n = _length(xs)
        if isinstance(xs, list) and any(len(e) != n for e in xs):
            raise ValueError(f"{who}: all inputs must have the same number of examples, got {[len(e) for e in xs]}")
        if n == 0:
            raise ValueError(f"{who}: x is empty (0 examples)")
        _check_finite(xs, who, "x")
        if y is None:
            if need_y:
                raise ValueError(f"{who}: y (targets) is required")
            return xs, None
        ya = np.asarray(y.data if isinstance(y, Tensor) else y)
        if ya.ndim == 0:
            raise ValueError(f"{who}: y must have one entry per example, got a scalar")
        if len(ya) != n:
            raise ValueError(f"{who}: x and y have different numbers of examples: x has {n}, y has {len(ya)}")
        if ya.dtype.kind == "f":
            _check_finite(ya, who, "y")
        return xs, ya

    def _check_input_shape(self, xs, who):
        """Hook: Sequential checks the example shape; subclassed models rely on their layers."""

    def _output_shape_for(self, xs):
        """Build the model with one example (inference, no graph) and return the output shape.

        The shape is remembered per example shape and dtype of the inputs and per set of weights
        (a layer added, or weights rebuilt, gives a new key), so that ``train_on_batch`` and
        ``test_on_batch`` in a loop do not run a second, one-example forward pass every step."""
        arrays = xs if isinstance(xs, list) else [xs]
        try:
            key = (tuple((a.shape[1:], a.dtype.str) for a in arrays), tuple(id(w) for w in self.weights))
        except AttributeError:  # pragma: no cover - inputs are arrays after _check_xy
            key = None
        cache = self.__dict__.setdefault("_pxr_out_shapes", {})
        if key is not None and key in cache:
            return cache[key]
        with ag.no_grad():
            out = self(_slice(xs, 0, 1), training=False)
        if isinstance(out, (list, tuple)):
            raise ValueError("fit/evaluate: models with several outputs are not supported by compile/fit; "
                             "train them with a custom loop (see pixrank.nn.optimizers)")
        shape = (None,) + tuple(out.shape[1:])
        if key is not None:
            if len(cache) >= 16:
                cache.clear()
            if not self.weights or key[1] == tuple(id(w) for w in self.weights):
                cache[key] = shape
        return shape

    # ---------------------------------------------------------------- fit
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0,
            validation_batch_size=None, validation_freq=1, **kwargs):
        """Train for ``epochs`` passes over ``(x, y)``; returns a :class:`History`.

        Args:
            x: inputs ``(n, ...)`` (or a list of arrays for a multi-input model).
            y: targets ``(n, ...)`` as the loss expects.
            batch_size: default 32. epochs: passes (from ``initial_epoch``).
            verbose: 'auto'/1 progress bar, 2 one line per epoch, 0 silent.
            callbacks: list of Callback. validation_split: fraction of the *last* examples held
                out (before shuffling, as Keras). validation_data: ``(x_val, y_val)``.
            shuffle: reshuffle each epoch.

        Raises:
            RuntimeError: not compiled. ValueError: see the module docstring.
        """
        if kwargs:
            raise TypeError(f"fit: unsupported keyword argument(s) {sorted(kwargs)}")
        self._check_compiled("fit")
        xs, ya = self._check_xy(x, y, "fit")
        batch_size = 32 if batch_size is None else _check_count(batch_size, "fit", "batch_size", 1)
        epochs = _check_count(epochs, "fit", "epochs", 0)
        initial_epoch = _check_count(initial_epoch, "fit", "initial_epoch", 0)
        validation_freq = _check_count(validation_freq, "fit", "validation_freq", 1)
        verbose = 1 if verbose == "auto" else int(verbose)
        if validation_data is None and validation_split:
            if not 0 < validation_split < 1:
                raise ValueError(f"fit: validation_split must be in (0, 1), got {validation_split}")
            n_all = _length(xs)
            cut = int(n_all * (1 - validation_split))
            if cut <= 0 or cut >= n_all:
                raise ValueError(f"fit: validation_split={validation_split} leaves no training or validation examples")
            validation_data = (_slice(xs, cut, n_all), ya[cut:])
            xs, ya = _slice(xs, 0, cut), ya[:cut]
        self._check_input_shape(xs, "fit")
        out_shape = self._output_shape_for(xs)
        yp = self.loss.prepare_targets(ya, out_shape)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) < 2:
                raise ValueError("fit: validation_data must be a tuple (x_val, y_val)")
            vx, vy = self._check_xy(validation_data[0], validation_data[1], "fit (validation_data)")
            self._check_input_shape(vx, "fit (validation_data)")
            val = (vx, self.loss.prepare_targets(vy, out_shape))
        metrics = self._make_metrics(out_shape)
        self._pxr_metrics = metrics
        n = _length(xs)
        steps = -(-n // batch_size)

        history = cbs.History()
        cb_list = ([cbs.ProgbarLogger(verbose)] if verbose else []) + list(callbacks or []) + [history]
        cbl = cbs.CallbackList(cb_list, self, {"epochs": epochs, "steps": steps, "verbose": verbose,
                                               "batch_size": batch_size, "samples": n})
        params = self.trainable_weights
        train_ids = {id(p) for p in params}
        all_grad = [p for p in self.weights if p.requires_grad]
        need_filter = len(all_grad) != len(params)
        opt = self.optimizer
        loss_fn = self.loss
        rng = utils.get_rng()
        single = not isinstance(xs, list)
        xbuf = None
        xrows = (xs.reshape(len(xs), -1) if single and xs.dtype == np.float32 and xs.flags.c_contiguous
                 and xs.ndim > 1 else None)

        self.stop_training = False
        cbl.on_train_begin()
        logs = {}
        for epoch in range(int(initial_epoch), epochs):
            if self.stop_training:
                break
            cbl.on_epoch_begin(epoch)
            for m in metrics:
                m.reset_state()
            order = rng.permutation(n) if shuffle else None
            loss_sum, seen = 0.0, 0
            for step in range(steps):
                s, e = step * batch_size, min(n, (step + 1) * batch_size)
                if order is None:
                    xb, yb = _slice(xs, s, e), yp[s:e]
                else:
                    idx = order[s:e]
                    if xrows is not None and e - s == batch_size:
                        # gather whole rows of the 2-D view: numpy's take copies each example
                        # as one block there (about 2x faster than over the N-D array)
                        if xbuf is None:
                            xbuf = np.empty((batch_size,) + xs.shape[1:], dtype=np.float32)
                        np.take(xrows, idx, axis=0, out=xbuf.reshape(batch_size, -1))
                        xb = xbuf
                    else:
                        xb = _take(xs, idx)
                    yb = yp[idx]
                cbl.on_train_batch_begin(step)
                out = self(xb, training=True)
                loss_t = loss_fn(yb, out)
                lv = float(loss_t.data)
                if not math.isfinite(lv) and cbl.bad_loss(step, lv):
                    break
                pairs = ag._backprop(loss_t, None, False)
                if need_filter:
                    pairs = [pg for pg in pairs if id(pg[0]) in train_ids]
                opt._apply_pairs(pairs)
                nb = e - s
                loss_sum += lv * nb
                seen += nb
                od = out.data
                for m in metrics:
                    m.update_state(yb, od)
                logs = {"loss": loss_sum / seen}
                for m in metrics:
                    logs[m.name] = m.result()
                cbl.on_train_batch_end(step, logs)
                if self.stop_training:
                    break
            if seen == 0:
                logs = {"loss": float("nan")}
            logs = dict(logs)
            if val is not None and (epoch + 1 - int(initial_epoch)) % int(validation_freq) == 0:
                vres = self._evaluate_prepared(val[0], val[1], validation_batch_size or batch_size,
                                               out_shape)
                for k, v in vres.items():
                    logs["val_" + k] = v
            cbl.on_epoch_end(epoch, logs)
        cbl.on_train_end(logs)
        self.history = history
        return history

    # ---------------------------------------------------------------- evaluate / predict
    def _evaluate_prepared(self, xs, yp, batch_size, out_shape, cbl=None):
        metrics = self._make_metrics(out_shape)
        n = _length(xs)
        loss_sum = 0.0
        logs = {}
        with ag.no_grad():
            for step, s in enumerate(range(0, n, batch_size)):
                e = min(n, s + batch_size)
                xb, yb = _slice(xs, s, e), yp[s:e]
                if cbl is not None:
                    cbl.on_test_batch_begin(step)
                out = self(xb, training=False)
                loss_sum += float(self.loss(yb, out).data) * (e - s)
                for m in metrics:
                    m.update_state(yb, out.data)
                if cbl is not None:
                    logs = {"loss": loss_sum / e, **{m.name: m.result() for m in metrics}}
                    cbl.on_test_batch_end(step, logs)
        return {"loss": loss_sum / n, **{m.name: m.result() for m in metrics}}

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", return_dict=False, callbacks=None):
        """Loss and metrics on ``(x, y)`` in inference mode.

        Returns:
            ``[loss, metric1, ...]`` as Keras, the scalar loss when there are no metrics, or a
            dict with ``return_dict=True``.

        Raises:
            RuntimeError: not compiled. ValueError: as ``fit``.
        """
        self._check_compiled("evaluate")
        xs, ya = self._check_xy(x, y, "evaluate")
        self._check_input_shape(xs, "evaluate")
        out_shape = self._output_shape_for(xs)
        yp = self.loss.prepare_targets(ya, out_shape)
        batch_size = 32 if batch_size is None else _check_count(batch_size, "evaluate", "batch_size", 1)
        verbose = 1 if verbose == "auto" else int(verbose)
        cb_list = ([cbs.ProgbarLogger(verbose)] if verbose else []) + list(callbacks or [])
        cbl = cbs.CallbackList(cb_list, self, {"steps": -(-_length(xs) // batch_size), "verbose": verbose})
        cbl.on_test_begin()
        res = self._evaluate_prepared(xs, yp, batch_size, out_shape, cbl)
        cbl.on_test_end(res)
        if return_dict:
            return res
        vals = list(res.values())
        return vals[0] if len(vals) == 1 else vals

    def predict(self, x, batch_size=None, verbose=0, callbacks=None):
        """Outputs for ``x`` in batches (inference mode), concatenated as numpy arrays
        (a softmax output gives probabilities).

        Raises:
            ValueError: empty x, or an input shape the model does not take.
        """
        xs = _to_arrays(x, "predict")
        n = _length(xs)
        if n == 0:
            raise ValueError("predict: x is empty (0 examples)")
        _check_finite(xs, "predict", "x")
        self._check_input_shape(xs, "predict")
        batch_size = 32 if batch_size is None else _check_count(batch_size, "predict", "batch_size", 1)
        outs = []
        with ag.no_grad():
            for s in range(0, n, batch_size):
                out = self(_slice(xs, s, s + batch_size), training=False)
                outs.append([o.data for o in out] if isinstance(out, (list, tuple)) else out.data)
        if isinstance(outs[0], list):
            return [np.concatenate(parts) for parts in zip(*outs)]
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    def predict_on_batch(self, x):
        with ag.no_grad():
            out = self(_to_arrays(x, "predict_on_batch"), training=False)
        return [o.data for o in out] if isinstance(out, (list, tuple)) else out.data

    def train_on_batch(self, x, y, return_dict=False):
        """One optimisation step on one batch; returns the loss (and metrics) of that batch."""
        self._check_compiled("train_on_batch")
        xs, ya = self._check_xy(x, y, "train_on_batch")
        out_shape = self._output_shape_for(xs)
        yp = self.loss.prepare_targets(ya, out_shape)
        metrics = self._make_metrics(out_shape)
        out = self(xs, training=True)
        loss_t = self.loss(yp, out)
        train_ids = {id(p) for p in self.trainable_weights}
        pairs = [pg for pg in ag._backprop(loss_t, None, False) if id(pg[0]) in train_ids]
        self.optimizer._apply_pairs(pairs)
        for m in metrics:
            m.update_state(yp, out.data)
        res = {"loss": float(loss_t.data), **{m.name: m.result() for m in metrics}}
        return res if return_dict else (list(res.values()) if len(res) > 1 else res["loss"])

    def test_on_batch(self, x, y, return_dict=False):
        self._check_compiled("test_on_batch")
        xs, ya = self._check_xy(x, y, "test_on_batch")
        out_shape = self._output_shape_for(xs)
        res = self._evaluate_prepared(xs, self.loss.prepare_targets(ya, out_shape), _length(xs), out_shape)
        return res if return_dict else (list(res.values()) if len(res) > 1 else res["loss"])

    # ---------------------------------------------------------------- summary / saving
    def summary(self, print_fn=None, line_length=80):
        """Print the layers, their output shapes and parameter counts, and the totals."""
        pf = print_fn or print
        rows = []
        for layer in self._summary_layers():
            try:
                shape = str(layer.output_shape)
            except AttributeError:
                shape = "?"
            rows.append((f"{layer.name} ({type(layer).__name__})", shape, f"{layer.count_params():,}"))
        own = [p for p in self.weights if not any(p is q for l in self._summary_layers() for q in l.weights)]
        for p in own:
            rows.append((f"{p.name} (Parameter)", str(p.data.shape), f"{p.data.size:,}"))
        w1, w2 = max([30] + [len(r[0]) + 2 for r in rows]), max([26] + [len(r[1]) + 2 for r in rows])
        width = max(line_length, w1 + w2 + 12)
        pf(f'Model: "{self.name}"')
        pf("_" * width)
        pf(f"{'Layer (type)':<{w1}}{'Output Shape':<{w2}}Param #")
        pf("=" * width)
        for i, r in enumerate(rows):
            pf(f"{r[0]:<{w1}}{r[1]:<{w2}}{r[2]}")
            if i < len(rows) - 1:
                pf("")
        pf("=" * width)
        tr = sum(p.data.size for p in self.trainable_weights)
        total = self.count_params()
        pf(f"Total params: {total:,}")
        pf(f"Trainable params: {tr:,}")
        pf(f"Non-trainable params: {total - tr:,}")
        pf("_" * width)

    def _summary_layers(self):
        return self.layers

    def save(self, filepath, overwrite=True, include_optimizer=True):
        """Save architecture, weights, compile configuration and (``include_optimizer``) the
        optimizer's state to one ``.pxr`` file (see :mod:`pixrank.nn.saving`); a model
        loaded with :func:`pixrank.load_model` resumes training where this one stopped."""
        from .saving import save_model
        save_model(self, filepath, overwrite=overwrite, include_optimizer=include_optimizer)

    def save_weights(self, filepath, overwrite=True):
        from .saving import save_weights
        save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath):
        from .saving import load_weights
        load_weights(self, filepath)


class Sequential(Model):
    """A linear stack of layers.

    Args:
        layers: list of layers; give the first one ``input_shape=`` (or start with
            ``InputLayer``/``Input``) to build the model at once (then ``summary()`` works
            before training and inputs of another shape are rejected).
        name: model name.

    Raises:
        TypeError: a non-Layer in ``layers``.
        ValueError: (when called) inputs whose example shape differs from the built one.
    """

    def __init__(self, layers=None, name=None, trainable=True):
        super().__init__(name=name, trainable=trainable)
        self._seq = []
        self._pxr_example_shape = None
        self._pxr_cur_shape = None
        for layer in layers or []:
            self.add(layer)

    def add(self, layer):
        """Append a layer (building it at once when the input shape is known)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a Layer, got {type(layer).__name__}")
        if not self._seq and layer._input_shape_arg is not None:
            self._pxr_example_shape = tuple(layer._input_shape_arg)
            self._pxr_cur_shape = self._pxr_example_shape
        self._seq.append(layer)
        if self._pxr_cur_shape is not None and not isinstance(layer, InputLayer):
            if any(d is None for d in self._pxr_cur_shape):
                self._pxr_cur_shape = None
                return
            with ag.no_grad():
                out = layer(np.zeros((1,) + self._pxr_cur_shape, np.float32), training=False)
            self._pxr_cur_shape = tuple(out.shape[1:])
        if self._pxr_example_shape is not None:
            self.built = True
            self._build_shape = (None,) + self._pxr_example_shape

    def pop(self):
        """Remove the last layer."""
        if not self._seq:
            raise ValueError("Sequential.pop: there are no layers")
        self._seq.pop()

    @property
    def layers(self):
        return [l for l in self._seq if not isinstance(l, InputLayer)]

    def build(self, input_shape=None):
        """Build all layers for ``input_shape`` (with or without the batch axis)."""
        if input_shape is not None and self._pxr_example_shape is None:
            self._pxr_example_shape = tuple(input_shape)[1:]
        if self._pxr_example_shape is not None:
            with ag.no_grad():
                self(np.zeros((1,) + tuple(d or 1 for d in self._pxr_example_shape), np.float32), training=False)

    def _build_from(self, shape):
        self._build_shape = shape
        self.built = True

    def _check_input_shape(self, xs, who):
        if isinstance(xs, list):
            if len(xs) != 1:
                raise ValueError(f"{who}: Sequential model {self.name!r} takes one input, got {len(xs)}")
            xs = xs[0]
        want = self._pxr_example_shape
        if want is None:
            return
        got = tuple(xs.shape[1:])
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            raise ValueError(f"{who}: model {self.name!r} expects inputs of shape (None, "
                             f"{', '.join(str(d) for d in want)}), got {tuple(xs.shape)}"
                             + (" (reshape x, e.g. x.reshape(-1, " + ", ".join(str(d) for d in want) + "))"
                                if math.prod(got) == math.prod(d or 0 for d in want) else ""))

    def call(self, inputs, training=None):
        if not self._seq:
            raise ValueError(f"Sequential {self.name!r} has no layers: add layers before calling, "
                             f"fitting or predicting")
        x = inputs
        want = self._pxr_example_shape
        if want is None:
            s = _shape_of(x)
            self._pxr_example_shape = tuple(s[1:]) if isinstance(s, tuple) else None
        else:
            s = x.shape if isinstance(x, (np.ndarray, Tensor)) else np.shape(x)
            if len(s) != len(want) + 1 or any(w is not None and w != g for w, g in zip(want, s[1:])):
                raise ValueError(f"Sequential {self.name!r}: expected input of shape (None, "
                                 f"{', '.join(str(d) for d in want)}), got {tuple(s)}")
        for layer in self._seq:
            x = layer(x)
        return x

    def get_config(self):
        from .saving import serialize_layer
        cfg = {"name": self.name, "layers": [serialize_layer(l) for l in self._seq]}
        if self._pxr_example_shape is not None:
            cfg["input_shape"] = list(self._pxr_example_shape)
        return cfg

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from .saving import deserialize_layer
        model = cls(name=config.get("name"))
        for lc in config["layers"]:
            model.add(deserialize_layer(lc, custom_objects))
        if model._pxr_example_shape is None and config.get("input_shape"):
            model._pxr_example_shape = tuple(config["input_shape"])
            model.build()
        return model
