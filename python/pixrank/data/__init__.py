"""Data loading: the IDX reader, the embedded Fashion-MNIST sample and IDX data-set folders.

* :func:`read_idx` / :func:`write_idx` — the MNIST IDX file format (``pixrank.data.idx``).
* :data:`SAMPLE_DIR` — the embedded stratified Fashion-MNIST sample (6,000 train + 1,000
  test images, equal per class, gzipped IDX; see ``sample/README.md``).
* :func:`load_idx_folder` — the four standard IDX files of a folder as
  ``((x_train, y_train), (x_test, y_test))``.
* :func:`resolve_fashion_mnist_dir` — where ``fashion_mnist.load_data()`` reads from.

Image folders and caption files live in ``pixrank.data.images`` / ``pixrank.data.captions``
(imported on their own; this package does not import them).
"""
from __future__ import annotations

import os

import numpy as np

from .idx import find_idx_file, read_idx, write_idx

__all__ = ["read_idx", "write_idx", "find_idx_file", "load_idx_folder", "SAMPLE_DIR",
           "DEFAULT_FASHION_MNIST_DIR", "resolve_fashion_mnist_dir", "IDX_NAMES", "has_idx_files"]

#: the embedded sample's folder (installed with the package)
SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample")
#: where Debian's ``dataset-fashion-mnist`` installs the full data set
DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
#: classes of the MNIST-format data sets this package reads (Fashion-MNIST, MNIST): labels 0..9
NUM_CLASSES = 10
#: the standard file stems (each may also be gzipped: ``<stem>.gz``)
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def has_idx_files(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds all four standard IDX files (gzipped or not)."""
    return os.path.isdir(folder) and all(find_idx_file(folder, s) is not None for s in IDX_NAMES)


def load_idx_folder(folder: str | os.PathLike):
    """Read the four standard IDX files of ``folder``.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: images uint8 ``(n, 28, 28)`` (whatever
        size the files declare), labels uint8 ``(n,)``.

    Raises:
        FileNotFoundError: ``folder`` is missing or lacks one of the files (the message names
            the file and the accepted spellings).
        ValueError: a file is not valid IDX (see :func:`read_idx`), is not of unsigned bytes
            (IDX type 0x08), holds a label outside 0..9, images and labels of a split differ in
            count, or train and test images differ in size.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise NotADirectoryError(f"data folder {folder!r} is a file, not a folder (give the folder that "
                                     f"holds the IDX files)")
        raise FileNotFoundError(f"data folder {folder!r} does not exist")
    arrays = []
    for stem in IDX_NAMES:
        p = find_idx_file(folder, stem)
        if p is None:
            raise FileNotFoundError(
                f"{folder!r} has no {stem} (also tried {stem}.gz); expected the four MNIST-format IDX "
                f"files {', '.join(IDX_NAMES)} (each optionally gzipped)")
        a = read_idx(p, expect_ndim=3 if "images" in stem else 1)
        # the standard files are unsigned bytes ("ubyte"): another IDX type (e.g. 0x09, signed
        # bytes) would give negative pixels or labels, silently
        if a.dtype != np.uint8:
            raise ValueError(f"{p!r}: expected unsigned bytes (IDX type 0x08) as in the MNIST-format "
                             f"{stem} file, got dtype {a.dtype}")
        if "labels" in stem and a.size and int(a.max()) >= NUM_CLASSES:
            bad = int(np.argmax(a >= NUM_CLASSES))
            raise ValueError(f"{p!r}: labels must lie in 0..{NUM_CLASSES - 1}, got {int(a[bad])} at index {bad} "
                             f"(corrupt, or not an MNIST-format label file)")
        arrays.append(a)
    xtr, ytr, xte, yte = arrays
    for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if len(x) != len(y):
            raise ValueError(f"{folder!r}: {split} images ({len(x)}) and labels ({len(y)}) differ in count")
    if xtr.shape[1:] != xte.shape[1:]:
        raise ValueError(f"{folder!r}: train images are {xtr.shape[1]}x{xtr.shape[2]} but test images "
                         f"{xte.shape[1]}x{xte.shape[2]}")
    return (xtr, ytr), (xte, yte)


def resolve_fashion_mnist_dir(path: str | os.PathLike | None = None) -> str:
    """The folder ``fashion_mnist.load_data(path)`` reads: ``path``, else ``$PIXRANK_DATA``,
    else :data:`DEFAULT_FASHION_MNIST_DIR` when it holds the files, else :data:`SAMPLE_DIR`.

    An explicit ``path`` is returned as given (errors surface on reading).

    Raises:
        FileNotFoundError: ``$PIXRANK_DATA`` is set to a path that is not a folder (the message
            names the variable, which a user may have set long ago).
    """
    if path is not None:
        return os.fspath(path)
    env = os.environ.get("PIXRANK_DATA")
    if env:
        if not os.path.isdir(env):
            what = "is not a folder" if os.path.exists(env) else "does not exist"
            raise FileNotFoundError(f"$PIXRANK_DATA names the data folder {env!r}, which {what}; fix or unset "
                                    f"PIXRANK_DATA, or pass the folder explicitly")
        return env
    if has_idx_files(DEFAULT_FASHION_MNIST_DIR):
        return DEFAULT_FASHION_MNIST_DIR
    return SAMPLE_DIR

