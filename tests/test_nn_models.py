"""pixrank.nn.models: Sequential and subclassed models — compile/fit/evaluate/predict,
History, validation, summary, weight tracking, reproducibility, custom training loops,
and the bad-input errors."""
from __future__ import annotations

import io
import contextlib

import numpy as np
import pytest

import pixrank as keras
from pixrank import autograd as ag
from pixrank import callbacks, layers, optimizers, utils
from pixrank.data import SAMPLE_DIR
from pixrank.datasets import fashion_mnist


@pytest.fixture(scope="module")
def sample():
    (xtr, ytr), (xte, yte) = fashion_mnist.load_data(SAMPLE_DIR)
    prep = lambda x: x.reshape(-1, 28, 28, 1).astype("float32") / 255  # noqa: E731
    return (prep(xtr[:1200]), ytr[:1200].astype(np.int64)), (prep(xte[:300]), yte[:300].astype(np.int64))


def mlp(hidden=32):
    return keras.Sequential([layers.Flatten(input_shape=(28, 28, 1)), layers.Dense(hidden, activation="relu"),
                             layers.Dense(10, activation="softmax")])


def test_fit_evaluate_predict(sample):
    utils.set_random_seed(0)
    (x, y), (xt, yt) = sample
    model = mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = model.fit(x, y, batch_size=64, epochs=2, verbose=0, validation_data=(xt, yt))
    assert isinstance(hist, callbacks.History) and model.history is hist
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(hist.history["loss"]) == 2 and hist.history["loss"][1] < hist.history["loss"][0]
    loss, acc = model.evaluate(xt, yt, verbose=0)
    assert abs(loss - hist.history["val_loss"][-1]) < 1e-5 and abs(acc - hist.history["val_accuracy"][-1]) < 1e-9
    probs = model.predict(xt, batch_size=50)
    assert probs.shape == (300, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert abs(np.mean(probs.argmax(1) == yt) - acc) < 1e-9
    np.testing.assert_allclose(model.predict(xt, batch_size=300), probs, rtol=1e-5, atol=1e-6)
    # loss recomputed independently from the probabilities
    assert abs(-np.mean(np.log(probs[np.arange(300), yt])) - loss) < 1e-4
    # evaluate without metrics returns a scalar; return_dict
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert isinstance(model.evaluate(xt, yt, verbose=0), float)
    assert set(model.evaluate(xt, yt, verbose=0, return_dict=True)) == {"loss"}


def test_categorical_and_topk_metrics(sample):
    (x, y), _ = sample
    model = mlp()
    model.compile("sgd", "categorical_crossentropy",
                  metrics=["accuracy", keras.metrics.TopKCategoricalAccuracy(k=3)])
    h = model.fit(x[:256], utils.to_categorical(y[:256], 10), epochs=1, verbose=0, validation_split=0.25)
    assert {"accuracy", "top_k_categorical_accuracy", "val_accuracy", "val_top_k_categorical_accuracy"} <= set(h.history)
    assert h.history["top_k_categorical_accuracy"][0] >= h.history["accuracy"][0]


def test_validation_split_takes_last_examples(sample):
    (x, y), _ = sample
    seen = []

    class Spy(callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(self.params["samples"])

    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:100], y[:100], epochs=1, verbose=0, validation_split=0.2, callbacks=[Spy()])
    assert seen == [80]


def test_progress_output(sample, capsys):
    (x, y), _ = sample
    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:256], y[:256], batch_size=64, epochs=2)  # verbose=1 default
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "4/4 [" in out and "loss: " in out and "accuracy: " in out
    model.fit(x[:256], y[:256], batch_size=64, epochs=2, verbose=2)
    out = capsys.readouterr().out
    assert out.count("\n") == 4 and "ms/step - loss:" in out
    model.fit(x[:256], y[:256], epochs=1, verbose=0)
    model.evaluate(x[:64], y[:64], verbose=0)
    assert capsys.readouterr().out == ""


