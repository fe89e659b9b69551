"""Finite-difference gradient checking for pixrank.autograd / pixrank.nn (shared by the tests).

``assert_grads_match_fd(fn, inputs)``: ``fn`` maps Tensors to a Tensor; the check compares the autograd
gradients of ``sum(fn(*inputs) * R)`` (R a fixed random projection) with central
differences computed in float32 forward passes, on every input element (or a seeded
subset of ``max_points`` elements for big inputs). ``assert_layer_grads_match_fd`` does the same for a
layer's input and every trainable weight.
"""
from __future__ import annotations

import numpy as np

from pixrank import autograd as ag


def _fd(f, arr: np.ndarray, idx, eps):
    flat = arr.reshape(-1)
    old = flat[idx]
    flat[idx] = old + eps
    fp = f()
    flat[idx] = old - eps
    fm = f()
    flat[idx] = old
    return (fp - fm) / (2 * eps)


def _compare(analytic, numeric, what, rtol, atol):
    analytic = np.asarray(analytic, dtype=np.float64)
    numeric = np.asarray(numeric, dtype=np.float64)
    scale = max(1.0, float(np.abs(numeric).max(initial=0.0)))
    bad = np.abs(analytic - numeric) > atol * scale + rtol * np.abs(numeric)
    if bad.any():
        i = int(np.argmax(np.abs(analytic - numeric)))
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} gradient entries differ; worst "
                             f"analytic {analytic.reshape(-1)[i]:.6g} vs numeric {numeric.reshape(-1)[i]:.6g}")


def _points(size, max_points, rng):
    if size <= max_points:
        return np.arange(size)
    return np.sort(rng.choice(size, max_points, replace=False))


def assert_grads_match_fd(fn, inputs, *, wrt=None, eps=1e-2, rtol=2e-2, atol=2e-3, max_points=60, seed=0):
    """Check ``fn``'s gradients w.r.t. the inputs listed in ``wrt`` (default: all float inputs)."""
    rng = np.random.default_rng(seed)
    tensors = [ag.Tensor(np.asarray(x, np.float32), requires_grad=True) for x in inputs]
    wrt = range(len(tensors)) if wrt is None else wrt
    out = fn(*tensors)
    proj = rng.standard_normal(out.shape).astype(np.float32)
    (out * proj).sum().backward()

    def f():
        with ag.no_grad():
            return float(np.sum(fn(*tensors).data.astype(np.float64) * proj))

    for i in wrt:
        t = tensors[i]
        assert t.grad is not None, f"input {i}: no gradient"
        assert t.grad.shape == t.data.shape, f"input {i}: grad shape {t.grad.shape} != {t.data.shape}"
        pts = _points(t.data.size, max_points, rng)
        num = np.array([_fd(f, t.data, j, eps) for j in pts])
        _compare(t.grad.reshape(-1)[pts], num, f"input {i}", rtol, atol)
    return tensors


def assert_layer_grads_match_fd(layer, x, *, training=True, eps=1e-2, rtol=2e-2, atol=2e-3, max_points=40, seed=0,
                check_input=True, rng_factory=None):
    """Check the gradient of ``sum(layer(x) * R)`` w.r.t. ``x`` and each trainable weight.

    ``rng_factory`` (for dropout-like layers) is called before every forward pass to reset
    the randomness so that all passes see the same mask.
    """
    rng = np.random.default_rng(seed)
    xt = ag.Tensor(np.asarray(x, np.float32), requires_grad=check_input)
    if rng_factory:
        rng_factory()
    out = layer(xt, training=training)
    proj = rng.standard_normal(out.shape).astype(np.float32)
    params = layer.trainable_weights
    for p in params:
        p.grad = None
    (out * proj).sum().backward()
    snapshot = [p.data.copy() for p in layer.weights]

    def f():
        if rng_factory:
            rng_factory()
        with ag.no_grad():
            val = float(np.sum(layer(xt, training=training).data.astype(np.float64) * proj))
        for p, s in zip(layer.weights, snapshot):  # undo state updates (BatchNorm moving stats)
            np.copyto(p.data, s)
        return val

    targets = ([("input", xt)] if check_input else []) + [(p.name, p) for p in params]
    for name, t in targets:
        assert t.grad is not None, f"{name}: no gradient"
        pts = _points(t.data.size, max_points, rng)
        num = np.array([_fd(f, t.data, j, eps) for j in pts])
        _compare(t.grad.reshape(-1)[pts], num, f"{type(layer).__name__} {name}", rtol, atol)
    return out
