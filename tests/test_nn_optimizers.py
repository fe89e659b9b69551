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


class _NumpyAdam(optimizers.Adam):
    """Adam forced onto the numpy path (an overridden ``_update`` never takes the fused kernel)."""

    def _update(self, w, g, state, lr):
        return super()._update(w, g, state, lr)


class _NumpyAdamW(optimizers.AdamW):
    def _update(self, w, g, state, lr):
        return super()._update(w, g, state, lr)


@pytest.mark.parametrize("make,make_numpy", [
    (lambda: optimizers.Adam(1e-2), lambda: _NumpyAdam(1e-2)),
    (lambda: optimizers.AdamW(1e-2, weight_decay=0.1), lambda: _NumpyAdamW(1e-2, weight_decay=0.1)),
    (lambda: optimizers.Adam(schedules.ExponentialDecay(1e-2, 2, 0.5), beta_1=0.8, epsilon=1e-3),
     lambda: _NumpyAdam(schedules.ExponentialDecay(1e-2, 2, 0.5), beta_1=0.8, epsilon=1e-3)),
])
def test_fused_adam_is_the_numpy_update_bit_for_bit(rng, monkeypatch, make, make_numpy):
    """float32 parameters go through ops.adam_update (weight decay included, applied once), and
    give exactly what the numpy path gives; both follow the float64 Keras formula."""
    from pixrank import ops
    calls = []
    real = ops.adam_update
    monkeypatch.setattr(ops, "adam_update", lambda *a, **kw: (calls.append(kw["step"]), real(*a, **kw))[1])
    shapes = [(7,), (30, 9), (100003,)]
    w0s = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[(rng.standard_normal(s) * 10.0 ** rng.uniform(-5, 1, s)).astype(np.float32) for s in shapes]
             for _ in range(5)]
    results = []
    for factory in (make, make_numpy):
        opt = factory()
        params = [ag.Parameter(w.copy()) for w in w0s]
        for gs in grads:
            opt.apply_gradients(zip(gs, params))
        results.append([p.data for p in params])
    assert calls == [t for t in range(1, 6) for _ in shapes]  # fused for the first optimizer only
    for fused, numpy_path in zip(*results):
        np.testing.assert_array_equal(fused, numpy_path)
    opt = make()
    lrs = [opt.learning_rate(t) if callable(opt.learning_rate) else opt.learning_rate for t in range(5)]
    for i, w0 in enumerate(w0s[:2]):  # the float64 formula, with the same per-step learning rates
        w = w0.astype(np.float64)
        m = v = 0.0
        wd = opt.weight_decay or 0.0
        for t, gs in enumerate(grads, 1):
            lr, g = lrs[t - 1], gs[i].astype(np.float64)
            w = w * (1 - lr * wd)
            m = opt.beta_1 * m + (1 - opt.beta_1) * g
            v = opt.beta_2 * v + (1 - opt.beta_2) * g * g
            w = w - lr * math.sqrt(1 - opt.beta_2 ** t) / (1 - opt.beta_1 ** t) * m / (np.sqrt(v) + opt.epsilon)
        np.testing.assert_allclose(results[0][i], w, rtol=1e-5, atol=1e-6)


def test_amsgrad_takes_the_numpy_path(rng, monkeypatch):
    from pixrank import ops
    monkeypatch.setattr(ops, "adam_update", lambda *a, **kw: pytest.fail("fused kernel used"))
    w0 = rng.standard_normal((4, 3)).astype(np.float32)
    grads = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(4)]
    w, m, v, vmax = w0.astype(np.float64), 0, 0, 0
    for t, g in enumerate(grads, 1):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        vmax = np.maximum(vmax, v)
        w = w - 1e-3 * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(vmax) + 1e-7)
    np.testing.assert_allclose(run(optimizers.Adam(amsgrad=True), w0, grads), w, rtol=1e-5, atol=1e-7)


def test_fused_adam_trains_an_mlp_like_the_numpy_path(monkeypatch):
    """Keras' MLP trained for a few steps with Adam: the fused kernel and the numpy path end with
    identical weights and losses (same initialisation, same batches)."""
    import pixrank as keras
    from pixrank import layers, utils

    rng = np.random.default_rng(5)
    x = rng.random((96, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 96)
    runs = []
    for opt in (optimizers.AdamW(3e-3, weight_decay=0.01), _NumpyAdamW(3e-3, weight_decay=0.01)):
        utils.set_random_seed(0)
        model = keras.Sequential([layers.Flatten(input_shape=(28, 28, 1)), layers.Dense(20, activation="relu"),
                                  layers.Dense(10, activation="softmax")])
        model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
        losses = [float(model.train_on_batch(x[i:i + 32], y[i:i + 32])) for i in range(0, 96, 32)]
        runs.append((losses, model.get_weights()))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)


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
