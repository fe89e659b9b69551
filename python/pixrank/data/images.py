"""Image files to model inputs (Pillow), contact sheets, atomic PNG writes.

* :func:`load_image` opens any image file Pillow reads (PNG, JPEG, WebP, BMP, GIF, TIFF...)
  as a :class:`PIL.Image.Image`: fully decoded, first frame of an animation, EXIF orientation
  applied (``ImageOps.exif_transpose``), errors as ``FileNotFoundError`` / ``ValueError``.
* :class:`InputSpec` describes what a model takes (size, channels, normalisation, how to fit
  the aspect ratio, the background for transparency and padding); it is saved with a model
  (``to_dict`` / ``from_dict``) so any image given to the engine is converted the same way.
* :func:`image_to_array` converts one image (path, PIL image or numpy array) to a float32
  ``(1, H, W, C)`` NHWC batch; :func:`load_images` converts many, skipping unreadable files
  with a warning.
* :func:`contact_sheet` lays out result tiles with captions; :func:`save_png_atomic` writes
  a PNG via a temporary file and ``os.replace``.

Conversion of pixel values to [0, 1] by Pillow mode::

    '1'                      0 / 1
    'L', 'P', 'RGB', 'CMYK', 'YCbCr', 'HSV', ...   8-bit: v / 255 (palette and CMYK/YCbCr/HSV
                             converted to RGB by Pillow; CMYK naively, without a colour profile)
    'LA', 'PA', 'RGBA', 'La', 'RGBa'   alpha-composited over the background colour:
                             out = a * colour + (1 - a) * background
    'I;16', 'I;16L', 'I;16B', 'I;16N'  16-bit: v / 65535
    'I'                      32-bit integers taken as 16-bit data (Pillow opens 16-bit PNG and
                             TIFF as 'I' or 'I;16'): v / 65535, clipped to [0, 1]
    'F'                      32-bit float: used as is when all values lie in [0, 1], else
                             divided by 255 (max <= 255) or 65535 (max <= 65535); clipped

Colour to gray uses the ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B, Pillow's ``'L'``);
gray to colour repeats the channel. Resizing uses Pillow's antialiased bilinear filter.
"""
from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["InputSpec", "load_image", "image_to_array", "load_images", "contact_sheet",
           "save_png_atomic", "ImageLoadWarning", "FITS", "BACKGROUNDS"]

FITS = ("pad", "stretch", "crop")
BACKGROUNDS = {"black": 0.0, "white": 1.0}
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class ImageLoadWarning(UserWarning):
    """An image file was skipped (or its EXIF orientation could not be applied)."""


def _pil():
    from PIL import Image, ImageOps

    return Image, ImageOps


# --------------------------------------------------------------------------------------
# InputSpec
# --------------------------------------------------------------------------------------


