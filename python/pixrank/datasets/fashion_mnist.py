"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747): 28x28 grey images of 10
clothing classes, 60,000 training and 10,000 test images, as in ``keras.datasets.fashion_mnist``."""
from __future__ import annotations

import os

from ..data import load_idx_folder, resolve_fashion_mnist_dir

__all__ = ["load_data", "CLASS_NAMES"]

#: label id -> name, in the order of the data set's documentation
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def load_data(path: str | os.PathLike | None = None):
    """Load Fashion-MNIST.

    Looks in ``path``, else ``$PIXRANK_DATA``, else ``/usr/share/datasets/fashion-mnist``
    (Debian's ``dataset-fashion-mnist``), else the embedded sample (6,000 train + 1,000 test,
    600/100 per class). Each folder holds the four standard IDX files, gzipped or not.
    Never downloads.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: images uint8 ``(n, 28, 28)`` in [0, 255],
        labels uint8 ``(n,)`` in 0..9.

    Raises:
        FileNotFoundError: ``path`` / ``$PIXRANK_DATA`` lacks the files.
        ValueError: a file is not valid IDX.
    """
    return load_idx_folder(resolve_fashion_mnist_dir(path))
