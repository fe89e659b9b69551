"""Captions for Fashion-MNIST, generated from the class and from pixels.

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747) has ten classes and no
text. To train a text/image dual encoder we describe each image by

* its **class**, through one of several names (``"ankle boot"`` or ``"boot"``; ``"T-shirt"``,
  ``"top"`` or ``"tee"``; ...), and
* its **tone** — ``dark``, ``medium`` or ``light`` — measured on the pixels: the mean
  intensity (0..255) of the item's *foreground* pixels (value > :data:`FOREGROUND_THRESHOLD`),
  cut at the terciles of that measure over the full training split, so each tone holds a
  third of the training images.

Tone describes the picture as stored and shown: Fashion-MNIST shows a light item on a black
background (the data set negated the product photos), and a "dark" item here is one drawn with
dim pixels.

The sentence templates used for training are :data:`TRAIN_TEMPLATES` (with tone) and
:data:`TRAIN_TEMPLATES_CLASS_ONLY`. Held-out evaluation queries, whose wording never occurs
in training, live in ``pixrank/search/eval_queries.json`` (see
:func:`load_eval_queries`).
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from pixrank.text.tokenizer import words as _words

__all__ = [
    "CLASS_NAMES", "CLASS_SYNONYMS", "TONES", "FOREGROUND_THRESHOLD", "TONE_DARK_BELOW",
    "TONE_LIGHT_FROM", "TRAIN_TEMPLATES", "TRAIN_TEMPLATES_CLASS_ONLY",
    "foreground_mean", "tone_of", "render", "caption_of", "training_caption_set",
    "CaptionSampler", "load_eval_queries", "normalise",
]

#: Fashion-MNIST class names, index = label.
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

#: Names used in training captions, per class (the first is the catalog's default name).
CLASS_SYNONYMS = (
    ("t-shirt", "top", "tee"),
    ("trouser", "pants"),
    ("pullover", "sweater", "jumper"),
    ("dress",),
    ("coat", "jacket"),
    ("sandal",),
    ("shirt", "blouse"),
    ("sneaker", "trainer"),
    ("bag", "handbag"),
    ("ankle boot", "boot"),
)

#: Names that take no indefinite article ("dark pants", not "a dark pants").
_NO_ARTICLE = frozenset({"pants"})

TONES = ("dark", "medium", "light")

#: A pixel belongs to the item when its value (0..255) is above this. 32 (1/8 of the range)
#: drops the faint anti-aliased rim that would otherwise pull every item's mean down.
FOREGROUND_THRESHOLD = 32

#: Tone cut points on the foreground mean intensity (0..255): the 1/3 and 2/3 quantiles of
#: ``foreground_mean(x_train)`` over the full Fashion-MNIST training split (60,000 images),
#: measured with ``numpy.percentile(m, [100/3, 200/3])`` -> 145.85, 184.94 (the embedded
#: 6,000-image sample gives 145.14, 183.91). dark: m < 145.9; medium: 145.9 <= m < 184.9;
#: light: m >= 184.9.
TONE_DARK_BELOW = 145.9
TONE_LIGHT_FROM = 184.9

#: Training templates. ``{a}`` is the indefinite article for the phrase that follows (may be
#: empty), ``{tone}`` a tone word, ``{name}`` a class name.
TRAIN_TEMPLATES = (
    "{tone} {name}",
    "{a} {tone} {name}",
    "a photo of {a} {tone} {name}",
    "a picture of {a} {tone} {name}",
    "an image of {a} {tone} {name}",
    "{a} {name} in a {tone} shade",
    "a product photo of {a} {tone} {name}",
)

#: Training templates that name the class only (they match every tone).
TRAIN_TEMPLATES_CLASS_ONLY = (
    "{name}",
    "{a} {name}",
    "a photo of {a} {name}",
    "a picture of {a} {name}",
    "an image of {a} {name}",
    "a product photo of {a} {name}",
)


def _article(phrase: str, name: str) -> str:
    if name in _NO_ARTICLE:
        return ""
    return "an" if phrase[:1] in "aeiou" else "a"


def render(template: str, name: str, tone: str | None = None) -> str:
    """Fill one template: ``render("a photo of {a} {tone} {name}", "ankle boot", "dark")``
    -> ``"a photo of a dark ankle boot"``; ``render("{a} {name}", "ankle boot")`` ->
    ``"an ankle boot"``. Double spaces left by an empty article are collapsed."""
    if tone is not None and "{tone}" in template:
        following = template.split("{a}", 1)[1].lstrip() if "{a}" in template else ""
        first = tone if following.startswith("{tone}") else name
    else:
        first = name
    text = template.format(a=_article(first, name), tone=tone or "", name=name)
    return " ".join(text.split())


def normalise(text: str) -> str:
    """The word sequence of ``text`` as one string (lower case, punctuation dropped): the
    form in which two wordings are compared."""
    return " ".join(_words(text))


def foreground_mean(images) -> np.ndarray:
    """Mean intensity of each image's foreground pixels.

    Args:
        images: uint8 ``(n, 28, 28)`` (or ``(n, h, w)``/``(n, h, w, 1)``) in 0..255, or float in
            [0, 1] (scaled by 255 and rounded to the nearest 8-bit level).

    Returns:
        float64 ``(n,)`` in 0..255: mean of the pixels above :data:`FOREGROUND_THRESHOLD`; 0 for an
        image with no such pixel.

    Raises:
        ValueError: ``images`` is not 3-D or 4-D with one channel.
    """
    x = np.asarray(images)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(f"foreground_mean: images must be (n, h, w) or (n, h, w, 1), got shape {x.shape}")
    if x.dtype != np.uint8:
        x = np.clip(np.rint(np.asarray(x, dtype=np.float64) * 255.0), 0, 255)  # back to 8-bit levels
    x = x.astype(np.float64, copy=False)
    mask = x > FOREGROUND_THRESHOLD
    count = mask.sum(axis=(1, 2))
    total = (x * mask).sum(axis=(1, 2))
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def tone_of(images) -> np.ndarray:
    """Tone index of each image: 0 dark, 1 medium, 2 light (see :data:`TONES`).

    Args: as :func:`foreground_mean`. Returns: int64 ``(n,)``.
    """
    m = foreground_mean(images)
    return np.where(m < TONE_DARK_BELOW, 0, np.where(m < TONE_LIGHT_FROM, 1, 2)).astype(np.int64)


def _check_label(label) -> int:
    lab = int(label)
    if not 0 <= lab < len(CLASS_NAMES):
        raise ValueError(f"captions: label must be in 0..{len(CLASS_NAMES) - 1}, got {label!r}")
    return lab


def caption_of(label: int, tone: int | None = None) -> str:
    """The catalog's default caption: ``caption_of(9, 0)`` -> ``"a dark ankle boot"``."""
    lab = _check_label(label)
    name = CLASS_SYNONYMS[lab][0]
    if tone is None:
        return render("{a} {name}", name)
    return render("{a} {tone} {name}", name, TONES[int(tone)])


