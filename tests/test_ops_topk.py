"""pixrank.ops.cosine_topk against the float64 cosine matrix (reference.py)."""
from __future__ import annotations

import numpy as np
import pytest

from pixrank import ops
from reference import EPS32, assert_close, assert_topk_correct, cosine_topk_ref


# (Q, n, d, k): 1s, primes, k == n, k > n, n past any block of rows
TOPK_CASES = [
    (1, 1, 1, 1),
    (1, 7, 3, 3),
    (7, 67, 131, 10),
    (67, 131, 67, 131),
    (3, 131, 7, 200),
    (5, 1031, 64, 1),
    (2, 5003, 33, 17),
    (13, 257, 513, 50),
    # many queries (the threads split the queries) and k past the small-k insertion path
    (131, 2000, 24, 10),
    (200, 3001, 16, 100),
    (3, 5003, 16, 100),
    (1, 40_000, 8, 300),
    (97, 1000, 300, 65),
]


@pytest.mark.parametrize("case", TOPK_CASES, ids=lambda c: "Q{}-n{}-d{}-k{}".format(*c))
def test_cosine_topk_matches_reference(rng, threads, case):
    nq, n, d, k = case
    q = rng.standard_normal((nq, d)).astype(np.float32)
    db = rng.standard_normal((n, d)).astype(np.float32) * rng.uniform(0.1, 10, (n, 1)).astype(np.float32)
    idx, scores = ops.cosine_topk(q, db, k)
    assert_topk_correct(idx, scores, q, db, k)


def test_cosine_topk_large_database_blocked(rng, threads):
    """n well past a block: the running top-k must merge blocks correctly."""
    db = rng.standard_normal((40_000, 16)).astype(np.float32)
    q = np.concatenate([db[[39_999, 123, 20_000]] * 3, rng.standard_normal((2, 16))]).astype(np.float32)
    idx, scores = ops.cosine_topk(q, db, 25)
    assert_topk_correct(idx, scores, q, db, 25)
    assert idx[0, 0] == 39_999 and idx[1, 0] == 123 and idx[2, 0] == 20_000
    assert_close(scores[:3, 0], np.ones(3), 0.0, 32 * EPS32)


def test_cosine_topk_ties_lower_index_first(threads):
    """Identical rows tie exactly; the lower index comes first, also across blocks."""
    rng = np.random.default_rng(11)
    protos = rng.integers(-3, 4, size=(6, 8)).astype(np.float32)
    protos[0] = [3, 3, 3, 3, 0, 0, 0, 0]
    which = rng.integers(0, 6, size=3000)
    db = protos[which]
    q = np.array([[1, 1, 1, 1, 0, 0, 0, 0], protos[3]], np.float32)
    for k in (1, 5, 40, 3000):
        idx, scores = ops.cosine_topk(q, db, k)
        ridx, rscores = cosine_topk_ref(q, db, k)
        np.testing.assert_array_equal(idx, ridx)
        assert_close(scores, rscores, 0.0, 32 * EPS32)
        assert_topk_correct(idx, scores, q, db, k)
    # all rows equal: the answer is simply 0..k-1
    idx, scores = ops.cosine_topk(np.ones((2, 4)), np.ones((1000, 4)), 7)
    np.testing.assert_array_equal(idx, np.tile(np.arange(7), (2, 1)))
    np.testing.assert_array_equal(scores, np.ones((2, 7), np.float32))


def test_cosine_topk_zero_vectors_score_zero():
    db = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 0], [-1, 0, 0], [0, 1, 0]], np.float32)
    q = np.array([[1, 0, 0], [0, 0, 0]], np.float32)
    idx, scores = ops.cosine_topk(q, db, 5)
    assert not np.isnan(scores).any()
    # query 0: 1.0 (row 1), then the zeros 0, 2 and the orthogonal row 4 (all 0), then -1
    np.testing.assert_array_equal(idx[0], [1, 0, 2, 4, 3])
    np.testing.assert_array_equal(scores[0], np.array([1, 0, 0, 0, -1], np.float32))
    # the zero query: every score is 0, in index order
    np.testing.assert_array_equal(idx[1], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(scores[1], np.zeros(5, np.float32))
    idx, scores = ops.cosine_topk(np.zeros((3, 4)), np.zeros((6, 4)), 2)
    np.testing.assert_array_equal(scores, 0)
    np.testing.assert_array_equal(idx, [[0, 1]] * 3)


def test_cosine_topk_is_scale_invariant():
    q = np.array([[3.0, 4.0]], np.float32)
    db = np.array([[6e-3, 8e-3], [3e3, 4e3], [-4.0, 3.0]], np.float32)
    idx, scores = ops.cosine_topk(q, db, 3)
    assert set(idx[0, :2].tolist()) == {0, 1} and idx[0, 2] == 2
    assert_close(scores[0], [1.0, 1.0, 0.0], 0.0, 8 * EPS32)


def test_cosine_topk_k_larger_than_n(rng):
    q = rng.standard_normal((4, 5)).astype(np.float32)
    db = rng.standard_normal((3, 5)).astype(np.float32)
    idx, scores = ops.cosine_topk(q, db, 10)
    assert idx.shape == (4, 3) and scores.shape == (4, 3)
    assert_topk_correct(idx, scores, q, db, 10)
    for r in range(4):
        assert sorted(idx[r].tolist()) == [0, 1, 2]


def test_cosine_topk_empty():
    idx, scores = ops.cosine_topk(np.ones((3, 4)), np.zeros((0, 4)), 5)
    assert idx.shape == (3, 0) and scores.shape == (3, 0)
    assert idx.dtype == np.int64 and scores.dtype == np.float32
    idx, scores = ops.cosine_topk(np.zeros((0, 4)), np.ones((9, 4)), 5)
    assert idx.shape == (0, 5) and scores.shape == (0, 5)
    assert idx.dtype == np.int64 and scores.dtype == np.float32
    idx, scores = ops.cosine_topk(np.zeros((0, 4)), np.ones((2, 4)), 5)
    assert idx.shape == (0, 2)


def test_cosine_topk_converts_inputs(rng):
    q = rng.standard_normal((9, 6))[:, ::-1]  # float64, reversed columns
    db = rng.standard_normal((12, 50)).T[:, :6]  # F-ordered slice
    idx, scores = ops.cosine_topk(q, db, 4)
    idx2, scores2 = ops.cosine_topk(np.ascontiguousarray(q, np.float32), np.ascontiguousarray(db, np.float32), 4)
    np.testing.assert_array_equal(idx, idx2)
    np.testing.assert_array_equal(scores, scores2)
    qi = rng.integers(-5, 6, size=(3, 4))
    dbi = rng.integers(-5, 6, size=(20, 4)).astype(np.int16)
    idx, scores = ops.cosine_topk(qi, dbi, np.int64(6))
    assert_topk_correct(idx, scores, qi, dbi, 6)
