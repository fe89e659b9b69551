"""pixrank.search.metrics against hand-computed examples and a plain-loop reference."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pixrank.search.metrics import (average_precision_at_k, knn_recall, map_at_k, precision_at_k,
                                    recall_at_k, relevance_from_labels)

# Two ranked lists of 5 results; query 0 has 3 relevant items in the collection, query 1 has 4.
REL = np.array([[1, 0, 1, 0, 0],
                [0, 1, 1, 0, 1]], dtype=bool)
NREL = np.array([3, 4])


def test_precision_hand_computed():
    assert precision_at_k(REL, k=1, reduce="none").tolist() == [1.0, 0.0]
    assert precision_at_k(REL, k=3, reduce="none").tolist() == pytest.approx([2 / 3, 2 / 3])
    assert precision_at_k(REL, k=5) == pytest.approx((2 / 5 + 3 / 5) / 2)
    # fewer results than k: missing results count as not relevant
    assert precision_at_k([[1, 1]], k=4) == 0.5


def test_recall_hand_computed():
    assert recall_at_k(REL, NREL, k=1, reduce="none").tolist() == [1 / 3, 0.0]
    assert recall_at_k(REL, NREL, k=5, reduce="none").tolist() == pytest.approx([2 / 3, 3 / 4])
    assert recall_at_k(REL, NREL, k=5) == pytest.approx((2 / 3 + 3 / 4) / 2)


def test_average_precision_hand_computed():
    # query 0: hits at ranks 1, 3 -> (1/1 + 2/3) / min(5, 3) = 5/9
    # query 1: hits at ranks 2, 3, 5 -> (1/2 + 2/3 + 3/5) / min(5, 4) = 53/120
    ap = average_precision_at_k(REL, NREL, k=5)
    assert ap.tolist() == pytest.approx([5 / 9, 53 / 120])
    # cut at k = 2: query 0 -> 1 / min(2, 3); query 1 -> (1/2) / 2
    assert average_precision_at_k(REL, NREL, k=2).tolist() == pytest.approx([0.5, 0.25])
    assert map_at_k(REL, NREL, k=5) == pytest.approx((5 / 9 + 53 / 120) / 2)
    # a perfect ranking scores 1 even when there are more relevant items than k
    assert map_at_k([[1, 1, 1]], [50], k=3) == 1.0


def _ap_loop(rel, n, k):
    hits, total = 0, 0.0
    for j, r in enumerate(rel[:k], start=1):
        if r:
            hits += 1
            total += hits / j
    return total / min(k, n)


def test_average_precision_against_loop(rng):
    rel = rng.random((50, 20)) < 0.3
    n = rel.sum(1) + rng.integers(0, 5, 50)
    n[n == 0] = 1
    for k in (1, 7, 20, 30):
        got = average_precision_at_k(rel, n, k=k)
        ref = [_ap_loop(r, m, k) for r, m in zip(rel, n)]
        np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_queries_without_relevant_items_are_left_out():
    rel = np.array([[1, 0], [0, 0]], dtype=bool)
    per = recall_at_k(rel, [1, 0], reduce="none")
    assert per[0] == 1.0 and math.isnan(per[1])
    assert recall_at_k(rel, [1, 0]) == 1.0
    assert map_at_k(rel, [1, 0]) == 1.0
    assert math.isnan(map_at_k(np.zeros((2, 2), bool), [0, 0]))


def test_bad_input():
    with pytest.raises(ValueError, match="n_relevant"):
        recall_at_k(REL, [1, 4])  # 2 hits but only 1 relevant
    with pytest.raises(ValueError, match="shape"):
        recall_at_k(REL, [1, 2, 3])
    with pytest.raises(ValueError, match="k must be >= 1"):
        precision_at_k(REL, k=0)
    with pytest.raises(TypeError, match="boolean"):
        precision_at_k([[0.5, 1.0]])
    with pytest.raises(ValueError, match="reduce"):
        precision_at_k(REL, reduce="sum")


def test_relevance_from_labels():
    r = relevance_from_labels([[1, 2, 1], [0, 0, 3]], [1, 3])
    assert r.tolist() == [[True, False, True], [False, False, True]]
    with pytest.raises(ValueError):
        relevance_from_labels([[1, 2]], [1, 2])


def test_knn_recall():
    assert knn_recall([[1, 2, 3]], [[1, 3, 4]]) == pytest.approx(2 / 3)
    assert knn_recall([[5, 6], [7, 8]], [[6, 5], [9, 10]], reduce="none").tolist() == [1.0, 0.0]
    # padding (negative ids) never matches; approximate lists may be shorter
    assert knn_recall([[1, -1, -1]], [[1, 2, 3]]) == pytest.approx(1 / 3)
    assert knn_recall([[4]], [[4, 5]]) == 0.5
    with pytest.raises(ValueError):
        knn_recall([[1, 2]], [[1, 2], [3, 4]])


def test_knn_recall_against_sets(rng):
    a = np.stack([rng.choice(100, 10, replace=False) for _ in range(30)])
    e = np.stack([rng.choice(100, 10, replace=False) for _ in range(30)])
    ref = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, e)])
    assert knn_recall(a, e) == pytest.approx(ref)
