"""pixrank.nn.metrics: accuracy variants and top-k against numpy, state handling, and how
'accuracy' is resolved from the loss."""
from __future__ import annotations

import numpy as np
import pytest

from pixrank import losses, metrics


def test_accuracies_against_numpy(rng):
    p = rng.random((50, 7))
    y = rng.integers(0, 7, 50)
    acc = np.mean(p.argmax(1) == y)
    for m, target in ((metrics.SparseCategoricalAccuracy(), y), (metrics.CategoricalAccuracy(), np.eye(7)[y]),
                      (metrics.CategoricalAccuracy(), y)):
        m.update_state(target[:20], p[:20])
        m.update_state(target[20:], p[20:])
        assert abs(m.result() - acc) < 1e-12
        m.reset_state()
        assert m.result() == 0.0
    for k in (1, 3, 7):
        ref = np.mean([y[i] in np.argsort(-p[i])[:k] for i in range(50)])
        m = metrics.SparseTopKCategoricalAccuracy(k=k)
        m.update_state(y, p)
        assert abs(m.result() - ref) < 1e-12
        t = metrics.TopKCategoricalAccuracy(k=k)
        t.update_state(np.eye(7)[y], p)
        assert abs(t.result() - ref) < 1e-12
        np.testing.assert_array_equal(metrics.sparse_top_k_categorical_accuracy(y, p, k),
                                      [y[i] in np.argsort(-p[i])[:k] for i in range(50)])


def test_binary_and_regression_metrics(rng):
    p = rng.random((30, 1))
    y = rng.integers(0, 2, (30, 1))
    m = metrics.BinaryAccuracy()
    m.update_state(y, p)
    assert abs(m.result() - np.mean((p > 0.5) == y)) < 1e-12
    r = rng.standard_normal((10, 3))
    t = rng.standard_normal((10, 3))
    mse, mae = metrics.get("mse"), metrics.get("mae")
    mse.update_state(t, r)
    mae.update_state(t, r)
    assert abs(mse.result() - np.mean((t - r) ** 2)) < 1e-9 and abs(mae.result() - np.mean(np.abs(t - r))) < 1e-9
    assert mse.name == "mse"


def test_accuracy_resolution():
    assert isinstance(metrics.get("accuracy", losses.SparseCategoricalCrossentropy()), metrics.SparseCategoricalAccuracy)
    assert isinstance(metrics.get("accuracy", losses.CategoricalCrossentropy()), metrics.CategoricalAccuracy)
    assert isinstance(metrics.get("acc", losses.MeanSquaredError(), (None, 1)), metrics.BinaryAccuracy)
    assert metrics.get("accuracy", losses.CategoricalCrossentropy()).name == "accuracy"
    with pytest.raises(ValueError, match="unknown metric 'precision'"):
        metrics.get("precision")
    with pytest.raises(ValueError, match="k must be"):
        metrics.SparseTopKCategoricalAccuracy(k=0)
