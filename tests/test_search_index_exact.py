"""pixrank.search.index.Index, exact 'cosine' back-end: the packed database it keeps
(ops.CosineDatabase) stays in step with the vectors through add, replace, delete, compact and
save/load, so that a query answers exactly what ops.cosine_topk answers over the live vectors.

Two oracles: the float64 numpy cosine over the live vectors (ids must match wherever the scores
are clear of float32 ties), and ops.cosine_topk over the index's own rows (the same bits: proves
the packed copy holds exactly the current rows).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

ops = pytest.importorskip("pixrank.ops")
from pixrank.search.index import Index  # noqa: E402


def _np_topk(q, ids, vecs, k):
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
    xn = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-30)
    s = qn.astype(np.float64) @ xn.T.astype(np.float64)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return ids[order], np.take_along_axis(s, order, axis=1)


def assert_matches_exact_reference(ix, live, q, k):
    got_ids, got_scores = ix.query(q, k)
    ids = np.array(sorted(live), dtype=np.int64)
    vecs = np.array([live[i] for i in ids.tolist()], dtype=np.float32).reshape(len(ids), q.shape[1])
    kk = min(k, len(ids))
    assert got_ids.shape == (q.shape[0], kk) and got_scores.dtype == np.float32
    if kk == 0:
        return
    # 1. the float64 numpy answer (ids where no float32 near-tie makes the order ambiguous)
    ref_ids, ref_scores = _np_topk(q, ids, vecs, kk)
    np.testing.assert_allclose(got_scores, ref_scores, rtol=0, atol=2e-6)
    margin = np.abs(np.diff(ref_scores, axis=1))
    clear = np.ones(got_ids.shape, dtype=bool)
    clear[:, 1:] &= margin > 1e-5
    clear[:, :-1] &= margin > 1e-5
    np.testing.assert_array_equal(got_ids[clear], ref_ids[clear])
    # 2. the kernel over the index's current rows: the same bits
    n = len(ix)
    rows, scores = ops.cosine_topk(q, ix._vecs[:n], kk)
    np.testing.assert_array_equal(got_ids, ix._row_ids[rows])
    np.testing.assert_array_equal(got_scores, scores)


def test_exact_cosine_stays_exact_through_changes(rng, threads):
    d, k = 20, 9
    ix = Index(d, exact=True, capacity=8)
    live = {}
    q = rng.standard_normal((11, d)).astype(np.float32)
    assert_matches_exact_reference(ix, live, q, k)  # empty
    next_id = 0
    for step in range(30):
        op = step % 5
        if op in (0, 1, 2) or len(live) < 20:  # add new ids, sometimes replacing present ones
            m = int(rng.integers(1, 60))
            new = list(range(next_id, next_id + m))
            next_id += m
            replace = [i for i in rng.choice(sorted(live), min(len(live), 5), replace=False).tolist()] if live and op == 2 else []
            ids = new + replace
            x = rng.standard_normal((len(ids), d)).astype(np.float32)
            if step == 4:
                x[0] = 0.0                       # a zero vector scores 0
                x[1] = x[2] * 3                  # parallel vectors
            ix.add(x, ids)
            live.update({i: v for i, v in zip(ids, x)})
        elif op == 3:  # delete a few (holes filled from the end)
            gone = rng.choice(sorted(live), min(len(live) - 1, int(rng.integers(1, 25))), replace=False).tolist()
            ix.delete(gone)
            for i in gone:
                del live[i]
        else:
            ix.compact()  # drops the packed copy; rebuilt at the next query
        assert_matches_exact_reference(ix, live, q, k)
        if step % 7 == 0:
            assert_matches_exact_reference(ix, live, q, 1000)  # k > n: everything, in order


def test_exact_cosine_packed_copy_is_built_once_and_updated_in_place(rng, monkeypatch):
    d = 12
    built = []
    real = ops.CosineDatabase

    class Counting(real):
        __slots__ = ()

        def __init__(self, *a, **kw):
            built.append(1)
            super().__init__(*a, **kw)

    monkeypatch.setattr(ops, "CosineDatabase", Counting)
    x = rng.standard_normal((500, d)).astype(np.float32)
    q = rng.standard_normal((3, d)).astype(np.float32)
    ix = Index(d, exact=True)
    ix.add(x[:300], np.arange(300))
    assert built == []  # nothing packed before the first query
    ix.query(q, 5)
    ix.query(q, 5)
    assert len(built) == 1
    ix.add(x[300:], np.arange(300, 500))
    ix.add(-x[:5], np.arange(5))
    ix.delete(np.arange(100, 150))
    assert_matches_exact_reference(ix, {**{i: x[i] for i in range(5, 500) if not 100 <= i < 150}, **{i: -x[i] for i in range(5)}}, q, 7)
    assert len(built) == 1  # updated, never rebuilt


def test_exact_cosine_save_load_and_concurrent_queries(rng, tmp_path):
    d = 16
    x = rng.standard_normal((2000, d)).astype(np.float32)
    q = rng.standard_normal((6, d)).astype(np.float32)
    ix = Index(d, exact=True)
    ix.add(x, np.arange(2000) * 2)
    before = ix.query(q, 10)
    ix.save(tmp_path / "ix")
    back = Index.load(tmp_path / "ix")
    after = back.query(q, 10)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    # the first queries of a fresh index race to build the packed copy: all get the same answer
    fresh = Index.load(tmp_path / "ix")
    with ThreadPoolExecutor(4) as ex:
        answers = list(ex.map(lambda _: fresh.query(q, 10), range(8)))
    for a in answers:
        np.testing.assert_array_equal(a[0], before[0])
        np.testing.assert_array_equal(a[1], before[1])


def test_exact_cosine_bad_input_leaves_the_index_unchanged(rng):
    d = 6
    x = rng.standard_normal((40, d)).astype(np.float32)
    q = rng.standard_normal((2, d)).astype(np.float32)
    ix = Index(d, exact=True)
    ix.add(x, np.arange(40))
    before = ix.query(q, 5)
    bad = x[:3].copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        ix.add(bad, [100, 101, 102])
    with pytest.raises(ValueError, match="dim 6"):
        ix.add(np.ones((1, 7), np.float32), [5])
    with pytest.raises(KeyError):
        ix.delete([3, 999])
    with pytest.raises(ValueError, match="finite"):
        ix.query(np.full((1, d), np.inf, np.float32), 3)
    after = ix.query(q, 5)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert len(ix) == 40