def test_summary(capsys):
    model = keras.Sequential([layers.Conv2D(4, 3, input_shape=(8, 8, 1)), layers.BatchNormalization(),
                              layers.Flatten(), layers.Dense(3)])
    model.summary()
    out = capsys.readouterr().out
    assert "(None, 6, 6, 4)" in out and "(None, 144)" in out and "(None, 3)" in out
    assert "Total params: 491" in out  # 40 + 16 + 435
    assert "Trainable params: 483" in out and "Non-trainable params: 8" in out


def test_set_random_seed_repeats_bit_for_bit(sample):
    (x, y), _ = sample

    def run():
        utils.set_random_seed(42)
        model = keras.Sequential([layers.Flatten(input_shape=(28, 28, 1)), layers.Dense(32, activation="relu"),
                                  layers.Dropout(0.3), layers.Dense(10, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        h = model.fit(x[:512], y[:512], batch_size=32, epochs=2, verbose=0)
        return h.history["loss"], model.get_weights()

    l1, w1 = run()
    l2, w2 = run()
    assert l1 == l2
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2))


def test_get_set_weights():
    a, b = mlp(), mlp()
    b.set_weights(a.get_weights())
    x = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    with pytest.raises(ValueError, match="got 3 arrays"):
        b.set_weights(a.get_weights()[:3])
    w = a.get_weights()
    w[0] = np.zeros((5, 5))
    with pytest.raises(ValueError, match="has shape"):
        b.set_weights(w)


class TwoTower(keras.Model):
    """Image tower + text tower (Embedding bag) with a learned temperature."""

    def __init__(self, dim=8, vocab=20):
        super().__init__()
        self.dim, self.vocab = dim, vocab
        self.image = keras.Sequential([layers.Conv2D(4, 3, activation="relu", padding="same"),
                                       layers.GlobalAveragePooling2D(), layers.Dense(dim)])
        self.words = layers.Embedding(vocab, dim)
        self.text = [layers.Dense(dim, activation="relu"), layers.Dense(dim)]
        self.log_temp = ag.Parameter(np.log(1 / 0.07), name="log_temp")

    def encode_text(self, ids, offsets):
        h = self.words.bag(ids, offsets)
        for l in self.text:
            h = l(h)
        return ag.l2_normalize(h)

    def call(self, inputs, training=None):
        images, ids, offsets = inputs
        img = ag.l2_normalize(self.image(images))
        txt = self.encode_text(ids, offsets)
        return ag.matmul(img, txt, trans_b=True) * ag.exp(self.log_temp)


def clip_loss(logits):
    n = logits.shape[0]
    labels = np.arange(n)
    return (ag.softmax_cross_entropy(logits, labels) + ag.softmax_cross_entropy(logits.T, labels)) * 0.5


def test_subclassed_model_discovers_weights_and_trains_with_custom_loop(rng):
    utils.set_random_seed(3)
    model = TwoTower()
    images = rng.random((6, 8, 8, 1), dtype=np.float32)
    ids = rng.integers(0, 20, 15)
    offsets = np.array([0, 2, 5, 7, 10, 12])
    logits = model((images, ids, offsets))
    assert logits.shape == (6, 6)
    names = [p.name for p in model.trainable_weights]
    assert "log_temp" in names and sum("embeddings" in n for n in names) == 1
    assert len(names) == 2 + 2 + 1 + 2 + 2 + 1  # conv, dense, embedding, 2 dense, temperature
    opt = optimizers.Adam(0.01)
    params = model.trainable_weights
    first = None
    for _ in range(30):
        loss = clip_loss(model((images, ids, offsets), training=True))
        first = first if first is not None else loss.item()
        opt.apply_gradients(zip(ag.grad(loss, params), params))
    assert loss.item() < 0.5 * first
    assert model.log_temp.data != np.float32(np.log(1 / 0.07))  # the free Parameter was trained


def test_subclassed_model_compile_fit(sample):
    (x, y), _ = sample

    class Net(keras.Model):
        def __init__(self, units=16):
            super().__init__()
            self.flat = layers.Flatten()
            self.hidden = layers.Dense(units, activation="relu")
            self.drop = layers.Dropout(0.2)
            self.out = layers.Dense(10)

        def call(self, x, training=None):
            return self.out(self.drop(self.hidden(self.flat(x)), training=training))

    utils.set_random_seed(1)
    net = Net()
    net.compile(optimizer=optimizers.SGD(0.05, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["sparse_categorical_accuracy"])
    h = net.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert h.history["sparse_categorical_accuracy"][-1] > 0.45  # measured 0.56 (chance 0.1)
    assert h.history["loss"][1] < h.history["loss"][0]
    assert len(net.layers) == 4 and len(net.trainable_weights) == 4


def test_frozen_layer_is_not_updated(sample):
    (x, y), _ = sample
    model = mlp()
    model.layers[1].trainable = False
    before = model.layers[1].kernel.data.copy()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:128], y[:128], epochs=1, verbose=0)
    assert np.array_equal(before, model.layers[1].kernel.data)