def training_caption_set() -> set[str]:
    """Every caption the training sampler can produce, normalised (see :func:`normalise`)."""
    out = set()
    for names in CLASS_SYNONYMS:
        for name in names:
            for t in TRAIN_TEMPLATES_CLASS_ONLY:
                out.add(normalise(render(t, name)))
            for tone in TONES:
                for t in TRAIN_TEMPLATES:
                    out.add(normalise(render(t, name, tone)))
    return out


class CaptionSampler:
    """Draws a random training caption per image.

    Each caption is rendered from a random template and a random class name; with
    probability ``p_class_only`` it names the class only, otherwise class and tone.

    Args:
        p_class_only: probability of a class-only caption (0..1).
        seed: seed of the sampler's ``numpy.random.Generator``.

    ``sample(labels, tones)`` returns ``(captions, concept_tone)``: a list of ``n`` strings and
    int64 ``(n,)`` = the tone the caption states, or -1 for a class-only caption (used to
    decide which other images of a batch a caption also describes).
    """

    def __init__(self, p_class_only: float = 0.35, seed: int = 0):
        if not 0.0 <= float(p_class_only) <= 1.0:
            raise ValueError(f"CaptionSampler: p_class_only must be in [0, 1], got {p_class_only!r}")
        self.p_class_only = float(p_class_only)
        self.rng = np.random.default_rng(seed)
        # every rendered string, precomputed: (label, tone or -1) -> list of captions
        self.table: dict[tuple[int, int], list[str]] = {}
        for lab, names in enumerate(CLASS_SYNONYMS):
            self.table[(lab, -1)] = [render(t, n) for n in names for t in TRAIN_TEMPLATES_CLASS_ONLY]
            for ti, tone in enumerate(TONES):
                self.table[(lab, ti)] = [render(t, n, tone) for n in names for t in TRAIN_TEMPLATES]

    def sample(self, labels: Sequence[int], tones: Sequence[int]) -> tuple[list[str], np.ndarray]:
        labels = np.asarray(labels, dtype=np.int64)
        tones = np.asarray(tones, dtype=np.int64)
        if labels.shape != tones.shape or labels.ndim != 1:
            raise ValueError(f"CaptionSampler.sample: labels and tones must be 1-D of one length, "
                             f"got {labels.shape} and {tones.shape}")
        class_only = self.rng.random(labels.shape[0]) < self.p_class_only
        stated = np.where(class_only, -1, tones)
        caps = []
        for lab, st in zip(labels.tolist(), stated.tolist()):
            options = self.table[(_check_label(lab), int(st))]
            caps.append(options[int(self.rng.integers(len(options)))])
        return caps, stated.astype(np.int64)


