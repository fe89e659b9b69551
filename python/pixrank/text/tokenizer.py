"""Word + hashed character n-gram tokenizer (fastText-style subwords).

A text is lower-cased and split into *words* (runs of letters and digits, keeping inner
hyphens and apostrophes: ``"T-shirt"`` -> ``"t-shirt"``). Each word ``w`` contributes

* its own id, if ``w`` is in the vocabulary of known words (built from the training
  captions by :meth:`Tokenizer.fit`), and
* the ids of its character n-grams, ``n = min_n .. max_n``, taken from ``"<" + w + ">"``
  (``<`` and ``>`` mark the word's boundaries, so the prefix ``"<bo"`` differs from the
  inner ``"boo"``), each hashed with 32-bit FNV-1a over its UTF-8 bytes into one of
  ``buckets`` buckets. Only n-grams that occurred in the training texts are used (the exact
  n-gram strings are kept, so a hash collision never makes an unseen n-gram count as
  seen): an unseen n-gram's bucket was never trained for it and would only add noise.

Ids are laid out as ``[0, V)`` for the ``V`` known words and ``[V, V + buckets)`` for the
buckets, so one embedding table of ``V + buckets`` rows serves both (an "embedding bag":
a text's vector is the mean of the rows of its ids).

Reference: P. Bojanowski, E. Grave, A. Joulin, T. Mikolov, "Enriching Word Vectors with
Subword Information", TACL 2017 (fastText): words plus hashed character n-grams
(3..6 with ``<``/``>`` boundary symbols, FNV-1a hashing into 2M buckets). The hash is
FNV-1a (Fowler, Noll, Vo) because Python's ``hash()`` of a ``str`` is randomised per
process and would make a saved model answer differently after a restart.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

__all__ = ["Tokenizer", "fnv1a_32", "words", "char_ngrams", "UnknownQueryError"]

_WORD_RE = re.compile(r"[0-9a-z]+(?:['\-][0-9a-z]+)*")

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def _shorten(text: str, limit: int = 80) -> str:
    """``repr(text)`` for an error message, cut to about ``limit`` characters (a pasted document
    or a megabyte query must not come back whole in the message)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


class UnknownQueryError(ValueError):
    """A text has no known word and no character n-gram seen in training."""


def fnv1a_32(data: bytes | str) -> int:
    """32-bit FNV-1a hash of ``data`` (a ``str`` is encoded as UTF-8).

    ``h = 2166136261; for each byte b: h = ((h ^ b) * 16777619) mod 2**32``.

    Returns:
        int in ``[0, 2**32)``; the same on every run, process and machine.

    Reference: G. Fowler, L. C. Noll, K.-P. Vo, "FNV hash",
    http://www.isthe.com/chongo/tech/comp/fnv/ (test vectors: ``fnv1a_32(b"") ==
    0x811C9DC5``, ``fnv1a_32(b"a") == 0xE40C292C``, ``fnv1a_32(b"foobar") == 0xBF9CF968``).
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def words(text: str) -> list[str]:
    """Lower-case ``text`` and split it into words.

    A word is a run of ASCII letters/digits with optional inner hyphens or apostrophes
    (``"T-shirt"`` -> ``["t-shirt"]``, ``"a photo, of a coat!"`` ->
    ``["a", "photo", "of", "a", "coat"]``). Other characters separate words.

    Raises:
        TypeError: ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"tokenizer: text must be a str, got {type(text).__name__}")
    return _WORD_RE.findall(text.lower())


def char_ngrams(word: str, min_n: int = 3, max_n: int = 5) -> list[str]:
    """Character n-grams of ``"<" + word + ">"`` for ``n = min_n .. max_n``.

    The whole bracketed word is not included (the word itself has its own id when
    known). Example: ``char_ngrams("tee", 3, 4)`` ->
    ``["<te", "tee", "ee>", "<tee", "tee>"]``.
    """
    w = f"<{word}>"
    out = []
    for n in range(min_n, max_n + 1):
        for i in range(0, len(w) - n + 1):
            g = w[i:i + n]
            if g != w:
                out.append(g)
    return out