# ------------------------------------------------------------------------- bad input

def test_bad_inputs(sample):
    (x, y), _ = sample
    model = mlp()
    with pytest.raises(RuntimeError, match="must be compiled"):
        model.fit(x, y)
    with pytest.raises(ValueError, match="unknown loss 'sparse_crossentropy'"):
        model.compile("adam", "sparse_crossentropy")
    with pytest.raises(ValueError, match="unknown optimizer 'adem'"):
        model.compile("adem", "mse")
    with pytest.raises(ValueError, match="unknown metric 'acuracy'"):
        model.compile("adam", "mse", metrics=["acuracy"])
    with pytest.raises(ValueError, match="unknown activation 'softmaxx'"):
        layers.Dense(3, activation="softmaxx")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    with pytest.raises(ValueError, match="x has 100, y has 99"):
        model.fit(x[:100], y[:99], verbose=0)
    with pytest.raises(ValueError, match=r"expects inputs of shape \(None, 28, 28, 1\), got \(100, 784\)"):
        model.fit(x[:100].reshape(100, 784), y[:100], verbose=0)
    with pytest.raises(ValueError, match=r"expects inputs of shape"):
        model.predict(np.zeros((3, 28, 28), np.float32))
    bad = y[:100].copy()
    bad[7] = 10
    with pytest.raises(ValueError, match="label 10 is outside the classes 0..9"):
        model.fit(x[:100], bad, verbose=0)
    with pytest.raises(ValueError, match="label -1 is outside"):
        model.evaluate(x[:3], np.array([0, -1, 2]), verbose=0)
    with pytest.raises(ValueError, match="empty"):
        model.fit(x[:0], y[:0], verbose=0)
    cat = mlp()
    cat.compile("adam", "categorical_crossentropy")
    with pytest.raises(ValueError, match=r"one-hot of shape \(N, 10\).*sparse_categorical_crossentropy"):
        cat.fit(x[:10], y[:10], verbose=0)
    with pytest.raises(ValueError, match=r"one-hot of shape \(N, 10\)"):
        cat.fit(x[:10], utils.to_categorical(y[:10], 12), verbose=0)
    with pytest.raises(TypeError, match="functional API"):
        keras.Model(inputs=1, outputs=2)


