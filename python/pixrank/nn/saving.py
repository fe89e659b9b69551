"""Saving and loading models in one file (``.pxr``).

File format (version 1): a zip archive holding

* ``pixrank.json`` — the header: ``{"format": "pixrank-model", "format_version": 1,
  "kind": "model" | "weights", "pixrank_version", "model": {"module", "class_name",
  "config"}, "build": the recorded first-call input spec, "weights": [{"name", "shape",
  "dtype"}], "compile": {"optimizer", "loss", "metrics"} or null}``;
* ``weights.npz`` — the weights ``w0000``, ``w0001``... in the order of ``model.weights``
  (trainable and non-trainable, e.g. BatchNormalization's moving statistics).

With ``include_optimizer=True`` (the default, as Keras) a compiled model's optimizer state
goes along: the header's ``"optimizer_state": {"class_name", "iterations", "slots"}``
(``slots[i]``: the slot names of weight ``i``, e.g. ``["m", "v"]`` for Adam, ``[]`` when it
has none) and arrays ``o0000_m``, ``o0000_v``... in ``weights.npz``. ``load_model`` then
re-compiles with that state, so ``fit`` resumes where the saved training stopped (same
step count for schedules, same Adam moments); without it the optimizer starts fresh.

The file is written to a temporary name in the target folder and renamed into place, so a
crash never leaves a half-written model.

Architecture: a :class:`~pixrank.nn.Sequential` saves its layers' configs; a subclassed
:class:`~pixrank.nn.Model` saves its class (module + qualified name; every Layer subclass
is registered automatically) and its ``get_config()`` (by default the constructor
arguments it was created with, which must be JSON values). Loading re-creates the model
with ``from_config``, builds it by calling it once on zeros shaped like the inputs of its
first call (recorded), and sets the weights.
"""
from __future__ import annotations

import importlib
import io
import json
import os
import tempfile
import zipfile

import numpy as np

from . import layers as layers_mod

__all__ = ["save_model", "load_model", "save_weights", "load_weights", "serialize_layer",
           "deserialize_layer", "FORMAT", "FORMAT_VERSION"]

FORMAT = "pixrank-model"
FORMAT_VERSION = 1
_HEADER = "pixrank.json"
_WEIGHTS = "weights.npz"


def serialize_layer(layer) -> dict:
    """``{"module", "class_name", "config"}`` for a layer or model.

    Raises:
        TypeError: the config holds values that are not JSON (define get_config/from_config).
    """
    cls = type(layer)
    try:
        cfg = layer.get_config()
        json.dumps(cfg)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot save {cls.__name__} {getattr(layer, 'name', '')!r}: its config is not JSON "
                        f"({exc}); define get_config() returning JSON values and from_config()") from None
    return {"module": cls.__module__, "class_name": cls.__qualname__, "config": cfg}


def _find_class(module: str, qualname: str, custom_objects=None):
    if custom_objects:
        for key in (qualname, qualname.rsplit(".", 1)[-1]):
            if key in custom_objects:
                return custom_objects[key]
    cls = layers_mod.get_registered(f"{module}.{qualname}")
    if cls is None and module not in ("__main__", "builtins"):
        try:
            importlib.import_module(module)
        except ImportError:
            pass
        cls = layers_mod.get_registered(f"{module}.{qualname}")
    if cls is None:
        raise ValueError(f"unknown layer/model class {module}.{qualname}: import or define it before "
                         f"load_model, or pass custom_objects={{'{qualname}': {qualname}}}")
    return cls


def deserialize_layer(d: dict, custom_objects=None):
    """Re-create a layer/model from :func:`serialize_layer` output."""
    cls = _find_class(d["module"], d["class_name"], custom_objects)
    cfg = dict(d.get("config") or {})
    from .models import Sequential
    if issubclass(cls, Sequential):
        return cls.from_config(cfg, custom_objects)
    try:
        return cls.from_config(cfg)
    except TypeError as exc:
        raise ValueError(f"cannot re-create {d['class_name']} from its saved config {cfg}: {exc}") from None


