"""Retrieval metrics over ranked result lists, vectorised over queries.

Every metric takes the *relevance matrix* of the ranked lists: ``relevant[i, j]`` is True
when the item at rank ``j + 1`` of query ``i`` is relevant, shape ``(q, L)`` (``L`` is the
length of the returned lists, which may be shorter than ``k`` when the collection is small),
and, where the metric needs it, ``n_relevant[i]``: how many relevant items query ``i`` has
in the whole collection.

Definitions (C. D. Manning, P. Raghavan and H. Schuetze, *Introduction to Information
Retrieval*, Cambridge University Press 2008, chapter 8, "Evaluation in information
retrieval", sections 8.3-8.4):

* precision@k = (relevant items among the first k) / k                 (the denominator is
  k even when fewer than k items were returned: missing items count as not relevant);
* recall@k    = (relevant items among the first k) / n_relevant;
* AP@k        = (1 / min(k, n_relevant)) * sum_{j <= k, rel_j} precision@j
  (average precision cut at k, normalised by min(k, n_relevant) so that a perfect ranking
  scores 1.0 even when n_relevant > k: the common choice, e.g. the ``apk`` of Kaggle's
  ml_metrics and the mAP@k of the image-retrieval literature);
* mAP@k       = the mean of AP@k over queries (Manning et al., section 8.4).

Queries with ``n_relevant == 0`` have undefined recall and AP: their per-query value is NaN
and they are left out of means (``reduce="mean"`` averages the defined queries only, and is
NaN when none is defined). Precision is defined for every query.
"""
from __future__ import annotations

import numpy as np

__all__ = ["precision_at_k", "recall_at_k", "average_precision_at_k", "map_at_k",
           "knn_recall", "relevance_from_labels"]


def _check(relevant, n_relevant, k, fn, need_n=True):
    rel = np.asarray(relevant)
    if rel.ndim == 1:
        rel = rel[None, :]
    if rel.ndim != 2:
        raise ValueError(f"{fn}: relevant must be a (q, L) matrix of the ranked lists, got shape {rel.shape}")
    if rel.dtype != np.bool_:
        if rel.dtype.kind not in "biu" or (rel.size and not np.isin(rel, (0, 1)).all()):
            raise TypeError(f"{fn}: relevant must be boolean (or 0/1), got dtype {rel.dtype}")
        rel = rel.astype(bool)
    q, L = rel.shape
    if k is None:
        k = L
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{fn}: k must be an int, got {type(k).__name__}")
    k = int(k)
    if k < 1:
        raise ValueError(f"{fn}: k must be >= 1, got {k}")
    rel = rel[:, :k]
    if not need_n:
        return rel, None, k
    n = np.asarray(n_relevant)
    if n.ndim == 0:
        n = np.full(q, n)
    if n.shape != (q,):
        raise ValueError(f"{fn}: n_relevant must have shape ({q},) to match relevant {rel.shape}, got {n.shape}")
    if n.dtype.kind not in "iu":
        if n.dtype.kind != "f" or (n.size and not np.array_equal(n, np.round(n))):
            raise TypeError(f"{fn}: n_relevant must be integer counts, got dtype {n.dtype}")
    n = n.astype(np.int64)
    hits = rel.sum(axis=1)
    if (n < 0).any() or (hits > n).any():
        i = int(np.argmax((n < 0) | (hits > n)))
        raise ValueError(f"{fn}: query {i} has {int(hits[i])} relevant items in its first {k} "
                         f"results but n_relevant = {int(n[i])}")
    return rel, n, k


def _reduce(values, reduce, fn):
    if reduce == "none":
        return values
    if reduce != "mean":
        raise ValueError(f"{fn}: reduce must be 'mean' or 'none', got {reduce!r}")
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def precision_at_k(relevant, k: int | None = None, reduce: str = "mean"):
    """precision@k = |relevant in the first k| / k (Manning et al. 2008, sec. 8.3-8.4).

    Args:
        relevant: bool ``(q, L)``: relevance of each ranked result (``L`` may be < k).
        k: cut-off, default ``L``.
        reduce: ``'mean'`` (a float) or ``'none'`` (float64 ``(q,)``).

    Example:
        >>> precision_at_k([[1, 0, 1, 0]], k=2)
        0.5
    """
    rel, _, k = _check(relevant, None, k, "precision_at_k", need_n=False)
    return _reduce(rel.sum(axis=1) / k, reduce, "precision_at_k")


def recall_at_k(relevant, n_relevant, k: int | None = None, reduce: str = "mean"):
    """recall@k = |relevant in the first k| / n_relevant (Manning et al. 2008, sec. 8.3).

    Args:
        relevant: bool ``(q, L)``.
        n_relevant: int ``(q,)`` (or a scalar for all queries): relevant items per query in
            the collection; 0 gives NaN for that query.
        k: cut-off, default ``L``.
        reduce: ``'mean'`` (a float over the queries with n_relevant > 0) or ``'none'``.

    Raises:
        ValueError: more relevant hits than ``n_relevant``, shapes that disagree, ``k < 1``.

    Example:
        >>> recall_at_k([[1, 0, 1, 0]], [4], k=4)
        0.5
    """
    rel, n, k = _check(relevant, n_relevant, k, "recall_at_k")
    hits = rel.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(n > 0, hits / np.maximum(n, 1), np.nan)
    return _reduce(values, reduce, "recall_at_k")


