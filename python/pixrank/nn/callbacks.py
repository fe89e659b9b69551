"""Training callbacks with Keras names (``pixrank.callbacks``).

A :class:`Callback` gets ``on_train_begin/end``, ``on_epoch_begin/end(epoch, logs)``,
``on_train_batch_begin/end(batch, logs)``, ``on_test_begin/end`` and may set
``self.model.stop_training = True``. ``logs`` holds the running epoch averages (``loss``,
metrics) during an epoch and, at its end, also ``val_*`` values.

* :class:`ProgbarLogger` — added by ``fit`` / ``evaluate`` when ``verbose`` is not 0:
  ``verbose=1`` a Keras-style bar (steps, ETA, running loss and metrics; redrawn in place
  on a terminal at most 10 times a second, printed once per epoch otherwise);
  ``verbose=2`` one line per epoch.
* :class:`History` — always added; ``fit`` returns it (``history.history['loss']``...).
* :class:`EarlyStopping` (monitor, min_delta, patience, mode, baseline, restore_best_weights,
  start_from_epoch).
* :class:`ModelCheckpoint` (filepath with ``{epoch}`` / ``{val_loss:.4f}`` fields, monitor,
  save_best_only, save_weights_only, mode).
* :class:`TerminateOnNaN` — a NaN or infinite batch loss stops training before that
  batch's update is applied (the weights stay the last good ones) and prints why.
* :class:`LearningRateScheduler` (``schedule(epoch, lr) -> lr`` at each epoch's start).
* :class:`LambdaCallback`.
"""
from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

__all__ = ["Callback", "CallbackList", "History", "ProgbarLogger", "EarlyStopping", "ModelCheckpoint",
           "TerminateOnNaN", "LearningRateScheduler", "LambdaCallback"]


class Callback:
    """Base class; every hook is a no-op. ``self.model`` and ``self.params`` are set by ``fit``."""

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_train_batch_begin(self, batch, logs=None): pass
    def on_train_batch_end(self, batch, logs=None): pass
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_test_batch_begin(self, batch, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass
    def on_predict_begin(self, logs=None): pass
    def on_predict_end(self, logs=None): pass

    def on_bad_loss(self, batch, loss) -> bool:
        """Called with a non-finite batch loss before the update; return True to skip the
        update and stop training."""
        return False


class CallbackList:
    """Dispatches each hook to a list of callbacks (only those that override it)."""

    _HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
              "on_train_batch_end", "on_test_begin", "on_test_end", "on_test_batch_begin",
              "on_test_batch_end", "on_predict_begin", "on_predict_end")

    def __init__(self, callbacks, model=None, params=None):
        self.callbacks = list(callbacks)
        for c in self.callbacks:
            if not isinstance(c, Callback):
                raise TypeError(f"callbacks must be Callback instances, got {type(c).__name__}")
            if model is not None:
                c.set_model(model)
            if params is not None:
                c.set_params(params)
        for h in self._HOOKS:
            impl = [getattr(c, h) for c in self.callbacks
                    if getattr(getattr(c, h), "__func__", None) is not getattr(Callback, h)]
            setattr(self, h, self._fan(impl))

    @staticmethod
    def _fan(fns):
        if not fns:
            return lambda *a, **k: None
        if len(fns) == 1:
            return fns[0]

        def call(*a, **k):
            for f in fns:
                f(*a, **k)
        return call

    def bad_loss(self, batch, loss) -> bool:
        stop = False
        for c in self.callbacks:
            stop = c.on_bad_loss(batch, loss) or stop
        return stop


