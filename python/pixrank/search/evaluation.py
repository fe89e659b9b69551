"""Retrieval evaluation of an :class:`~pixrank.search.engine.Engine` over an indexed labelled data set.

Three measurements (metric definitions in :mod:`pixrank.search.metrics`: precision@k,
recall@k and mAP@k, Manning et al. 2008, ch. 8):

* **text -> image**: each held-out query of ``eval_queries.json``
  (:func:`pixrank.data.captions.load_eval_queries`) against all indexed items with a label;
  relevant = same class (``kind='class'``), or same class and the tone stated in the item's
  caption (``kind='class+tone'``). Reported per kind.
* **image -> image**: each indexed item as a query against the others (itself removed from its
  list), relevant = same class. Query vectors are the stored index vectors.
* **HNSW vs exact**: recall@10 of the engine's HNSW answers (at the engine's query ``ef``)
  against exact cosine top-10 (:func:`pixrank.ops.cosine_topk`) over the same vectors, for
  all image queries (:func:`pixrank.search.metrics.knn_recall`).

And a latency figure: the median wall time of a warm text query (encode + search + catalog
join, :meth:`Engine.search_text` with ``k=10``) over repeated queries. It is reported, never
asserted.
"""
from __future__ import annotations

import time

import numpy as np

from pixrank.search import metrics as M

__all__ = ["evaluate_engine", "format_report", "DEFAULT_KS"]

DEFAULT_KS = (1, 10, 100)


def _tone_from_caption(caption):
    from pixrank.data.captions import TONES
    from pixrank.text.tokenizer import words
    if not caption:
        return -1
    for w in words(caption):
        if w in TONES:
            return TONES.index(w)
    return -1


def _scores(rel, n_rel, ks):
    out = {}
    for k in ks:
        out[f"precision@{k}"] = M.precision_at_k(rel, k)
        out[f"recall@{k}"] = M.recall_at_k(rel, n_rel, k)
        out[f"mAP@{k}"] = M.map_at_k(rel, n_rel, k)
    return out


