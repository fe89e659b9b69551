"""pixrank.nn.saving: .pxr round trips (Sequential and subclassed models give identical
predictions), compile config restored, weights-only files, and clear errors for files
that are not saved models."""
from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest

import pixrank as keras
from pixrank import autograd as ag
from pixrank import layers, utils


def make_cnn():
    return keras.Sequential([
        layers.Conv2D(4, 3, activation="relu", padding="same", input_shape=(10, 10, 2)),
        layers.BatchNormalization(),
        layers.MaxPool2D(),
        layers.Conv2D(6, 3, strides=2, kernel_initializer="he_normal"),
        layers.Dropout(0.3),
        layers.GlobalAveragePooling2D(),
        layers.Dense(5, activation="softmax"),
    ])


def test_sequential_round_trip(tmp_path, rng):
    utils.set_random_seed(0)
    model = make_cnn()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x = rng.random((64, 10, 10, 2), dtype=np.float32)
    y = rng.integers(0, 5, 64)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # moves BN statistics off their initial values
    path = tmp_path / "cnn.pxr"
    model.save(path)
    assert sorted(os.listdir(tmp_path)) == ["cnn.pxr"]  # no temporary left behind
    loaded = keras.load_model(path)
    assert type(loaded) is keras.Sequential
    assert [type(l).__name__ for l in loaded.layers] == [type(l).__name__ for l in model.layers]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert loaded.optimizer.learning_rate == 3e-3 and loaded.loss.name == "sparse_categorical_crossentropy"
    res = loaded.evaluate(x, y, verbose=0)
    np.testing.assert_allclose(res, model.evaluate(x, y, verbose=0), rtol=1e-6)
    loaded.fit(x, y, epochs=1, verbose=0)  # trainable after loading
    with zipfile.ZipFile(path) as z:
        header = json.loads(z.read("pixrank.json"))
    assert header["format"] == "pixrank-model" and header["format_version"] == 1


def test_mlp_built_lazily_round_trip(tmp_path, rng):
    model = keras.Sequential([layers.Dense(7, activation="tanh"), layers.Dense(3)])
    x = rng.random((5, 4), dtype=np.float32)
    y0 = model.predict(x)
    model.save(tmp_path / "m.pxr")
    loaded = keras.load_model(tmp_path / "m.pxr")
    np.testing.assert_array_equal(loaded.predict(x), y0)
    with pytest.raises(ValueError, match=r"expects inputs of shape \(None, 4\), got \(5, 6\)"):
        loaded.predict(rng.random((5, 6), dtype=np.float32))


class Encoder(keras.Model):
    def __init__(self, dim=6, vocab=30, temperature=0.07):
        super().__init__()
        self.dim, self.vocab = dim, vocab
        self.conv = layers.Conv2D(3, 3, activation="relu")
        self.pool = layers.GlobalAveragePooling2D()
        self.proj = layers.Dense(dim)
        self.words = layers.Embedding(vocab, dim)
        self.log_temp = ag.Parameter(np.log(1 / temperature), name="log_temp")

    def call(self, inputs, training=None):
        images, ids, offsets = inputs
        img = ag.l2_normalize(self.proj(self.pool(self.conv(images))))
        txt = ag.l2_normalize(self.words.bag(ids, offsets))
        return ag.matmul(img, txt, trans_b=True) * ag.exp(self.log_temp)


def test_subclassed_round_trip(tmp_path, rng):
    model = Encoder(dim=5, temperature=0.1)
    images = rng.random((4, 7, 7, 1), dtype=np.float32)
    ids, offsets = rng.integers(0, 30, 9), np.array([0, 3, 5, 8])
    out = model((images, ids, offsets)).data
    model.log_temp.data[...] = 1.5
    out = model((images, ids, offsets)).data
    model.save(tmp_path / "enc.pxr")
    loaded = keras.load_model(tmp_path / "enc.pxr")
    assert type(loaded) is Encoder and loaded.dim == 5
    np.testing.assert_array_equal(loaded((images, ids, offsets)).data, out)
    assert float(loaded.log_temp.data) == 1.5


def test_weights_only(tmp_path, rng):
    a, b = make_cnn(), make_cnn()
    a.save_weights(tmp_path / "w.pxr")
    b.load_weights(tmp_path / "w.pxr")
    x = rng.random((3, 10, 10, 2), dtype=np.float32)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    with pytest.raises(ValueError, match="holds only weights"):
        keras.load_model(tmp_path / "w.pxr")
    small = keras.Sequential([layers.Dense(2, input_shape=(3,))])
    with pytest.raises(ValueError, match="holds 10 weights but the re-created model has 2"):
        small.load_weights(tmp_path / "w.pxr")


