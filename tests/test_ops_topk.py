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
    # depth blocks (DbLayout.kc): one pass up to 384 with the AVX2 kernel, balanced blocks
    # above (385 -> 2 x 196, 769 -> 3 x 260), two passes of 192 with AVX-512; n past a
    # database block (80 rows at d = 384) and query counts past a score tile (48 rows)
    (11, 251, 384, 10),
    (9, 163, 385, 7),
    (5, 97, 769, 12),
    (53, 1201, 383, 3),
]


@pytest.mark.parametrize("case", TOPK_CASES, ids=lambda c: "Q{}-n{}-d{}-k{}".format(*c))
def test_cosine_topk_matches_reference(rng, threads, case):
    nq, n, d, k = case
    q = rng.standard_normal((nq, d)).astype(np.float32)
    db = rng.standard_normal((n, d)).astype(np.float32) * rng.uniform(0.1, 10, (n, 1)).astype(np.float32)
    idx, scores = ops.cosine_topk(q, db, k)
    assert_topk_correct(idx, scores, q, db, k)


@pytest.mark.parametrize("case", [(100, 2003, 384, 10), (7, 500, 385, 1), (61, 777, 128, 33)],
                         ids=lambda c: "Q{}-n{}-d{}-k{}".format(*c))
def test_cosine_topk_three_threads(rng, case):
    """3 threads (an odd split of the database chunks and of the queries), array and prepared."""
    import pixrank

    nq, n, d, k = case
    q = rng.standard_normal((nq, d)).astype(np.float32)
    db = rng.standard_normal((n, d)).astype(np.float32)
    old = pixrank.get_num_threads()
    pixrank.set_num_threads(3)
    try:
        idx, scores = ops.cosine_topk(q, db, k)
        assert_topk_correct(idx, scores, q, db, k)
        _same(ops.cosine_topk(q, ops.CosineDatabase(db), k), (idx, scores))
    finally:
        pixrank.set_num_threads(old)


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


# --------------------------------------------------------------------------------------
# CosineDatabase: prepared once, identical results
# --------------------------------------------------------------------------------------