def _default_eval_path() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "search", "eval_queries.json")


def load_eval_queries(path: str | os.PathLike | None = None) -> list[dict]:
    """The held-out evaluation queries.

    Returns:
        A list of dicts ``{"query": str, "kind": "class" | "class+tone", "label": int,
        "tone": int | None, "variant": str}``. An image is relevant to a query when its label
        equals ``label`` and, for ``"class+tone"``, its :func:`tone_of` equals ``tone``.

    Raises:
        FileNotFoundError / ValueError: the file is missing or malformed.
    """
    path = os.fspath(path) if path is not None else _default_eval_path()
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_eval_queries: the query file {path!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"load_eval_queries: {path!r} is a folder; expected a JSON query file")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"load_eval_queries: {path}: not a JSON query file ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("queries", []), list):
        raise ValueError(f"load_eval_queries: {path}: expected a JSON object with a list \"queries\"")
    out = []
    for i, q in enumerate(doc.get("queries", [])):
        if not isinstance(q, dict):
            raise ValueError(f"load_eval_queries: {path}: query #{i} is malformed (not an object)")
        try:
            kind = q["kind"]
            label = CLASS_NAMES.index(q["class"])
            tone = TONES.index(q["tone"]) if kind == "class+tone" else None
            text = q["query"]
        except (KeyError, ValueError) as exc:
            raise ValueError(f"load_eval_queries: {path}: query #{i} is malformed ({exc})") from None
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"load_eval_queries: {path}: query #{i} must have a non-empty string \"query\", "
                             f"got {text!r}")
        if kind not in ("class", "class+tone"):
            raise ValueError(f"load_eval_queries: {path}: query #{i} has unknown kind {kind!r}")
        out.append({"query": text, "kind": kind, "label": label, "tone": tone,
                    "variant": str(q.get("variant", ""))})
    if not out:
        raise ValueError(f"load_eval_queries: {path}: no queries")
    return out
