"""pixrank.nn.layers: finite-difference gradient checks through every layer (input and
weights), forward values against numpy, Keras defaults, training vs inference behaviour."""
from __future__ import annotations

import numpy as np
import pytest

from nn_gradcheck import assert_layer_grads_match_fd
from pixrank import autograd as ag
from pixrank import layers, ops, utils


@pytest.fixture(autouse=True)
def _seed():
    utils.set_random_seed(1234)


def _no_kink(make_layer, make_x, pre, threshold=0.05):
    """Draw (layer, x) until every pre-activation is away from the ReLU kink."""
    for _ in range(500):
        layer, x = make_layer(), make_x()
        if threshold == 0 or np.abs(pre(layer, x)).min() > threshold:
            return layer, x
    raise RuntimeError("could not draw inputs away from the kink")


@pytest.mark.parametrize("activation", [None, "relu", "sigmoid", "tanh", "softmax", "elu", "swish"])
def test_dense_grads(rng, activation):
    def make():
        l = layers.Dense(4, activation=activation, bias_initializer="random_normal")
        l(np.zeros((1, 5), np.float32))
        return l
    layer, x = _no_kink(make, lambda: rng.standard_normal((6, 5)),
                        lambda l, x: x @ l.kernel.data + l.bias.data, threshold=0.05 if activation == "relu" else 0)
    assert_layer_grads_match_fd(layer, x)


def test_dense_value_defaults_and_nd_input(rng):
    layer = layers.Dense(3)
    x = rng.standard_normal((2, 4, 5)).astype(np.float32)
    y = layer(x).data
    assert y.shape == (2, 4, 3)
    np.testing.assert_allclose(y, x @ layer.kernel.data, rtol=1e-5, atol=1e-6)
    assert np.all(layer.bias.data == 0)  # Keras: zero biases
    lim = np.sqrt(6 / (5 + 3))  # Glorot uniform
    assert np.abs(layer.kernel.data).max() <= lim
    assert_layer_grads_match_fd(layer, x)
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, ..., 5\)"):
        layer(np.zeros((2, 6), np.float32))


def test_dense_relu_is_fused(monkeypatch, rng):
    calls = []
    real_mm, real_bw = ops.matmul, ops.linear_backward
    monkeypatch.setattr(ops, "matmul", lambda *a, **k: calls.append(("mm", k.get("relu"))) or real_mm(*a, **k))
    monkeypatch.setattr(ops, "linear_backward", lambda *a, **k: calls.append(("bw",) + a[4:]) or real_bw(*a, **k))
    layer = layers.Dense(4, activation="relu")
    x = ag.Tensor(rng.standard_normal((3, 5)), requires_grad=True)
    calls.clear()
    layer(x).sum().backward()
    assert calls == [("mm", True), ("bw", True)]


