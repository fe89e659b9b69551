"""pixrank.nn.optimizers and schedules: updates against the Keras formulas written in
numpy, the three ways to apply gradients, schedules' values, bad arguments."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pixrank import autograd as ag
from pixrank import optimizers
schedules = optimizers.schedules


def run(opt, w0, grads):
    p = ag.Parameter(w0, name="w")
    for g in grads:
        opt.apply_gradients([(g, p)])
    return p.data


@pytest.fixture
def problem(rng):
    return rng.standard_normal((4, 3)).astype(np.float32), [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(5)]


def test_adam_matches_formula(problem):
    w0, grads = problem
    w, m, v = w0.astype(np.float64), 0, 0
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-7
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
    np.testing.assert_allclose(run(optimizers.Adam(), w0, grads), w, rtol=1e-5, atol=1e-7)
    opt = optimizers.get("adam")
    assert (opt.learning_rate, opt.beta_1, opt.beta_2, opt.epsilon) == (1e-3, 0.9, 0.999, 1e-7)


def test_adamw_decoupled_decay(problem):
    w0, grads = problem
    w, m, v = w0.astype(np.float64), 0, 0
    lr, wd = 1e-2, 0.1
    for t, g in enumerate(grads, 1):
        w = w * (1 - lr * wd)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - lr * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(run(optimizers.AdamW(lr, weight_decay=wd), w0, grads), w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_matches_formula(problem, momentum, nesterov):
    w0, grads = problem
    w, vel, lr = w0.astype(np.float64), 0, 0.05
    for g in grads:
        vel = momentum * vel - lr * g
        w = w + (momentum * vel - lr * g if nesterov else vel)
    np.testing.assert_allclose(run(optimizers.SGD(lr, momentum, nesterov), w0, grads), w, rtol=1e-5, atol=1e-6)


def test_rmsprop_matches_formula(problem):
    w0, grads = problem
    w, v = w0.astype(np.float64), 0
    for g in grads:
        v = 0.9 * v + 0.1 * g * g
        w = w - 1e-3 * g / np.sqrt(v + 1e-7)
    np.testing.assert_allclose(run(optimizers.RMSprop(), w0, grads), w, rtol=1e-5, atol=1e-6)


def test_three_ways_to_apply_gradients_agree(rng):
    x = rng.standard_normal((8, 3)).astype(np.float32)
    labels = rng.integers(0, 4, 8)
    w0 = rng.standard_normal((3, 4)).astype(np.float32)
    results = []
    for mode in ("apply", "step", "minimize"):
        w = ag.Parameter(w0)
        t = ag.Parameter(np.array(0.5), name="temperature")
        opt = optimizers.Adam(0.01)
        for _ in range(3):
            loss = ag.softmax_cross_entropy(ag.matmul(x, w) * ag.exp(t), labels)
            if mode == "apply":
                opt.apply_gradients(zip(ag.grad(loss, [w, t]), [w, t]))
            elif mode == "step":
                loss.backward()
                opt.step([w, t])
                assert w.grad is None
            else:
                opt.minimize(loss, [w, t])
        results.append((w.data.copy(), t.data.copy()))
        assert opt.iterations == 3
    for w, t in results[1:]:
        np.testing.assert_array_equal(w, results[0][0])
        np.testing.assert_array_equal(t, results[0][1])


def test_clipping(rng):
    p = ag.Parameter(np.zeros(4))
    g = np.array([3.0, 4.0, 0, 0], np.float32)
    optimizers.SGD(1.0, clipnorm=1.0).apply_gradients([(g, p)])
    np.testing.assert_allclose(p.data, [-0.6, -0.8, 0, 0], rtol=1e-6)
    p2 = ag.Parameter(np.zeros(4))
    optimizers.SGD(1.0, clipvalue=0.5).apply_gradients([(g, p2)])
    np.testing.assert_allclose(p2.data, [-0.5, -0.5, 0, 0])


def test_schedules():
    s = schedules.StepDecay(0.1, step_size=10, gamma=0.5)
    assert [s(0), s(9), s(10), s(25)] == [0.1, 0.1, 0.05, 0.025]
    e = schedules.ExponentialDecay(1.0, 10, 0.5, staircase=True)
    assert e(19) == 0.5 and abs(schedules.ExponentialDecay(1.0, 10, 0.5)(5) - 0.5 ** 0.5) < 1e-12
    c = schedules.CosineDecay(1.0, 100, alpha=0.1)
    assert c(0) == 1.0 and abs(c(50) - (0.1 + 0.9 * 0.5)) < 1e-12 and abs(c(100) - 0.1) < 1e-12 and c(500) == c(100)
    w = schedules.CosineDecay(0.0, 100, warmup_target=1.0, warmup_steps=10)
    assert abs(w(5) - 0.5) < 1e-12 and w(10) == 1.0
    pc = schedules.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1])
    assert [pc(10), pc(11), pc(21)] == [1.0, 0.5, 0.1]
    opt = optimizers.SGD(learning_rate=s)
    p = ag.Parameter(np.zeros(1))
    for _ in range(10):
        opt.apply_gradients([(np.ones(1, np.float32), p)])
    assert abs(p.data[0] + 1.0) < 1e-6  # ten steps at 0.1
    assert opt.current_learning_rate() == 0.05


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'"):
        optimizers.get("adamm")
    with pytest.raises(ValueError, match="learning_rate must be a positive"):
        optimizers.Adam(-1)
    with pytest.raises(ValueError, match="momentum"):
        optimizers.SGD(momentum=1.5)
    p = ag.Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="gradient of shape"):
        optimizers.SGD().apply_gradients([(np.zeros(4), p)])
    with pytest.raises(ValueError, match="not trainable"):
        optimizers.SGD().apply_gradients([(np.zeros(3), ag.Parameter(np.zeros(3), trainable=False))])