def _write_atomic(path: str, header: dict, weights: list, overwrite: bool, extra_arrays=None) -> None:
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot save to {path!r}: it is a folder; give a file name such as "
                                f"{os.path.join(path, 'model.pxr')!r}")
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path!r} exists and overwrite=False")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save to {path!r}: folder {folder!r} does not exist")
    buf = io.BytesIO()
    np.savez(buf, **{f"w{i:04d}": w for i, w in enumerate(weights)}, **(extra_arrays or {}))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pxr", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w") as z:
                z.writestr(_HEADER, json.dumps(header, indent=1), compress_type=zipfile.ZIP_DEFLATED)
                z.writestr(_WEIGHTS, buf.getvalue(), compress_type=zipfile.ZIP_STORED)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _header(model, kind: str) -> dict:
    from .. import __version__
    ws = model.weights
    h = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "pixrank_version": __version__,
         "weights": [{"name": p.name, "shape": list(p.data.shape), "dtype": str(p.data.dtype)} for p in ws]}
    if kind == "model":
        h["model"] = serialize_layer(model)
        h["build"] = getattr(model, "_pxr_input_spec", None)
        h["compile"] = _compile_config(model)
    return h


def _compile_config(model):
    if not getattr(model, "_pxr_compiled", False):
        return None
    from . import losses, metrics, optimizers
    args = model._pxr_compile_args
    loss = args["loss"] if isinstance(args["loss"], str) else losses.serialize(model.loss)
    opt = args["optimizer"] if isinstance(args["optimizer"], str) else optimizers.serialize(model.optimizer)
    if opt is not None and not isinstance(opt, str):
        try:
            json.dumps(opt)
        except TypeError:
            opt = None
    mets = []
    for m in args["metrics"]:
        if isinstance(m, str):
            mets.append(m)
        elif type(m).__name__ in metrics._CLASSES:
            mets.append({"class_name": type(m).__name__, "config": m.get_config()})
    if loss is None or opt is None:
        return None
    return {"optimizer": opt, "loss": loss, "metrics": mets}


def _optimizer_state(model):
    """``(header entry, {npz name: array})`` for a compiled model's optimizer, or ``(None, {})``."""
    opt = getattr(model, "optimizer", None)
    if opt is None or not getattr(model, "_pxr_compiled", False) or not hasattr(opt, "get_slot_state"):
        return None, {}
    state = opt.get_slot_state(model.weights)
    arrays = {}
    names = []
    for i, slots in enumerate(state["slots"]):
        names.append(sorted(slots))
        for name, arr in slots.items():
            arrays[f"o{i:04d}_{name}"] = np.asarray(arr, dtype=np.float32)
    return {"class_name": type(opt).__name__, "iterations": state["iterations"], "slots": names}, arrays


def save_model(model, filepath, overwrite: bool = True, include_optimizer: bool = True) -> None:
    """Write ``model`` (architecture, weights, compile config and, with
    ``include_optimizer``, the optimizer's state) to ``filepath``.

    Raises:
        TypeError: a config that is not JSON. ValueError: the model has no weights yet
            because it was never built (call it once or give ``input_shape``).
        FileNotFoundError / FileExistsError / IsADirectoryError: the folder is missing, the
            file exists with ``overwrite=False``, or the path is a folder.
    """
    if not model.built and not model.weights:
        raise ValueError(f"save: model {model.name!r} is not built yet; call it on data (or fit it) first, "
                         f"or give the first layer input_shape=")
    header = _header(model, "model")
    extra = {}
    if include_optimizer and header.get("compile"):
        entry, extra = _optimizer_state(model)
        if entry is not None:
            header["optimizer_state"] = entry
    _write_atomic(filepath, header, [p.data for p in model.weights], overwrite, extra)


def save_weights(model, filepath, overwrite: bool = True) -> None:
    """Write only the weights (restore with ``model.load_weights``)."""
    _write_atomic(filepath, _header(model, "weights"), [p.data for p in model.weights], overwrite)