class History(Callback):
    """Records the epoch logs: ``history.history = {'loss': [...], 'val_loss': [...], ...}``."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def _fmt_value(v):
    return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.4e}"


def _fmt_time(s):
    if s >= 3600:
        return f"{int(s // 3600)}:{int(s % 3600 // 60):02d}:{int(s % 60):02d}"
    if s >= 60:
        return f"{int(s // 60)}:{int(s % 60):02d}"
    return f"{s:.0f}s"


class ProgbarLogger(Callback):
    """Keras-style progress output (see the module docstring).

    Args:
        verbose: 1 bar, 2 one line per epoch.
        stream: where to write (default ``sys.stdout``).
        interval: minimum seconds between redraws on a terminal (0.1).
    """

    def __init__(self, verbose=1, stream=None, interval=0.1, width=30):
        super().__init__()
        self.verbose, self.stream, self.interval, self.width = int(verbose), stream, float(interval), width

    def _out(self):
        return self.stream if self.stream is not None else sys.stdout

    def on_train_begin(self, logs=None):
        out = self._out()
        self._tty = bool(getattr(out, "isatty", lambda: False)())
        self.epochs = self.params.get("epochs", 1)

    def on_epoch_begin(self, epoch, logs=None):
        self.steps = self.params.get("steps")
        self._t0 = time.perf_counter()
        self._last = 0.0
        self._seen = 0
        if self.verbose == 1:
            self._write(f"Epoch {epoch + 1}/{self.epochs}\n")

    def _write(self, s):
        out = self._out()
        out.write(s)
        out.flush()

    def _metrics_str(self, logs):
        return "".join(f" - {k}: {_fmt_value(v)}" for k, v in logs.items()
                       if isinstance(v, (int, float, np.floating)))

    def _bar(self, done, logs, final):
        n = self.steps or done
        elapsed = time.perf_counter() - self._t0
        w = len(str(n))
        filled = int(self.width * done / max(n, 1))
        arrow = "=" * max(filled - 1, 0) + (">" if done < n else "=") if filled else ""
        bar = f"{done:>{w}}/{n} [{arrow:.<{self.width}}]"
        if final:
            per = elapsed / max(done, 1)
            timing = f" - {_fmt_time(elapsed)} {per * 1e3:.0f}ms/step"
        else:
            eta = elapsed / max(done, 1) * (n - done)
            timing = f" - ETA: {_fmt_time(eta)}"
        return bar + timing + self._metrics_str(logs)

    def on_train_batch_end(self, batch, logs=None):
        if self.verbose != 1 or not self._tty:
            return
        now = time.perf_counter()
        if now - self._last < self.interval:
            return
        self._last = now
        self._write("\r" + self._bar(batch + 1, logs or {}, False) + "\033[K")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        steps = self.steps or 0
        if self.verbose == 1:
            self._write(("\r" if self._tty else "") + self._bar(steps, logs, True) + ("\033[K" if self._tty else "") + "\n")
        elif self.verbose == 2:
            elapsed = time.perf_counter() - self._t0
            self._write(f"Epoch {epoch + 1}/{self.epochs}\n{steps}/{steps} - {_fmt_time(elapsed)} - "
                        f"{elapsed / max(steps, 1) * 1e3:.0f}ms/step{self._metrics_str(logs)}\n")

    # evaluate()
    def on_test_begin(self, logs=None):
        self._tty = bool(getattr(self._out(), "isatty", lambda: False)())
        self.steps = self.params.get("steps")
        self._t0 = time.perf_counter()
        self._last = 0.0

    def on_test_batch_end(self, batch, logs=None):
        self.on_train_batch_end(batch, logs)

    def on_test_end(self, logs=None):
        if self.verbose:
            self._write(("\r" if self._tty else "") + self._bar(self.steps or 0, logs or {}, True)
                        + ("\033[K" if self._tty else "") + "\n")


def _monitor_op(mode, monitor, who):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{who}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        mode = "max" if ("acc" in monitor or monitor.startswith("fmeasure") or "auc" in monitor) else "min"
    return mode


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Args:
        monitor: a log key ('val_loss' default). mode: 'auto' / 'min' / 'max'.
        restore_best_weights: at the end, put back the weights of the best epoch.
        baseline: stop if not better than this. start_from_epoch: epochs before monitoring.
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        self.monitor, self.min_delta, self.patience = monitor, abs(float(min_delta)), int(patience)
        self.verbose, self.baseline, self.restore_best_weights = verbose, baseline, bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)
        self.mode = _monitor_op(mode, monitor, "EarlyStopping")

    def _better(self, a, b):
        return a < b - self.min_delta if self.mode == "min" else a > b + self.min_delta

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        if self.baseline is not None:
            self.best = float(self.baseline)
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping: monitored value {self.monitor!r} is not in the logs "
                             f"(available: {', '.join(logs)}); pass validation data or change monitor")
        if epoch < self.start_from_epoch:
            return
        cur = float(logs[self.monitor])
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
        self.wait += 1
        if self._better(cur, self.best):
            self.best, self.best_epoch, self.wait = cur, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)
        if self.stopped_epoch and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")


class ModelCheckpoint(Callback):
    """Save the model (or its weights) after epochs.

    Args:
        filepath: may hold format fields: ``{epoch:02d}`` (1-based) and any log key.
        monitor / mode / save_best_only: keep only improvements of ``monitor``.
        save_weights_only: write only the weights (``model.save_weights``).
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__()
        if save_freq != "epoch":
            raise ValueError("ModelCheckpoint: only save_freq='epoch' is supported")
        self.filepath, self.monitor, self.verbose = os.fspath(filepath), monitor, verbose
        self.save_best_only, self.save_weights_only = bool(save_best_only), bool(save_weights_only)
        self.mode = _monitor_op(mode, monitor, "ModelCheckpoint")
        self.best = initial_value_threshold

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        try:
            path = self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"ModelCheckpoint: cannot fill the path {self.filepath!r} ({type(exc).__name__}: {exc}); "
                             f"its fields may use epoch and the log keys of this run: {', '.join(logs) or 'none'}"
                             ) from None
        if self.save_best_only:
            if self.monitor not in logs:
                raise ValueError(f"ModelCheckpoint: monitored value {self.monitor!r} is not in the logs "
                                 f"(available: {', '.join(logs)})")
            cur = float(logs[self.monitor])
            if self.best is not None and not (cur < self.best if self.mode == "min" else cur > self.best):
                return
            self.best = cur
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: saved model to {path}")


class TerminateOnNaN(Callback):
    """Stop training at the first NaN/inf batch loss; that batch's update is not applied,
    so the model keeps the last good weights. Prints which batch and epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_bad_loss(self, batch, loss):
        print(f"\nEpoch {getattr(self, '_epoch', 0) + 1}, batch {batch}: invalid loss {loss}, terminating "
              f"training (the weights are those before this batch).", file=sys.stderr)
        self.model.stop_training = True
        self.terminated = True
        return True


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate to ``schedule(epoch, lr)`` at each epoch's start."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        lr = float(self.schedule(epoch, opt.current_learning_rate()))
        opt.learning_rate = lr
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self.model.optimizer.current_learning_rate()


class LambdaCallback(Callback):
    """Callback from functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    def __init__(self, **hooks):
        super().__init__()
        for k, f in hooks.items():
            if k not in CallbackList._HOOKS:
                raise ValueError(f"LambdaCallback: unknown hook {k!r}")
            setattr(self, k, f)
