"""pixrank.datasets (Keras facade) and pixrank.utils: where load_data looks, the data it
returns, mnist's error when no copy exists, to_categorical, set_random_seed."""
from __future__ import annotations

import numpy as np
import pytest

import pixrank
from pixrank import data as data_mod
from pixrank import utils
from pixrank.data import SAMPLE_DIR, write_idx
from pixrank.datasets import fashion_mnist, mnist


def make_folder(path, n_train=20, n_test=10, gz=True, rng=None):
    rng = rng or np.random.default_rng(0)
    path.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    xtr = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    ytr = rng.integers(0, 10, n_train).astype(np.uint8)
    xte = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    yte = rng.integers(0, 10, n_test).astype(np.uint8)
    write_idx(path / f"train-images-idx3-ubyte{sfx}", xtr)
    write_idx(path / f"train-labels-idx1-ubyte{sfx}", ytr)
    write_idx(path / f"t10k-images-idx3-ubyte{sfx}", xte)
    write_idx(path / f"t10k-labels-idx1-ubyte{sfx}", yte)
    return (xtr, ytr), (xte, yte)


def test_keras_facade_types():
    (xtr, ytr), (xte, yte) = pixrank.datasets.fashion_mnist.load_data(SAMPLE_DIR)
    assert xtr.dtype == np.uint8 and ytr.dtype == np.uint8
    assert xtr.shape == (6000, 28, 28) and ytr.shape == (6000,) and xte.shape == (1000, 28, 28)
    assert ytr.min() == 0 and ytr.max() == 9


def test_search_order(tmp_path, monkeypatch):
    explicit = make_folder(tmp_path / "explicit", n_train=5)
    env = make_folder(tmp_path / "env", n_train=7, gz=False)
    monkeypatch.setenv("PIXRANK_DATA", str(tmp_path / "env"))
    assert len(fashion_mnist.load_data(tmp_path / "explicit")[0][0]) == 5
    (x, y), _ = fashion_mnist.load_data()
    assert len(x) == 7 and np.array_equal(x, env[0][0])
    monkeypatch.delenv("PIXRANK_DATA")
    monkeypatch.setattr(data_mod, "DEFAULT_FASHION_MNIST_DIR", str(tmp_path / "explicit"))
    assert len(fashion_mnist.load_data()[0][0]) == 5 and np.array_equal(fashion_mnist.load_data()[0][0], explicit[0][0])
    monkeypatch.setattr(data_mod, "DEFAULT_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    assert len(fashion_mnist.load_data()[0][0]) == 6000  # the embedded sample


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fashion_mnist.load_data(tmp_path / "nope")
    (tmp_path / "afile").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        fashion_mnist.load_data(tmp_path / "afile")
    make_folder(tmp_path / "d")
    (tmp_path / "d" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="has no t10k-labels-idx1-ubyte"):
        fashion_mnist.load_data(tmp_path / "d")
    make_folder(tmp_path / "e")
    write_idx(tmp_path / "e" / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="differ in count"):
        fashion_mnist.load_data(tmp_path / "e")
    write_idx(tmp_path / "e" / "t10k-labels-idx1-ubyte.gz", np.zeros((10, 2), np.uint8))
    with pytest.raises(ValueError, match="wrong dimensions"):
        fashion_mnist.load_data(tmp_path / "e")


def test_files_of_another_type_range_or_size_are_refused(tmp_path):
    # each of these used to load silently: signed-byte pixels (negative values), a label
    # outside 0..9, and train/test images of different sizes
    make_folder(tmp_path / "signed")
    write_idx(tmp_path / "signed" / "train-images-idx3-ubyte.gz",
              np.random.default_rng(1).integers(-128, 128, (20, 28, 28)).astype(np.int8))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz': expected unsigned bytes .*int8"):
        fashion_mnist.load_data(tmp_path / "signed")
    make_folder(tmp_path / "labels")
    y = np.zeros(10, np.uint8)
    y[4] = 200
    write_idx(tmp_path / "labels" / "t10k-labels-idx1-ubyte.gz", y)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz': labels must lie in 0..9, got 200 at index 4"):
        fashion_mnist.load_data(tmp_path / "labels")
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        mnist.load_data(tmp_path / "labels")
    make_folder(tmp_path / "sizes")
    write_idx(tmp_path / "sizes" / "t10k-images-idx3-ubyte.gz", np.zeros((10, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="train images are 28x28 but test images 32x32"):
        fashion_mnist.load_data(tmp_path / "sizes")


def test_a_bad_pixrank_data_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXRANK_DATA", str(tmp_path / "gone"))
    for load in (fashion_mnist.load_data, mnist.load_data):
        with pytest.raises(FileNotFoundError, match=r"\$PIXRANK_DATA names the data folder .*gone', which does not exist"):
            load()
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("PIXRANK_DATA", str(tmp_path / "afile"))
    with pytest.raises(FileNotFoundError, match="which is not a folder"):
        fashion_mnist.load_data()
    # an explicit path still wins over a bad variable
    (xtr, _), _ = make_folder(tmp_path / "ok")
    assert np.array_equal(fashion_mnist.load_data(tmp_path / "ok")[0][0], xtr)

def test_mnist_needs_local_files(tmp_path, monkeypatch):
    monkeypatch.delenv("PIXRANK_DATA", raising=False)
    monkeypatch.setattr(mnist, "DEFAULT_DIRS", (str(tmp_path / "none"),))
    with pytest.raises(FileNotFoundError, match="never downloads.*PIXRANK_DATA"):
        mnist.load_data()
    (xtr, _), _ = make_folder(tmp_path / "digits")
    assert np.array_equal(mnist.load_data(tmp_path / "digits")[0][0], xtr)


def test_to_categorical():
    y = np.array([2, 0, 1])
    np.testing.assert_array_equal(utils.to_categorical(y, 4), np.eye(4, dtype=np.float32)[y])
    assert utils.to_categorical(y).shape == (3, 3) and utils.to_categorical(y).dtype == np.float32
    assert utils.to_categorical(np.array([[1], [0]]), 2).shape == (2, 2)
    assert utils.to_categorical(np.array([[1, 2]]), 3).shape == (1, 2, 3)
    with pytest.raises(ValueError, match="out of range"):
        utils.to_categorical(y, 2)
    with pytest.raises(ValueError, match=">= 0"):
        utils.to_categorical([-1, 0], 2)
    with pytest.raises(ValueError, match="integer"):
        utils.to_categorical([0.5], 2)


def test_set_random_seed():
    utils.set_random_seed(7)
    a = utils.get_rng().random(3)
    utils.set_random_seed(7)
    assert np.array_equal(a, utils.get_rng().random(3))
    with pytest.raises(TypeError):
        utils.set_random_seed(1.5)
    with pytest.raises(ValueError):
        utils.set_random_seed(-1)
