"""The fast embedding bag against numpy and against pixrank.autograd.embedding_bag."""
import numpy as np
import pytest

from pixrank import autograd as ag
from pixrank.text.tower import TextTower, embedding_bag


def test_embedding_bag_forward_backward_against_numpy():
    rng = np.random.default_rng(1)
    table0 = rng.normal(size=(30, 6)).astype(np.float32)
    ids = rng.integers(0, 30, size=25)
    ids[:4] = 3  # repeated ids within and across bags
    off = np.array([0, 4, 5, 12, 25])
    t = ag.Parameter(table0)
    y = embedding_bag(ids, off, t)
    ref = np.stack([table0[ids[off[i]:off[i + 1]]].mean(axis=0) for i in range(4)])
    np.testing.assert_allclose(y.data, ref, rtol=1e-6, atol=1e-6)
    g = rng.normal(size=y.shape).astype(np.float32)
    y.backward(g)
    gref = np.zeros_like(table0)
    for i in range(4):
        for j in ids[off[i]:off[i + 1]]:
            gref[j] += g[i] / (off[i + 1] - off[i])
    np.testing.assert_allclose(t.grad, gref, rtol=1e-5, atol=1e-6)
    # agrees with the framework's own (np.add.at based) embedding bag
    t2 = ag.Parameter(table0)
    y2 = ag.embedding_bag(ids, off[:-1], t2)
    np.testing.assert_allclose(y.data, y2.data, rtol=1e-6, atol=1e-6)
    y2.backward(g)
    np.testing.assert_allclose(t.grad, t2.grad, rtol=1e-5, atol=1e-6)


def test_embedding_bag_errors():
    t = ag.Parameter(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="range"):
        embedding_bag(np.array([0, 5]), np.array([0, 2]), t)
    with pytest.raises(ValueError, match="non-empty"):
        embedding_bag(np.array([0, 1]), np.array([0, 0, 2]), t)
    with pytest.raises(ValueError, match="integer"):
        embedding_bag(np.array([0.5]), np.array([0, 1]), t)
    with pytest.raises(ValueError, match="2-D"):
        embedding_bag(np.array([0]), np.array([0, 1]), np.zeros(3))


def test_text_tower_gradient_reaches_embeddings():
    rng = np.random.default_rng(0)
    tower = TextTower(20, token_dim=4, hidden=8, embed_dim=3)
    ids = np.array([1, 2, 3, 4, 5], dtype=np.int64)
    off = np.array([0, 2, 5], dtype=np.int64)
    out = tower((ids, off), training=True)
    assert out.shape == (2, 3)
    (out * rng.normal(size=(2, 3)).astype(np.float32)).sum().backward()
    g = tower.bag.embeddings.grad
    assert np.abs(g[1:6]).sum() > 0 and np.abs(g[6:]).sum() == 0 and np.abs(g[0]).sum() == 0
