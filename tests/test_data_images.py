"""pixrank.data.images: odd image files made on the fly with Pillow, InputSpec conversion,
skip-and-warn loading, contact sheets, atomic PNG writes."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from pixrank.data.images import (ImageLoadWarning, InputSpec, contact_sheet, image_to_array,
                                 load_image, load_images, save_png_atomic)


def same_size(img_h, img_w, channels=1, **kw):
    """A spec that keeps the image's size (no resampling), [0, 1] output."""
    return InputSpec(img_h, img_w, channels, fit="stretch", **kw)


def asym_pattern(h=20, w=40):
    """Black image with a white block in the top-left corner and a gray bar along the bottom."""
    a = np.zeros((h, w), np.uint8)
    a[: h // 4, : w // 4] = 255
    a[-2:, :] = 128
    return a


# ---- the odd formats ---------------------------------------------------------------------------------


def test_exif_rotated_jpeg(tmp_path):
    stored = asym_pattern(20, 40)  # as stored in the file: 40 wide, 20 high
    p = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored, "L").save(p, quality=95, exif=exif)
    img = load_image(p)
    assert img.size == (20, 40)  # width, height after applying the orientation
    expect = np.rot90(stored, k=-1)  # clockwise
    got = np.asarray(img.convert("L"))
    assert got.shape == expect.shape == (40, 20)
    assert np.mean(np.abs(got.astype(int) - expect.astype(int)) > 40) < 0.02
    # the white block is now top-right, the gray bar runs down the left side
    assert got[:5, -5:].mean() > 200 and got[-5:, -5:].mean() < 50 and 100 < got[5:35, :2].mean() < 160
    x = image_to_array(p, same_size(40, 20))
    assert x.shape == (1, 40, 20, 1) and x.dtype == np.float32
    assert np.mean(np.abs(x[0, ..., 0] - expect / 255.0) > 0.15) < 0.02
    _, ok, fails, sizes = load_images([p], same_size(40, 20), with_sizes=True)
    assert sizes == [(20, 40)] and not fails