def _per_channel(name, value, channels):
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        vals = (float(value),) * channels
    else:
        try:
            vals = tuple(float(v) for v in value)
        except TypeError:
            raise TypeError(f"InputSpec: {name} must be a number or a sequence of {channels} numbers, "
                            f"got {value!r}") from None
        if len(vals) == 1:
            vals = vals * channels
        if len(vals) != channels:
            raise ValueError(f"InputSpec: {name} must have 1 or {channels} values, got {len(vals)}")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"InputSpec: {name} must be finite, got {vals}")
    return vals


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a model takes as input, and how an image file is converted to it.

    The conversion (:func:`image_to_array`): decode to [0, 1] (see the module docstring),
    composite transparency over ``background``, convert to ``channels`` (1: gray, 3: RGB),
    fit to ``height x width`` (``fit``), then ``x = 1 - x`` when ``invert``, then
    ``(x - mean) / std`` per channel.

    Args:
        height, width: output size in pixels (>= 1).
        channels: 1 (gray) or 3 (RGB).
        mean, std: a number or one per channel (``std > 0``); default 0 and 1 (keeps [0, 1]).
        invert: map ``x -> 1 - x`` before normalising (e.g. dark-on-light photos for a model
            trained on Fashion-MNIST's light-on-black items).
        fit: ``'pad'`` (default: keep the aspect ratio, scale the longer side to fit and pad
            with the background), ``'stretch'`` (ignore the aspect ratio) or ``'crop'`` (keep
            the aspect ratio, scale the shorter side to fit, crop the centre).
        background: ``'black'`` (default, Fashion-MNIST's background) or ``'white'``: the
            colour transparent pixels are composited over and padding is filled with, in the
            source image (before ``invert``).

    Example:
        >>> spec = InputSpec(28, 28, 1)
        >>> InputSpec.from_dict(spec.to_dict()) == spec
        True
    """

    height: int = 28
    width: int = 28
    channels: int = 1
    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    invert: bool = False
    fit: str = "pad"
    background: str = "black"

    def __post_init__(self):
        for name in ("height", "width", "channels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"InputSpec: {name} must be an int, got {v!r}")
            if v < 1:
                raise ValueError(f"InputSpec: {name} must be >= 1, got {v}")
            object.__setattr__(self, name, int(v))
        if self.channels not in (1, 3):
            raise ValueError(f"InputSpec: channels must be 1 (gray) or 3 (RGB), got {self.channels}")
        object.__setattr__(self, "mean", _per_channel("mean", self.mean, self.channels))
        std = _per_channel("std", self.std, self.channels)
        if min(std) <= 0:
            raise ValueError(f"InputSpec: std must be > 0, got {std}")
        object.__setattr__(self, "std", std)
        if not isinstance(self.invert, (bool, np.bool_)):
            raise TypeError(f"InputSpec: invert must be a bool, got {self.invert!r}")
        object.__setattr__(self, "invert", bool(self.invert))
        if self.fit not in FITS:
            raise ValueError(f"InputSpec: fit must be one of {FITS}, got {self.fit!r}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"InputSpec: background must be one of {tuple(BACKGROUNDS)}, "
                             f"got {self.background!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        return (self.height, self.width, self.channels)

    def to_dict(self) -> dict:
        """A JSON-ready dict (lists for mean/std)."""
        d = dataclasses.asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        """The inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown keys or invalid values. TypeError: not a mapping.
        """
        if not isinstance(d, dict):
            raise TypeError(f"InputSpec.from_dict: expected a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"InputSpec.from_dict: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


# --------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------


def _open(path, draft_size=None):
    """Decode ``path``: (image with EXIF orientation applied, (width, height) of the full
    oriented image). ``draft_size`` lets the JPEG decoder downscale (by 1/2..1/8) on load."""
    Image, ImageOps = _pil()
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"image file {p!r} does not exist")
    if os.path.isdir(p):
        raise ValueError(f"{p!r} is a folder, not an image file")
    if not os.path.isfile(p):
        # a FIFO, a socket or a device such as /dev/zero: reading could block or never end
        raise ValueError(f"{p!r} is not a regular file (a pipe, socket or device), not an image file")
    if os.path.getsize(p) == 0:
        raise ValueError(f"image file {p!r} is empty (0 bytes)")
    try:
        with Image.open(p) as im:
            size = im.size
            try:
                orientation = int(im.getexif().get(0x0112, 1))
            except Exception:
                orientation = 1
            if draft_size is not None and im.format == "JPEG":
                im.draft(im.mode, draft_size)
            im.load()
            img = im
            try:
                img = ImageOps.exif_transpose(im)
            except Exception as e:  # malformed EXIF: keep the pixels as stored
                warnings.warn(f"{p!r}: EXIF orientation not applied ({e})", ImageLoadWarning,
                              stacklevel=3)
            if img is im:
                img = im.copy()
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {p!r} does not exist") from None
    except Image.UnidentifiedImageError:
        raise ValueError(f"{p!r} is not an image file Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"{p!r} is too large to decode safely: {e}") from None
    except PermissionError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # OSError (truncated), SyntaxError, struct/zlib errors, ...
        raise ValueError(f"{p!r} is truncated or corrupt: {type(e).__name__}: {e}") from None
    if orientation in (5, 6, 7, 8):
        size = (size[1], size[0])
    return img, size


def load_image(path: str | os.PathLike):
    """Open an image file: fully decoded, first frame, EXIF orientation applied.

    Args:
        path: the file (PNG, JPEG, WebP, BMP, GIF, TIFF, ... whatever Pillow reads).

    Returns:
        a :class:`PIL.Image.Image` in the file's own mode (see :func:`image_to_array` for the
        conversion); the file is closed.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a folder, an empty file, not an image, truncated or corrupt (the message
            names the file).
    """
    return _open(path)[0]


def _composite(rgb: np.ndarray, alpha: np.ndarray, bg: float) -> np.ndarray:
    a = alpha[..., None] if rgb.ndim == 3 else alpha
    return rgb * a + bg * (1.0 - a)


def _to_float(img, bg: float) -> np.ndarray:
    """A PIL image -> float32 (h, w, 1 or 3) in [0, 1], transparency composited over ``bg``."""
    mode = img.mode
    if mode == "1":
        return (np.asarray(img.convert("L"), dtype=np.float32) / 255.0)[..., None]
    if mode.startswith("I;16"):
        a = np.asarray(img).astype(np.float32) / 65535.0
        return a[..., None]
    if mode == "I":
        a = np.asarray(img).astype(np.float64) / 65535.0
        return np.clip(a, 0.0, 1.0).astype(np.float32)[..., None]
    if mode == "F":
        a = np.asarray(img, dtype=np.float32)
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        hi = float(a.max()) if a.size else 0.0
        if hi > 1.0:
            a = a / (255.0 if hi <= 255.0 else 65535.0)
        return np.clip(a, 0.0, 1.0)[..., None]
    if mode == "L":
        return (np.asarray(img, dtype=np.float32) / 255.0)[..., None]
    if mode in ("LA", "La"):
        a = np.asarray(img.convert("LA") if mode == "La" else img, dtype=np.float32) / 255.0
        return _composite(a[..., 0], a[..., 1], bg)[..., None]
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and ("transparency" in img.info or
                                                             getattr(img.palette, "mode", "") == "RGBA")):
        a = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        return _composite(a[..., :3], a[..., 3], bg)
    if mode == "RGB":
        return np.asarray(img, dtype=np.float32) / 255.0
    try:
        rgb = img.convert("RGB")
    except (ValueError, OSError) as e:
        raise ValueError(f"unsupported image mode {mode!r}: {e}") from None
    return np.asarray(rgb, dtype=np.float32) / 255.0


def _array_to_float(a: np.ndarray, bg: float) -> np.ndarray:
    """A numpy image (H, W) or (H, W, 1|3|4) (or (1, H, W, C)) -> float32 (h, w, 1|3)."""
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"image_to_array: an array image must be (H, W), (H, W, C) with C in "
                         f"1..4, or (1, H, W, C); got shape {a.shape}")
    if a.dtype == np.uint8:
        f = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        f = a.astype(np.float32) / 65535.0
    elif a.dtype == np.bool_:
        f = a.astype(np.float32)
    elif a.dtype.kind == "f":
        f = a.astype(np.float32)
        if not np.isfinite(f).all():
            raise ValueError("image_to_array: a float image must be finite")
        lo, hi = float(f.min()), float(f.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(f"image_to_array: a float image must lie in [0, 1], got values in "
                             f"[{lo:g}, {hi:g}] (divide uint8-range data by 255)")
        f = np.clip(f, 0.0, 1.0)
    else:
        raise TypeError(f"image_to_array: array images must be uint8, uint16, bool or float in "
                        f"[0, 1], got dtype {a.dtype}")
    c = f.shape[2]
    if c == 2:
        return _composite(f[..., 0], f[..., 1], bg)[..., None]
    if c == 4:
        return _composite(f[..., :3], f[..., 3], bg)
    return f


def _fit(f: np.ndarray, spec: InputSpec, bg: float) -> np.ndarray:
    """Resize float (h, w, c) to (H, W, c) per ``spec.fit`` with Pillow's bilinear filter."""
    Image, _ = _pil()
    h, w = f.shape[:2]
    H, W = spec.height, spec.width
    if spec.fit == "stretch":
        size, box = (W, H), None
    else:
        s = min(W / w, H / h) if spec.fit == "pad" else max(W / w, H / h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        if spec.fit == "pad":
            nw, nh = min(nw, W), min(nh, H)
        size = (nw, nh)
        box = None
        if spec.fit == "crop":
            nw, nh = max(nw, W), max(nh, H)
            size = (nw, nh)
            left, top = (nw - W) // 2, (nh - H) // 2
            box = (left, top)
    if size == (w, h):
        planes = [f[..., i] for i in range(f.shape[2])]
    else:
        planes = [np.asarray(Image.fromarray(np.ascontiguousarray(f[..., i]), mode="F")
                             .resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
                  for i in range(f.shape[2])]
    r = np.stack(planes, axis=-1)
    if spec.fit == "stretch":
        return r
    if spec.fit == "crop":
        left, top = box
        return r[top:top + H, left:left + W]
    out = np.full((H, W, f.shape[2]), bg, dtype=np.float32)
    top, left = (H - r.shape[0]) // 2, (W - r.shape[1]) // 2
    out[top:top + r.shape[0], left:left + r.shape[1]] = r
    return out


def _reduce_large(img, spec: InputSpec):
    """Box-reduce very large 8-bit images in Pillow before the float conversion."""
    if img.mode not in ("L", "RGB", "RGBA", "LA", "P", "1", "CMYK", "YCbCr"):
        return img
    w, h = img.size
    factor = min(w // (2 * spec.width), h // (2 * spec.height))
    if factor >= 2:
        if img.mode in ("P", "1"):
            img = img.convert("RGBA" if img.mode == "P" else "L")
        elif img.mode in ("CMYK", "YCbCr"):
            img = img.convert("RGB")
        img = img.reduce(factor)
    return img


def _convert(img_or_array, spec: InputSpec, bg: float) -> np.ndarray:
    """One image (PIL or numpy) -> float32 (H, W, C) before invert/normalisation."""
    if isinstance(img_or_array, np.ndarray):
        f = _array_to_float(img_or_array, bg)
    else:
        f = _to_float(_reduce_large(img_or_array, spec), bg)
    if spec.channels == 1 and f.shape[2] == 3:
        f = (f @ _LUMA)[..., None]
    elif spec.channels == 3 and f.shape[2] == 1:
        f = np.repeat(f, 3, axis=2)
    f = _fit(np.clip(f, 0.0, 1.0), spec, bg)
    if spec.invert:
        f = 1.0 - f
    f = (f - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return f.astype(np.float32, copy=False)


def _draft_size(spec: InputSpec) -> tuple[int, int]:
    m = 2 * max(spec.height, spec.width)
    return (m, m)


def image_to_array(image, spec: InputSpec, background: str | None = None) -> np.ndarray:
    """Convert one image to the model input described by ``spec``.

    Args:
        image: a file path, a :class:`PIL.Image.Image`, or a numpy array ``(H, W)``,
            ``(H, W, C)`` (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) or ``(1, H, W, C)``,
            dtype uint8 (0..255), uint16 (0..65535), bool, or float in [0, 1].
        spec: the :class:`InputSpec`.
        background: ``'black'`` / ``'white'`` to override ``spec.background``.

    Returns:
        float32 ``(1, spec.height, spec.width, spec.channels)``, normalised per ``spec``.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a file that is not a readable image (see :func:`load_image`), an array of
            a bad shape or a float array outside [0, 1].
        TypeError: an unsupported object or dtype.

    Example:
        >>> x = image_to_array(np.full((10, 20), 255, np.uint8), InputSpec(8, 8, 1))
        >>> x.shape, float(x[0, 0, 0, 0]), float(x[0, 4, 4, 0])   # padded top row, image centre
        ((1, 8, 8, 1), 0.0, 1.0)
    """
    if not isinstance(spec, InputSpec):
        raise TypeError(f"image_to_array: spec must be an InputSpec, got {type(spec).__name__}")
    bgname = spec.background if background is None else background
    if bgname not in BACKGROUNDS:
        raise ValueError(f"image_to_array: background must be one of {tuple(BACKGROUNDS)}, got {bgname!r}")
    bg = BACKGROUNDS[bgname]
    if isinstance(image, (str, os.PathLike)):
        image = _open(image, _draft_size(spec))[0]
    elif not isinstance(image, np.ndarray):
        Image, _ = _pil()
        if not isinstance(image, Image.Image):
            raise TypeError(f"image_to_array: expected a path, a PIL image or a numpy array, "
                            f"got {type(image).__name__}")
    return _convert(image, spec, bg)[None]


def _load_one(path, spec, bg):
    try:
        img, size = _open(path, _draft_size(spec))
        return _convert(img, spec, bg), size, None
    except MemoryError:
        raise
    except Exception as e:  # every failure of one file is reported, never fatal
        reason = str(e) if isinstance(e, (ValueError, FileNotFoundError)) else f"{type(e).__name__}: {e}"
        return None, None, reason


def load_images(paths: Iterable[str | os.PathLike], spec: InputSpec, on_error: str = "warn",
                workers: int | None = None, progress: bool = False, with_sizes: bool = False):
    """Convert many image files to one batch, skipping the files that cannot be read.

    Args:
        paths: image files.
        spec: the :class:`InputSpec`.
        on_error: ``'warn'`` (default: one :class:`ImageLoadWarning` per skipped file, naming
            it), ``'ignore'`` (skip silently; still listed in ``failures``) or ``'raise'``
            (the first failure raises, as :func:`image_to_array` would).
        workers: threads decoding in parallel (Pillow releases the GIL while decoding);
            default ``min(4, CPUs)``.
        progress: show a tqdm progress bar.
        with_sizes: also return the ``(width, height)`` of each loaded file (after EXIF
            orientation), for the catalog.

    Returns:
        ``(images, ok_paths, failures)`` (plus ``sizes`` with ``with_sizes``): float32
        ``(n_ok, H, W, C)``, the paths that loaded (input order), and ``(path, reason)`` for
        each skipped file.

    Raises:
        ValueError: a bad ``on_error``; with ``'raise'``, the first unreadable file.
    """
    if on_error not in ("warn", "ignore", "raise"):
        raise ValueError(f"load_images: on_error must be 'warn', 'ignore' or 'raise', got {on_error!r}")
    if not isinstance(spec, InputSpec):
        raise TypeError(f"load_images: spec must be an InputSpec, got {type(spec).__name__}")
    paths = [os.fspath(p) for p in paths]
    bg = BACKGROUNDS[spec.background]
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    if on_error == "raise":  # fail fast, with the single-image exception
        results = []
        for p in paths:
            img, size = _open(p, _draft_size(spec))
            results.append((_convert(img, spec, bg), size, None))
    elif workers > 1 and len(paths) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as ex:
            it = ex.map(lambda p: _load_one(p, spec, bg), paths)
            results = list(_progress(it, len(paths), progress))
    else:
        results = [_load_one(p, spec, bg) for p in _progress(paths, len(paths), progress)]
    arrays, ok, failures, sizes = [], [], [], []
    for p, (arr, size, reason) in zip(paths, results):
        if arr is None:
            failures.append((p, reason))
            if on_error == "warn":
                warnings.warn(f"skipped {p!r}: {reason}", ImageLoadWarning, stacklevel=2)
        else:
            arrays.append(arr)
            ok.append(p)
            sizes.append(size)
    batch = (np.stack(arrays) if arrays
             else np.empty((0, spec.height, spec.width, spec.channels), dtype=np.float32))
    if with_sizes:
        return batch, ok, failures, sizes
    return batch, ok, failures


def _progress(it, total, show):
    if not show:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc="images", unit="img")


# --------------------------------------------------------------------------------------
# contact sheets and PNG output
# --------------------------------------------------------------------------------------


def _tile_to_pil(item):
    """One tile (array in [0,1]/uint8, PIL image or path) -> PIL RGB."""
    Image, _ = _pil()
    if isinstance(item, (str, os.PathLike)):
        item = load_image(item)
    if isinstance(item, Image.Image):
        f = _to_float(item, 1.0)
    else:
        a = np.asarray(item)
        if a.dtype == np.uint8:
            f = a.astype(np.float32) / 255.0
        elif a.dtype.kind in "fiub":
            f = np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0)
        else:
            raise TypeError(f"contact_sheet: unsupported image dtype {a.dtype}")
        if f.ndim == 2:
            f = f[..., None]
        if f.ndim != 3 or f.shape[2] not in (1, 3):
            raise ValueError(f"contact_sheet: each image must be (H, W), (H, W, 1) or (H, W, 3), "
                             f"got {a.shape}")
    if f.shape[2] == 1:
        f = np.repeat(f, 3, axis=2)
    return Image.fromarray(np.round(f * 255).astype(np.uint8), mode="RGB")


def _wrap(text, font, width, draw):
    """Greedy word wrap of one caption to ``width`` pixels (long words are cut)."""
    lines = []
    for para in str(text).split("\n"):
        cur = ""
        for word in para.split(" "):
            cand = word if not cur else cur + " " + word
            if draw.textlength(cand, font=font) <= width:
                cur = cand
                continue
            if cur:
                lines.append(cur)
            while draw.textlength(word, font=font) > width and len(word) > 1:
                cut = len(word)
                while cut > 1 and draw.textlength(word[:cut], font=font) > width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            cur = word
        lines.append(cur)
    return lines


def contact_sheet(images, captions: Sequence[str] | None = None, cols: int | None = None,
                  scale: int = 4, pad: int = 6, title: str | None = None,
                  background=(255, 255, 255), text_color=(0, 0, 0)):
    """A grid of image tiles with captions (rank, score, label...) under each.

    Args:
        images: ``(n, H, W, C)`` / ``(n, H, W)`` array (float in [0, 1], clipped, or uint8),
            or a list of arrays, PIL images or paths (tiles of different sizes are centred in
            the largest tile's box).
        captions: one string per image (``'\\n'`` starts a new line; long lines are wrapped
            to the tile width), or None.
        cols: tiles per row, default ``ceil(sqrt(n))``.
        scale: integer magnification of each tile (nearest neighbour: crisp 28x28 tiles).
        pad: pixels between tiles.
        title: an optional line above the grid.
        background, text_color: RGB colours of the sheet and the text.

    Returns:
        a :class:`PIL.Image.Image` (RGB). Text uses Pillow's default font.

    Raises:
        ValueError: no images, ``len(captions) != n``, ``cols``/``scale`` < 1.
    """
    Image, _ = _pil()
    from PIL import ImageDraw, ImageFont

    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4):
            raise ValueError(f"contact_sheet: an array of images must be (n, H, W) or (n, H, W, C), "
                             f"got {images.shape}")
        items = list(images)
    else:
        items = list(images)
    n = len(items)
    if n == 0:
        raise ValueError("contact_sheet: no images")
    if captions is not None and len(captions) != n:
        raise ValueError(f"contact_sheet: {n} images but {len(captions)} captions")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"contact_sheet: scale must be an int >= 1, got {scale!r}")
    if cols is None:
        cols = int(math.ceil(math.sqrt(n)))
    if isinstance(cols, bool) or not isinstance(cols, (int, np.integer)) or cols < 1:
        raise ValueError(f"contact_sheet: cols must be an int >= 1, got {cols!r}")
    cols = min(int(cols), n)
    rows = int(math.ceil(n / cols))
    tiles = [_tile_to_pil(t) for t in items]
    tiles = [t.resize((t.width * scale, t.height * scale), Image.Resampling.NEAREST) if scale > 1 else t
             for t in tiles]
    tw = max(t.width for t in tiles)
    th = max(t.height for t in tiles)
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    asc_box = probe.textbbox((0, 0), "Ag|", font=font)
    line_h = (asc_box[3] - asc_box[1]) + 3
    wrapped = [_wrap(c, font, tw, probe) if captions is not None else [] for c in (captions or [None] * n)]
    cap_h = max((len(w) for w in wrapped), default=0) * line_h
    title_h = line_h + pad if title else 0
    W = cols * tw + (cols + 1) * pad
    H = title_h + rows * (th + cap_h) + (rows + 1) * pad
    sheet = Image.new("RGB", (W, H), tuple(background))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, pad), str(title), fill=tuple(text_color), font=font)
    for i, (tile, lines) in enumerate(zip(tiles, wrapped)):
        r, c = divmod(i, cols)
        x = pad + c * (tw + pad)
        y = title_h + pad + r * (th + cap_h + pad)
        sheet.paste(tile, (x + (tw - tile.width) // 2, y + (th - tile.height) // 2))
        for j, line in enumerate(lines):
            draw.text((x, y + th + 2 + j * line_h), line, fill=tuple(text_color), font=font)
    return sheet


def save_png_atomic(image, path: str | os.PathLike) -> None:
    """Write ``image`` (a PIL image, or an array as :func:`contact_sheet` tiles take) as PNG
    to ``path`` through a temporary file in the same folder and ``os.replace``: readers see
    the old file or the complete new one, never a partial PNG.

    Raises:
        FileNotFoundError: the folder does not exist. OSError: it cannot be written.
    """
    Image, _ = _pil()
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"save_png_atomic: folder {folder!r} does not exist")
    if not isinstance(image, Image.Image):
        image = _tile_to_pil(image)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