def test_non_finite_data_and_bad_counts_are_refused_before_training(sample):
    (x, y), _ = sample
    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    before = model.get_weights()
    xn = x[:64].copy()
    xn[37, 3, 4, 0] = np.nan
    with pytest.raises(ValueError, match=r"fit: x contains NaN or infinite values \(first at example 37\)"):
        model.fit(xn, y[:64], verbose=0)
    xn[37, 3, 4, 0] = np.inf
    with pytest.raises(ValueError, match=r"evaluate: x contains NaN.*example 37"):
        model.evaluate(xn, y[:64], verbose=0)
    with pytest.raises(ValueError, match=r"predict: x contains NaN.*example 37"):
        model.predict(xn)
    with pytest.raises(ValueError, match=r"fit \(validation_data\): x contains NaN.*example 37"):
        model.fit(x[:64], y[:64], validation_data=(xn, y[:64]), verbose=0)
    mse = mlp()
    mse.compile("sgd", "mse")
    yf = utils.to_categorical(y[:64], 10)
    yf[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"fit: y contains NaN.*example 5"):
        mse.fit(x[:64], yf, verbose=0)
    with pytest.raises(ValueError, match="fit: epochs must be >= 0, got -1"):
        model.fit(x[:64], y[:64], epochs=-1, verbose=0)
    with pytest.raises(TypeError, match="fit: epochs must be an integer, got 2.5"):
        model.fit(x[:64], y[:64], epochs=2.5, verbose=0)
    with pytest.raises(ValueError, match="fit: batch_size must be >= 1, got 0"):
        model.fit(x[:64], y[:64], batch_size=0, verbose=0)
    with pytest.raises(TypeError, match="predict: batch_size must be an integer"):
        model.predict(x[:4], batch_size="8")
    # nothing was trained by any refused call
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))
    # epochs=0 is Keras' no-op, not an error; an integral float is accepted
    assert model.fit(x[:64], y[:64], epochs=0, verbose=0).history == {}
    assert len(model.fit(x[:64], y[:64], epochs=1.0, verbose=0).history["loss"]) == 1


def test_terminate_on_nan_keeps_last_good_weights(sample, capsys):
    (x, y), _ = sample
    x = x[:128].copy()
    x[70] = 3e38  # finite, but the third batch of 32 overflows to inf logits: a NaN loss
    model = mlp()
    model.compile("sgd", "sparse_categorical_crossentropy")
    snapshots = []

    class Snap(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            snapshots.append(self.model.get_weights())

    stop = callbacks.TerminateOnNaN()
    model.fit(x, y[:128], batch_size=32, epochs=3, shuffle=False, verbose=0, callbacks=[stop, Snap()])
    assert stop.terminated and len(snapshots) == 2
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), snapshots[-1]))
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert "invalid loss nan" in capsys.readouterr().err


def test_early_stopping_restores_best(sample):
    (x, y), (xt, yt) = sample
    model = mlp()
    model.compile(optimizers.SGD(2.0), "sparse_categorical_crossentropy")  # too large: val loss gets worse
    es = callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    best = {}

    class Track(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            best[epoch] = (logs["val_loss"], self.model.get_weights())

    utils.set_random_seed(0)
    h = model.fit(x, y, epochs=8, verbose=0, validation_data=(xt, yt), callbacks=[Track(), es])
    losses = h.history["val_loss"]
    if len(losses) < 8:
        assert es.stopped_epoch == len(losses) - 1
    i = int(np.nanargmin(losses))
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), best[i][1]))
    with pytest.raises(ValueError, match="not in the logs"):
        model.fit(x[:64], y[:64], epochs=1, verbose=0, callbacks=[callbacks.EarlyStopping()])


def test_model_checkpoint(sample, tmp_path):
    (x, y), (xt, yt) = sample
    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy")
    ck = callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch:02d}-{val_loss:.3f}.pxr"))
    model.fit(x[:256], y[:256], epochs=2, verbose=0, validation_data=(xt, yt), callbacks=[ck])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].startswith("m-01-") and files[1].startswith("m-02-")
    loaded = keras.load_model(tmp_path / files[1])
    np.testing.assert_array_equal(loaded.predict(xt), model.predict(xt))
    best = callbacks.ModelCheckpoint(str(tmp_path / "best.pxr"), save_best_only=True, save_weights_only=True)
    model.fit(x[:256], y[:256], epochs=1, verbose=0, validation_data=(xt, yt), callbacks=[best])
    assert (tmp_path / "best.pxr").exists()