def test_png_palette_with_transparency(tmp_path):
    pal = np.zeros((4, 4), np.uint8)
    pal[:, 2:] = 1  # right half: palette index 1 (transparent)
    img = Image.fromarray(pal, "P")
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p = tmp_path / "pal.png"
    img.save(p, transparency=1)
    assert load_image(p).mode == "P"
    rgb = image_to_array(p, same_size(4, 4, 3))[0]
    np.testing.assert_allclose(rgb[:, :2], np.broadcast_to([1, 0, 0], (4, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(rgb[:, 2:], 0.0, atol=1e-6)  # transparent over black
    white = image_to_array(p, same_size(4, 4, 3, background="white"))[0]
    np.testing.assert_allclose(white[:, 2:], 1.0, atol=1e-6)
    gray = image_to_array(p, same_size(4, 4, 1))[0, ..., 0]
    np.testing.assert_allclose(gray[:, :2], 0.299, atol=1e-6)  # BT.601 luma of pure red


def test_la_and_rgba_alpha(tmp_path):
    la = np.zeros((6, 6, 2), np.uint8)
    la[..., 0] = 200
    la[..., 1] = 128
    p = tmp_path / "la.png"
    Image.fromarray(la, "LA").save(p)
    a = 128 / 255
    got = image_to_array(p, same_size(6, 6))[0, ..., 0]
    np.testing.assert_allclose(got, 200 / 255 * a, atol=1e-6)
    got = image_to_array(p, same_size(6, 6, background="white"))[0, ..., 0]
    np.testing.assert_allclose(got, 200 / 255 * a + (1 - a), atol=1e-6)
    rgba = np.zeros((3, 3, 4), np.uint8)
    rgba[..., 1] = 255
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    q = tmp_path / "rgba.webp"
    Image.fromarray(rgba, "RGBA").save(q, lossless=True)
    got = image_to_array(q, same_size(3, 3, 3))[0]
    np.testing.assert_allclose(got[1, 1], [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(got[0, 0], [0, 0, 0], atol=1e-6)


def test_16_bit_png(tmp_path):
    v = np.array([[0, 1000, 30000], [40000, 65535, 12345]], np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(v).save(p)
    img = load_image(p)
    assert img.mode in ("I", "I;16")
    got = image_to_array(p, same_size(2, 3))[0, ..., 0]
    np.testing.assert_allclose(got, v / 65535.0, atol=1e-6)
    # big-endian 16-bit and 32-bit integer images in memory
    big = Image.frombytes("I;16B", (3, 2), v.astype(">u2").tobytes())
    np.testing.assert_allclose(image_to_array(big, same_size(2, 3))[0, ..., 0], v / 65535.0, atol=1e-6)
    i32 = Image.fromarray(v.astype(np.int32), "I")
    np.testing.assert_allclose(image_to_array(i32, same_size(2, 3))[0, ..., 0], v / 65535.0, atol=1e-6)


def test_float_and_1bit_modes(tmp_path):
    f = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    np.testing.assert_allclose(image_to_array(Image.fromarray(f, "F"), same_size(2, 2))[0, ..., 0], f)
    np.testing.assert_allclose(image_to_array(Image.fromarray(f * 255, "F"), same_size(2, 2))[0, ..., 0],
                               f, atol=1e-6)
    bits = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1")
    p = tmp_path / "bits.png"
    bits.save(p)
    assert load_image(p).mode == "1"
    np.testing.assert_array_equal(image_to_array(p, same_size(2, 2))[0, ..., 0], [[0, 1], [1, 0]])


def test_cmyk_jpeg(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p, quality=95)  # red in CMYK
    assert load_image(p).mode == "CMYK"
    got = image_to_array(p, same_size(16, 16, 3))[0]
    np.testing.assert_allclose(got.mean(axis=(0, 1)), [1, 0, 0], atol=0.05)


def test_bmp_webp_exact(tmp_path, rng):
    a = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for name, kw in (("x.bmp", {}), ("x.webp", {"lossless": True})):
        p = tmp_path / name
        Image.fromarray(a, "RGB").save(p, **kw)
        np.testing.assert_allclose(image_to_array(p, same_size(5, 7, 3))[0], a / 255.0, atol=1e-6)


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("L", (8, 8), v) for v in (255, 0, 90)]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(p) as im:
        assert im.n_frames == 3
    got = image_to_array(p, same_size(8, 8))[0, ..., 0]
    np.testing.assert_allclose(got, 1.0, atol=1e-6)


# ---- bad files ------------------------------------------------------------------------------------------


@pytest.fixture
def bad_files(tmp_path, rng):
    good = tmp_path / "good.png"
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(good)
    trunc = tmp_path / "truncated.png"
    data = good.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.png"
    text.write_text("this is text, not a PNG\n")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    return {"good": good, "truncated": trunc, "text": text, "empty": empty,
            "missing": tmp_path / "missing.png", "folder": tmp_path}


def test_single_image_errors(bad_files):
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_image(bad_files["truncated"])
    with pytest.raises(ValueError, match="not an image"):
        load_image(bad_files["text"])
    with pytest.raises(ValueError, match="empty"):
        image_to_array(bad_files["empty"], InputSpec())
    with pytest.raises(FileNotFoundError, match="missing.png"):
        image_to_array(bad_files["missing"], InputSpec())
    with pytest.raises(ValueError, match="folder"):
        load_image(bad_files["folder"])


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="needs a FIFO and /dev/zero")
def test_pipes_and_devices_are_refused_without_reading(tmp_path):
    # a FIFO or a link to /dev/zero named *.png used to be reported as "empty (0 bytes)"
    # (st_size is 0); reading one could block forever or never end
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    dev = tmp_path / "zeros.png"
    dev.symlink_to("/dev/zero")
    for p in (fifo, dev):
        with pytest.raises(ValueError, match="is not a regular file"):
            load_image(p)
        with pytest.raises(ValueError, match="is not a regular file"):
            image_to_array(p, InputSpec())

def test_load_images_skips_and_warns(bad_files):
    order = ["good", "truncated", "text", "good", "empty", "missing"]
    paths = [bad_files[k] for k in order]
    spec = InputSpec(16, 16, 1)
    with pytest.warns(ImageLoadWarning) as rec:
        x, ok, failures = load_images(paths, spec, workers=2)
    assert x.shape == (2, 16, 16, 1) and x.dtype == np.float32
    assert ok == [os.fspath(bad_files["good"])] * 2
    assert [os.path.basename(p) for p, _ in failures] == ["truncated.png", "notes.png", "empty.jpg",
                                                         "missing.png"]
    messages = " ".join(str(w.message) for w in rec)
    for name in ("truncated.png", "notes.png", "empty.jpg", "missing.png"):
        assert name in messages
    serial, _, _ = load_images(paths, spec, workers=1, on_error="ignore")
    np.testing.assert_array_equal(serial, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_images(paths, spec, on_error="ignore")
    with pytest.raises(ValueError, match="truncated"):
        load_images(paths, spec, on_error="raise")
    empty, ok, failures = load_images([], spec)
    assert empty.shape == (0, 16, 16, 1) and ok == [] and failures == []


# ---- InputSpec and the conversion -------------------------------------------------------------------------


def test_input_spec_dict_and_validation():
    spec = InputSpec(32, 24, 3, mean=(0.5, 0.4, 0.3), std=0.25, invert=True, fit="crop",
                     background="white")
    d = spec.to_dict()
    assert d["std"] == [0.25, 0.25, 0.25] and d["fit"] == "crop"
    assert InputSpec.from_dict(d) == spec
    with pytest.raises(ValueError, match="channels"):
        InputSpec(28, 28, 2)
    with pytest.raises(ValueError, match="std"):
        InputSpec(std=0.0)
    with pytest.raises(ValueError, match="fit"):
        InputSpec(fit="squash")
    with pytest.raises(ValueError, match="background"):
        InputSpec(background="grey")
    with pytest.raises(ValueError, match="unknown keys"):
        InputSpec.from_dict({**d, "dtype": "float16"})
    with pytest.raises(ValueError, match="mean"):
        InputSpec(channels=3, mean=(0.1, 0.2))


def test_normalisation_and_invert():
    a = np.array([[0, 51], [204, 255]], np.uint8)
    spec = InputSpec(2, 2, 1, mean=0.5, std=0.25, fit="stretch")
    np.testing.assert_allclose(image_to_array(a, spec)[0, ..., 0], (a / 255 - 0.5) / 0.25, atol=1e-6)
    inv = InputSpec(2, 2, 1, invert=True, fit="stretch")
    np.testing.assert_allclose(image_to_array(a, inv)[0, ..., 0], 1 - a / 255, atol=1e-6)
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 2] = 255
    spec3 = InputSpec(2, 2, 3, mean=(0, 0, 0.5), std=(1, 1, 0.5), fit="stretch")
    np.testing.assert_allclose(image_to_array(rgb, spec3)[0], np.broadcast_to([0, 0, 1], (2, 2, 3)))


def test_fit_modes():
    img = np.full((10, 20), 255, np.uint8)  # wide white image
    pad = image_to_array(img, InputSpec(8, 8, 1))[0, ..., 0]
    assert np.all(pad[:2] == 0) and np.all(pad[-2:] == 0) and np.allclose(pad[2:6], 1.0)
    padw = image_to_array(img, InputSpec(8, 8, 1, background="white", invert=True))[0, ..., 0]
    np.testing.assert_allclose(padw, 0.0, atol=1e-6)  # white padding, inverted -> black
    half = np.zeros((10, 20), np.uint8)
    half[:, 10:] = 255
    crop = image_to_array(half, InputSpec(8, 8, 1, fit="crop"))[0, ..., 0]
    assert crop[:, 0].max() < 0.05 and crop[:, -1].min() > 0.95  # centre crop keeps the edge
    stretch = image_to_array(half, InputSpec(6, 12, 1, fit="stretch"))[0, ..., 0]
    assert stretch.shape == (6, 12) and stretch[:, :5].max() < 0.05 and stretch[:, 7:].min() > 0.95


def test_large_image_is_reduced_consistently(tmp_path):
    big = np.zeros((900, 1200, 3), np.uint8)
    big[:, 600:] = 255
    p = tmp_path / "big.jpg"
    Image.fromarray(big).save(p, quality=90)
    x = image_to_array(p, InputSpec(24, 24, 1, fit="stretch"))[0, ..., 0]
    assert x[:, :10].max() < 0.05 and x[:, 14:].min() > 0.95
    _, _, _, sizes = load_images([p], InputSpec(24, 24, 1), with_sizes=True)
    assert sizes == [(1200, 900)]  # the full size, even though the decoder drafted it down


def test_array_inputs():
    spec = same_size(2, 2)
    np.testing.assert_allclose(image_to_array(np.full((2, 2), 65535, np.uint16), spec), 1.0)
    np.testing.assert_allclose(image_to_array(np.full((1, 2, 2, 1), 0.5, np.float32), spec), 0.5)
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = 0
    np.testing.assert_allclose(image_to_array(rgba, spec), 0.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        image_to_array(np.full((2, 2), 200.0), spec)
    with pytest.raises(ValueError, match="shape"):
        image_to_array(np.zeros((2, 2, 5), np.uint8), spec)
    with pytest.raises(TypeError, match="dtype"):
        image_to_array(np.zeros((2, 2), np.int64), spec)
    with pytest.raises(TypeError, match="PIL image"):
        image_to_array(42, spec)


# ---- contact sheets and PNG output ------------------------------------------------------------------------------


def test_contact_sheet(tmp_path, rng):
    imgs = rng.random((5, 28, 28, 1)).astype(np.float32)
    sheet = contact_sheet(imgs, [f"#{i + 1} 0.9{i}\nankle boot" for i in range(5)], cols=3, scale=2, pad=6)
    assert sheet.mode == "RGB" and sheet.width == 3 * 56 + 4 * 6
    a = np.asarray(sheet)
    # first tile's top-left pixel is the first image's first value, magnified
    assert abs(int(a[6, 6, 0]) - round(imgs[0, 0, 0, 0] * 255)) <= 1
    assert np.array_equal(a[6, 6], a[7, 7]) or abs(int(a[7, 7, 0]) - round(imgs[0, 0, 0, 0] * 255)) <= 1
    caption_band = a[6 + 56: 6 + 56 + 10, 6: 6 + 56]
    assert (caption_band < 128).any()  # some text was drawn
    mixed = contact_sheet([imgs[0], (imgs[1, ..., 0] * 255).astype(np.uint8), np.ones((10, 40, 3))])
    assert mixed.width > 0
    with pytest.raises(ValueError, match="captions"):
        contact_sheet(imgs, ["a"])
    with pytest.raises(ValueError, match="no images"):
        contact_sheet([])
    out = tmp_path / "sheet.png"
    save_png_atomic(sheet, out)
    assert np.array_equal(np.asarray(Image.open(out)), a)
    assert sorted(os.listdir(tmp_path)) == ["sheet.png"]  # no temporary left behind
    save_png_atomic(imgs[0], out)  # an array, over the old file
    assert Image.open(out).size == (28, 28)
    with pytest.raises(FileNotFoundError):
        save_png_atomic(sheet, tmp_path / "no" / "such" / "x.png")
