"""Shared, cached pieces for the search tests: one briefly trained dual encoder per test
process (trained on the embedded Fashion-MNIST sample), and PNG writing helpers."""
from __future__ import annotations

import functools
import os

import numpy as np

#: training budget of the shared encoder: 3 epochs over the 6,000 sample images (69 steps of 256)
TRAIN_EPOCHS = 3


@functools.lru_cache(maxsize=None)
def sample_data():
    from pixrank.data import SAMPLE_DIR, load_idx_folder
    return load_idx_folder(SAMPLE_DIR)


@functools.lru_cache(maxsize=None)
def trained_encoder():
    """A DualEncoder trained briefly on the embedded sample (seeded; cached per process)."""
    from pixrank.search.encoder import train_dual_encoder
    (x, y), _ = sample_data()
    return train_dual_encoder(x, y, epochs=TRAIN_EPOCHS, batch_size=256, seed=0, progress=False)


def fresh_engine(index_test: bool = True, **kw):
    """A new Engine around the cached encoders (own empty index and in-memory catalog);
    with the sample's 1,000 test images indexed when ``index_test``."""
    from pixrank.search.engine import Engine, EMBEDDED_SAMPLE
    de = trained_encoder()
    eng = Engine(de.image, de.text, info={"dataset": {"name": "fashion-mnist", "path": EMBEDDED_SAMPLE}}, **kw)
    if index_test:
        _, (xt, yt) = sample_data()
        eng.index_dataset(xt, yt, split="test")
    return eng


def write_png(path, arr, mtime=None):
    from PIL import Image
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
