"""The dual encoder: an image tower and a text tower into one embedding space (CLIP).

Two towers map images and texts to L2-normalised vectors of the same dimension ``d``;
cosine similarity (a dot product) then ranks images for a text, or for another image.

* :class:`ImageTower` — a CNN of the framework: Conv2D(32, 3, same, relu) -> MaxPool2D ->
  BatchNormalization -> Conv2D(64, 3, same, relu) -> MaxPool2D -> BatchNormalization ->
  Flatten -> Dense(256, relu) -> Dense(d) (the projection head) -> L2 normalisation.
  (The framework issue's ``cnn`` with BatchNormalization and a wider dense layer.)
* :class:`TextTower` — an embedding bag (the mean of the embeddings of a text's known words
  and hashed character n-grams, :class:`pixrank.text.Tokenizer`) -> Dense(256, relu) ->
  Dense(d) (projection head) -> L2 normalisation.
* :func:`clip_loss` — the symmetric contrastive loss of CLIP over the in-batch similarity
  matrix ``S = exp(t) * U V^T`` (``U`` image and ``V`` text embeddings, ``t`` a learned
  log-temperature): the mean of the softmax cross-entropy of the rows (image -> text) and of
  the columns (text -> image), each with the diagonal as the label, through the fused kernel
  :func:`pixrank.ops.softmax_cross_entropy` (via :func:`pixrank.autograd.softmax_cross_entropy`).
  Captions generated from a class and a tone repeat within a batch; a caption that also
  describes another image of the batch is not that image's negative: such off-diagonal
  pairs get a logit of ``-inf`` (probability 0, gradient 0), so each row's softmax runs over
  the true pair and the genuinely different pairs only.
* :class:`ImageEncoder` / :class:`TextEncoder` — a tower plus what it needs at inference
  (the :class:`~pixrank.data.images.InputSpec`; the tokenizer), with ``encode`` and
  ``save``/``load`` (one folder each, files written to temporary names and renamed).
* :func:`train_dual_encoder` — the training loop (outside ``fit``: custom loss, a learned
  temperature, Adam with a cosine learning-rate decay).

Reference: A. Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision" (CLIP), ICML 2021 (symmetric InfoNCE over in-batch pairs, learned temperature
initialised to 1/0.07 and clipped at 100). P. Bojanowski et al., TACL 2017 (subwords).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time

import numpy as np

from pixrank import autograd as ag
from pixrank.nn.models import Model
from pixrank.nn.saving import load_model
from pixrank.nn import layers as L
from pixrank.nn.optimizers import Adam
from pixrank.text.tokenizer import Tokenizer
from pixrank.text.tower import TextTower

__all__ = ["ImageTower", "TextTower", "ImageEncoder", "TextEncoder", "DualEncoder", "clip_loss",
           "caption_match", "train_dual_encoder", "fashion_mnist_spec", "ENCODER_VERSION"]

#: version of the encoder folder layout written by :meth:`ImageEncoder.save` / :meth:`TextEncoder.save`
ENCODER_VERSION = 1
_LOG_TEMP_INIT = math.log(1 / 0.07)  # CLIP's initial temperature
_LOG_TEMP_MAX = math.log(100.0)      # CLIP clips the scale at 100


# ----------------------------------------------------------------------------- towers

class ImageTower(Model):
    """CNN image tower: NHWC float32 images -> L2-normalised ``(B, embed_dim)`` embeddings.

    Args:
        embed_dim: output dimension ``d`` (default 64).
        hidden: width of the dense layer before the projection head (default 256).
        channels: input channels (1 for Fashion-MNIST).

    Shape: ``(B, H, W, channels)`` float32 -> ``(B, embed_dim)`` float32, unit rows.
    """

    def __init__(self, embed_dim: int = 64, hidden: int = 256, channels: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim, self.hidden, self.channels = int(embed_dim), int(hidden), int(channels)
        self.conv1 = L.Conv2D(32, 3, padding="same", activation="relu")
        self.pool1 = L.MaxPool2D()
        self.bn1 = L.BatchNormalization(momentum=0.9)
        self.conv2 = L.Conv2D(64, 3, padding="same", activation="relu")
        self.pool2 = L.MaxPool2D()
        self.bn2 = L.BatchNormalization(momentum=0.9)
        self.flatten = L.Flatten()
        self.dense = L.Dense(self.hidden, activation="relu")
        self.proj = L.Dense(self.embed_dim)

    def call(self, x, training=None):
        h = self.bn1(self.pool1(self.conv1(x)), training=training)
        h = self.bn2(self.pool2(self.conv2(h)), training=training)
        h = self.dense(self.flatten(h))
        return ag.l2_normalize(self.proj(h))

    def get_config(self):
        return {"embed_dim": self.embed_dim, "hidden": self.hidden, "channels": self.channels,
                "name": self.name}


# ----------------------------------------------------------------------------- loss

def caption_match(labels, tones, stated_tones) -> np.ndarray:
    """Which caption of a batch describes which image.

    Args:
        labels: int ``(B,)`` class of each image (caption ``j`` was made for image ``j``).
        tones: int ``(B,)`` measured tone of each image.
        stated_tones: int ``(B,)`` tone each caption states, or -1 for a class-only caption.

    Returns:
        bool ``(B, B)``: ``match[i, j]`` is True when caption ``j`` describes image ``i``
        (same class, and the caption states no tone or image ``i``'s tone). The diagonal is True.
    """
    labels = np.asarray(labels)
    tones = np.asarray(tones)
    st = np.asarray(stated_tones)
    return (labels[:, None] == labels[None, :]) & ((st[None, :] < 0) | (st[None, :] == tones[:, None]))


def clip_loss(image_emb, text_emb, log_temp, match=None) -> ag.Tensor:
    """Symmetric CLIP loss over a batch of ``B`` (image, caption) pairs.

    ``S = exp(log_temp) * image_emb @ text_emb^T``; off-diagonal entries where ``match`` is
    True are set to ``-inf``; ``loss = (CE(S, diag) + CE(S^T, diag)) / 2`` where ``CE`` is the
    mean softmax cross-entropy of the rows (:func:`pixrank.ops.softmax_cross_entropy`).

    Args:
        image_emb: ``(B, d)`` Tensor (L2-normalised by the tower).
        text_emb: ``(B, d)`` Tensor.
        log_temp: scalar Tensor/Parameter ``t`` (the logit scale is ``exp(t)``).
        match: optional bool ``(B, B)`` from :func:`caption_match`.

    Returns:
        scalar Tensor (nats), differentiable w.r.t. both embeddings and ``log_temp``.

    Raises:
        ValueError: shapes disagree, or ``match`` is not ``(B, B)`` with a True diagonal.

    Reference: Radford et al. 2021, Figure 3 (numpy-like pseudo-code of the loss).
    """
    image_emb, text_emb = ag.as_tensor(image_emb), ag.as_tensor(text_emb)
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(f"clip_loss: image_emb and text_emb must both be (B, d), got "
                         f"{image_emb.shape} and {text_emb.shape}")
    b = image_emb.shape[0]
    logits = ag.matmul(image_emb, text_emb, trans_b=True) * ag.exp(log_temp)
    if match is not None:
        match = np.asarray(match, dtype=bool)
        if match.shape != (b, b) or not match.diagonal().all():
            raise ValueError(f"clip_loss: match must be bool ({b}, {b}) with a True diagonal, got {match.shape}")
        off = match & ~np.eye(b, dtype=bool)
        if off.any():
            logits = logits + np.where(off, -np.inf, 0.0).astype(np.float32)
    labels = np.arange(b, dtype=np.int64)
    return (ag.softmax_cross_entropy(logits, labels)
            + ag.softmax_cross_entropy(ag.transpose(logits), labels)) * 0.5


# ----------------------------------------------------------------------------- encoders

def fashion_mnist_spec():
    """The :class:`~pixrank.data.images.InputSpec` of the Fashion-MNIST towers: 28x28, one
    channel (grey), pixel values scaled to [0, 1] (mean 0, std 1 after /255)."""
    from pixrank.data.images import InputSpec
    return InputSpec(height=28, width=28, channels=1)


def _sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_json_atomic(path, obj) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a saved file follows the umask
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _save_model_atomic(model, path) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1] or ".pxr", dir=folder)
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class _EncoderBase:
    KIND = "?"
    MODEL_FILE = "model.pxr"
    META_FILE = "encoder.json"

    def _meta(self) -> dict:
        raise NotImplementedError

    def save(self, folder) -> dict:
        """Write ``model.pxr`` and ``encoder.json`` into ``folder`` (created if needed), each to a
        temporary name renamed into place. Returns the metadata written (with the model's sha256)."""
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        mpath = os.path.join(folder, self.MODEL_FILE)
        _save_model_atomic(self.model, mpath)
        meta = {"format": "pixrank.encoder", "version": ENCODER_VERSION, "kind": self.KIND,
                "name": self.name, "embed_dim": self.embed_dim,
                "model_file": self.MODEL_FILE, "model_sha256": _sha256_file(mpath), **self._meta()}
        _write_json_atomic(os.path.join(folder, self.META_FILE), meta)
        return meta

    @classmethod
    def _read(cls, folder):
        folder = os.fspath(folder)
        mpath = os.path.join(folder, cls.META_FILE)
        if not os.path.isfile(mpath):
            raise FileNotFoundError(f"{cls.__name__}.load: {folder!r} has no {cls.META_FILE} (not a saved encoder)")
        try:
            with open(mpath, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{cls.__name__}.load: {mpath!r} is not valid JSON ({exc})") from None
        if meta.get("format") != "pixrank.encoder" or meta.get("kind") != cls.KIND:
            raise ValueError(f"{cls.__name__}.load: {mpath!r} is not a saved {cls.KIND} encoder "
                             f"(format={meta.get('format')!r}, kind={meta.get('kind')!r})")
        if meta.get("version") != ENCODER_VERSION:
            raise ValueError(f"{cls.__name__}.load: {mpath!r} has version {meta.get('version')!r}; "
                             f"this pixrank reads version {ENCODER_VERSION}")
        model_path = os.path.join(folder, meta["model_file"])
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"{cls.__name__}.load: model file {model_path!r} is missing")
        sha = _sha256_file(model_path)
        if sha != meta.get("model_sha256"):
            raise ValueError(f"{cls.__name__}.load: {model_path!r} is not the model this encoder recorded "
                             f"(sha256 {sha[:12]}..., expected {str(meta.get('model_sha256'))[:12]}...)")
        model = load_model(model_path)
        return meta, model


class ImageEncoder(_EncoderBase):
    """An image tower with its input specification.

    Args:
        model: a tower mapping ``(B, H, W, C)`` float32 to ``(B, d)`` unit rows.
        spec: the :class:`~pixrank.data.images.InputSpec` images are converted to.
        name: a label recorded in saved engines (default ``"fashion-cnn"``).

    ``encode(images)`` accepts what :meth:`prepare` accepts.
    """

    KIND = "image"

    def __init__(self, model, spec=None, name: str = "fashion-cnn"):
        self.model = model
        self.spec = spec if spec is not None else fashion_mnist_spec()
        self.name = str(name)
        self.embed_dim = int(model.embed_dim)
        if not model.built or not model.weights:  # build the weights (a dry run on one blank image)
            with ag.no_grad():
                model(np.zeros((1,) + tuple(self.spec.shape), np.float32), training=False)

    def prepare(self, images) -> np.ndarray:
        """Images as float32 NHWC in the model's input space.

        Accepts uint8 ``(n, H, W)`` / ``(n, H, W, C)`` (0..255; divided by 255) or float
        ``(n, H, W[, C])`` already in [0, 1], with ``H, W, C`` equal to the spec's (other
        sizes and files go through :func:`pixrank.data.images.load_images` /
        ``image_to_array`` first).

        Raises:
            ValueError: wrong rank or size (both shapes named).
        """
        x = np.asarray(images)
        s = self.spec
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[1:] != (s.height, s.width, s.channels):
            raise ValueError(f"ImageEncoder: images must be (n, {s.height}, {s.width}[, {s.channels}]), "
                             f"got shape {np.shape(images)}")
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / np.float32(255.0)
        else:
            x = np.asarray(x, dtype=np.float32)
            if x.size and not np.all(np.isfinite(x)):
                raise ValueError("ImageEncoder: images contain NaN or infinity")
        mean = np.asarray(getattr(s, "mean", 0.0) or 0.0, dtype=np.float32)
        std = np.asarray(getattr(s, "std", 1.0) or 1.0, dtype=np.float32)
        if np.any(mean != 0) or np.any(std != 1):
            x = (x - mean) / std
        return np.ascontiguousarray(x, dtype=np.float32)

    def encode(self, images, batch_size: int = 512, progress=None) -> np.ndarray:
        """Embeddings of images: float32 ``(n, d)``, unit rows (inference mode, no gradients)."""
        x = self.prepare(images)
        out = np.empty((len(x), self.embed_dim), dtype=np.float32)
        starts = range(0, len(x), batch_size)
        if progress is not None:
            starts = progress(starts)
        with ag.no_grad():
            for i in starts:
                out[i:i + batch_size] = self.model(x[i:i + batch_size], training=False).data
        return out

    def _meta(self):
        s = self.spec
        spec = s.to_dict() if hasattr(s, "to_dict") else dict(vars(s))
        return {"input_spec": spec}

    @classmethod
    def load(cls, folder) -> "ImageEncoder":
        """Load what :meth:`save` wrote; checks the format, version and the model's sha256.

        Raises:
            FileNotFoundError: files missing. ValueError: not an image encoder, another
                version, a model file that is not the one recorded.
        """
        from pixrank.data.images import InputSpec
        meta, model = cls._read(folder)
        spec = InputSpec.from_dict(meta["input_spec"]) if hasattr(InputSpec, "from_dict") else InputSpec(**meta["input_spec"])
        enc = cls(model, spec, name=meta.get("name", "image"))
        if enc.embed_dim != meta.get("embed_dim"):
            raise ValueError(f"ImageEncoder.load: the model outputs {enc.embed_dim} dimensions but "
                             f"{folder!r} records {meta.get('embed_dim')}")
        return enc


class TextEncoder(_EncoderBase):
    """A text tower with its tokenizer.

    ``encode(texts)`` -> float32 ``(n, d)`` unit rows. Raises ``ValueError`` for an empty or
    whitespace-only text and :class:`pixrank.text.UnknownQueryError` (a ValueError) for a text
    with no known word and no n-gram seen in training.
    """

    KIND = "text"

    def __init__(self, model, tokenizer: Tokenizer, name: str = "fashion-text-bag"):
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"TextEncoder: tokenizer must be a pixrank.text.Tokenizer, got {type(tokenizer).__name__}")
        if tokenizer.num_ids != model.num_ids:
            raise ValueError(f"TextEncoder: the tokenizer makes {tokenizer.num_ids} ids but the model's "
                             f"embedding table has {model.num_ids} rows")
        self.model = model
        self.tokenizer = tokenizer
        self.name = str(name)
        self.embed_dim = int(model.embed_dim)

    def encode(self, texts, batch_size: int = 1024) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        out = np.empty((len(texts), self.embed_dim), dtype=np.float32)
        with ag.no_grad():
            for i in range(0, len(texts), batch_size):
                ids, off = self.tokenizer.encode_batch(texts[i:i + batch_size])
                out[i:i + batch_size] = self.model((ids, off), training=False).data
        return out

    def _meta(self):
        return {"tokenizer": self.tokenizer.to_dict()}

    @classmethod
    def load(cls, folder) -> "TextEncoder":
        """Load what :meth:`save` wrote (see :meth:`ImageEncoder.load` for the errors)."""
        meta, model = cls._read(folder)
        tok = Tokenizer.from_dict(meta["tokenizer"])
        enc = cls(model, tok, name=meta.get("name", "text"))
        if enc.embed_dim != meta.get("embed_dim"):
            raise ValueError(f"TextEncoder.load: the model outputs {enc.embed_dim} dimensions but "
                             f"{folder!r} records {meta.get('embed_dim')}")
        return enc


class DualEncoder:
    """The two encoders plus the learned log-temperature of training."""

    def __init__(self, image: ImageEncoder, text: TextEncoder, log_temp: float = _LOG_TEMP_INIT,
                 history: list | None = None):
        if image.embed_dim != text.embed_dim:
            raise ValueError(f"DualEncoder: the image tower outputs {image.embed_dim} dimensions, "
                             f"the text tower {text.embed_dim}")
        self.image, self.text = image, text
        self.log_temp = float(log_temp)
        self.history = list(history or [])

    @property
    def embed_dim(self) -> int:
        return self.image.embed_dim


# ----------------------------------------------------------------------------- training

def _token_dropout(ids, offsets, num_words, rng, p_word=0.25, p_sub=0.1):
    """Drop word ids (prob ``p_word``) and n-gram ids (prob ``p_sub``) of each text, keeping at
    least one id per text: teaches the text tower to recognise words from part of their
    n-grams (typos, plurals) and unknown words' n-grams."""
    keep = rng.random(len(ids)) >= np.where(ids < num_words, p_word, p_sub)
    lengths = np.diff(offsets)
    seg = np.repeat(np.arange(len(lengths)), lengths)
    kept_per = np.bincount(seg[keep], minlength=len(lengths))
    empty = np.flatnonzero(kept_per == 0)
    if len(empty):
        keep[offsets[empty]] = True  # keep the first id of a text that lost them all
    new_len = np.bincount(seg[keep], minlength=len(lengths))
    new_off = np.zeros(len(lengths) + 1, dtype=np.int64)
    new_off[1:] = np.cumsum(new_len)
    return ids[keep], new_off


def train_dual_encoder(x_train, y_train, *, epochs: int = 8, batch_size: int = 256, embed_dim: int = 64,
                       learning_rate: float = 2e-3, seed: int = 0, p_class_only: float = 0.35,
                       buckets: int = 16384, flip: bool = True, progress: bool = True,
                       log=None) -> DualEncoder:
    """Train a dual encoder on Fashion-MNIST images and generated captions.

    Each step draws ``batch_size`` images, a random caption for each
    (:class:`pixrank.data.captions.CaptionSampler`: random template and class name; class only
    or class and tone), applies token dropout to the captions and a random horizontal flip to
    the images, and takes one Adam step on :func:`clip_loss` (with :func:`caption_match`
    masking) w.r.t. both towers and the log-temperature, which is clipped to ``[0, log 100]``.
    The learning rate follows a cosine decay from ``learning_rate`` to 0 over all steps, after
    a linear warm-up of 100 steps.

    Args:
        x_train: uint8 ``(n, 28, 28)`` images. y_train: int ``(n,)`` labels 0..9.
        epochs: passes over the data. batch_size: pairs per step (>= 2).
        embed_dim: embedding dimension ``d``. learning_rate: peak Adam rate.
        seed: seeds every random choice (pixrank.utils.set_random_seed, sampler, shuffling).
        p_class_only: share of class-only captions. buckets: tokenizer n-gram buckets.
        flip: random horizontal flips. progress: tqdm progress bars.
        log: optional callable receiving a one-line summary per epoch.

    Returns:
        a :class:`DualEncoder` (``history``: per-epoch mean loss, temperature, seconds).

    Raises:
        ValueError: bad shapes, labels outside 0..9, ``epochs < 1``, ``batch_size < 2``.
    """
    from pixrank.data.captions import CaptionSampler, tone_of, CLASS_SYNONYMS, TONES
    from pixrank.data.captions import render, TRAIN_TEMPLATES, TRAIN_TEMPLATES_CLASS_ONLY

    x = np.asarray(x_train)
    y = np.asarray(y_train)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"train_dual_encoder: x_train must be (n, 28, 28), got {np.shape(x_train)}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"train_dual_encoder: y_train must be ({x.shape[0]},), got {y.shape}")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise ValueError("train_dual_encoder: labels must be in 0..9")
    if int(epochs) < 1:
        raise ValueError(f"train_dual_encoder: epochs must be >= 1, got {epochs}")
    if int(batch_size) < 2:
        raise ValueError(f"train_dual_encoder: batch_size must be >= 2, got {batch_size}")
    n = x.shape[0]
    batch_size = min(int(batch_size), n)
    try:
        from pixrank.utils import set_random_seed
        set_random_seed(seed)
    except ImportError:  # pragma: no cover
        pass
    rng = np.random.default_rng(seed)

    # every training caption string, tokenised once
    all_caps = sorted({render(t, nm, tn) for names in CLASS_SYNONYMS for nm in names
                       for tn in TONES for t in TRAIN_TEMPLATES}
                      | {render(t, nm) for names in CLASS_SYNONYMS for nm in names
                         for t in TRAIN_TEMPLATES_CLASS_ONLY})
    tok = Tokenizer.fit(all_caps, buckets=buckets)
    cap_ids = {c: tok.encode(c) for c in all_caps}

    image_model = ImageTower(embed_dim=embed_dim, name="image_tower")
    text_model = TextTower(tok.num_ids, embed_dim=embed_dim, name="text_tower")
    log_temp = ag.Parameter(np.float32(_LOG_TEMP_INIT), name="log_temperature")
    sampler = CaptionSampler(p_class_only=p_class_only, seed=seed + 1)
    tones = tone_of(x)
    xf = x.astype(np.float32)[..., None] / np.float32(255.0)

    steps_per_epoch = n // batch_size
    total = steps_per_epoch * int(epochs)
    warm = min(100, max(1, total // 10))
    opt = Adam(learning_rate=learning_rate)
    history = []
    step = 0
    tqdm = None
    if progress:
        from tqdm.auto import tqdm
    for epoch in range(int(epochs)):
        t0 = time.perf_counter()
        perm = rng.permutation(n)
        losses = []
        it = range(steps_per_epoch)
        bar = tqdm(it, desc=f"epoch {epoch + 1}/{epochs}", unit="step", leave=True) if tqdm else it
        for b in bar:
            idx = perm[b * batch_size:(b + 1) * batch_size]
            xb = xf[idx]
            if flip:
                f = rng.random(len(idx)) < 0.5
                xb[f] = xb[f, :, ::-1]
            caps, stated = sampler.sample(y[idx], tones[idx])
            parts = [cap_ids[c] for c in caps]
            off = np.zeros(len(parts) + 1, dtype=np.int64)
            off[1:] = np.cumsum([len(p) for p in parts])
            ids, off = _token_dropout(np.concatenate(parts), off, tok.num_words, rng)
            match = caption_match(y[idx], tones[idx], stated)

            lr = learning_rate * (step + 1) / warm if step < warm else \
                0.5 * learning_rate * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
            opt.learning_rate = lr
            u = image_model(xb, training=True)
            v = text_model((ids, off), training=True)
            loss = clip_loss(u, v, log_temp, match)
            params = image_model.trainable_weights + text_model.trainable_weights + [log_temp]
            opt.zero_grad(params)
            loss.backward()
            opt.step(params)
            log_temp.data[...] = np.clip(log_temp.data, 0.0, _LOG_TEMP_MAX)
            lv = float(loss.data)
            if not math.isfinite(lv):
                raise FloatingPointError(f"train_dual_encoder: the loss became {lv} at epoch {epoch + 1}, step {b + 1}")
            losses.append(lv)
            step += 1
            if tqdm and (b % 5 == 0 or b == steps_per_epoch - 1):
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", scale=f"{math.exp(float(log_temp.data)):.1f}")
        if tqdm:
            bar.close()
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "logit_scale": math.exp(float(log_temp.data)),
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: loss {rec['loss']:.4f}, logit scale {rec['logit_scale']:.1f}, "
                f"{rec['seconds']:.1f} s")
    return DualEncoder(ImageEncoder(image_model, fashion_mnist_spec()),
                       TextEncoder(text_model, tok), float(log_temp.data), history)
