"""Nearest-neighbour index over embeddings: HNSW (hnswlib) or exact cosine top-k.

:class:`Index` stores ``(id, vector)`` pairs and answers k-nearest-neighbour queries with
scores in descending order (higher = more similar). Two back-ends share one API:

* ``exact=False`` (default): a Hierarchical Navigable Small World graph from hnswlib
  (Y. A. Malkov and D. A. Yashunin, "Efficient and robust approximate nearest neighbor
  search using Hierarchical Navigable Small World graphs", IEEE TPAMI 42(4), 2020).
  Spaces ``'cosine'``, ``'ip'`` and ``'l2'``.
* ``exact=True``: a float32 matrix ranked by :func:`pixrank.ops.cosine_topk` (the C++
  kernel) for ``'cosine'``, or by a numpy inner product for ``'ip'``. Exact search is the
  oracle for the approximate one (``knn_recall`` in :mod:`pixrank.search.metrics`). For
  ``'cosine'`` the index also keeps the rows normalised and packed for the kernel
  (:class:`pixrank.ops.CosineDatabase`, about ``4 * dim`` more bytes per vector), built at
  the first query and kept up to date by ``add``/``delete``, so that a query never
  re-normalises or re-packs the database.

Scores by space (always "higher is better")::

    'cosine'  score = cos(q, v)                 (hnswlib distance 1 - cos, so 1 - distance)
    'ip'      score = <q, v>                    (hnswlib distance 1 - <q, v>)
    'l2'      score = -|q - v|^2                (hnswlib distance is the squared L2 distance)

An index built or loaded by raw hnswlib can be wrapped, without a copy, by
:meth:`Index.from_hnswlib`.

Ids are non-negative int64 (hnswlib labels). Re-adding an id that is present replaces its
vector (hnswlib updates the element in place; an id deleted earlier is revived in its old
slot). Deleted elements stay in the HNSW graph as way-points (hnswlib's ``mark_deleted``)
and are never returned; :meth:`Index.compact` rebuilds the graph without them.

Thread safety: any number of threads may call :meth:`Index.query` (and ``len``, ``in``,
``ids``, ``get_vectors``, ``save``) at once; :meth:`Index.add`, :meth:`Index.delete` and
:meth:`Index.compact` take an exclusive lock, so they wait for running queries and block new
ones while they mutate. hnswlib keeps ``ef`` as index-wide state, so concurrent queries
that ask for different ``ef`` values take turns (queries with the same ``ef`` run together).

On disk (:meth:`Index.save` / :meth:`Index.load`) an index is a folder::

    index.json              header: magic, format_version, dim, space, M, ef_construction,
                            ef, exact, count, capacity, seed, and per data file its name,
                            size in bytes and sha256
    hnsw-<token>.bin        hnswlib's binary graph (HNSW back-end)
    vectors-<token>.npy     the (count, dim) float32 matrix (exact back-end)
    ids-<token>.npy         the (count,) int64 live ids

Data files get a fresh ``<token>`` on every save and are written and flushed before the
header, which is written to a temporary name and ``os.replace``-d into place last: the header
switch is the commit, so a crash at any moment leaves either the old index or the new one,
never a mix. Files of older saves are removed after the commit. Loading checks the magic,
the format version, each file's size and sha256 (before hnswlib reads a byte: hnswlib can
crash on a corrupt file) and that the hnswlib header agrees with the JSON header.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import struct
import threading
import time

import numpy as np

__all__ = ["Index", "INDEX_MAGIC", "INDEX_FORMAT_VERSION", "HEADER_NAME"]

INDEX_MAGIC = "pixrank-index"
INDEX_FORMAT_VERSION = 1
HEADER_NAME = "index.json"

_SPACES_HNSW = ("cosine", "ip", "l2")
_SPACES_EXACT = ("cosine", "ip")
_EMPTY_IDS = np.empty((0,), dtype=np.int64)
_F32 = np.dtype(np.float32)
_ONE = np.float32(1.0)

# hnswlib 0.8 saveIndex header: offsetLevel0_, max_elements_, cur_element_count,
# size_data_per_element_, label_offset_, offsetData_ (size_t), maxlevel_ (int),
# enterpoint_node_ (uint32), maxM_, maxM0_, M_ (size_t), mult_ (double), ef_construction_
_HNSW_HEADER = struct.Struct("<6QiI3QdQ")
_HNSW_LABEL_BYTES = 8


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

_threads_fn = None


def _default_threads() -> int:
    """pixrank's thread count (``pixrank.get_num_threads``), or the CPU count without kernels."""
    global _threads_fn
    if _threads_fn is None:
        try:
            from pixrank.ops import get_num_threads

            get_num_threads()
            _threads_fn = get_num_threads
        except Exception:  # kernels not built: hnswlib does not need them
            _threads_fn = lambda: max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                      else (os.cpu_count() or 1))
    return int(_threads_fn())


