"""pixrank.search.index.Index: HNSW against exact numpy search, exact back-end, persistence,
deletion, growth, bad input and concurrency.

Recall floors measured on this machine (clustered data below: 4,000 points, 50 clusters,
d = 48, M = 16, ef_construction = 200, 300 queries near data points, seeds 0-4):
recall@10 at ef = 50 was 0.9997-1.0 (floor asserted: 0.99); at ef = k = 10 it was
0.977-0.979 (floor asserted: 0.95).
"""
from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pixrank.search.index import HEADER_NAME, Index
from pixrank.search.metrics import knn_recall


def _kernels_available() -> bool:
    try:
        import pixrank.ops  # noqa: F401

        return True
    except ImportError:
        return False


needs_kernels = pytest.mark.skipif(not _kernels_available(),
                                   reason="pixrank._kernels is not built (exact search uses ops.cosine_topk)")


def clustered(rng, n, d, clusters=50, spread=0.35):
    centers = rng.standard_normal((clusters, d)).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    return (centers[labels] + spread * rng.standard_normal((n, d))).astype(np.float32)


def near_queries(rng, x, q, noise=0.2):
    pick = rng.choice(len(x), q, replace=False)
    return (x[pick] + noise * rng.standard_normal((q, x.shape[1]))).astype(np.float32)


def np_cosine(q, x):
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    return qn.astype(np.float64) @ xn.T.astype(np.float64)


def np_topk(scores, k):
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1234)
    x = clustered(rng, 4000, 48)
    q = near_queries(rng, x, 300)
    return x, q


@pytest.fixture(scope="module")
def built(data):
    x, _ = data
    ix = Index(48, num_threads=1, capacity=64)
    ix.add(x, np.arange(len(x)) * 3 + 7)  # ids unlike row numbers
    return ix


# ---- HNSW against exact numpy search -----------------------------------------------------------


def test_hnsw_recall_against_numpy(data, built):
    x, q = data
    ids = np.arange(len(x)) * 3 + 7
    ref_rows, ref_scores = np_topk(np_cosine(q, x), 10)
    got_ids, got_scores = built.query(q, 10)
    assert got_ids.dtype == np.int64 and got_scores.dtype == np.float32
    assert got_ids.shape == got_scores.shape == (300, 10)
    assert knn_recall(got_ids, ids[ref_rows]) >= 0.99
    low, _ = built.query(q, 10, ef=10)
    assert knn_recall(low, ids[ref_rows]) >= 0.95
    # scores are the true cosine similarities of the returned items, descending
    rows = (got_ids - 7) // 3
    true = np.take_along_axis(np_cosine(q, x), rows, axis=1)
    np.testing.assert_allclose(got_scores, true, atol=2e-5)
    assert np.all(np.diff(got_scores, axis=1) <= 1e-6)