def test_learning_rate_scheduler(sample):
    (x, y), _ = sample
    model = mlp()
    model.compile(optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    h = model.fit(x[:64], y[:64], epochs=3, verbose=0,
                  callbacks=[callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 * 0.5 ** epoch)])
    assert h.history["learning_rate"] == [0.1, 0.05, 0.025]


def test_keras_namespace():
    """The names Keras programs use resolve through ``import pixrank as keras``."""
    for name in ("Dense", "Flatten", "Conv2D", "MaxPool2D", "MaxPooling2D", "Dropout", "BatchNormalization",
                 "GlobalAveragePooling2D", "Activation", "Add", "Embedding", "Reshape", "InputLayer", "Input"):
        assert hasattr(keras.layers, name), name
    assert keras.layers.MaxPooling2D is keras.layers.MaxPool2D
    assert keras.optimizers.schedules.CosineDecay and keras.optimizers.AdamW and keras.optimizers.SGD
    assert keras.callbacks.EarlyStopping and keras.callbacks.ModelCheckpoint and keras.callbacks.TerminateOnNaN
    assert keras.initializers.HeNormal and keras.initializers.GlorotUniform
    assert keras.metrics.SparseTopKCategoricalAccuracy and keras.losses.MeanSquaredError
    model = keras.Sequential([keras.layers.Input(shape=(4,)),
                              keras.layers.Dense(2)])
    assert model.built and len(model.layers) == 1 and model.layers[0].kernel.shape == (4, 2)


def test_empty_sequential_is_refused_clearly():
    m = keras.Sequential([])
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="has no layers"):
        m.predict(x, verbose=0)
    m.compile("adam", "mse")
    with pytest.raises(ValueError, match="has no layers"):
        m.fit(x, x, verbose=0)


def test_checkpoint_path_with_a_missing_log_key_names_it(sample, tmp_path):
    (x, y), _ = sample
    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy")
    ck = callbacks.ModelCheckpoint(str(tmp_path / "ck-{val_loss:.2f}.pxr"))
    with pytest.raises(ValueError, match=r"cannot fill the path .*KeyError: 'val_loss'.*log keys of this run: loss"):
        model.fit(x[:64], y[:64], epochs=1, verbose=0, callbacks=[ck])


class _CountingDense(layers.Dense):
    """A Dense layer that counts its forward passes and the batch sizes they saw."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = []

    def call(self, inputs):
        self.batches.append(inputs.shape[0])
        return super().call(inputs)


def test_train_on_batch_runs_one_forward_per_step_and_notices_new_layers():
    # The output shape that checks the targets is remembered per input shape and set of weights:
    # after the first step, a step is exactly one forward pass over the batch (no one-example pass).
    utils.set_random_seed(0)
    counting = _CountingDense(4, activation="relu")
    model = keras.Sequential([layers.Flatten(input_shape=(3, 2)), counting, layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 2)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    model.train_on_batch(x, y)
    counting.batches.clear()
    for _ in range(3):
        model.train_on_batch(x, y)
    assert counting.batches == [8, 8, 8]
    # a new input shape is checked afresh (and refused: the model expects (3, 2) examples)
    with pytest.raises(ValueError):
        model.train_on_batch(rng.standard_normal((8, 2, 3)).astype(np.float32), y)
    # a layer added after training: the targets are checked against the new output shape (2 classes),
    # so a label 2 is refused instead of being taken as valid for the old 3-class output
    model.add(layers.Dense(2, activation="softmax"))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError):
        model.train_on_batch(x, np.full(8, 2))
    assert np.isfinite(model.train_on_batch(x, np.zeros(8, dtype=np.int64)))