def evaluate_engine(engine, queries=None, ks=(1, 10, 100), latency_repeats: int = 200,
                    max_image_queries: int | None = None, seed: int = 0) -> dict:
    """Evaluate text->image, image->image and HNSW recall on the engine's labelled items.

    Args:
        engine: an Engine whose catalog has ``label_id`` (and tone-bearing captions) for the items.
        queries: list of query dicts as :func:`pixrank.data.captions.load_eval_queries` returns
            (default: the held-out file).
        ks: cut-offs. latency_repeats: warm text queries timed (0 skips the timing).
        max_image_queries: use a seeded random subset of items as image queries (default all).

    Returns:
        a dict: ``items``, ``text`` {kind: {metric: value, "queries": n}}, ``text_per_query``
        (query, kind, AP@10), ``image`` {metric: value}, ``hnsw_recall@10``, ``ef``,
        ``latency_ms`` {median, p90, repeats}.

    Raises:
        ValueError: no labelled items in the engine.
    """
    from pixrank.data.captions import load_eval_queries
    from pixrank import ops

    ks = tuple(int(k) for k in ks)
    kmax = max(ks)
    recs = [r for r in engine.catalog.records() if r.label_id is not None and r.id in engine.index]
    if not recs:
        raise ValueError("evaluate-search: the engine has no labelled items to evaluate on "
                         "(index a labelled data set, e.g. with `pixrank demo`)")
    ids = np.array([r.id for r in recs], dtype=np.int64)
    labels = np.array([r.label_id for r in recs], dtype=np.int64)
    tones = np.array([_tone_from_caption(r.caption) for r in recs], dtype=np.int64)
    pos = {int(i): j for j, i in enumerate(ids.tolist())}
    vecs = engine.index.get_vectors(ids)
    ef = max(engine.ef, kmax + 1)
    report = {"items": int(len(ids)), "ef": engine.ef, "ks": list(ks)}

    def rows(result_ids):
        return np.vectorize(lambda i: pos.get(int(i), -1), otypes=[np.int64])(result_ids)

    # ---- text -> image
    qs = load_eval_queries() if queries is None else list(queries)
    qv = engine.text_model.encode([q["query"] for q in qs])
    rid, _ = engine.index.query(qv, k=kmax, ef=ef)
    r = rows(rid)
    text, per_query = {}, []
    for kind in ("class", "class+tone"):
        sel = [i for i, q in enumerate(qs) if q["kind"] == kind]
        if not sel:
            continue
        rel = np.zeros((len(sel), r.shape[1]), dtype=bool)
        n_rel = np.zeros(len(sel), dtype=np.int64)
        for a, i in enumerate(sel):
            q = qs[i]
            want = labels == q["label"]
            if kind == "class+tone":
                want &= tones == q["tone"]
            n_rel[a] = int(want.sum())
            ok = r[i] >= 0
            rel[a, ok] = want[r[i][ok]]
        text[kind] = {**_scores(rel, n_rel, ks), "queries": len(sel)}
        ap = M.average_precision_at_k(rel, n_rel, min(10, kmax))
        per_query += [{"query": qs[i]["query"], "kind": kind, "variant": qs[i].get("variant", ""),
                       "AP@10": float(ap[a]), "relevant": int(n_rel[a])} for a, i in enumerate(sel)]
    report["text"] = text
    report["text_per_query"] = per_query

    # ---- image -> image (leave the query itself out)
    qsel = np.arange(len(ids))
    if max_image_queries is not None and max_image_queries < len(ids):
        qsel = np.sort(np.random.default_rng(seed).choice(len(ids), max_image_queries, replace=False))
    rid, _ = engine.index.query(vecs[qsel], k=kmax + 1, ef=ef)
    r = rows(rid)
    self_rows = qsel[:, None]
    keep = r != self_rows
    # drop the query itself (or, if it was not returned, the last result)
    trimmed = np.full((len(qsel), kmax), -1, dtype=np.int64)
    for a in range(len(qsel)):
        row = r[a][keep[a]][:kmax]
        trimmed[a, :len(row)] = row
    qlab = labels[qsel]
    rel = (trimmed >= 0) & (labels[np.maximum(trimmed, 0)] == qlab[:, None])
    n_rel = np.bincount(labels, minlength=int(labels.max()) + 1)[qlab] - 1
    report["image"] = {**_scores(rel, n_rel, ks), "queries": int(len(qsel))}

    # ---- HNSW vs exact recall@10
    k10 = min(10, len(ids))
    approx, _ = engine.index.query(vecs[qsel], k=k10, ef=max(engine.ef, k10))
    exact_rows, _ = ops.cosine_topk(vecs[qsel], vecs, k10)
    report["hnsw_recall@10"] = float(M.knn_recall(approx, ids[exact_rows]))

    # ---- warm text-query latency (encode + search + catalog)
    if latency_repeats:
        texts = [q["query"] for q in qs]
        for t in texts[:5]:
            engine.search_text(t, k=10)
        times = []
        for i in range(int(latency_repeats)):
            t0 = time.perf_counter()
            engine.search_text(texts[i % len(texts)], k=10)
            times.append(time.perf_counter() - t0)
        times = np.array(times) * 1e3
        report["latency_ms"] = {"median": float(np.median(times)), "p90": float(np.percentile(times, 90)),
                                "repeats": int(latency_repeats)}
    return report


def format_report(rep: dict) -> str:
    """A plain-text table of :func:`evaluate_engine`'s result."""
    ks = rep.get("ks", list(DEFAULT_KS))
    rows = [(f"text->image ({kind}, {d['queries']} q)", d) for kind, d in rep["text"].items()]
    rows.append((f"image->image ({rep['image']['queries']} q)", rep["image"]))
    width = max(28, *(len(name) + 1 for name, _ in rows))  # the row names line up with the header
    head = " " * width + "".join(f"{m + '@' + str(k):>14s}" for m in ("recall", "precision", "mAP") for k in ks)
    lines = [f"evaluation on {rep['items']} indexed items (query ef = {rep['ef']})", head]
    for name, d in rows:
        lines.append(f"{name:{width}s}" + "".join(f"{d[m + '@' + str(k)]:14.4f}"
                                                   for m in ("recall", "precision", "mAP") for k in ks))
    lines.append(f"HNSW recall@10 vs exact: {rep['hnsw_recall@10']:.4f}")
    if "latency_ms" in rep:
        lt = rep["latency_ms"]
        lines.append(f"warm text query (encode + search + catalog, k=10): median {lt['median']:.3f} ms, "
                     f"p90 {lt['p90']:.3f} ms over {lt['repeats']} queries")
    return "\n".join(lines)