@pytest.mark.parametrize("space", ["ip", "l2"])
def test_hnsw_other_spaces(rng, space):
    x = clustered(rng, 1500, 16, clusters=20)
    q = near_queries(rng, x, 100)
    ix = Index(16, space=space, num_threads=1)
    ix.add(x, np.arange(len(x)))
    if space == "ip":
        ref = q.astype(np.float64) @ x.T.astype(np.float64)
    else:
        ref = -((q[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    ref_rows, _ = np_topk(ref, 10)
    ids, scores = ix.query(q, 10, ef=100)
    assert knn_recall(ids, ref_rows) >= 0.95
    np.testing.assert_allclose(scores, np.take_along_axis(ref, ids, axis=1), rtol=1e-4, atol=1e-3)
    assert np.all(np.diff(scores, axis=1) <= 1e-5)


def test_single_vector_query_and_readd_updates(rng):
    x = clustered(rng, 300, 8, clusters=5)
    ix = Index(8, num_threads=1)
    ix.add(x, np.arange(300))
    ids, scores = ix.query(x[5], 1)
    assert ids.shape == (1, 1) and ids[0, 0] == 5 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    new = -x[5]
    ix.add(new, [5])  # re-adding an id replaces its vector
    assert len(ix) == 300
    ids, scores = ix.query(new, 1)
    assert ids[0, 0] == 5 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(ix.get_vectors([5])[0], new / np.linalg.norm(new), atol=1e-6)


def test_zero_vector_scores_zero():
    ix = Index(4, num_threads=1)
    ix.add(np.array([[0, 0, 0, 0], [1, 0, 0, 0]], np.float32), [1, 2])
    ids, scores = ix.query(np.array([1, 0, 0, 0], np.float32), 2)
    assert ids.tolist() == [[2, 1]]
    np.testing.assert_allclose(scores, [[1.0, 0.0]], atol=1e-6)


# ---- sizes, growth, k ---------------------------------------------------------------------------


def test_growth_beyond_capacity(rng):
    x = clustered(rng, 1000, 12, clusters=10)
    ix = Index(12, capacity=8, num_threads=1)
    for s in range(0, 1000, 137):
        ix.add(x[s:s + 137], np.arange(s, min(s + 137, 1000)))
    assert len(ix) == 1000 and ix.capacity >= 1000
    ids, _ = ix.query(x, 1, ef=64)
    assert (ids[:, 0] == np.arange(1000)).mean() >= 0.99
    assert ix.ids().tolist() == list(range(1000))


def test_growth_counts_only_new_ids_with_deleted_and_live_ones_in_a_call():
    """An add mixing a live id (replaced), a deleted id (revived in its slot) and new ids
    grows the graph by the new ids only, exactly to what they need."""
    d = 6
    x = np.eye(d, dtype=np.float32)[:4] + 0.1
    ix = Index(d, capacity=4, num_threads=1)
    ix.add(x, np.arange(4))
    ix.delete([1])
    assert ix.capacity == 4 and len(ix) == 3
    ix.add(x[:2], [1, 2])  # a revived id and a replaced one: no new slot needed
    assert ix.capacity == 4 and len(ix) == 4
    ix.delete([3])
    y = np.eye(d, dtype=np.float32)[[3, 4, 5]] + 0.2
    ix.add(y, [3, 7, 9])  # one revived (slot 3), two new: 6 elements > 4 slots
    assert ix.capacity == 8 and len(ix) == 6
    assert ix.ids().tolist() == [0, 1, 2, 3, 7, 9]
    np.testing.assert_allclose(ix.get_vectors([7])[0], y[1] / np.linalg.norm(y[1]), atol=1e-6)


def test_k_larger_than_len_and_empty_index():
    ix = Index(3, num_threads=1)
    ids, scores = ix.query(np.ones((2, 3), np.float32), 5)
    assert ids.shape == (2, 0) and scores.shape == (2, 0)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    ix.add(np.eye(3, dtype=np.float32), [4, 5, 6])
    ids, scores = ix.query(np.array([[1, 0.5, 0]], np.float32), 10)
    assert ids.shape == (1, 3) and sorted(ids[0].tolist()) == [4, 5, 6]
    assert ids[0, 0] == 4 and np.all(np.diff(scores) <= 0)
    ids, _ = ix.query(np.zeros((0, 3), np.float32), 2)
    assert ids.shape == (0, 2)


@pytest.mark.parametrize("k,exc", [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError)])
def test_bad_k(k, exc):
    ix = Index(3)
    ix.add(np.eye(3, dtype=np.float32), [0, 1, 2])
    with pytest.raises(exc, match="k"):
        ix.query(np.ones(3, np.float32), k)
    with pytest.raises(ValueError, match="ef"):
        ix.query(np.ones(3, np.float32), 1, ef=0)


def test_bad_input():
    ix = Index(4)
    good = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="dim 4"):
        ix.add(np.ones((2, 5), np.float32), [0, 1])
    with pytest.raises(ValueError, match="finite"):
        ix.add(np.array([[1, np.nan, 0, 0]], np.float32), [0])
    with pytest.raises(ValueError, match="finite"):
        ix.add(np.array([[1, 0, np.inf, 0]]), [0])
    with pytest.raises(ValueError, match=r"repeated.*\[3\]"):
        ix.add(good, [3, 3])
    with pytest.raises(ValueError, match="2 vectors but 3 ids"):
        ix.add(good, [0, 1, 2])
    with pytest.raises(ValueError, match=">= 0"):
        ix.add(good, [0, -1])
    with pytest.raises(TypeError, match="integers"):
        ix.add(good, [0.0, 1.0])
    with pytest.raises(TypeError, match="real numbers"):
        ix.add(np.array([["a"] * 4]), [0])
    with pytest.raises(ValueError, match="shape"):
        ix.add(np.ones((1, 2, 4), np.float32), [0])
    assert len(ix) == 0  # nothing was added by the failed calls
    ix.add(good, [0, 1])
    with pytest.raises(ValueError, match="finite"):
        ix.query(np.array([np.nan, 0, 0, 0], np.float32), 1)
    with pytest.raises(ValueError, match="dim 4"):
        ix.query(np.ones(3, np.float32), 1)
    with pytest.raises(ValueError, match="space"):
        Index(4, space="hamming")
    with pytest.raises(ValueError, match="exact"):
        Index(4, space="l2", exact=True)
    with pytest.raises(ValueError, match="dim"):
        Index(0)
    # float64 / non-contiguous inputs are converted, not rejected
    ids, _ = ix.query(np.asfortranarray(np.ones((3, 4))), 1)
    assert ids.shape == (3, 1)


# ---- deletion -------------------------------------------------------------------------------------


def test_delete(rng):
    x = clustered(rng, 800, 16, clusters=8)
    ix = Index(16, num_threads=1)
    ix.add(x, np.arange(800))
    gone = rng.choice(800, 300, replace=False)
    ix.delete(gone)
    assert len(ix) == 500
    assert all(int(g) not in ix for g in gone[:20]) and 0 in ix or 0 in gone
    ids, _ = ix.query(x, 10)
    assert not np.isin(ids, gone).any()
    alive = np.setdiff1d(np.arange(800), gone)
    ref_rows, _ = np_topk(np_cosine(x, x[alive]), 10)
    assert knn_recall(ids, alive[ref_rows]) >= 0.95
    with pytest.raises(KeyError, match=str(int(gone[0]))):
        ix.delete([int(alive[0]), int(gone[0])])
    assert int(alive[0]) in ix and len(ix) == 500  # all or nothing
    with pytest.raises(KeyError, match="12345"):
        ix.delete(12345)
    # a deleted id can be added again
    ix.add(x[gone[:1]], gone[:1])
    assert int(gone[0]) in ix and len(ix) == 501
    assert ix.query(x[gone[0]], 1)[0][0, 0] == gone[0]


def test_delete_almost_everything_still_answers(rng):
    x = clustered(rng, 200, 8, clusters=4)
    ix = Index(8, M=4, ef_construction=20, ef=4, num_threads=1)
    ix.add(x, np.arange(200))
    keep = np.array([3, 77, 150])
    ix.delete(np.setdiff1d(np.arange(200), keep))
    ids, scores = ix.query(x[:5], 3)
    assert ids.shape == (5, 3)
    for row, s in zip(ids, scores):
        assert sorted(row.tolist()) == keep.tolist()
    ref = np.take_along_axis(np_cosine(x[:5], x), ids, axis=1)
    np.testing.assert_allclose(scores, ref, atol=2e-5)


def test_compact_drops_deleted(rng):
    x = clustered(rng, 600, 8, clusters=6)
    ix = Index(8, num_threads=1)
    ix.add(x, np.arange(600))
    ix.delete(np.arange(0, 600, 2))
    before, _ = ix.query(x[:50], 5)
    ix.compact()
    assert len(ix) == 300 and ix.capacity == 300
    after, _ = ix.query(x[:50], 5)
    assert not np.isin(after, np.arange(0, 600, 2)).any()
    assert knn_recall(after, before) >= 0.95


# ---- exact back-end ----------------------------------------------------------------------------------


@needs_kernels
@pytest.mark.parametrize("space", ["cosine", "ip"])
def test_exact_matches_numpy(rng, space):
    x = rng.standard_normal((500, 24)).astype(np.float32)
    x[10] = x[3]  # an exact tie: the lower row (inserted earlier) comes first
    x[20] = 0.0   # a zero vector
    q = rng.standard_normal((40, 24)).astype(np.float32)
    q[0] = x[3]
    ix = Index(24, space=space, exact=True, capacity=16)
    ix.add(x, np.arange(500) + 1000)
    ref = np_cosine(q, x) if space == "cosine" else q.astype(np.float64) @ x.T.astype(np.float64)
    ref_rows, ref_scores = np_topk(ref, 15)
    ids, scores = ix.query(q, 15)
    assert ids.dtype == np.int64 and scores.dtype == np.float32 and ids.shape == (40, 15)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
    # ids equal where scores are not within float error of a tie
    margin = np.abs(np.diff(ref_scores, axis=1))
    clear = np.ones_like(ids, dtype=bool)
    clear[:, 1:] &= margin > 1e-5
    clear[:, :-1] &= margin > 1e-5
    np.testing.assert_array_equal(ids[clear], ref_rows[clear] + 1000)
    if space == "cosine":
        assert ids[0, :2].tolist() == [1003, 1010]


@needs_kernels
def test_exact_delete_growth_and_update(rng):
    x = rng.standard_normal((300, 8)).astype(np.float32)
    ix = Index(8, exact=True, capacity=4)
    ix.add(x[:100], np.arange(100))
    ix.add(x[100:], np.arange(100, 300))
    assert len(ix) == 300 and ix.capacity >= 300
    ix.delete(np.arange(0, 300, 3))
    assert len(ix) == 200
    alive = np.setdiff1d(np.arange(300), np.arange(0, 300, 3))
    ids, scores = ix.query(x[:20], 300)
    assert ids.shape == (20, 200)
    assert sorted(ids[0].tolist()) == alive.tolist()
    ref_rows, ref_scores = np_topk(np_cosine(x[:20], x[alive]), 200)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    ix.add(-x[1], [1])  # update
    ids, s = ix.query(-x[1], 1)
    assert ids[0, 0] == 1 and s[0, 0] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(KeyError, match="0"):
        ix.delete([0])


@needs_kernels
def test_exact_empty():
    ix = Index(5, exact=True)
    ids, scores = ix.query(np.ones((3, 5), np.float32), 4)
    assert ids.shape == (3, 0) and scores.shape == (3, 0)


# ---- persistence ----------------------------------------------------------------------------------------


def _assert_roundtrip_identical(ix, q, tmp_path, k=10):
    before = ix.query(q, k)
    ix.save(tmp_path / "ix")
    back = Index.load(tmp_path / "ix")
    after = back.query(q, k)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert back.config() == ix.config() and len(back) == len(ix)
    assert back.ids().tolist() == ix.ids().tolist()
    return back


def test_save_load_hnsw(tmp_path, data, rng):
    x, q = data
    ix = Index(48, M=12, ef_construction=80, ef=40, num_threads=1)
    ix.add(x[:1500], np.arange(1500))
    ix.delete(np.arange(0, 1500, 5))
    back = _assert_roundtrip_identical(ix, q, tmp_path)
    assert 0 not in back and 1 in back
    header = json.loads((tmp_path / "ix" / HEADER_NAME).read_text())
    assert header["magic"] == "pixrank-index" and header["format_version"] == 1
    assert (header["dim"], header["space"], header["M"], header["ef_construction"], header["ef"],
            header["exact"], header["count"]) == (48, "cosine", 12, 80, 40, False, 1200)
    # the loaded index keeps working: add, delete, query
    back.add(x[1500:1600], np.arange(1500, 1600))
    back.delete([1])
    assert len(back) == 1299 and 1 not in back
    # saving again over the old folder replaces it and leaves no stale files
    back.save(tmp_path / "ix")
    names = sorted(os.listdir(tmp_path / "ix"))
    assert len(names) == 3 and HEADER_NAME in names
    again = Index.load(tmp_path / "ix")
    assert len(again) == 1299


@needs_kernels
def test_save_load_exact(tmp_path, rng):
    x = rng.standard_normal((400, 16)).astype(np.float32)
    ix = Index(16, exact=True)
    ix.add(x, np.arange(400) * 2)
    ix.delete([0, 2, 398])
    _assert_roundtrip_identical(ix, x[:30], tmp_path)


def test_load_a_file_instead_of_a_folder(tmp_path):
    f = tmp_path / "index.bin"
    f.write_bytes(b"\0" * 16)
    with pytest.raises(NotADirectoryError, match="is a file; give the index folder"):
        Index.load(f)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Index.load(tmp_path / "missing")


def test_save_load_empty(tmp_path):
    ix = Index(6, num_threads=1)
    ix.save(tmp_path / "e")
    back = Index.load(tmp_path / "e")
    assert len(back) == 0 and back.query(np.ones(6, np.float32), 3)[0].shape == (1, 0)


def test_save_failure_keeps_old_index(tmp_path, rng, monkeypatch):
    x = rng.standard_normal((100, 8)).astype(np.float32)
    ix = Index(8, num_threads=1)
    ix.add(x, np.arange(100))
    ix.save(tmp_path / "ix")
    old_files = sorted(os.listdir(tmp_path / "ix"))
    ix.add(rng.standard_normal((50, 8)).astype(np.float32), np.arange(100, 150))

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        ix.save(tmp_path / "ix")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "ix")) == old_files
    assert len(Index.load(tmp_path / "ix")) == 100