def average_precision_at_k(relevant, n_relevant, k: int | None = None, reduce: str = "none"):
    """AP@k = (1 / min(k, n_relevant)) * sum over relevant ranks j <= k of precision@j.

    Average precision (Manning et al. 2008, sec. 8.4) cut at rank ``k`` and normalised by
    ``min(k, n_relevant)``, so a ranking whose first ``min(k, n_relevant)`` results are all
    relevant scores 1.0.

    Args:
        relevant: bool ``(q, L)``.
        n_relevant: int ``(q,)`` or a scalar; 0 gives NaN for that query.
        k: cut-off, default ``L``.
        reduce: ``'none'`` (default, float64 ``(q,)``) or ``'mean'`` (= :func:`map_at_k`).

    Example:
        >>> average_precision_at_k([[1, 0, 1]], [2], k=3).tolist()   # (1/1 + 2/3) / 2
        [0.8333333333333333]
    """
    rel, n, k = _check(relevant, n_relevant, k, "average_precision_at_k")
    relf = rel.astype(np.float64)
    ranks = np.arange(1, relf.shape[1] + 1, dtype=np.float64)
    prec = np.cumsum(relf, axis=1) / ranks
    denom = np.minimum(n, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(denom > 0, (prec * relf).sum(axis=1) / np.maximum(denom, 1), np.nan)
    return _reduce(values, reduce, "average_precision_at_k")


def map_at_k(relevant, n_relevant, k: int | None = None) -> float:
    """mAP@k: the mean of :func:`average_precision_at_k` over the queries with relevant items.

    Example:
        >>> map_at_k([[1, 0, 1], [0, 1, 0]], [2, 1], k=3)   # ((1 + 2/3)/2 + 1/2) / 2
        0.6666666666666666
    """
    return average_precision_at_k(relevant, n_relevant, k, reduce="mean")


def relevance_from_labels(result_labels, query_labels) -> np.ndarray:
    """The relevance matrix when "relevant" means "same label as the query".

    Args:
        result_labels: ``(q, L)`` labels of the ranked results.
        query_labels: ``(q,)`` the label each query asks for.

    Returns:
        bool ``(q, L)``: ``result_labels[i, j] == query_labels[i]``.
    """
    r = np.asarray(result_labels)
    ql = np.asarray(query_labels)
    if r.ndim != 2 or ql.shape != (r.shape[0],):
        raise ValueError(f"relevance_from_labels: expected result_labels (q, L) and query_labels (q,), "
                         f"got {r.shape} and {ql.shape}")
    return r == ql[:, None]


def knn_recall(approx_ids, exact_ids, reduce: str = "mean"):
    """Recall of approximate k-NN against exact k-NN: |approx_i & exact_i| / |exact_i|.

    The standard measure of approximate-search quality (M. Aumueller, E. Bernhardsson and
    A. Faithfull, "ANN-Benchmarks", Information Systems 87, 2020; hnswlib's recall tests).
    Ids must be distinct within each row; negative ids mark padding and never match.

    Args:
        approx_ids: int ``(q, k_a)`` ids returned by the approximate index.
        exact_ids: int ``(q, k)`` ids of the exact k nearest neighbours (the reference).
        reduce: ``'mean'`` (a float) or ``'none'`` (float64 ``(q,)``).

    Example:
        >>> knn_recall([[1, 2, 3]], [[1, 3, 4]])
        0.6666666666666666
    """
    a = np.asarray(approx_ids)
    e = np.asarray(exact_ids)
    if a.ndim == 1:
        a = a[None]
    if e.ndim == 1:
        e = e[None]
    if a.ndim != 2 or e.ndim != 2 or a.shape[0] != e.shape[0]:
        raise ValueError(f"knn_recall: expected (q, k) id matrices with the same q, got {a.shape} and {e.shape}")
    if a.dtype.kind not in "iu" or e.dtype.kind not in "iu":
        raise TypeError(f"knn_recall: ids must be integers, got {a.dtype} and {e.dtype}")
    a = a.astype(np.int64)
    e = e.astype(np.int64)
    n_exact = (e >= 0).sum(axis=1)
    # distinct sentinels for padding so that padding never pairs up with anything
    a = np.where(a >= 0, a, -1 - np.arange(a.shape[1])[None, :])
    e = np.where(e >= 0, e, -1 - a.shape[1] - np.arange(e.shape[1])[None, :])
    both = np.sort(np.concatenate([a, e], axis=1), axis=1)
    common = (both[:, 1:] == both[:, :-1]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(n_exact > 0, common / np.maximum(n_exact, 1), np.nan)
    return _reduce(values, reduce, "knn_recall")