def _same(got, want):
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("case", TOPK_CASES, ids=lambda c: "Q{}-n{}-d{}-k{}".format(*c))
def test_prepared_database_gives_the_same_bits(rng, threads, simd_path, case):
    """Built at once or appended in uneven pieces (panels and blocks split anywhere), a
    CosineDatabase answers exactly what cosine_topk answers over the array."""
    nq, n, d, k = case
    q = rng.standard_normal((nq, d)).astype(np.float32)
    db = rng.standard_normal((n, d)).astype(np.float32) * rng.uniform(0.1, 10, (n, 1)).astype(np.float32)
    db[n // 2] = 0.0  # a zero row scores 0
    want = ops.cosine_topk(q, db, k)
    assert_topk_correct(*want, q, db, k)
    _same(ops.cosine_topk(q, ops.CosineDatabase(db), k), want)
    pieces = ops.CosineDatabase(dim=d)
    cuts = np.unique(np.concatenate([[0, n], rng.integers(0, n + 1, 4)]))
    for a, b in zip(cuts[:-1], cuts[1:]):
        pieces.append(db[a:b])
    assert len(pieces) == n and pieces.dim == d and pieces.capacity >= n
    _same(ops.cosine_topk(q, pieces, k), want)


def test_prepared_database_replace_truncate_and_growth(rng, threads):
    d = 24
    db = rng.standard_normal((3000, d)).astype(np.float32)
    q = np.concatenate([db[[5, 2999, 1500]] * 2, rng.standard_normal((4, d))]).astype(np.float32)
    pdb = ops.CosineDatabase(dim=d)
    pdb.reserve(10)
    for a in range(0, 3000, 7):  # many small appends: the storage grows by doubling
        pdb.append(db[a:a + 7])
    _same(ops.cosine_topk(q, pdb, 12), ops.cosine_topk(q, db, 12))
    # replace rows (a swap-delete as the search index does it: last row into the hole, then drop it)
    new = db.copy()
    new[[5, 17]] = rng.standard_normal((2, d)).astype(np.float32)
    pdb.replace([5, 17], new[[5, 17]])
    new[100] = new[2999]
    pdb.replace(np.array([100], np.uint32), new[[2999]])
    pdb.truncate(2999)
    new = new[:2999]
    assert len(pdb) == 2999
    for k in (1, 12, 200):
        _same(ops.cosine_topk(q, pdb, k), ops.cosine_topk(q, new, k))
    pdb.append(db[:3])
    _same(ops.cosine_topk(q, pdb, 12), ops.cosine_topk(q, np.concatenate([new, db[:3]]), 12))
    # the stored rows are the normalised inputs
    np.testing.assert_allclose(pdb.vector(17), new[17] / np.linalg.norm(new[17]), rtol=1e-6, atol=1e-7)
    pdb.truncate(0)
    idx, s = ops.cosine_topk(q, pdb, 5)
    assert idx.shape == (7, 0) and s.shape == (7, 0) and idx.dtype == np.int64


def test_prepared_database_follows_a_simd_switch(rng):
    """Rows packed for one SIMD path are re-packed once when another path is forced."""
    from pixrank import _kernels

    paths = _kernels.available_simd()
    old = _kernels.info()["simd"]
    db = rng.standard_normal((777, 40)).astype(np.float32)
    q = rng.standard_normal((9, 40)).astype(np.float32)
    try:
        for first in paths:
            _kernels.set_simd(first)
            pdb = ops.CosineDatabase(db)
            for second in paths:
                _kernels.set_simd(second)
                _same(ops.cosine_topk(q, pdb, 15), ops.cosine_topk(q, db, 15))
                assert repr(pdb).endswith(f"layout='{pdb._db.layout}')") and pdb._db.layout.startswith(second)
    finally:
        _kernels.set_simd(old)


def test_prepared_database_concurrent_queries_and_appends(rng):
    """Queries from several threads while another thread appends: every answer is the exact
    answer over some prefix of the rows (appends are atomic), never a crash or a torn read."""
    from concurrent.futures import ThreadPoolExecutor

    d = 16
    db = rng.standard_normal((4000, d)).astype(np.float32)
    q = rng.standard_normal((3, d)).astype(np.float32)
    pdb = ops.CosineDatabase(db[:1000])

    def writer():
        for a in range(1000, 4000, 250):
            pdb.append(db[a:a + 250])

    def reader(_):
        out = []
        for _ in range(20):
            out.append(ops.cosine_topk(q, pdb, 5))
        return out

    with ThreadPoolExecutor(4) as ex:
        fw = ex.submit(writer)
        answers = [a for f in [ex.submit(reader, i) for i in range(3)] for a in f.result()]
        fw.result()
    prefixes = {m: ops.cosine_topk(q, db[:m], 5) for m in range(1000, 4001, 250)}
    for idx, s in answers:
        assert any(np.array_equal(idx, p[0]) and np.array_equal(s, p[1]) for p in prefixes.values())


@pytest.mark.parametrize("call,exc,match", [
    (lambda: ops.CosineDatabase(), ValueError, "CosineDatabase: give vectors"),
    (lambda: ops.CosineDatabase(dim=0), ValueError, "CosineDatabase: dim must be >= 1"),
    (lambda: ops.CosineDatabase(dim=2.0), TypeError, "CosineDatabase: dim must be an int"),
    (lambda: ops.CosineDatabase(np.ones(5)), ValueError, r"vectors must have shape \(n, d\), got shape \(5,\)"),
    (lambda: ops.CosineDatabase(np.ones((3, 0))), ValueError, "d >= 1"),
    (lambda: ops.CosineDatabase(np.ones((3, 4)), dim=5), ValueError, r"shape \(n, 5\)"),
    (lambda: ops.CosineDatabase([["a", "b"]]), TypeError, "real numeric dtype"),
    (lambda: ops.CosineDatabase([[1.0, np.nan], [1, 1]]), ValueError,
     "CosineDatabase.append: vectors row 0 contains a non-finite value"),
    (lambda: ops.CosineDatabase(dim=3).append(np.ones((2, 4))), ValueError, r"vectors must have shape \(m, 3\)"),
    (lambda: ops.CosineDatabase(np.ones((4, 3))).replace([4], np.ones((1, 3))), ValueError,
     r"position 4 out of range \[0, 4\)"),
    (lambda: ops.CosineDatabase(np.ones((4, 3))).replace([-1], np.ones((1, 3))), ValueError, "out of range"),
    (lambda: ops.CosineDatabase(np.ones((4, 3))).replace([0.5], np.ones((1, 3))), TypeError, "integers"),
    (lambda: ops.CosineDatabase(np.ones((4, 3))).replace([0, 1], np.ones((1, 3))), ValueError,
     "2 positions but 1 vectors"),
    (lambda: ops.CosineDatabase(np.ones((4, 3))).truncate(5), ValueError, r"n must be in \[0, 4\]"),
    (lambda: ops.CosineDatabase(np.ones((4, 3))).vector(4), ValueError, r"i must be in \[0, 4\)"),
    (lambda: ops.cosine_topk(np.ones((2, 4)), ops.CosineDatabase(dim=3), 1), ValueError,
     "to match the CosineDatabase"),
    (lambda: ops.cosine_topk(np.ones((2, 3)), ops.CosineDatabase(dim=3), 0), ValueError, "k must be >= 1"),
    (lambda: ops.cosine_topk(np.array([[np.inf, 0, 0]]), ops.CosineDatabase(np.ones((2, 3))), 1), ValueError,
     "queries row 0 contains a non-finite value"),
])
def test_prepared_database_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_prepared_database_failed_change_changes_nothing(rng):
    db = rng.standard_normal((50, 5)).astype(np.float32)
    q = rng.standard_normal((2, 5)).astype(np.float32)
    pdb = ops.CosineDatabase(db)
    bad = rng.standard_normal((3, 5)).astype(np.float32)
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="vectors row 2"):
        pdb.append(bad)
    with pytest.raises(ValueError, match="vectors row 2"):
        pdb.replace([0, 1, 2], bad)
    with pytest.raises(ValueError, match="out of range"):
        pdb.replace([0, 1, 50], bad[[0, 0, 0]])
    assert len(pdb) == 50
    _same(ops.cosine_topk(q, pdb, 7), ops.cosine_topk(q, db, 7))