def _read(filepath):
    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path!r} is not a pixrank saved model (not a .pxr archive)")
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if _HEADER not in names or _WEIGHTS not in names:
                raise ValueError(f"{path!r} is not a pixrank saved model (a zip file without {_HEADER} / {_WEIGHTS})")
            header = json.loads(z.read(_HEADER).decode("utf-8"))
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise ValueError(f"{path!r} is not a pixrank saved model (header format "
                                 f"{header.get('format') if isinstance(header, dict) else header!r})")
            ver = header.get("format_version")
            if not isinstance(ver, int) or ver > FORMAT_VERSION or ver < 1:
                raise ValueError(f"{path!r}: unsupported pixrank model format version {ver!r} "
                                 f"(this pixrank reads version {FORMAT_VERSION})")
            with np.load(io.BytesIO(z.read(_WEIGHTS)), allow_pickle=False) as npz:
                weights = [npz[f"w{i:04d}"] for i in range(len(header["weights"]))]
                opt_state = header.get("optimizer_state")
                if opt_state is not None:
                    header["_optimizer_arrays"] = [{name: npz[f"o{i:04d}_{name}"] for name in names}
                                                   for i, names in enumerate(opt_state["slots"])]
    except (zipfile.BadZipFile, KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path!r}: corrupt pixrank model file ({type(exc).__name__}: {exc})") from None
    for w, meta in zip(weights, header["weights"]):
        if list(w.shape) != list(meta["shape"]):
            raise ValueError(f"{path!r}: corrupt file: weight {meta['name']!r} has shape {w.shape}, header says {meta['shape']}")
    return header, weights


def load_model(filepath, custom_objects=None, compile: bool = True):
    """Load a model saved by ``model.save(path)``.

    Args:
        filepath: the ``.pxr`` file.
        custom_objects: ``{'ClassName': cls}`` for classes that cannot be imported by module.
        compile: re-compile with the saved optimizer/loss/metrics, and restore the
            optimizer's state when the file holds it (saved with ``include_optimizer``).

    Returns:
        The model; it predicts exactly what the saved one did.

    Raises:
        FileNotFoundError: no such file. ValueError: not a pixrank model file, unsupported
            version, unknown class, or weights that do not fit the re-created architecture.
    """
    header, weights = _read(filepath)
    if header.get("kind") != "model":
        raise ValueError(f"{os.fspath(filepath)!r} holds only weights (save_weights); create the model and call "
                         f"model.load_weights() instead")
    model = deserialize_layer(header["model"], custom_objects)
    from .. import autograd as ag
    from .models import _from_spec
    build = header.get("build")
    if build and (not model.weights or len(model.weights) != len(weights)):
        args = [_from_spec(s) for s in build["args"]]
        kwargs = {k: _from_spec(s) for k, s in build.get("kwargs", {}).items()}
        with ag.no_grad():
            model(*args, training=False, **kwargs)
        model._pxr_input_spec = build
    _assign(model, weights, header, os.fspath(filepath))
    comp = header.get("compile")
    if compile and comp:
        from . import losses, metrics, optimizers
        mets = [m if isinstance(m, str) else metrics._CLASSES[m["class_name"]](**m["config"]) for m in comp["metrics"]]
        model.compile(optimizer=optimizers.get(comp["optimizer"]), loss=losses.get(comp["loss"]), metrics=mets)
        model._pxr_compile_args = {"optimizer": comp["optimizer"], "loss": comp["loss"], "metrics": comp["metrics"]
                                   if all(isinstance(m, str) for m in comp["metrics"]) else mets}
        st = header.get("optimizer_state")
        if st is not None:
            if st.get("class_name") != type(model.optimizer).__name__:
                raise ValueError(f"{os.fspath(filepath)!r}: corrupt file: optimizer state of a {st.get('class_name')} "
                                 f"for a {type(model.optimizer).__name__} optimizer")
            try:
                model.optimizer.set_slot_state(model.weights, st["iterations"], header["_optimizer_arrays"])
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"{os.fspath(filepath)!r}: corrupt optimizer state: {exc}") from None
    return model


def _assign(model, weights, header, path):
    ws = model.weights
    if len(ws) != len(weights):
        raise ValueError(f"{path!r}: the file holds {len(weights)} weights but the re-created model has {len(ws)}")
    for p, w, meta in zip(ws, weights, header["weights"]):
        if p.data.shape != w.shape:
            raise ValueError(f"{path!r}: weight {meta['name']!r} of shape {tuple(w.shape)} does not fit "
                             f"{p.name!r} of shape {p.data.shape}")
    for p, w in zip(ws, weights):
        p.assign(w)


def load_weights(model, filepath) -> None:
    """Set ``model``'s weights from a file written by ``save_weights`` or ``save``.

    Raises:
        ValueError: not a pixrank file, or a weight count/shape mismatch.
    """
    header, weights = _read(filepath)
    _assign(model, weights, header, os.fspath(filepath))
