"""Text side of the search engine: the tokenizer and the text tower's building blocks.

* :class:`Tokenizer` — lower-cased words plus hashed character n-grams (fastText-style
  subwords, Bojanowski et al. 2017), FNV-1a hashing (``pixrank.text.tokenizer``).
* ``pixrank.text.tower`` — the embedding bag and the text tower model (imported on first use:
  it needs the framework).
"""
from __future__ import annotations

from .tokenizer import Tokenizer, UnknownQueryError, char_ngrams, fnv1a_32, words

__all__ = ["Tokenizer", "UnknownQueryError", "char_ngrams", "fnv1a_32", "words",
           "EmbeddingBag", "TextTower"]


def __getattr__(name):
    if name in ("EmbeddingBag", "TextTower", "embedding_bag"):
        from . import tower
        return getattr(tower, name)
    raise AttributeError(f"module 'pixrank.text' has no attribute {name!r}")