def _graph_file(folder):
    header = json.loads((folder / HEADER_NAME).read_text())
    return folder / header["files"]["graph"]["name"], header


@pytest.fixture
def saved(tmp_path, rng):
    x = clustered(rng, 300, 8, clusters=5)
    ix = Index(8, num_threads=1)
    ix.add(x, np.arange(300))
    ix.save(tmp_path / "ix")
    return tmp_path / "ix"


def test_load_truncated_graph(saved):
    g, _ = _graph_file(saved)
    data = g.read_bytes()
    g.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        Index.load(saved)


def test_load_corrupt_graph(saved):
    g, _ = _graph_file(saved)
    data = bytearray(g.read_bytes())
    data[200] ^= 0xFF
    g.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        Index.load(saved)


def test_load_header_disagrees_with_graph(saved):
    _, header = _graph_file(saved)
    header["dim"] = 16
    (saved / HEADER_NAME).write_text(json.dumps(header))
    with pytest.raises(ValueError, match="dim"):
        Index.load(saved)
    header["dim"] = 8
    header["M"] = 32
    (saved / HEADER_NAME).write_text(json.dumps(header))
    with pytest.raises(ValueError, match="M 16 != 32"):
        Index.load(saved)
    header["M"] = 16
    header["count"] = 299
    (saved / HEADER_NAME).write_text(json.dumps(header))
    with pytest.raises(ValueError, match="count"):
        Index.load(saved)