class _SharedLock:
    """A readers-writer lock whose readers carry a key (hnswlib's ``ef``).

    Readers with the same key (or key ``None``: any) share the lock; a reader with another
    key waits until the running readers finish, then ``apply(key)`` is called before it
    enters. Writers are exclusive and preferred (new readers wait while a writer waits).
    The uncontended paths take one plain mutex and never touch the condition variable.
    """

    __slots__ = ("_mutex", "_cond", "_readers", "_writer", "_writers_waiting", "_sleepers",
                 "_switching", "key", "_apply")

    def __init__(self, apply):
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._sleepers = 0
        self._switching = 0
        self.key = None
        self._apply = apply

    def _wait(self):
        self._sleepers += 1
        try:
            self._cond.wait()
        finally:
            self._sleepers -= 1

    def acquire_read(self, key=None):
        m = self._mutex
        m.acquire()
        try:
            if (self._writer or self._writers_waiting or self._switching
                    or (key is not None and self._readers and key != self.key)):
                self._acquire_read_slow(key)
            elif key is not None and key != self.key:
                self._apply(key)
                self.key = key
            self._readers += 1
        finally:
            m.release()

    def _acquire_read_slow(self, key):
        """Wait (mutex held) until a reader with ``key`` may enter; then apply the key.

        A reader that needs another key registers as switching, which holds back new readers
        of the current key, so that it is not starved by a stream of them."""
        switching = False
        try:
            while True:
                if not (self._writer or self._writers_waiting):
                    if key is None or not self._readers:
                        break
                    if key == self.key and not (self._switching and not switching):
                        break
                    if key != self.key and not switching:
                        switching = True
                        self._switching += 1
                self._wait()
        finally:
            if switching:
                self._switching -= 1
        if key is not None and key != self.key:
            self._apply(key)
            self.key = key

    def release_read(self):
        m = self._mutex
        m.acquire()
        self._readers -= 1
        if self._sleepers and not self._readers:
            self._cond.notify_all()
        m.release()

    def acquire_write(self):
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._wait()
            finally:
                self._writers_waiting -= 1
                if self._sleepers:
                    self._cond.notify_all()
            self._writer = True

    def release_write(self):
        with self._cond:
            self._writer = False
            if self._sleepers:
                self._cond.notify_all()


def _int_param(name, value, lo):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"Index: {name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < lo:
        raise ValueError(f"Index: {name} must be >= {lo}, got {value}")
    return value


def _as_ids(ids, what: str) -> np.ndarray:
    """Ids as a 1-D int64 array (non-negative); a scalar becomes one id."""
    a = np.asarray(ids)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise ValueError(f"Index.{what}: ids must be 1-D (n,), got shape {a.shape}")
    if a.size == 0:
        return _EMPTY_IDS
    if a.dtype.kind not in "iu":
        raise TypeError(f"Index.{what}: ids must be integers, got dtype {a.dtype}")
    if a.dtype.kind == "u" and a.max() > np.iinfo(np.int64).max:
        raise ValueError(f"Index.{what}: ids must fit in int64, got {int(a.max())}")
    a = a.astype(np.int64, copy=False)
    if a.min() < 0:
        raise ValueError(f"Index.{what}: ids must be >= 0, got {int(a.min())}")
    return a