class Tokenizer:
    """Text -> ids of known words and hashed character n-grams.

    Args:
        vocab: the known words, in id order (``vocab[i]`` has id ``i``).
        buckets: number of hash buckets ``B`` for the n-grams (ids ``V .. V+B-1``).
        min_n, max_n: n-gram lengths, counted with the ``<``/``>`` markers.
        seen_ngrams: the n-gram strings that occurred in training; ``None`` means all.

    Attributes:
        num_ids: ``V + B``, the number of rows an embedding table needs.

    Example::

        tok = Tokenizer.fit(["a dark ankle boot", "a light sneaker"])
        ids = tok.encode("dark boots")   # int64 ids: "dark" + n-grams of both words
    """

    FORMAT = "pixrank.text.Tokenizer"
    VERSION = 1

    def __init__(self, vocab: Sequence[str] = (), buckets: int = 16384, min_n: int = 3,
                 max_n: int = 5, seen_ngrams: Iterable[str] | None = None):
        if not isinstance(buckets, (int, np.integer)) or buckets < 1:
            raise ValueError(f"Tokenizer: buckets must be a positive int, got {buckets!r}")
        if not (isinstance(min_n, (int, np.integer)) and isinstance(max_n, (int, np.integer))
                and 1 <= min_n <= max_n):
            raise ValueError(f"Tokenizer: need 1 <= min_n <= max_n, got min_n={min_n!r}, max_n={max_n!r}")
        self.vocab = [str(w) for w in vocab]
        self.word_to_id = {w: i for i, w in enumerate(self.vocab)}
        if len(self.word_to_id) != len(self.vocab):
            raise ValueError("Tokenizer: vocab has duplicate words")
        self.buckets = int(buckets)
        self.min_n = int(min_n)
        self.max_n = int(max_n)
        self.seen_ngrams = None if seen_ngrams is None else frozenset(str(g) for g in seen_ngrams)
        self._cache: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------------ building
    @classmethod
    def fit(cls, texts: Iterable[str], buckets: int = 16384, min_n: int = 3, max_n: int = 5) -> "Tokenizer":
        """Build the vocabulary (sorted, so ids do not depend on the order of ``texts``)
        and the set of seen n-grams from training texts."""
        vocab: set[str] = set()
        for t in texts:
            vocab.update(words(t))
        if not vocab:
            raise ValueError("Tokenizer.fit: the training texts contain no words")
        seen = set()
        for w in vocab:
            seen.update(char_ngrams(w, min_n, max_n))
        return cls(sorted(vocab), buckets=buckets, min_n=min_n, max_n=max_n, seen_ngrams=seen)

    @property
    def num_words(self) -> int:
        return len(self.vocab)

    @property
    def num_ids(self) -> int:
        return len(self.vocab) + self.buckets

    def bucket(self, ngram: str) -> int:
        """Bucket of one n-gram: ``fnv1a_32(ngram) % buckets`` (not offset by ``V``)."""
        return fnv1a_32(ngram) % self.buckets

    # ------------------------------------------------------------------ encoding
    def _word_ids(self, word: str) -> tuple[int, ...]:
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        ids = []
        wid = self.word_to_id.get(word)
        if wid is not None:
            ids.append(wid)
        v = len(self.vocab)
        for g in char_ngrams(word, self.min_n, self.max_n):
            if self.seen_ngrams is None or g in self.seen_ngrams:
                ids.append(v + self.bucket(g))
        out = tuple(ids)
        if len(self._cache) < 100_000:
            self._cache[word] = out
        return out

    def encode(self, text: str) -> np.ndarray:
        """Ids of one text.

        Returns:
            int64 array ``(n,)``, ``n >= 1``: for each word, its word id (if known) then
            the bucket ids of its n-grams seen in training, words in text order.

        Raises:
            TypeError: ``text`` is not a ``str``.
            ValueError: ``text`` is empty or only whitespace/punctuation, or holds letters
                but no ASCII letter or digit (e.g. only CJK characters).
            UnknownQueryError (a ValueError): no word is known and no n-gram was seen in
                training, so the text says nothing the model has learned.
        """
        ws = words(text)
        shown = _shorten(text)
        if not ws:
            if any(ch.isalnum() for ch in text):  # e.g. "靴", "é": letters, but none it reads
                raise ValueError(f"tokenizer: the text {shown} has no word this tokenizer reads (words are "
                                 f"runs of ASCII letters a-z and digits 0-9; other letters separate words)")
            raise ValueError(f"tokenizer: the text {shown} is empty (no words)")
        ids: list[int] = []
        for w in ws:
            ids.extend(self._word_ids(w))
        if not ids:
            raise UnknownQueryError(
                f"tokenizer: none of the words in {shown} is known, and none of their character "
                f"n-grams occurred in training; try words like {', '.join(self.vocab[:8])}")
        return np.asarray(ids, dtype=np.int64)

    def encode_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Ids of several texts in CSR form.

        Returns:
            ``(ids, offsets)``: int64 ``(total,)`` and int64 ``(len(texts) + 1,)``; the ids of
            text ``i`` are ``ids[offsets[i]:offsets[i+1]]``.

        Raises:
            the errors of :meth:`encode` (naming the first bad text).
        """
        parts = [self.encode(t) for t in texts]
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        if parts:
            offsets[1:] = np.cumsum([len(p) for p in parts])
            ids = np.concatenate(parts)
        else:
            ids = np.zeros(0, dtype=np.int64)
        return ids, offsets

    def is_known_word(self, word: str) -> bool:
        return word.lower() in self.word_to_id

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """A JSON-serialisable description (:meth:`from_dict` rebuilds it exactly)."""
        return {
            "format": self.FORMAT, "version": self.VERSION, "vocab": list(self.vocab),
            "buckets": self.buckets, "min_n": self.min_n, "max_n": self.max_n,
            "hash": "fnv1a_32",
            "seen_ngrams": None if self.seen_ngrams is None else sorted(self.seen_ngrams),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
        if not isinstance(d, dict) or d.get("format") != cls.FORMAT:
            raise ValueError("Tokenizer.from_dict: not a pixrank tokenizer description")
        if d.get("version") != cls.VERSION:
            raise ValueError(f"Tokenizer.from_dict: unsupported version {d.get('version')!r} "
                             f"(this pixrank reads version {cls.VERSION})")
        return cls(d["vocab"], buckets=d["buckets"], min_n=d["min_n"], max_n=d["max_n"],
                   seen_ngrams=d["seen_ngrams"])

    def __eq__(self, other) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return (f"Tokenizer(words={len(self.vocab)}, buckets={self.buckets}, n={self.min_n}..{self.max_n}, "
                f"seen_ngrams={None if self.seen_ngrams is None else len(self.seen_ngrams)})")
