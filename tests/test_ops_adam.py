"""ops.adam_update: one fused Adam(W) step against numpy, on every SIMD path and 1 and 2 threads.

The kernel must reproduce the float32 numpy computation of Keras' formula operation by operation
(``reference.adam_step_f32``): the same bits, whatever the path, thread count or size (1, 7 and
100003 cross the 8- and 16-float vector tails, 1048583 the threading grain of 2^20 floats); and stay within float32
rounding of the float64 formula (``reference.adam_ref64``). Then the argument checks.
"""
from __future__ import annotations

import numpy as np
import pytest

from pixrank import ops
from reference import adam_ref64, adam_step_f32

k = pytest.importorskip("pixrank._kernels")

HYPER = dict(lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7)


def _grads(rng, shape, steps):
    # magnitudes from 1e-6 to 1e2 so that sqrt(v) spans epsilon and beyond
    return [(rng.standard_normal(shape) * 10.0 ** rng.uniform(-6, 2, shape)).astype(np.float32)
            for _ in range(steps)]


@pytest.mark.parametrize("shape", [(), (1,), (7,), (100003,), (1048583,), (3, 5, 17), (200, 60)])
@pytest.mark.parametrize("weight_decay", [0.0, 0.004])
def test_adam_update_is_the_numpy_float32_computation(simd_path, threads, rng, shape, weight_decay):
    w0 = rng.standard_normal(shape).astype(np.float32)
    grads = _grads(rng, shape, 6)
    w, m, v = w0.copy(), np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    wr, mr, vr = w0.copy(), np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    for t, g in enumerate(grads, 1):
        lr = HYPER["lr"] * (1 + 0.5 * (t % 2))  # a learning rate that changes, as a schedule's does
        ops.adam_update(w, g, m, v, lr=lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                        weight_decay=weight_decay, step=t)
        adam_step_f32(wr, g, mr, vr, lr, 0.9, 0.999, 1e-7, weight_decay, t)
    np.testing.assert_array_equal(m, mr)
    np.testing.assert_array_equal(v, vr)
    np.testing.assert_array_equal(w, wr)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_update_matches_the_float64_formula(rng, weight_decay):
    shape = (4, 33)
    w0 = rng.standard_normal(shape).astype(np.float32)
    grads = [rng.standard_normal(shape).astype(np.float32) for _ in range(10)]
    w, m, v = w0.copy(), np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    hyper = dict(lr=1e-2, beta_1=0.8, beta_2=0.99, epsilon=1e-3)
    for t, g in enumerate(grads, 1):
        ops.adam_update(w, g, m, v, **hyper, weight_decay=weight_decay, step=t)
    w64, m64, v64 = adam_ref64(w0, grads, **hyper, weight_decay=weight_decay)
    np.testing.assert_allclose(m, m64, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(v, v64, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(w, w64, rtol=1e-5, atol=1e-6)
    # the first step moves every weight with a nonzero gradient by about lr (sign of -g)
    w1, m1, v1 = w0.copy(), np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    ops.adam_update(w1, grads[0], m1, v1, lr=1e-2, beta_1=0.8, beta_2=0.99, epsilon=1e-7, step=1)
    big = np.abs(grads[0]) > 0.1
    np.testing.assert_allclose((w0 - w1)[big], 1e-2 * np.sign(grads[0][big]), rtol=1e-4)


def test_adam_update_converts_grad_and_accepts_keras_edge_values(rng):
    w = np.ones((2, 3), np.float32)
    m, v = np.zeros_like(w), np.zeros_like(w)
    g64 = rng.standard_normal((3, 2)).T  # float64, not contiguous: converted like any op's input
    wr, mr, vr = w.copy(), m.copy(), v.copy()
    ops.adam_update(w, g64, m, v, lr=0.0, beta_1=0.0, beta_2=0.0, epsilon=1.0, step=1)
    adam_step_f32(wr, g64.astype(np.float32), mr, vr, 0.0, 0.0, 0.0, 1.0, 0.0, 1)
    np.testing.assert_array_equal(w, wr)  # lr = 0 (a schedule's end): only m and v change
    np.testing.assert_array_equal(m, mr)
    np.testing.assert_array_equal(v, vr)
    empty = np.zeros((0, 4), np.float32)
    assert ops.adam_update(empty, empty.copy(), empty.copy(), empty.copy(), **HYPER, step=3) is None


def _state(shape=(5,)):
    return (np.ones(shape, np.float32), np.full(shape, 0.5, np.float32), np.zeros(shape, np.float32),
            np.zeros(shape, np.float32))


@pytest.mark.parametrize("change,exc,match", [
    (dict(param=[1.0] * 5), TypeError, "param must be a numpy.ndarray of dtype float32"),
    (dict(param=np.ones(5)), TypeError, "param must have dtype float32 .* got dtype float64"),
    (dict(m=np.zeros(5, np.float16)), TypeError, "m must have dtype float32"),
    (dict(v=None), TypeError, "v must be a numpy.ndarray"),
    (dict(param=np.ones(10, np.float32)[::2]), ValueError, "param must be C-contiguous"),
    (dict(grad=np.array(["a"] * 5)), TypeError, "grad must have a real numeric dtype"),
    (dict(grad=np.ones(4, np.float32)), ValueError, r"grad must have the shape of param \(5,\), got shape \(4,\)"),
    (dict(m=np.zeros((5, 1), np.float32)), ValueError, r"m must have the shape of param \(5,\)"),
    (dict(lr=float("nan")), ValueError, "lr must be finite"),
    (dict(lr=-1e-3), ValueError, "lr must be >= 0"),
    (dict(lr=True), TypeError, "lr must be a real number"),
    (dict(lr="0.1"), TypeError, "lr must be a real number"),
    (dict(beta_1=1.0), ValueError, r"beta_1 must be in \[0, 1\)"),
    (dict(beta_2=-0.1), ValueError, r"beta_2 must be in \[0, 1\)"),
    (dict(epsilon=0.0), ValueError, "epsilon must be > 0"),
    (dict(epsilon=float("inf")), ValueError, "epsilon must be finite"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay must be >= 0"),
    (dict(step=0), ValueError, "step must be >= 1"),
    (dict(step=1.0), TypeError, "step must be an int"),
    (dict(step=np.True_), TypeError, "step must be an int"),
])
def test_adam_update_rejects_bad_arguments_before_writing(change, exc, match):
    param, grad, m, v = _state()
    args = dict(param=param, grad=grad, m=m, v=v, **HYPER, weight_decay=0.0, step=1)
    args.update(change)
    before = [x.copy() for x in (param, m, v)]
    with pytest.raises(exc, match=f"adam_update: {match}"):
        ops.adam_update(args.pop("param"), args.pop("grad"), args.pop("m"), args.pop("v"), **args)
    for x, b in zip((param, m, v), before):
        np.testing.assert_array_equal(x, b)


def test_adam_update_rejects_read_only_and_overlapping_arrays():
    param, grad, m, v = _state((6,))
    ro = param.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="adam_update: param must be writeable"):
        ops.adam_update(ro, grad, m, v, **HYPER, step=1)
    with pytest.raises(ValueError, match="adam_update: param and m must not share memory"):
        ops.adam_update(param, grad, param, v, **HYPER, step=1)
    buf = np.zeros(12, np.float32)
    with pytest.raises(ValueError, match="adam_update: m and v must not share memory"):
        ops.adam_update(param, grad, buf[:6], buf[3:9], **HYPER, step=1)
    with pytest.raises(ValueError, match="adam_update: param and grad must not share memory"):
        ops.adam_update(param, param, m, v, **HYPER, step=1)
    with pytest.raises(TypeError, match="keyword"):
        ops.adam_update(param, grad, m, v, 1e-3, 0.9, 0.999, 1e-7, step=1)  # hyper-parameters are keywords