def test_not_a_model_file(tmp_path):
    junk = tmp_path / "junk.pxr"
    junk.write_bytes(b"hello, not a model")
    with pytest.raises(ValueError, match="is not a pixrank saved model"):
        keras.load_model(junk)
    npz = tmp_path / "arr.npz"
    np.savez(npz, a=np.zeros(3))
    with pytest.raises(ValueError, match="is not a pixrank saved model"):
        keras.load_model(npz)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("pixrank.json", json.dumps({"format": "something-else"}))
        z.writestr("weights.npz", b"")
    with pytest.raises(ValueError, match="is not a pixrank saved model"):
        keras.load_model(other)
    future = tmp_path / "future.pxr"
    with zipfile.ZipFile(future, "w") as z:
        z.writestr("pixrank.json", json.dumps({"format": "pixrank-model", "format_version": 99, "weights": []}))
        z.writestr("weights.npz", b"")
    with pytest.raises(ValueError, match="unsupported pixrank model format version 99"):
        keras.load_model(future)
    with pytest.raises(FileNotFoundError):
        keras.load_model(tmp_path / "missing.pxr")


def test_save_unbuilt_or_unserializable(tmp_path):
    with pytest.raises(ValueError, match="not built yet"):
        keras.Sequential([layers.Dense(3)]).save(tmp_path / "x.pxr")

    class Holder(keras.Model):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn
            self.d = layers.Dense(2, input_dim=2)

        def call(self, x):
            return self.d(x)

    h = Holder(lambda v: v)
    h(np.zeros((1, 2), np.float32))
    with pytest.raises(TypeError, match="config is not JSON"):
        h.save(tmp_path / "h.pxr")
    assert not (tmp_path / "h.pxr").exists()


def test_save_to_a_folder_is_refused_clearly(tmp_path):
    model = keras.Sequential([layers.Dense(3, input_shape=(4,))])
    with pytest.raises(IsADirectoryError, match=r"it is a folder; give a file name such as .*model\.pxr"):
        model.save(tmp_path)
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        model.save_weights(tmp_path)
    assert os.listdir(tmp_path) == []  # no temporary left behind


@pytest.mark.parametrize("optimizer", [
    lambda: keras.optimizers.Adam(2e-3),
    lambda: keras.optimizers.AdamW(2e-3, amsgrad=True),
    lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    lambda: keras.optimizers.RMSprop(1e-3, momentum=0.5),
])
def test_training_resumes_from_a_saved_model_with_its_optimizer_state(tmp_path, rng, optimizer):
    x = rng.random((96, 6), dtype=np.float32)
    y = rng.integers(0, 3, 96)

    def fresh():
        utils.set_random_seed(3)
        m = keras.Sequential([layers.Dense(8, activation="relu", input_shape=(6,)), layers.Dense(3, activation="softmax")])
        m.compile(optimizer=optimizer(), loss="sparse_categorical_crossentropy")
        return m

    straight = fresh()
    straight.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    first = fresh()
    first.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    first.save(tmp_path / "half.pxr")
    first.save(tmp_path / "half-noopt.pxr", include_optimizer=False)
    resumed = keras.load_model(tmp_path / "half.pxr")
    assert resumed.optimizer.iterations == 6
    resumed.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)  # bit for bit: the same moments and step count
    restarted = keras.load_model(tmp_path / "half-noopt.pxr")
    assert restarted.optimizer.iterations == 0
    restarted.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(restarted.get_weights(), straight.get_weights()))


def test_corrupt_optimizer_state_is_named(tmp_path, rng):
    m = keras.Sequential([layers.Dense(4, input_shape=(5,)), layers.Dense(2, activation="softmax")])
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(rng.random((8, 5), dtype=np.float32), rng.integers(0, 2, 8), verbose=0)
    path = tmp_path / "m.pxr"
    m.save(path)
    with zipfile.ZipFile(path) as z:
        header = json.loads(z.read("pixrank.json"))
        with np.load(io.BytesIO(z.read("weights.npz"))) as npz:
            arrays = dict(npz)
    assert header["optimizer_state"]["slots"] == [["m", "v"]] * 4 and header["optimizer_state"]["iterations"] == 1
    arrays["o0001_v"] = np.zeros((3,), np.float32)  # the bias of the first layer has shape (4,)

    def write(name, hdr, arrs):
        buf = io.BytesIO()
        np.savez(buf, **arrs)
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            z.writestr("pixrank.json", json.dumps(hdr))
            z.writestr("weights.npz", buf.getvalue())
        return tmp_path / name

    with pytest.raises(ValueError, match=r"corrupt optimizer state: .*slot 'v' of shape \(3,\)"):
        keras.load_model(write("bad-shape.pxr", header, arrays))
    arrays.pop("o0001_v")
    with pytest.raises(ValueError, match="corrupt pixrank model file"):
        keras.load_model(write("missing.pxr", header, arrays))
    header["optimizer_state"]["class_name"] = "SGD"
    with pytest.raises(ValueError, match="optimizer state of a SGD for a Adam optimizer"):
        keras.load_model(write("other-class.pxr", header, dict(arrays, o0001_v=np.zeros(4, np.float32))))
    # without compile the state is not needed and not read into an optimizer
    assert keras.load_model(path, compile=False).optimizer is None