def _hnswlib_version():
    try:
        from importlib.metadata import version

        return version("hnswlib")
    except Exception:
        return None


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _topk_desc(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns of each row of ``scores`` (q, n), descending, ties by lower column."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


# --------------------------------------------------------------------------------------
# Index
# --------------------------------------------------------------------------------------


class Index:
    """A k-nearest-neighbour index of ``(id, vector)`` pairs, HNSW or exact.

    Args:
        dim: vector dimension ``d >= 1``.
        space: ``'cosine'`` (default), ``'ip'`` (inner product) or ``'l2'`` (squared
            Euclidean; HNSW only). See the module docstring for the score of each space.
        M: HNSW graph degree (hnswlib ``M``; 2..200), default 16.
        ef_construction: candidate-list size while building the graph, default 200.
        ef: default candidate-list size at query time, default 50; a query raises it to at
            least its ``k``.
        exact: rank exactly over a float32 matrix instead of the HNSW graph (``'cosine'``
            through :func:`pixrank.ops.cosine_topk`, ``'ip'`` through a numpy product and a
            stable sort). Equal scores are ordered by matrix row: insertion order, except that
            a deletion moves the last row into the freed one.
        capacity: initial number of slots (grows by doubling as needed), default 1024.
        seed: hnswlib's random seed for level assignment, default 100.
        num_threads: threads hnswlib uses for batched adds and queries; ``None`` (default)
            follows :func:`pixrank.get_num_threads` at each call.

    Raises:
        ValueError: ``dim < 1``, an unknown space, ``'l2'`` with ``exact=True``, bad ``M``.
        TypeError: a parameter is not an int.

    Example:
        >>> import numpy as np
        >>> from pixrank.search.index import Index
        >>> ix = Index(4)
        >>> ix.add(np.eye(4, dtype=np.float32), np.array([10, 11, 12, 13]))
        >>> ids, scores = ix.query(np.array([1, 0.1, 0, 0], np.float32), k=2)
        >>> ids.tolist()
        [[10, 11]]
    """

    def __init__(self, dim: int, space: str = "cosine", M: int = 16, ef_construction: int = 200,
                 ef: int = 50, exact: bool = False, *, capacity: int = 1024, seed: int = 100,
                 num_threads: int | None = None):
        self._dim = _int_param("dim", dim, 1)
        if space not in _SPACES_HNSW:
            raise ValueError(f"Index: space must be one of {_SPACES_HNSW}, got {space!r}")
        self._exact = bool(exact)
        if self._exact and space not in _SPACES_EXACT:
            raise ValueError(f"Index: exact=True supports space {_SPACES_EXACT}, got {space!r}")
        self._space = space
        self._M = _int_param("M", M, 2)
        if self._M > 200:
            raise ValueError(f"Index: M must be <= 200, got {self._M}")
        self._ef_construction = _int_param("ef_construction", ef_construction, 1)
        self._ef = _int_param("ef", ef, 1)
        self._seed = _int_param("seed", seed, 0)
        capacity = _int_param("capacity", capacity, 1)
        self.num_threads = None if num_threads is None else _int_param("num_threads", num_threads, 1)
        self._live: set[int] = set()
        self._lock = _SharedLock(self._apply_ef)
        if self._exact:
            self._vecs = np.zeros((capacity, self._dim), dtype=np.float32)
            self._row_ids = np.zeros((capacity,), dtype=np.int64)
            self._row_of: dict[int, int] = {}
            self._hnsw = None
            # 'cosine': rows [0, n) of _vecs, normalised and packed (ops.CosineDatabase), or None
            # until the first query. Changed only under the write lock; built under a read lock
            # by the first query that needs it (_packed_mutex: one builder).
            self._packed = None
            self._packed_mutex = threading.Lock()
        else:
            import hnswlib

            self._hnsw = hnswlib.Index(space=space, dim=self._dim)
            self._hnsw.init_index(max_elements=capacity, M=self._M,
                                  ef_construction=self._ef_construction, random_seed=self._seed)
            self._hnsw.set_ef(self._ef)
            self._lock.key = self._ef
            self._deleted: set[int] = set()

    # ---- properties ---------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    @property
    def space(self) -> str:
        """``'cosine'``, ``'ip'`` or ``'l2'``."""
        return self._space

    @property
    def M(self) -> int:  # noqa: N802 - hnswlib's name
        """HNSW graph degree."""
        return self._M

    @property
    def ef_construction(self) -> int:
        """HNSW build-time candidate-list size."""
        return self._ef_construction

    @property
    def exact(self) -> bool:
        """True for the exact (matrix) back-end."""
        return self._exact

    @property
    def ef(self) -> int:
        """Default query-time candidate-list size (raised to ``k`` per query)."""
        return self._ef

    @ef.setter
    def ef(self, value: int) -> None:
        self._ef = _int_param("ef", value, 1)

    @property
    def capacity(self) -> int:
        """Slots allocated (live + deleted-but-kept + free)."""
        return self._vecs.shape[0] if self._exact else self._hnsw.get_max_elements()

    def config(self) -> dict:
        """The parameters that define this index (what the saved header records)."""
        return {"dim": self._dim, "space": self._space, "M": self._M,
                "ef_construction": self._ef_construction, "ef": self._ef, "exact": self._exact,
                "seed": self._seed}

    def __repr__(self) -> str:
        kind = "exact" if self._exact else f"hnsw M={self._M} ef_construction={self._ef_construction}"
        return (f"Index(dim={self._dim}, space={self._space!r}, {kind}, ef={self._ef}, "
                f"count={len(self)})")

    def _threads(self) -> int:
        return self.num_threads if self.num_threads is not None else _default_threads()

    def set_num_threads(self, n: int | None) -> None:
        """Threads for hnswlib's batched add/query; ``None`` follows ``pixrank.get_num_threads()``."""
        self.num_threads = None if n is None else _int_param("num_threads", n, 1)

    def _apply_ef(self, ef):
        self._hnsw.set_ef(ef)

    # ---- input conversion -----------------------------------------------------------

    def _as_vectors(self, vectors, what: str) -> np.ndarray:
        """(n, dim) float32 C-contiguous, finite; a no-op for such an array."""
        x = vectors
        if type(x) is not np.ndarray or x.dtype != np.float32 or not x.flags.c_contiguous:
            a = np.asarray(x)
            if a.dtype.kind not in "fiu":
                raise TypeError(f"Index.{what}: vectors must be real numbers, got dtype {a.dtype}")
            x = np.ascontiguousarray(a, dtype=np.float32)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        elif x.ndim != 2:
            raise ValueError(f"Index.{what}: vectors must be (n, {self._dim}) or ({self._dim},), "
                             f"got shape {x.shape}")
        if x.shape[1] != self._dim:
            raise ValueError(f"Index.{what}: vectors must have dim {self._dim}, got shape {x.shape}")
        if x.size and not math.isfinite(np.vdot(x, x)):  # NaN/inf propagate; overflow re-checked
            bad = np.argwhere(~np.isfinite(x))
            if bad.size:
                r, c = bad[0]
                raise ValueError(f"Index.{what}: vectors must be finite, got {x[r, c]} at "
                                 f"row {r}, column {c}")
        return x

    # ---- size and membership ---------------------------------------------------------

    def __len__(self) -> int:
        """Number of live (not deleted) vectors."""
        return len(self._live)

    def __contains__(self, id_) -> bool:
        try:
            return int(id_) in self._live
        except (TypeError, ValueError):
            return False

    def ids(self) -> np.ndarray:
        """The live ids, sorted ascending, int64 ``(len,)``."""
        self._lock.acquire_read()
        try:
            return np.sort(np.fromiter(self._live, dtype=np.int64, count=len(self._live)))
        finally:
            self._lock.release_read()

    # ---- mutation ---------------------------------------------------------------------

    def add(self, vectors, ids) -> None:
        """Add vectors under ids; an id already present gets its vector replaced.

        Args:
            vectors: ``(n, dim)`` (or ``(dim,)`` for one), any real dtype (stored float32).
            ids: ``(n,)`` distinct non-negative integers.

        Raises:
            ValueError: wrong shape or dimension, a NaN/inf component, ``len(ids) != n``,
                negative ids, or an id repeated within the call (each named).
            TypeError: non-numeric vectors or non-integer ids.
        """
        x = self._as_vectors(vectors, "add")
        ids = _as_ids(ids, "add")
        if ids.shape[0] != x.shape[0]:
            raise ValueError(f"Index.add: got {x.shape[0]} vectors but {ids.shape[0]} ids")
        if ids.size == 0:
            return
        uniq, counts = np.unique(ids, return_counts=True)
        if uniq.size != ids.size:
            dups = uniq[counts > 1][:10].tolist()
            raise ValueError(f"Index.add: ids repeated within one call: {dups}")
        id_list = ids.tolist()
        self._lock.acquire_write()
        try:
            if self._exact:
                self._add_exact(x, ids, id_list)
            else:
                self._add_hnsw(x, ids, id_list)
        finally:
            self._lock.release_write()

    def _add_hnsw(self, x, ids, id_list):
        live, deleted = self._live, self._deleted
        if deleted:  # (no union: copying the id sets would cost O(len) per call)
            n_new = sum(1 for i in id_list if i not in live and i not in deleted)
        else:
            n_new = sum(1 for i in id_list if i not in live)
        need = self._hnsw.element_count + n_new
        cap = self._hnsw.get_max_elements()
        if need > cap:
            self._hnsw.resize_index(max(need, 2 * cap))
        self._hnsw.add_items(x, ids.astype(np.uint64), num_threads=self._threads())
        self._live.update(id_list)
        if self._deleted:
            self._deleted.difference_update(id_list)

    def _add_exact(self, x, ids, id_list):
        row_of = self._row_of
        n = len(row_of)
        rows = np.empty(len(id_list), dtype=np.int64)
        nxt = n
        for j, i in enumerate(id_list):
            r = row_of.get(i)
            if r is None:
                r = nxt
                nxt += 1
            rows[j] = r
        if nxt > self._vecs.shape[0]:
            cap = max(nxt, 2 * self._vecs.shape[0])
            vecs = np.zeros((cap, self._dim), dtype=np.float32)
            vecs[:n] = self._vecs[:n]
            rids = np.zeros((cap,), dtype=np.int64)
            rids[:n] = self._row_ids[:n]
            self._vecs, self._row_ids = vecs, rids
        self._vecs[rows] = x
        self._row_ids[rows] = ids
        for i, r in zip(id_list, rows.tolist()):
            row_of[i] = r
        self._live.update(id_list)
        if self._packed is not None:
            try:
                old = rows < n  # replaced vectors; the others are rows n .. nxt-1 in order
                if old.any():
                    self._packed.replace(rows[old], x[old])
                if nxt > n:
                    self._packed.append(self._vecs[n:nxt])
            except BaseException:
                self._packed = None  # rebuilt from _vecs at the next query
                raise

    def delete(self, ids) -> None:
        """Remove ids (all or nothing); deleted ids are never returned by :meth:`query`.

        Raises:
            KeyError: an id is not in the index (the message names the unknown ids; nothing
                is deleted).
        """
        ids = _as_ids(ids, "delete")
        id_list = list(dict.fromkeys(ids.tolist()))
        if not id_list:
            return
        self._lock.acquire_write()
        try:
            missing = [i for i in id_list if i not in self._live]
            if missing:
                raise KeyError(f"Index.delete: {len(missing)} id(s) not in the index: {missing[:10]}")
            if self._exact:
                filled = []  # rows that received the last row's vector
                for i in id_list:
                    r = self._row_of.pop(i)
                    last = len(self._row_of)  # row count after the pop
                    if r != last:
                        moved = int(self._row_ids[last])
                        self._vecs[r] = self._vecs[last]
                        self._row_ids[r] = moved
                        self._row_of[moved] = r
                        filled.append(r)
                    self._vecs[last] = 0.0
                if self._packed is not None:
                    n = len(self._row_of)
                    try:
                        keep = np.array(sorted({r for r in filled if r < n}), dtype=np.int64)
                        if keep.size:
                            self._packed.replace(keep, self._vecs[keep])
                        self._packed.truncate(n)
                    except BaseException:
                        self._packed = None
                        raise
            else:
                for i in id_list:
                    self._hnsw.mark_deleted(i)
                self._deleted.update(id_list)
            self._live.difference_update(id_list)
        finally:
            self._lock.release_write()

    def compact(self) -> None:
        """Rebuild the HNSW graph from the live vectors only, dropping deleted way-points.

        Costs a full rebuild (``O(n log n)`` distance computations); worthwhile after many
        deletions. For the exact back-end, shrinks the matrix to the live rows.
        """
        self._lock.acquire_write()
        try:
            if self._exact:
                n = len(self._row_of)
                cap = max(1, n)
                self._vecs = np.ascontiguousarray(self._vecs[:cap])
                self._row_ids = np.ascontiguousarray(self._row_ids[:cap])
                self._packed = None  # its spare capacity goes too; rebuilt at the next query
                return
            import hnswlib

            live = np.sort(np.fromiter(self._live, dtype=np.int64, count=len(self._live)))
            new = hnswlib.Index(space=self._space, dim=self._dim)
            new.init_index(max_elements=max(1, live.size), M=self._M,
                           ef_construction=self._ef_construction, random_seed=self._seed)
            if live.size:
                vecs = np.asarray(self._hnsw.get_items(live.astype(np.uint64)), dtype=np.float32)
                new.add_items(vecs, live.astype(np.uint64), num_threads=self._threads())
            new.set_ef(self._lock.key if self._lock.key is not None else self._ef)
            self._hnsw = new
            self._deleted = set()
        finally:
            self._lock.release_write()

    # ---- reading ------------------------------------------------------------------------

    def get_vectors(self, ids) -> np.ndarray:
        """The stored vectors of ``ids``, float32 ``(n, dim)`` in the order given.

        For the HNSW ``'cosine'`` space these are L2-normalised (hnswlib normalises on add).

        Raises:
            KeyError: an id is not in the index.
        """
        ids = _as_ids(ids, "get_vectors")
        self._lock.acquire_read()
        try:
            missing = [i for i in ids.tolist() if i not in self._live]
            if missing:
                raise KeyError(f"Index.get_vectors: {len(missing)} id(s) not in the index: {missing[:10]}")
            if ids.size == 0:
                return np.empty((0, self._dim), dtype=np.float32)
            if self._exact:
                rows = [self._row_of[i] for i in ids.tolist()]
                return self._vecs[rows].copy()
            return np.asarray(self._hnsw.get_items(ids.astype(np.uint64)), dtype=np.float32)
        finally:
            self._lock.release_read()

    def query(self, vectors, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest live vectors to each query, best first.

        Args:
            vectors: ``(q, dim)`` queries, or one ``(dim,)`` query (treated as ``q = 1``);
                float32 C-contiguous input is used without a copy.
            k: neighbours per query, an int ``>= 1``; more than ``len(self)`` returns
                ``len(self)`` columns.
            ef: HNSW candidate-list size for this call (default :attr:`ef`), raised to at
                least ``k``; ignored by the exact back-end.

        Returns:
            ``(ids, scores)``: int64 ``(q, k')`` and float32 ``(q, k')`` with
            ``k' = min(k, len(self))``, scores descending (see the module docstring for the
            score of each space); an empty index gives ``(q, 0)`` arrays.

        Raises:
            ValueError: ``k < 1`` or ``ef < 1``, wrong shape or dimension, NaN/inf in a query.
            TypeError: ``k``/``ef`` not an int, non-numeric vectors.
        """
        if type(k) is not int:
            k = _int_param("k", k, 1)
        elif k < 1:
            raise ValueError(f"Index.query: k must be >= 1, got {k}")
        x = vectors
        if (type(x) is not np.ndarray or x.dtype is not _F32 or x.ndim != 2
                or not x.flags.c_contiguous or x.shape[1] != self._dim
                or not math.isfinite(np.vdot(x, x))):
            x = self._as_vectors(vectors, "query")  # converts, or raises naming the problem
        if ef is None:
            ef = self._ef
        elif type(ef) is not int or ef < 1:
            ef = _int_param("ef", ef, 1)
        if self._exact:
            return self._query_exact(x, k)
        if x.shape[0] == 0:
            kk = min(k, len(self._live))
            return np.empty((0, kk), np.int64), np.empty((0, kk), np.float32)
        lock = self._lock
        kk = min(k, len(self._live))
        key = ef if ef > kk else kk
        lock.acquire_read(key)
        try:
            kk = min(k, len(self._live))  # may have changed while waiting
            if kk == 0:
                return (np.empty((x.shape[0], 0), np.int64), np.empty((x.shape[0], 0), np.float32))
            if kk > key:  # grew while waiting: re-enter with a larger ef
                lock.release_read()
                lock = None
                return self.query(x, k, ef)
            try:
                labels, dist = self._hnsw.knn_query(
                    x, k=kk, num_threads=1 if x.shape[0] <= 4 else self._threads())
            except RuntimeError:
                # hnswlib found fewer than k live elements (many deletions): rank exactly
                return self._query_bruteforce(x, kk)
        finally:
            if lock is not None:
                lock.release_read()
        if self._space == "l2":
            np.negative(dist, out=dist)
        else:
            np.subtract(_ONE, dist, out=dist)
        return labels.view(np.int64), dist

    def _query_exact(self, x, k):
        self._lock.acquire_read()
        try:
            n = len(self._row_of)
            kk = min(k, n)
            if kk == 0 or x.shape[0] == 0:
                return (np.empty((x.shape[0], kk), np.int64), np.empty((x.shape[0], kk), np.float32))
            if self._space == "cosine":
                from pixrank.ops import cosine_topk

                rows, scores = cosine_topk(x, self._prepared(n), kk)
            else:
                rows, scores = _topk_desc(x @ self._vecs[:n].T, kk)
            ids = self._row_ids[rows]
        finally:
            self._lock.release_read()
        return ids.astype(np.int64, copy=False), np.ascontiguousarray(scores, dtype=np.float32)

    def _prepared(self, n):
        """The packed database of rows [0, n) (caller holds the read lock), built on first use."""
        packed = self._packed
        if packed is None or len(packed) != n:
            with self._packed_mutex:
                packed = self._packed
                if packed is None or len(packed) != n:  # (a mismatch would be a bug: rebuild)
                    from pixrank.ops import CosineDatabase

                    packed = CosineDatabase(dim=self._dim)
                    packed.reserve(self._vecs.shape[0])
                    packed.append(self._vecs[:n])
                    self._packed = packed
        return packed

    def _query_bruteforce(self, x, kk):
        """Exact ranking over the live HNSW vectors (the fallback when the graph runs dry)."""
        live = np.sort(np.fromiter(self._live, dtype=np.int64, count=len(self._live)))
        db = np.asarray(self._hnsw.get_items(live.astype(np.uint64)), dtype=np.float32)
        if self._space == "cosine":
            qn = np.linalg.norm(x, axis=1, keepdims=True)
            s = (x / np.where(qn > 0, qn, 1)) @ db.T  # db already normalised by hnswlib
        elif self._space == "ip":
            s = x @ db.T
        else:
            s = -(np.sum(x * x, 1)[:, None] - 2 * (x @ db.T) + np.sum(db * db, 1)[None, :])
        order, scores = _topk_desc(s.astype(np.float32), kk)
        return live[order], np.ascontiguousarray(scores, dtype=np.float32)

    # ---- persistence ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to folder ``path`` (created if missing) atomically.

        Data files are written under fresh names, flushed, then the header ``index.json`` is
        written to a temporary name and renamed over the old one; files of earlier saves are
        removed afterwards. Queries may run during a save; mutations wait for it.

        Raises:
            NotADirectoryError: ``path`` exists and is not a folder.
            OSError: the folder cannot be written.
        """
        path = os.fspath(path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise NotADirectoryError(f"Index.save: {path!r} exists and is not a folder")
        os.makedirs(path, exist_ok=True)
        token = secrets.token_hex(6)
        written: list[str] = []
        try:
            files, header = self._write_data(path, token, written)
            for role, name in files.items():
                p = os.path.join(path, name)
                header["files"][role] = {"name": name, "size": os.path.getsize(p),
                                         "sha256": _sha256_file(p)}
            tmp = os.path.join(path, f".{HEADER_NAME}.{token}.tmp")
            written.append(tmp)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(header, f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(path, HEADER_NAME))
        except BaseException:
            for p in written:
                try:
                    os.remove(p)
                except OSError:
                    pass
            raise
        _fsync_dir(path)
        keep = set(files.values())
        for name in os.listdir(path):  # files of older saves, stale temporaries
            if name in keep:
                continue
            if ((name.startswith(("hnsw-", "vectors-", "ids-")) and name.endswith((".bin", ".npy")))
                    or (name.startswith(f".{HEADER_NAME}.") and name.endswith(".tmp"))):
                try:
                    os.remove(os.path.join(path, name))
                except OSError:
                    pass

    def _write_data(self, path, token, written):
        """Write the data files of a save under fresh names (appended to ``written``)."""
        self._lock.acquire_read()
        try:
            files = {}
            live = np.sort(np.fromiter(self._live, dtype=np.int64, count=len(self._live)))
            if self._exact:
                rows = np.array([self._row_of[i] for i in live.tolist()], dtype=np.int64)
                parts = {"vectors": (f"vectors-{token}.npy", self._vecs[rows] if rows.size
                                     else np.zeros((0, self._dim), np.float32)),
                         "ids": (f"ids-{token}.npy", live)}
            else:
                graph = f"hnsw-{token}.bin"
                gpath = os.path.join(path, graph)
                written.append(gpath)
                self._hnsw.save_index(gpath)
                _fsync_file(gpath)
                files["graph"] = graph
                parts = {"ids": (f"ids-{token}.npy", live)}
            for role, (name, arr) in parts.items():
                p = os.path.join(path, name)
                written.append(p)
                with open(p, "wb") as f:
                    np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())
                files[role] = name
            header = {"magic": INDEX_MAGIC, "format_version": INDEX_FORMAT_VERSION,
                      **self.config(), "count": int(live.size), "capacity": int(self.capacity),
                      "saved": time.time(), "files": {}}
            if not self._exact:
                header["elements"] = int(self._hnsw.element_count)  # live + deleted way-points
                header["hnswlib_version"] = _hnswlib_version()
            return files, header
        finally:
            self._lock.release_read()

    @staticmethod
    def read_header(path: str | os.PathLike) -> dict:
        """The validated JSON header of a saved index folder (no data is loaded).

        Raises:
            FileNotFoundError: the folder or its ``index.json`` is missing.
            ValueError: the header is not valid JSON, has the wrong magic or an unsupported
                format version, or lacks a field.
        """
        path = os.fspath(path)
        if not os.path.isdir(path):
            if os.path.exists(path):
                raise NotADirectoryError(f"Index.load: {path!r} is a file; give the index folder that "
                                         f"Index.save wrote")
            raise FileNotFoundError(f"Index.load: index folder {path!r} does not exist")
        hp = os.path.join(path, HEADER_NAME)
        if not os.path.isfile(hp):
            raise FileNotFoundError(f"Index.load: {hp!r} is missing (not a saved pixrank index)")
        try:
            with open(hp, "r", encoding="utf-8") as f:
                header = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"Index.load: {hp!r} is not a valid index header: {e}") from None
        if not isinstance(header, dict) or header.get("magic") != INDEX_MAGIC:
            got = header.get("magic") if isinstance(header, dict) else type(header).__name__
            raise ValueError(f"Index.load: {hp!r} is not a pixrank index header "
                             f"(magic {got!r}, expected {INDEX_MAGIC!r})")
        ver = header.get("format_version")
        if ver != INDEX_FORMAT_VERSION:
            raise ValueError(f"Index.load: {hp!r} has format version {ver!r}; this pixrank reads "
                             f"version {INDEX_FORMAT_VERSION}")
        need = {"dim": int, "space": str, "M": int, "ef_construction": int, "ef": int,
                "exact": bool, "count": int, "capacity": int, "files": dict}
        for key, typ in need.items():
            if key not in header:
                raise ValueError(f"Index.load: {hp!r} lacks the field {key!r}")
            v = header[key]
            if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
                raise ValueError(f"Index.load: {hp!r} field {key!r} must be {typ.__name__}, got {v!r}")
        return header

    @classmethod
    def load(cls, path: str | os.PathLike, *, num_threads: int | None = None) -> "Index":
        """Load an index saved by :meth:`save`.

        Raises:
            FileNotFoundError: the folder, its header or a data file is missing.
            ValueError: wrong magic or format version; a data file whose size or sha256
                differs from the header (truncated or corrupt); files that disagree with the
                header (dimension, count, M, space...). The message names what disagrees.
        """
        path = os.fspath(path)
        h = cls.read_header(path)
        try:
            ix = cls(h["dim"], space=h["space"], M=h["M"], ef_construction=h["ef_construction"],
                     ef=h["ef"], exact=h["exact"], capacity=1,
                     seed=h.get("seed", 100), num_threads=num_threads)
        except (TypeError, ValueError) as e:
            raise ValueError(f"Index.load: {path!r} has an invalid header: {e}") from None
        roles = ("vectors", "ids") if h["exact"] else ("graph", "ids")
        paths = {}
        for role in roles:
            entry = h["files"].get(role)
            if not isinstance(entry, dict) or not all(k in entry for k in ("name", "size", "sha256")):
                raise ValueError(f"Index.load: {path!r} header lacks the {role!r} file entry")
            name = entry["name"]
            if not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", ".."):
                raise ValueError(f"Index.load: {path!r} header has a bad file name {name!r}")
            p = os.path.join(path, name)
            if not os.path.isfile(p):
                raise FileNotFoundError(f"Index.load: {p!r} ({role}) is missing")
            size = os.path.getsize(p)
            if size != entry["size"]:
                raise ValueError(f"Index.load: {p!r} ({role}) has {size} bytes, the header says "
                                 f"{entry['size']} (truncated or replaced)")
            digest = _sha256_file(p)
            if digest != entry["sha256"]:
                raise ValueError(f"Index.load: {p!r} ({role}) is corrupt: sha256 {digest[:16]}... "
                                 f"differs from the header's {str(entry['sha256'])[:16]}...")
            paths[role] = p
        ids = cls._load_npy(paths["ids"], "ids")
        if ids.ndim != 1 or ids.dtype != np.int64:
            raise ValueError(f"Index.load: {paths['ids']!r} must hold int64 (n,), got {ids.dtype} {ids.shape}")
        if ids.shape[0] != h["count"]:
            raise ValueError(f"Index.load: {paths['ids']!r} holds {ids.shape[0]} ids, the header "
                             f"says count {h['count']}")
        if ids.size and (ids.min() < 0 or np.unique(ids).size != ids.size):
            raise ValueError(f"Index.load: {paths['ids']!r} holds negative or repeated ids")
        id_list = ids.tolist()
        if h["exact"]:
            vecs = cls._load_npy(paths["vectors"], "vectors")
            if vecs.dtype != np.float32 or vecs.ndim != 2 or vecs.shape != (h["count"], h["dim"]):
                raise ValueError(f"Index.load: {paths['vectors']!r} holds {vecs.dtype} {vecs.shape}, "
                                 f"the header says float32 ({h['count']}, {h['dim']})")
            if not np.isfinite(vecs).all():
                raise ValueError(f"Index.load: {paths['vectors']!r} holds NaN/inf")
            cap = max(1, h["count"], h["capacity"])
            ix._vecs = np.zeros((cap, h["dim"]), np.float32)
            ix._vecs[: h["count"]] = vecs
            ix._row_ids = np.zeros((cap,), np.int64)
            ix._row_ids[: h["count"]] = ids
            ix._row_of = {i: r for r, i in enumerate(id_list)}
            ix._live = set(id_list)
            return ix
        cls._check_hnsw_file(paths["graph"], h)
        import hnswlib

        ix._hnsw = hnswlib.Index(space=h["space"], dim=h["dim"])
        try:
            ix._hnsw.load_index(paths["graph"], max_elements=0)
        except RuntimeError as e:
            raise ValueError(f"Index.load: hnswlib cannot read {paths['graph']!r}: {e}") from None
        if ix._hnsw.dim != h["dim"] or ix._hnsw.space != h["space"]:
            raise ValueError(f"Index.load: {paths['graph']!r} is a {ix._hnsw.space} index of dim "
                             f"{ix._hnsw.dim}, the header says {h['space']} dim {h['dim']}")
        labels = set(int(v) for v in ix._hnsw.get_ids_list())
        live = set(id_list)
        if not live <= labels:
            extra = sorted(live - labels)[:10]
            raise ValueError(f"Index.load: ids {extra} are listed live but are not in the graph")
        ix._live = live
        ix._deleted = labels - live
        ix._hnsw.set_ef(ix._ef)
        ix._lock.key = ix._ef
        return ix

    @classmethod
    def from_hnswlib(cls, index, *, ef: int | None = None, seed: int = 100,
                     num_threads: int | None = None) -> "Index":
        """Wrap an existing ``hnswlib.Index`` (built or loaded by raw hnswlib) without a copy.

        The returned :class:`Index` searches, extends and deletes in that very graph, so results
        equal raw hnswlib's for the same ``k`` and ``ef``. It takes the object over: do not use
        ``index`` directly afterwards (its ``ef`` and its elements are then the Index's state,
        kept consistent under the Index's lock; a direct ``set_ef``, ``add_items`` or
        ``mark_deleted`` would go unseen).

        Live and deleted elements are told apart by reading every stored vector once
        (hnswlib's ``get_items`` refuses deleted labels), in blocks of 4,096: ``O(n * dim)``
        memory traffic, about 0.1 s for 100k vectors of 128 floats.

        Args:
            index: an initialised (``init_index`` or ``load_index``) ``hnswlib.Index``, any
                space (``'cosine'``, ``'ip'``, ``'l2'``), ``M`` within 2..200.
            ef: the default query ``ef`` (default: the index's current ``ef``).
            seed: recorded as the Index's seed (used by :meth:`compact` to rebuild; hnswlib
                does not expose the seed the graph was built with).
            num_threads: as for :class:`Index`.

        Raises:
            TypeError: ``index`` is not an ``hnswlib.Index``.
            ValueError: the index is not initialised, has another space, or parameters
                outside :class:`Index`'s ranges (``M`` 2..200).
        """
        import hnswlib

        if not isinstance(index, hnswlib.Index):
            raise TypeError(f"Index.from_hnswlib: index must be an hnswlib.Index, got {type(index).__name__}")
        # the read-only properties are safe on an uninitialised index (0 there); its methods
        # (get_max_elements, get_ids_list, ...) crash the process, so check first
        if int(index.max_elements) < 1:
            raise ValueError("Index.from_hnswlib: the hnswlib index is not initialised (call init_index "
                             "or load_index first)")
        space, dim = index.space, int(index.dim)
        m, efc, cur_ef = int(index.M), int(index.ef_construction), int(index.ef)
        if space not in _SPACES_HNSW:
            raise ValueError(f"Index.from_hnswlib: space must be one of {_SPACES_HNSW}, got {space!r}")
        try:
            ix = cls(dim, space=space, M=m, ef_construction=efc, ef=cur_ef if ef is None else ef,
                     capacity=1, seed=seed, num_threads=num_threads)
        except (TypeError, ValueError) as e:
            raise ValueError(f"Index.from_hnswlib: unsupported hnswlib index: {e}") from None
        labels = np.asarray(index.get_ids_list(), dtype=np.uint64)
        live_parts, deleted = [], []
        for s0 in range(0, labels.size, 4096):
            block = labels[s0:s0 + 4096]
            try:
                index.get_items(block)
                live_parts.append(block)
            except RuntimeError:  # a deleted label in the block: sort them out one by one
                for lab in block.tolist():
                    try:
                        index.get_items([lab])
                        live_parts.append(np.array([lab], np.uint64))
                    except RuntimeError:
                        deleted.append(lab)
        live = np.concatenate(live_parts).view(np.int64) if live_parts else _EMPTY_IDS
        if live.size and live.min() < 0:
            raise ValueError("Index.from_hnswlib: the hnswlib index has labels above 2**63 - 1 "
                             "(Index ids are int64)")
        ix._hnsw = index
        ix._live = set(live.tolist())
        ix._deleted = set(deleted)
        index.set_ef(ix._ef)
        ix._lock.key = ix._ef
        return ix

    @staticmethod
    def _load_npy(p, role):
        try:
            return np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"Index.load: {p!r} ({role}) is not a valid .npy file: {e}") from None

    @staticmethod
    def _check_hnsw_file(p, h):
        """Check hnswlib's own header against ours before hnswlib parses the file."""
        size = os.path.getsize(p)
        if size < _HNSW_HEADER.size:
            raise ValueError(f"Index.load: {p!r} is too short ({size} bytes) to be an hnswlib index")
        with open(p, "rb") as f:
            (off0, max_el, count, per_el, label_off, data_off, _maxlevel, enter, _maxM, _maxM0, M,
             _mult, efc) = _HNSW_HEADER.unpack(f.read(_HNSW_HEADER.size))
        problems = []
        if label_off - data_off != 4 * h["dim"]:
            problems.append(f"vector bytes {label_off - data_off} != 4 * dim {h['dim']}")
        if per_el != label_off + _HNSW_LABEL_BYTES or off0 != 0:
            problems.append("element layout")
        if M != h["M"]:
            problems.append(f"M {M} != {h['M']}")
        if efc != h["ef_construction"]:
            problems.append(f"ef_construction {efc} != {h['ef_construction']}")
        if "elements" in h and count != h["elements"]:
            problems.append(f"element count {count} != {h['elements']}")
        if count < h["count"] or count > max_el:
            problems.append(f"element count {count} vs live count {h['count']} and capacity {max_el}")
        if count and enter >= count:
            problems.append(f"entry point {enter} out of range")
        if size < _HNSW_HEADER.size + count * (per_el + 4):
            problems.append(f"file size {size} too small for {count} elements")
        if problems:
            raise ValueError(f"Index.load: {p!r} disagrees with the header: " + "; ".join(problems))
