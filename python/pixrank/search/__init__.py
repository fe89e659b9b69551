"""Image search: the index, the catalog, the dual encoder and the engine.

* :class:`Index` — k-NN over embeddings (hnswlib HNSW, or exact cosine top-k in C++)
  (``pixrank.search.index``).
* :class:`Catalog` — per-item metadata in SQLite, and the incremental folder planner
  (``pixrank.search.catalog``).
* :mod:`metrics` — recall@k, precision@k, mAP@k, k-NN recall (``pixrank.search.metrics``).
* :class:`Engine` — encoders + index + catalog: index images, search by text / image / vector,
  save / load (``pixrank.search.engine``); the dual encoder and its CLIP training live in
  ``pixrank.search.encoder``; evaluation in ``pixrank.search.evaluation``.

Names are imported on first use, so ``import pixrank.search`` stays light.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "Index": ("pixrank.search.index", "Index"),
    "Catalog": ("pixrank.search.catalog", "Catalog"),
    "plan_folder": ("pixrank.search.catalog", "plan_folder"),
    "metrics": ("pixrank.search.metrics", None),
    "Engine": ("pixrank.search.engine", "Engine"),
    "SearchResult": ("pixrank.search.engine", "SearchResult"),
    "IndexReport": ("pixrank.search.engine", "IndexReport"),
    "DualEncoder": ("pixrank.search.encoder", "DualEncoder"),
    "ImageEncoder": ("pixrank.search.encoder", "ImageEncoder"),
    "TextEncoder": ("pixrank.search.encoder", "TextEncoder"),
    "clip_loss": ("pixrank.search.encoder", "clip_loss"),
    "train_dual_encoder": ("pixrank.search.encoder", "train_dual_encoder"),
    "evaluate_engine": ("pixrank.search.evaluation", "evaluate_engine"),
}

__all__ = list(_LAZY)


def __getattr__(name):
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'pixrank.search' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
