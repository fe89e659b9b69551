"""Dual encoder: the CLIP loss (value and finite-difference gradients, temperature included),
caption matching, towers and encoder save/load."""
import os

import numpy as np
import pytest

from pixrank import autograd as ag
from pixrank.search.encoder import (ImageEncoder, ImageTower, TextEncoder, caption_match, clip_loss,
                                    _token_dropout)
from pixrank.text import Tokenizer
from pixrank.text.tower import TextTower


def _ref_clip(u, v, t, match=None):
    """Independent float64 reference of the symmetric CLIP loss."""
    u = np.asarray(u, np.float64)
    v = np.asarray(v, np.float64)
    s = np.exp(t) * (u @ v.T)
    b = len(u)
    if match is not None:
        off = np.asarray(match) & ~np.eye(b, dtype=bool)
        s = np.where(off, -np.inf, s)

    def ce(z):
        m = z.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
        return float(np.mean(lse - np.diag(z)))

    return 0.5 * (ce(s) + ce(s.T))


def _unit(rng, b, d):
    x = rng.normal(size=(b, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("masked", [False, True])
def test_clip_loss_value_and_gradients_by_finite_differences(masked):
    rng = np.random.default_rng(7 + masked)
    b, d = 6, 5
    u0, v0 = _unit(rng, b, d), _unit(rng, b, d)
    t0 = 1.3
    match = None
    if masked:
        labels = np.array([0, 1, 0, 2, 1, 0])
        tones = np.array([0, 1, 2, 0, 1, 0])
        stated = np.array([-1, 1, 2, -1, -1, 0])
        match = caption_match(labels, tones, stated)
        assert match.sum() > b  # some off-diagonal pairs are masked
    U = ag.Parameter(u0)
    V = ag.Parameter(v0)
    T = ag.Parameter(np.float32(t0))
    loss = clip_loss(U, V, T, match)
    assert loss.shape == () and np.isfinite(loss.data)
    assert float(loss.data) == pytest.approx(_ref_clip(u0.astype(np.float32), v0.astype(np.float32), t0, match),
                                             rel=1e-5)
    loss.backward()
    eps = 1e-6
    # float64 central differences of the reference, for every input (u, v and the temperature)
    for name, x0, g in (("u", u0, U.grad), ("v", v0, V.grad)):
        num = np.zeros_like(x0)
        for idx in np.ndindex(x0.shape):
            xp, xm = x0.copy(), x0.copy()
            xp[idx] += eps
            xm[idx] -= eps
            fp = _ref_clip(xp, v0, t0, match) if name == "u" else _ref_clip(u0, xp, t0, match)
            fm = _ref_clip(xm, v0, t0, match) if name == "u" else _ref_clip(u0, xm, t0, match)
            num[idx] = (fp - fm) / (2 * eps)
        err = np.abs(g - num).max()
        assert err <= 1e-4 + 1e-3 * np.abs(num).max(), (name, err)
    num_t = (_ref_clip(u0, v0, t0 + eps, match) - _ref_clip(u0, v0, t0 - eps, match)) / (2 * eps)
    assert float(T.grad) == pytest.approx(num_t, rel=1e-3, abs=1e-5)


def test_clip_loss_masked_pairs_get_no_gradient_and_perfect_pairs_low_loss():
    # identical captions for two images of one concept: the masked pair contributes nothing
    rng = np.random.default_rng(3)
    u = _unit(rng, 4, 8)
    match = caption_match([0, 0, 1, 2], [1, 1, 0, 0], [1, 1, 0, -1])
    assert match[0, 1] and match[1, 0] and not match[0, 2]
    loss_masked = float(clip_loss(u, u, np.float32(np.log(50.0)), match).data)
    # with the twin masked, aligned pairs at a high scale give a near-zero loss
    assert loss_masked < 1e-3
    # without the mask, two identical rows are confused: each of them splits its probability
    # between the two (loss ln 2 per such row, in both directions) -> mean ln(2) / 2
    twin = u.copy()
    twin[1] = twin[0]
    assert float(clip_loss(twin, twin, np.float32(np.log(50.0))).data) == pytest.approx(np.log(2) / 2, rel=1e-2)


def test_clip_loss_errors():
    with pytest.raises(ValueError, match=r"\(B, d\)"):
        clip_loss(np.zeros((3, 4)), np.zeros((2, 4)), 0.0)
    with pytest.raises(ValueError, match="diagonal"):
        clip_loss(np.ones((2, 4)), np.ones((2, 4)), 0.0, match=np.zeros((2, 2), bool))


def test_caption_match_reference():
    labels = np.array([3, 3, 3, 4])
    tones = np.array([0, 1, 0, 0])
    stated = np.array([0, -1, 0, 0])  # a caption states its own image's tone, or none
    m = caption_match(labels, tones, stated)
    ref = np.zeros((4, 4), bool)
    for i in range(4):
        for j in range(4):
            ref[i, j] = labels[i] == labels[j] and (stated[j] == -1 or stated[j] == tones[i])
    assert m.tolist() == ref.tolist()
    assert m.diagonal().all()


def test_token_dropout_keeps_every_text_nonempty():
    rng = np.random.default_rng(0)
    ids = np.arange(40, dtype=np.int64)
    off = np.array([0, 1, 5, 20, 40])
    for _ in range(50):
        new_ids, new_off = _token_dropout(ids, off, num_words=10, rng=rng, p_word=0.9, p_sub=0.9)
        assert new_off[0] == 0 and new_off[-1] == len(new_ids)
        assert (np.diff(new_off) >= 1).all()
        for i in range(4):  # kept ids come from their own text, in order
            part = new_ids[new_off[i]:new_off[i + 1]]
            assert set(part.tolist()) <= set(ids[off[i]:off[i + 1]].tolist())


def test_towers_output_unit_vectors_and_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    img = ImageTower(embed_dim=16, hidden=32, name="image_tower")
    enc = ImageEncoder(img)
    x = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    e = enc.encode(x)
    assert e.shape == (5, 16) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    meta = enc.save(tmp_path / "img")
    assert meta["input_spec"]["height"] == 28
    again = ImageEncoder.load(tmp_path / "img")
    np.testing.assert_array_equal(again.encode(x), e)
    assert again.spec == enc.spec

    tok = Tokenizer.fit(["a dark ankle boot", "a light sneaker"], buckets=256)
    txt = TextEncoder(TextTower(tok.num_ids, token_dim=8, hidden=16, embed_dim=16, name="text_tower"), tok)
    t = txt.encode(["dark boots", "sneaker"])
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, rtol=1e-5)
    txt.save(tmp_path / "txt")
    t2 = TextEncoder.load(tmp_path / "txt")
    np.testing.assert_array_equal(t2.encode(["dark boots", "sneaker"]), t)
    assert t2.tokenizer == tok


def test_encoder_load_detects_a_foreign_or_corrupt_model(tmp_path):
    tok = Tokenizer.fit(["a bag"], buckets=64)
    a = TextEncoder(TextTower(tok.num_ids, token_dim=4, hidden=8, embed_dim=4, name="ta"), tok)
    b = TextEncoder(TextTower(tok.num_ids, token_dim=4, hidden=8, embed_dim=4, name="tb"), tok)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    os.replace(tmp_path / "b" / "model.pxr", tmp_path / "a" / "model.pxr")
    with pytest.raises(ValueError, match="not the model this encoder recorded"):
        TextEncoder.load(tmp_path / "a")
    with pytest.raises(FileNotFoundError):
        TextEncoder.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a saved image encoder"):
        ImageEncoder.load(tmp_path / "b")
    (tmp_path / "b" / "encoder.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        TextEncoder.load(tmp_path / "b")


def test_text_encoder_errors():
    tok = Tokenizer.fit(["a dark ankle boot"], buckets=16384)
    txt = TextEncoder(TextTower(tok.num_ids, token_dim=4, hidden=8, embed_dim=4), tok)
    with pytest.raises(ValueError, match="empty"):
        txt.encode(["   "])
    with pytest.raises(ValueError, match="known"):
        txt.encode(["qqqq xxxx"])
    with pytest.raises(ValueError, match="rows"):
        TextEncoder(TextTower(tok.num_ids + 1, token_dim=4, hidden=8, embed_dim=4), tok)
    with pytest.raises(TypeError):
        TextEncoder(TextTower(10, token_dim=4, hidden=8, embed_dim=4), "not a tokenizer")
    img = ImageEncoder(ImageTower(embed_dim=4, hidden=8))
    with pytest.raises(ValueError, match="28"):
        img.encode(np.zeros((2, 32, 32), np.uint8))
