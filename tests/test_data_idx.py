"""pixrank.data.idx: IDX reading/writing (gzipped or not), the errors for a wrong magic
number, wrong dimensions and truncated data, and the embedded sample's contents."""
from __future__ import annotations

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

from pixrank.data import IDX_NAMES, SAMPLE_DIR, load_idx_folder, read_idx, write_idx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_round_trip(tmp_path, rng, dtype, gz):
    a = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    p = tmp_path / ("a.idx" + (".gz" if gz else ""))
    write_idx(p, a)
    b = read_idx(p)
    assert b.dtype == np.dtype(dtype) and b.shape == a.shape and np.array_equal(a, b)
    assert b.flags.c_contiguous and b.flags.writeable


def test_reads_by_content_not_name(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_idx(tmp_path / "x.gz", a)
    os.rename(tmp_path / "x.gz", tmp_path / "plain-name")
    assert np.array_equal(read_idx(tmp_path / "plain-name"), a)


def test_header_bytes(tmp_path):
    write_idx(tmp_path / "l", np.array([1, 2, 3], np.uint8))
    assert (tmp_path / "l").read_bytes() == b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02\x03"


def test_errors(tmp_path):
    good = b"\x00\x00\x08\x02\x00\x00\x00\x02\x00\x00\x00\x03" + bytes(range(6))
    cases = {
        "magic": (b"\x12\x34\x08\x02" + good[4:], "wrong magic number"),
        "type": (b"\x00\x00\x07\x02" + good[4:], "wrong magic number"),
        "short": (good[:-1], "truncated data"),
        "header": (good[:6], "truncated header"),
        "tiny": (b"\x00\x00", "truncated header"),
        "trailing": (good + b"\x00", "trailing bytes"),
    }
    for name, (blob, msg) in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(ValueError, match=msg):
            read_idx(tmp_path / name)
    (tmp_path / "good").write_bytes(good)
    with pytest.raises(ValueError, match="wrong dimensions: the file has 2 dimension"):
        read_idx(tmp_path / "good", expect_ndim=3)
    (tmp_path / "trunc.gz").write_bytes(gzip.compress(good)[:-6])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        read_idx(tmp_path / "trunc.gz")
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing")
    with pytest.raises(TypeError, match="no IDX type code"):
        write_idx(tmp_path / "c", np.zeros(3, np.complex64))


def test_embedded_sample():
    files = sorted(os.listdir(SAMPLE_DIR))
    assert [n + ".gz" for n in sorted(IDX_NAMES)] == [f for f in files if f.endswith(".gz")]
    total = sum(os.path.getsize(os.path.join(SAMPLE_DIR, f)) for f in files)
    assert total <= 5 * 1024 * 1024
    (xtr, ytr), (xte, yte) = load_idx_folder(SAMPLE_DIR)
    assert xtr.shape == (6000, 28, 28) and xte.shape == (1000, 28, 28) and xtr.dtype == np.uint8
    assert np.bincount(ytr, minlength=10).tolist() == [600] * 10
    assert np.bincount(yte, minlength=10).tolist() == [100] * 10
    assert 60 < xtr.mean() < 90  # Fashion-MNIST's mean pixel is about 72.9


@pytest.mark.slow
def test_make_sample_reproduces_the_shipped_files(tmp_path):
    src = "/usr/share/datasets/fashion-mnist"
    if not os.path.isdir(src):
        pytest.skip("full Fashion-MNIST not installed")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_sample.py"), "--src", src,
                    "--out", str(tmp_path)], check=True, capture_output=True)
    for n in IDX_NAMES:
        assert (tmp_path / (n + ".gz")).read_bytes() == open(os.path.join(SAMPLE_DIR, n + ".gz"), "rb").read()


def test_huge_header_dimensions_report_truncation(tmp_path):
    # 1e9 x 1e9 x 1e9 elements overflows int64: the reader must still say "truncated data"
    # with the true byte count, not report a wrapped-around number of "trailing bytes"
    blob = b"\x00\x00\x08\x03" + (10**9).to_bytes(4, "big") * 3
    (tmp_path / "huge").write_bytes(blob)
    with pytest.raises(ValueError, match=r"truncated data: shape \(1000000000, 1000000000, 1000000000\) "
                                         r"needs 1000000000000000000000000000 data bytes"):
        read_idx(tmp_path / "huge")