@pytest.mark.parametrize("strides,padding", [(1, "valid"), (1, "same"), (2, "same"), (2, "valid"), ((1, 2), "same")])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_conv2d_grads(rng, strides, padding, activation):
    def make():
        l = layers.Conv2D(3, (3, 2), strides=strides, padding=padding, activation=activation,
                          bias_initializer="random_normal")
        l(np.zeros((1, 7, 6, 2), np.float32))
        return l
    layer, x = _no_kink(make, lambda: rng.standard_normal((2, 7, 6, 2)),
                        lambda l, x: ops.conv2d(x, l.kernel.data, l.bias.data, stride=l.strides, padding=l.padding),
                        threshold=0.01 if activation == "relu" else 0)
    out = assert_layer_grads_match_fd(layer, x, eps=2e-3)
    oh = -(-7 // layer.strides[0]) if padding == "same" else (7 - 3) // layer.strides[0] + 1
    ow = -(-6 // layer.strides[1]) if padding == "same" else (6 - 2) // layer.strides[1] + 1
    assert out.shape == (2, oh, ow, 3)
    assert layer.kernel.data.shape == (3, 2, 2, 3)  # HWIO


def test_conv2d_bad_input_and_args():
    layer = layers.Conv2D(4, 3, input_shape=(8, 8, 3))
    with pytest.raises(ValueError, match=r"\(batch, H, W, 3\)"):
        layer(np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match="padding"):
        layers.Conv2D(4, 3, padding="full")
    with pytest.raises(ValueError, match="filters"):
        layers.Conv2D(0, 3)
    with pytest.raises(ValueError, match="unknown activation 'rellu'"):
        layers.Conv2D(4, 3, activation="rellu")


@pytest.mark.parametrize("pool,strides,padding", [(2, None, "valid"), (3, 2, "valid"), (2, None, "same"), (3, 2, "same")])
def test_maxpool_grads(rng, pool, strides, padding):
    layer = layers.MaxPooling2D(pool, strides, padding=padding)
    x = rng.permutation(2 * 7 * 5 * 3).reshape(2, 7, 5, 3) / 40.0
    out = assert_layer_grads_match_fd(layer, x, eps=1e-3)
    s = layer.strides[0]
    assert out.shape[1] == (-(-7 // s) if padding == "same" else (7 - layer.pool_size[0]) // s + 1)


def test_global_avg_pool_flatten_reshape_activation(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    out = assert_layer_grads_match_fd(layers.GlobalAveragePooling2D(), x)
    np.testing.assert_allclose(out.data, x.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    assert assert_layer_grads_match_fd(layers.Flatten(), x).shape == (2, 60)
    assert assert_layer_grads_match_fd(layers.Reshape((12, 5)), x).shape == (2, 12, 5)
    assert_layer_grads_match_fd(layers.Activation("tanh"), x)
    with pytest.raises(ValueError, match="cannot reshape"):
        layers.Reshape((7, 7))(x)


def test_dropout_training_vs_inference(rng):
    layer = layers.Dropout(0.4, seed=3)
    x = rng.standard_normal((10, 8))
    assert np.array_equal(layer(x, training=False).data, x.astype(np.float32))
    y = layer(np.ones((300, 300)), training=True).data
    assert abs((y == 0).mean() - 0.4) < 0.01

    def reset():
        layer._rng = np.random.default_rng(7)
    assert_layer_grads_match_fd(layer, x, rng_factory=reset)


def test_batchnorm_training_grads_and_moving_stats(rng):
    layer = layers.BatchNormalization(gamma_initializer="random_normal", beta_initializer="random_normal")
    x = rng.standard_normal((8, 3, 2, 4)) * 3 + 2
    layer(np.zeros((1, 3, 2, 4), np.float32), training=False)  # build
    assert_layer_grads_match_fd(layer, x, training=True, max_points=60)
    # moving averages, Keras momentum 0.99, biased batch variance
    mm0, mv0 = layer.moving_mean.data.copy(), layer.moving_variance.data.copy()
    layer(x, training=True)
    axes = (0, 1, 2)
    np.testing.assert_allclose(layer.moving_mean.data, 0.99 * mm0 + 0.01 * x.mean(axis=axes), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.data, 0.99 * mv0 + 0.01 * x.var(axis=axes), rtol=1e-5)
    # inference uses the moving statistics
    g, b = layer.gamma.data, layer.beta.data
    ref = (x - layer.moving_mean.data) / np.sqrt(layer.moving_variance.data + 1e-3) * g + b
    np.testing.assert_allclose(layer(x, training=False).data, ref, rtol=1e-4, atol=1e-4)
    assert_layer_grads_match_fd(layer, x, training=False)
    assert [p.name.split("/")[1] for p in layer.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert len(layer.trainable_weights) == 2 and len(layer.non_trainable_weights) == 2


def test_add_residual_and_concatenate(rng):
    class Residual(layers.Layer):
        def __init__(self):
            super().__init__()
            self.d1 = layers.Dense(4, activation="tanh", bias_initializer="random_normal")
            self.d2 = layers.Dense(4)
            self.add = layers.Add()

        def call(self, x):
            return self.add([x, self.d2(self.d1(x))])

    layer = Residual()
    x = rng.standard_normal((5, 4))
    layer(np.zeros((1, 4), np.float32))
    assert len(layer.trainable_weights) == 4
    out = assert_layer_grads_match_fd(layer, x)
    np.testing.assert_allclose(out.data, x + np.tanh(x @ layer.d1.kernel.data + layer.d1.bias.data) @ layer.d2.kernel.data,
                               rtol=1e-4, atol=1e-5)
    cat = layers.Concatenate()
    np.testing.assert_allclose(cat([x, 2 * x]).data, np.concatenate([x, 2 * x], axis=-1), rtol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        layers.Add()([x, x[:, :2]])


def test_embedding_layers(rng):
    emb = layers.Embedding(10, 3)
    assert np.abs(emb.embeddings.data).max() <= 0.05  # Keras 'uniform' init
    ids = np.array([[1, 2, 1], [9, 0, 0]])
    y = emb(ids)
    assert y.shape == (2, 3, 3)
    np.testing.assert_allclose(y.data, emb.embeddings.data[ids])
    proj = rng.standard_normal(y.shape).astype(np.float32)
    (y * proj).sum().backward()
    ref = np.zeros((10, 3), np.float32)
    np.add.at(ref, ids.reshape(-1), proj.reshape(-1, 3))
    np.testing.assert_allclose(emb.embeddings.grad, ref, rtol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        emb(np.array([10]))
    bag = layers.EmbeddingBag(10, 3)
    out = bag((np.array([1, 2, 3]), np.array([0, 2])))
    np.testing.assert_allclose(out.data[0], bag.embeddings.data[[1, 2]].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(emb.bag(np.array([4, 5]), np.array([0])).data[0], emb.embeddings.data[[4, 5]].mean(0), rtol=1e-6)


@pytest.mark.parametrize("name,check", [
    ("glorot_uniform", lambda w: np.abs(w).max() <= np.sqrt(6 / (300 + 200))),
    ("he_uniform", lambda w: np.abs(w).max() <= np.sqrt(6 / 300)),
    ("he_normal", lambda w: abs(w.std() - np.sqrt(2 / 300)) < 0.05 * np.sqrt(2 / 300) and np.abs(w).max() <= 2 * np.sqrt(2 / 300) / 0.8796 + 1e-6),
    ("zeros", lambda w: np.all(w == 0)),
    ("ones", lambda w: np.all(w == 1)),
])
def test_initializers(name, check):
    from pixrank import initializers
    w = initializers.get(name)((300, 200))
    assert w.dtype == np.float32 and w.shape == (300, 200)
    assert check(w)
    conv = initializers.get("he_normal")((3, 3, 16, 32))  # fan_in = 3*3*16
    assert abs(conv.std() - np.sqrt(2 / 144)) < 0.05 * np.sqrt(2 / 144)
    with pytest.raises(ValueError, match="unknown initializer"):
        initializers.get("glorot")


def test_seeded_initialisation_repeats():
    utils.set_random_seed(5)
    a = layers.Dense(4, input_shape=(3,)).kernel.data.copy()
    utils.set_random_seed(5)
    b = layers.Dense(4, input_shape=(3,)).kernel.data.copy()
    assert np.array_equal(a, b)


def test_layer_weight_tracking_and_names():
    layers_mod = layers
    layers_mod.Layer  # noqa: B018

    class Block(layers.Layer):
        def __init__(self):
            super().__init__()
            self.parts = [layers.Dense(3), {"x": layers.Dense(2)}]
            self.scale = ag.Parameter(np.ones(1), name="scale")

        def call(self, x):
            return self.parts[1]["x"](self.parts[0](x)) * self.scale

    b = Block()
    b(np.zeros((1, 4), np.float32))
    names = [p.name.split("/")[-1] for p in b.weights]
    assert names == ["kernel", "bias", "kernel", "bias", "scale"]
    assert b.count_params() == 4 * 3 + 3 + 3 * 2 + 2 + 1
    b.trainable = False
    assert b.trainable_weights == [] and len(b.non_trainable_weights) == 5
    with pytest.raises(TypeError, match="unexpected keyword"):
        layers.Dense(3, unitz=4)
