"""Reader and writer for the IDX file format of MNIST and Fashion-MNIST.

Format (LeCun et al., "The MNIST database", http://yann.lecun.com/exdb/mnist/):
a big-endian header ``0x00 0x00 <type> <ndim>`` (the 4-byte *magic number*),
then ``ndim`` big-endian uint32 dimension sizes, then the data in C order.
Type codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64 (multi-byte types are big-endian). Files may be gzip-compressed
(detected by the gzip magic ``1f 8b``, whatever the file name says).

Public functions:

* :func:`read_idx` — one file to a numpy array.
* :func:`write_idx` — a numpy array to a file (gzip if the name ends in ``.gz``),
  written to a temporary name and renamed into place.
* :func:`find_idx_file` — locate ``<stem>`` or ``<stem>.gz`` in a folder.
"""
from __future__ import annotations

import gzip
import math
import os
import tempfile

import numpy as np

__all__ = ["read_idx", "write_idx", "find_idx_file", "IDX_DTYPES"]

#: IDX type code -> numpy dtype (big-endian where it matters)
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {np.dtype(v).newbyteorder("=") if v.itemsize > 1 else v: k for k, v in IDX_DTYPES.items()}


def _read_bytes(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"read_idx: {os.fspath(path)!r}: corrupt or truncated gzip data ({exc})") from None
    return raw


def read_idx(path: str | os.PathLike, *, expect_ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a numpy array.

    Args:
        path: the file. Gzip compression is detected from the content.
        expect_ndim: if given, the number of dimensions the file must have
            (3 for image files, 1 for label files).

    Returns:
        A C-contiguous array in native byte order with the file's shape, e.g. uint8
        ``(60000, 28, 28)`` for ``train-images-idx3-ubyte`` and uint8 ``(60000,)`` for
        ``train-labels-idx1-ubyte``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: ``"wrong magic number"`` (the first two bytes are not zero or the type
            code is unknown), ``"wrong dimensions"`` (``expect_ndim`` differs, or zero
            dimensions), ``"truncated"`` (fewer data bytes than the header promises, or
            a header cut short), or trailing bytes after the data.

    Example:
        >>> x = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
        >>> x.shape, x.dtype
        ((10000, 28, 28), dtype('uint8'))
    """
    name = os.fspath(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"read_idx: {name!r}: truncated header ({len(raw)} bytes, need at least 4)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(
            f"read_idx: {name!r}: wrong magic number 0x{raw[:4].hex()} (expected 0x0000TTDD with a "
            f"type code TT in {{08,09,0b,0c,0d,0e}}); not an IDX file")
    dtype = IDX_DTYPES[raw[2]]
    ndim = raw[3]
    if ndim == 0:
        raise ValueError(f"read_idx: {name!r}: wrong dimensions: the header declares 0 dimensions")
    if expect_ndim is not None and ndim != expect_ndim:
        raise ValueError(
            f"read_idx: {name!r}: wrong dimensions: the file has {ndim} dimension(s), expected {expect_ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"read_idx: {name!r}: truncated header ({len(raw)} bytes, need {header})")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = math.prod(shape)  # exact (np.prod in int64 wraps for absurd headers)
    need = header + count * dtype.itemsize
    if len(raw) < need:
        raise ValueError(
            f"read_idx: {name!r}: truncated data: shape {shape} needs {need - header} data bytes, "
            f"the file has {len(raw) - header}")
    if len(raw) > need:
        raise ValueError(
            f"read_idx: {name!r}: {len(raw) - need} unexpected trailing bytes after the data of shape {shape}")
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return np.ascontiguousarray(arr.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file; gzip-compressed when ``path`` ends in ``.gz``.

    The file is written to a temporary name in the same folder and renamed into place,
    so a reader never sees a half-written file. Gzip output uses ``mtime=0`` so the
    bytes depend only on the array (reproducible files).

    Raises:
        TypeError: the dtype has no IDX type code (supported: uint8, int8, int16, int32,
            float32, float64).
        ValueError: 0-d array, or more than 255 dimensions.
    """
    a = np.asarray(array)
    key = a.dtype.newbyteorder("=") if a.dtype.itemsize > 1 else a.dtype
    if key not in _CODES:
        raise TypeError(f"write_idx: dtype {a.dtype} has no IDX type code")
    if a.ndim == 0 or a.ndim > 255:
        raise ValueError(f"write_idx: array must have 1..255 dimensions, got {a.ndim}")
    code = _CODES[key]
    payload = (bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
               + np.ascontiguousarray(a.astype(IDX_DTYPES[code])).tobytes())
    name = os.fspath(path)
    if name.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=9, mtime=0)
    folder = os.path.dirname(os.path.abspath(name))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, name)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def find_idx_file(folder: str | os.PathLike, stem: str) -> str | None:
    """Return ``folder/stem`` or ``folder/stem.gz`` (the uncompressed one first), or None.

    Also accepts the dotted spelling some mirrors use (``train-images.idx3-ubyte``).
    """
    folder = os.fspath(folder)
    candidates = [stem, stem + ".gz"]
    dotted = stem.replace("-idx", ".idx")
    if dotted != stem:
        candidates += [dotted, dotted + ".gz"]
    for c in candidates:
        p = os.path.join(folder, c)
        if os.path.isfile(p):
            return p
    return None
