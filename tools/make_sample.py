"""Make the embedded Fashion-MNIST sample shipped in ``python/pixrank/data/sample/``.

A stratified sample: ``--train-per-class`` images of each of the 10 classes from the
training set and ``--test-per-class`` from the test set, chosen without replacement by
``numpy.random.default_rng(--seed)`` and kept in the original file order. Written as
gzipped IDX files with the standard names (gzip mtime 0, so the bytes are reproducible).

Source data: Fashion-MNIST (Xiao, Rasul, Vollgraf 2017, arXiv:1708.07747), MIT licence,
as installed by Debian's ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``.

Usage::

    python tools/make_sample.py [--src /usr/share/datasets/fashion-mnist]
        [--out python/pixrank/data/sample] [--seed 20240229]
        [--train-per-class 600] [--test-per-class 100]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from pixrank.data.idx import find_idx_file, read_idx, write_idx  # noqa: E402

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def stratified_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` indices of each class, sorted (original order kept)."""
    out = []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} examples, asked for {per_class}")
        out.append(rng.choice(idx, size=per_class, replace=False))
    return np.sort(np.concatenate(out))


def main(argv=None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--out", default=os.path.join(here, "..", "python", "pixrank", "data", "sample"))
    p.add_argument("--seed", type=int, default=20240229)
    p.add_argument("--train-per-class", type=int, default=600)
    p.add_argument("--test-per-class", type=int, default=100)
    a = p.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    os.makedirs(a.out, exist_ok=True)
    for split, per_class in (("train", a.train_per_class), ("test", a.test_per_class)):
        img_name, lab_name = FILES[split]
        img_path, lab_path = find_idx_file(a.src, img_name), find_idx_file(a.src, lab_name)
        if img_path is None or lab_path is None:
            raise SystemExit(f"make_sample: {img_name}/{lab_name} not found in {a.src}")
        x, y = read_idx(img_path, expect_ndim=3), read_idx(lab_path, expect_ndim=1)
        idx = stratified_indices(y, per_class, rng)
        write_idx(os.path.join(a.out, img_name + ".gz"), x[idx])
        write_idx(os.path.join(a.out, lab_name + ".gz"), y[idx])
        print(f"{split}: {len(idx)} images, per class {np.bincount(y[idx], minlength=10).tolist()}")
    total = sum(os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out) if f.endswith(".gz"))
    print(f"wrote {a.out}: {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
