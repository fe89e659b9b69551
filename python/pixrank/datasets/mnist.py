"""MNIST handwritten digits (LeCun, Bottou, Bengio & Haffner 1998), as in
``keras.datasets.mnist``. There is no copy on this machine and pixrank never downloads:
put the four IDX files in a folder and pass it as ``path`` or set ``$PIXRANK_DATA``."""
from __future__ import annotations

import os

from ..data import IDX_NAMES, has_idx_files, load_idx_folder

__all__ = ["load_data", "DEFAULT_DIRS"]

#: folders tried when neither ``path`` nor ``$PIXRANK_DATA`` is given
DEFAULT_DIRS = ("/usr/share/datasets/mnist",)


def load_data(path: str | os.PathLike | None = None):
    """Load MNIST from IDX files.

    Looks in ``path``, else ``$PIXRANK_DATA``, else ``/usr/share/datasets/mnist``.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: uint8 ``(n, 28, 28)`` and uint8 ``(n,)``.

    Raises:
        FileNotFoundError: no folder with the files; the message says where to put them.
        ValueError: a file is not valid IDX.
    """
    if path is not None:
        return load_idx_folder(path)
    env = os.environ.get("PIXRANK_DATA")
    if env:
        if not os.path.isdir(env):
            what = "is not a folder" if os.path.exists(env) else "does not exist"
            raise FileNotFoundError(f"$PIXRANK_DATA names the data folder {env!r}, which {what}; fix or unset "
                                    f"PIXRANK_DATA, or pass the folder explicitly")
        return load_idx_folder(env)
    for d in DEFAULT_DIRS:
        if has_idx_files(d):
            return load_idx_folder(d)
    raise FileNotFoundError(
        "MNIST is not available locally and pixrank never downloads. Get the four IDX files "
        f"({', '.join(n + '.gz' for n in IDX_NAMES)}) from http://yann.lecun.com/exdb/mnist/ and put them "
        f"in a folder, then call mnist.load_data(path=FOLDER), set PIXRANK_DATA=FOLDER, or use "
        f"{DEFAULT_DIRS[0]}")
