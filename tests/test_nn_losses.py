"""pixrank.nn.losses: values against numpy, finite-difference gradients, the fused
softmax cross-entropy path (the softmax is never differentiated), name resolution."""
from __future__ import annotations

import numpy as np
import pytest

from nn_gradcheck import assert_grads_match_fd
from pixrank import autograd as ag
from pixrank import losses, ops


def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture
def data(rng):
    z = rng.standard_normal((6, 5)) * 2
    labels = rng.integers(0, 5, 6)
    onehot = np.eye(5)[labels]
    return z, labels, onehot


def test_categorical_crossentropy_paths_agree(data):
    z, labels, onehot = data
    ref = -np.mean(np.log(np_softmax(z))[np.arange(6), labels])
    cce = losses.CategoricalCrossentropy()
    via_softmax = cce(onehot, ag.softmax(z)).item()           # logits remembered by the softmax
    via_logits = losses.CategoricalCrossentropy(from_logits=True)(onehot, z).item()
    via_probs = cce(onehot, ag.Tensor(np_softmax(z))).item()  # plain probabilities (no logits)
    for v in (via_softmax, via_logits, via_probs):
        assert abs(v - ref) < 1e-5
    sparse = losses.SparseCategoricalCrossentropy()
    assert abs(sparse(labels, ag.softmax(z)).item() - ref) < 1e-5
    assert abs(sparse(labels, ag.Tensor(np_softmax(z))).item() - ref) < 1e-5
    assert abs(losses.SparseCategoricalCrossentropy(from_logits=True)(labels, z).item() - ref) < 1e-5


def test_softmax_output_trains_through_fused_kernel(monkeypatch, data):
    """Dense(..., softmax) + cross-entropy: one ops.softmax_cross_entropy call, and the
    gradient reaching the logits is exactly (softmax - onehot) / N."""
    z, labels, onehot = data
    calls = []
    real = ops.softmax_cross_entropy
    monkeypatch.setattr(ops, "softmax_cross_entropy", lambda *a: calls.append(1) or real(*a))
    zt = ag.Tensor(z, requires_grad=True)
    for loss in (losses.CategoricalCrossentropy(), losses.SparseCategoricalCrossentropy()):
        zt.grad = None
        calls.clear()
        loss(onehot if isinstance(loss, losses.CategoricalCrossentropy) else labels, ag.softmax(zt)).backward()
        assert calls == [1]
        np.testing.assert_allclose(zt.grad, (np_softmax(z) - onehot) / 6, rtol=1e-4, atol=1e-6)


def test_extreme_logits_are_stable():
    z = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 0.0]])
    loss = losses.SparseCategoricalCrossentropy()(np.array([0, 0]), ag.softmax(z)).item()
    assert np.isfinite(loss) and abs(loss - 1000.0) < 1e-2


@pytest.mark.parametrize("make", [
    lambda: (losses.CategoricalCrossentropy(from_logits=True), "onehot"),
    lambda: (losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1), "onehot"),
    lambda: (losses.CategoricalCrossentropy(from_logits=True), "soft"),
    lambda: (losses.SparseCategoricalCrossentropy(from_logits=True), "labels"),
])
def test_crossentropy_grads_from_logits(data, rng, make):
    z, labels, onehot = data
    loss, kind = make()
    soft = rng.dirichlet(np.ones(5), 6)
    y = {"onehot": onehot, "labels": labels, "soft": soft}[kind]
    assert_grads_match_fd(lambda t: loss(y, t), [z])
    logp = np.log(np_softmax(z))
    if kind == "soft":
        ref = -np.mean((soft * logp).sum(axis=1))
        assert abs(loss(y, z).item() - ref) < 1e-5


def test_crossentropy_grads_from_probabilities(data, rng):
    z, labels, onehot = data
    p = np_softmax(z)
    assert_grads_match_fd(lambda t: losses.CategoricalCrossentropy()(onehot, t), [p], eps=1e-3)
    assert_grads_match_fd(lambda t: losses.SparseCategoricalCrossentropy()(labels, t), [p], eps=1e-3)


def test_mse_and_bce(rng):
    p = rng.standard_normal((4, 3))
    y = rng.standard_normal((4, 3))
    mse = losses.get("mse")
    assert abs(mse(y, p).item() - np.mean((y - p) ** 2)) < 1e-5
    assert_grads_match_fd(lambda t: mse(y, t), [p])
    yb = rng.integers(0, 2, (4, 3)).astype(float)
    bce = losses.BinaryCrossentropy(from_logits=True)
    ref = np.mean(np.maximum(p, 0) - p * yb + np.log1p(np.exp(-np.abs(p))))
    assert abs(bce(yb, p).item() - ref) < 1e-5
    assert_grads_match_fd(lambda t: bce(yb, t), [p])
    q = 1 / (1 + np.exp(-p))
    assert abs(losses.BinaryCrossentropy()(yb, q).item() - ref) < 1e-4
    per = losses.mean_squared_error(y, p)
    np.testing.assert_allclose(per.data, np.mean((y - p) ** 2, axis=-1), rtol=1e-5)


def test_functional_forms(data):
    z, labels, onehot = data
    per = losses.categorical_crossentropy(onehot, z, from_logits=True).data
    np.testing.assert_allclose(per, -np.log(np_softmax(z))[np.arange(6), labels], rtol=1e-4)
    per2 = losses.sparse_categorical_crossentropy(labels, ag.softmax(z)).data
    np.testing.assert_allclose(per2, per, rtol=1e-4)


def test_get_and_bad_targets(data):
    z, labels, onehot = data
    assert isinstance(losses.get("categorical_crossentropy"), losses.CategoricalCrossentropy)
    assert isinstance(losses.get(losses.SparseCategoricalCrossentropy), losses.SparseCategoricalCrossentropy)
    assert isinstance(losses.get(losses.mean_squared_error), losses.MeanSquaredError)
    with pytest.raises(ValueError, match="unknown loss 'categorical_crossentropi'"):
        losses.get("categorical_crossentropi")
    with pytest.raises(ValueError, match="one-hot of shape"):
        losses.CategoricalCrossentropy().prepare_targets(labels, (None, 5))
    with pytest.raises(ValueError, match="label 7 is outside the classes 0..4"):
        losses.SparseCategoricalCrossentropy().prepare_targets(np.array([0, 7]), (None, 5))
    with pytest.raises(ValueError, match="integer class ids"):
        losses.SparseCategoricalCrossentropy().prepare_targets(np.array([0.5, 1]), (None, 5))
    np.testing.assert_array_equal(losses.CategoricalCrossentropy().prepare_targets(onehot, (None, 5)), labels)