def test_load_bad_header(saved):
    hp = saved / HEADER_NAME
    header = json.loads(hp.read_text())
    hp.write_text(json.dumps({**header, "magic": "something-else"}))
    with pytest.raises(ValueError, match="magic"):
        Index.load(saved)
    hp.write_text(json.dumps({**header, "format_version": 99}))
    with pytest.raises(ValueError, match="version"):
        Index.load(saved)
    hp.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid index header"):
        Index.load(saved)
    hp.write_text(json.dumps({k: v for k, v in header.items() if k != "dim"}))
    with pytest.raises(ValueError, match="'dim'"):
        Index.load(saved)


def test_load_missing_files(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Index.load(tmp_path / "nowhere")
    g, _ = _graph_file(saved)
    g.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        Index.load(saved)
    (saved / HEADER_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=HEADER_NAME):
        Index.load(saved)


@needs_kernels
def test_load_exact_truncated(tmp_path, rng):
    ix = Index(8, exact=True)
    ix.add(rng.standard_normal((50, 8)).astype(np.float32), np.arange(50))
    ix.save(tmp_path / "ix")
    header = json.loads((tmp_path / "ix" / HEADER_NAME).read_text())
    v = tmp_path / "ix" / header["files"]["vectors"]["name"]
    v.write_bytes(v.read_bytes()[:-40])
    with pytest.raises(ValueError, match="truncated"):
        Index.load(tmp_path / "ix")


def test_save_into_a_file_path(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        Index(3).save(tmp_path / "f")


# ---- concurrency -------------------------------------------------------------------------------------------


def test_concurrent_queries_equal_serial(data, built):
    x, q = data
    jobs = [(q[i:i + 1] if i % 3 else q[i:i + 7], 5 + (i % 4) * 10, [None, 20, 80][i % 3])
            for i in range(0, 280, 7)]
    serial = [built.query(v, k, ef=ef) for v, k, ef in jobs]
    with ThreadPoolExecutor(max_workers=6) as ex:
        for _ in range(3):
            par = list(ex.map(lambda j: built.query(j[0], j[1], ef=j[2]), jobs))
            for (a_ids, a_s), (b_ids, b_s) in zip(serial, par):
                np.testing.assert_array_equal(a_ids, b_ids)
                np.testing.assert_array_equal(a_s, b_s)


def test_queries_concurrent_with_adds_and_deletes(rng):
    x = clustered(rng, 3000, 16, clusters=20)
    ix = Index(16, capacity=16, num_threads=1)
    ix.add(x[:200], np.arange(200))
    stop = threading.Event()
    errors = []

    def reader(seed):
        r = np.random.default_rng(seed)
        while not stop.is_set():
            try:
                ids, scores = ix.query(x[r.integers(0, 3000, 4)], 10)
                assert ids.shape[1] <= 10 and (ids >= 0).all() and (ids < 3000).all()
                assert np.all(np.diff(scores, axis=1) <= 1e-5)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)
                return

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    try:
        for s in range(200, 3000, 200):
            ix.add(x[s:s + 200], np.arange(s, s + 200))
            ix.delete(np.arange(s - 200, s - 150))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert len(ix) == 3000 - 14 * 50


# ---- wrapping a raw hnswlib index ------------------------------------------------------------------


@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
def test_from_hnswlib_answers_exactly_as_raw_hnswlib_on_the_same_graph(rng, space):
    import hnswlib

    x = clustered(rng, 9000, 16)  # > 2 blocks of 4096 labels
    q = clustered(rng, 50, 16)
    raw = hnswlib.Index(space=space, dim=16)
    raw.init_index(max_elements=9000, M=12, ef_construction=64, random_seed=7)
    raw.add_items(x, np.arange(9000) * 3, num_threads=1)
    dead = [3 * 5, 3 * 4100, 3 * 4101, 3 * 8999]  # in the first, second and third block
    for i in dead:
        raw.mark_deleted(i)
    raw.set_ef(40)
    want_ids, want_d = raw.knn_query(q, k=10, num_threads=1)
    ix = Index.from_hnswlib(raw, num_threads=1)
    assert ix.space == space and ix.dim == 16 and ix.M == 12 and ix.ef_construction == 64 and ix.ef == 40
    assert len(ix) == 9000 - len(dead) and ix.capacity == 9000
    assert ix.ids().tolist() == sorted(set(range(0, 27000, 3)) - set(dead))
    ids, scores = ix.query(q, 10)
    np.testing.assert_array_equal(ids, want_ids.astype(np.int64))
    want = -want_d if space == "l2" else 1 - want_d
    np.testing.assert_allclose(scores, want, rtol=0, atol=1e-6)
    assert not set(ids.ravel().tolist()) & set(dead)
    # it keeps working as an Index: revive a deleted id, add new ones, delete, save/load
    ix.add(x[:2], [dead[0], 27001])
    assert dead[0] in ix and 27001 in ix and len(ix) == 9000 - len(dead) + 2
    ix.delete([0])
    assert 0 not in ix


def test_from_hnswlib_default_ef_and_save_load(tmp_path, rng):
    import hnswlib

    x = clustered(rng, 500, 8, clusters=10)
    raw = hnswlib.Index(space="cosine", dim=8)
    raw.init_index(max_elements=600, M=8, ef_construction=50, random_seed=1)
    raw.add_items(x, np.arange(500))
    ix = Index.from_hnswlib(raw, ef=25, seed=1)
    assert ix.ef == 25 and raw.ef == 25 and ix.config()["seed"] == 1
    ix.save(tmp_path / "ix")
    back = Index.load(tmp_path / "ix", num_threads=1)
    np.testing.assert_array_equal(back.query(x[:20], 5)[0], ix.query(x[:20], 5)[0])


def test_from_hnswlib_rejects_what_it_cannot_wrap():
    import hnswlib

    with pytest.raises(TypeError, match="hnswlib.Index"):
        Index.from_hnswlib(object())
    fresh = hnswlib.Index(space="cosine", dim=4)  # not initialised: hnswlib's methods would crash
    with pytest.raises(ValueError, match="not initialised"):
        Index.from_hnswlib(fresh)
    big = hnswlib.Index(space="ip", dim=4)
    big.init_index(max_elements=4, M=300)
    with pytest.raises(ValueError, match="M must be <= 200"):
        Index.from_hnswlib(big)
    empty = hnswlib.Index(space="l2", dim=3)
    empty.init_index(max_elements=4)
    ix = Index.from_hnswlib(empty)
    assert len(ix) == 0 and ix.query(np.ones(3, np.float32), 2)[0].shape == (1, 0)
