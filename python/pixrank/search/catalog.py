"""The catalog: per-item metadata in SQLite, and the incremental folder-scan planner.

A :class:`Catalog` is one SQLite file (the standard library's :mod:`sqlite3`, WAL journal)
with two tables::

    meta(key TEXT PRIMARY KEY, value TEXT)         magic = 'pixrank-catalog', schema_version
    items(id INTEGER PRIMARY KEY,                  the id the Index stores with the vector
          source TEXT NOT NULL UNIQUE,             absolute file path, or a data-set key such
                                                   as 'fashion-mnist:test:123'
          size INTEGER, mtime REAL,                file size (bytes), modification time (s)
          sha256 TEXT,                             hex digest of the file's bytes
          label_id INTEGER, label TEXT,            class id and name, where known
          caption TEXT,
          width INTEGER, height INTEGER,           pixels (after EXIF orientation)
          added REAL NOT NULL)                     when the row was first inserted (s, epoch)

Every write is one transaction: a batch that fails (a duplicate source, a bad value) leaves
the catalog as it was. Opening a file that is not a pixrank catalog (another SQLite
database, a corrupt file, a file that is not SQLite) raises ValueError and never modifies
it. One ``Catalog`` object may be used from several threads (calls are serialised).

:func:`plan_folder` compares a folder of image files with the catalog and says what to do:
which files are new, which changed (re-embed), which are unchanged (skip: decided from size
and modification time alone, without reading the file; the sha256 is computed only when one
of them differs) and which catalogued files vanished (remove from index and catalog).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from contextlib import contextmanager

import numpy as np

__all__ = ["Catalog", "CatalogRecord", "FolderPlan", "plan_folder", "file_record", "sha256_file",
           "source_for_path", "CATALOG_MAGIC", "SCHEMA_VERSION", "IMAGE_EXTENSIONS"]

CATALOG_MAGIC = "pixrank-catalog"
SCHEMA_VERSION = 1
#: file extensions :func:`plan_folder` picks up by default (compared case-insensitively)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

_COLUMNS = ("id", "source", "size", "mtime", "sha256", "label_id", "label", "caption",
            "width", "height", "added")
_TYPES = {"id": int, "source": str, "size": int, "mtime": float, "sha256": str, "label_id": int,
          "label": str, "caption": str, "width": int, "height": int, "added": float}
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL UNIQUE,
    size INTEGER,
    mtime REAL,
    sha256 TEXT,
    label_id INTEGER,
    label TEXT,
    caption TEXT,
    width INTEGER,
    height INTEGER,
    added REAL NOT NULL
);
"""
_CHUNK = 900  # SQL variables per statement (SQLite's historical limit is 999)


@dataclasses.dataclass
class CatalogRecord:
    """One catalogued item (a row of ``items``); ``None`` where unknown."""

    id: int | None = None
    source: str | None = None
    size: int | None = None
    mtime: float | None = None
    sha256: str | None = None
    label_id: int | None = None
    label: str | None = None
    caption: str | None = None
    width: int | None = None
    height: int | None = None
    added: float | None = None

    def to_dict(self) -> dict:
        """The fields as a plain dict."""
        return dataclasses.asdict(self)


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_for_path(path: str | os.PathLike) -> str:
    """The catalog ``source`` of a file: its absolute, normalised path (symlinks kept)."""
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def file_record(path: str | os.PathLike, sha256: str | None = None) -> dict:
    """A partial catalog record for a file: source, size, mtime and sha256.

    Args:
        path: the file.
        sha256: its digest when already known (skips reading the file).

    Raises:
        FileNotFoundError / OSError: the file cannot be read.
    """
    st = os.stat(path)
    return {"source": source_for_path(path), "size": int(st.st_size), "mtime": float(st.st_mtime),
            "sha256": sha256 if sha256 is not None else sha256_file(path)}


def _normalise_record(rec, i: int) -> dict:
    if isinstance(rec, CatalogRecord):
        d = rec.to_dict()
        if d["added"] is None:
            del d["added"]
    elif isinstance(rec, Mapping):
        d = dict(rec)
    else:
        raise TypeError(f"Catalog.upsert: record {i} must be a CatalogRecord or a mapping, "
                        f"got {type(rec).__name__}")
    unknown = set(d) - set(_COLUMNS)
    if unknown:
        raise ValueError(f"Catalog.upsert: record {i} has unknown fields {sorted(unknown)}; "
                         f"known: {list(_COLUMNS)}")
    for key, value in d.items():
        if value is None:
            continue
        typ = _TYPES[key]
        if isinstance(value, np.generic):
            value = value.item()
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, typ) or isinstance(value, bool):
            raise TypeError(f"Catalog.upsert: record {i} field {key!r} must be {typ.__name__}, "
                            f"got {type(value).__name__} {value!r}")
        d[key] = value
    if d.get("id") is not None and d["id"] < 0:
        raise ValueError(f"Catalog.upsert: record {i} has a negative id {d['id']}")
    if d.get("source") == "":
        raise ValueError(f"Catalog.upsert: record {i} has an empty source")
    return d


class Catalog:
    """Item metadata in one SQLite file (see the module docstring for the schema).

    Args:
        path: the database file, or ``':memory:'``.
        create: create a new catalog when ``path`` is missing or an empty file (default);
            with ``False`` (what :meth:`open` does) a missing file raises FileNotFoundError.

    Raises:
        FileNotFoundError: ``create=False`` and the file is missing.
        ValueError: the file exists but is not a pixrank catalog (not SQLite, corrupt, other
            tables, wrong magic) or has a newer schema version than this pixrank reads.

    Example:
        >>> with Catalog(":memory:") as cat:
        ...     cat.upsert([{"id": 7, "source": "fashion-mnist:test:7", "label": "sneaker"}])
        ...     cat.get([7])[0].label
        [7]
        'sneaker'
    """

    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = os.fspath(path)
        self._lock = threading.RLock()
        memory = self.path == ":memory:"
        exists = not memory and os.path.exists(self.path)
        if exists and os.path.isdir(self.path):
            raise ValueError(f"Catalog: {self.path!r} is a folder, expected a catalog file")
        if not memory and not exists and not create:
            raise FileNotFoundError(f"Catalog: {self.path!r} does not exist")
        empty = memory or not exists or os.path.getsize(self.path) == 0
        if empty and not create:
            raise ValueError(f"Catalog: {self.path!r} is empty, not a pixrank catalog")
        if exists and not empty:
            self._check_header(self.path)
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                         timeout=30.0)
        except sqlite3.Error as e:
            raise ValueError(f"Catalog: cannot open {self.path!r}: {e}") from None
        try:
            if not memory:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            if empty:
                with self._tx():
                    for stmt in _SCHEMA.strip().split(";"):
                        if stmt.strip():
                            self._conn.execute(stmt)
                    self._conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                                           [("magic", CATALOG_MAGIC),
                                            ("schema_version", str(SCHEMA_VERSION)),
                                            ("created", repr(time.time()))])
            self._schema_version = int(self.get_meta("schema_version"))
        except sqlite3.DatabaseError as e:
            self._conn.close()
            raise ValueError(f"Catalog: {self.path!r} is not a usable pixrank catalog: {e}") from None

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Catalog":
        """Open an existing catalog (never creates one).

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: ``path`` is not a pixrank catalog (see the class docstring).
        """
        return cls(path, create=False)

    @classmethod
    def open_copy(cls, path: str | os.PathLike) -> "Catalog":
        """An in-memory copy of an existing catalog file; the file is only read.

        Changes made to the copy never reach ``path``: write them with :meth:`backup`. This is
        what :meth:`pixrank.search.engine.Engine.load` uses, so that indexing into a loaded
        engine and then stopping (an exception, Ctrl-C, a crash) before ``Engine.save`` leaves
        the engine folder exactly as it was, its catalog still agreeing with its index.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: ``path`` is not a pixrank catalog (see the class docstring).
        """
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"Catalog: {path!r} does not exist")
        if os.path.isdir(path):
            raise ValueError(f"Catalog: {path!r} is a folder, expected a catalog file")
        if os.path.getsize(path) == 0:
            raise ValueError(f"Catalog: {path!r} is empty, not a pixrank catalog")
        cls._check_header(path)
        self = cls.__new__(cls)
        self.path = ":memory:"
        self.copied_from = os.path.abspath(path)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        try:
            src = sqlite3.connect("file:" + _uri_path(path) + "?mode=ro", uri=True, check_same_thread=False)
            try:
                src.backup(self._conn)
            finally:
                src.close()
            self._schema_version = int(self.get_meta("schema_version"))
        except sqlite3.DatabaseError as e:
            self._conn.close()
            raise ValueError(f"Catalog: {path!r} is not a usable pixrank catalog: {e}") from None
        return self

    @staticmethod
    def _check_header(path: str) -> None:
        """Validate an existing file read-only, before anything writes to it."""
        with open(path, "rb") as f:
            head = f.read(16)
        if head != b"SQLite format 3\x00":
            raise ValueError(f"Catalog: {path!r} is not a pixrank catalog (not an SQLite database)")
        uri = "file:" + _uri_path(path) + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.Error as e:
            raise ValueError(f"Catalog: cannot open {path!r}: {e}") from None
        try:
            ok = conn.execute("PRAGMA quick_check").fetchone()
            if not ok or ok[0] != "ok":
                raise ValueError(f"Catalog: {path!r} is corrupt (SQLite quick_check: {ok[0] if ok else None})")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"meta", "items"} <= tables:
                raise ValueError(f"Catalog: {path!r} is an SQLite database but not a pixrank catalog "
                                 f"(tables {sorted(tables)})")
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("magic") != CATALOG_MAGIC:
                raise ValueError(f"Catalog: {path!r} is not a pixrank catalog (magic {meta.get('magic')!r})")
            try:
                ver = int(meta.get("schema_version", ""))
            except ValueError:
                raise ValueError(f"Catalog: {path!r} has a bad schema_version "
                                 f"{meta.get('schema_version')!r}") from None
            if ver != SCHEMA_VERSION:
                raise ValueError(f"Catalog: {path!r} has schema version {ver}; this pixrank reads "
                                 f"version {SCHEMA_VERSION}")
            cols = [r[1] for r in conn.execute("PRAGMA table_info(items)")]
            if set(cols) != set(_COLUMNS):
                raise ValueError(f"Catalog: {path!r} items table has columns {cols}, expected {list(_COLUMNS)}")
        except sqlite3.DatabaseError as e:
            raise ValueError(f"Catalog: {path!r} is not a pixrank catalog or is corrupt: {e}") from None
        finally:
            conn.close()

    # ---- plumbing ----------------------------------------------------------------------

    @contextmanager
    def _tx(self):
        """One IMMEDIATE transaction; rolled back on any exception."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self, "_conn", None)
        if conn is None:
            raise ValueError(f"Catalog {self.path!r} is closed")
        return conn

    def _query(self, sql, params=()):
        with self._lock:
            return self._connection().execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the database (checkpoints the WAL). Further calls raise ValueError."""
        with self._lock:
            conn = getattr(self, "_conn", None)
            if conn is not None:
                self._conn = None
                conn.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if getattr(self, "_conn", None) is None else f"{len(self)} items"
        return f"Catalog({self.path!r}, {state})"

    # ---- meta ----------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        """The schema version of this catalog's file."""
        return self._schema_version

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """A value of the ``meta`` table (strings), or ``default``."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def set_meta(self, key: str, value: str) -> None:
        """Set a ``meta`` value (e.g. the model that embedded the items); ``magic`` and
        ``schema_version`` are reserved.

        Raises:
            ValueError: a reserved key. TypeError: key or value not a str.
        """
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("Catalog.set_meta: key and value must be str")
        if key in ("magic", "schema_version"):
            raise ValueError(f"Catalog.set_meta: {key!r} is reserved")
        with self._tx() as c:
            c.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                      "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # ---- items -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._query("SELECT COUNT(*) FROM items")[0][0]

    def __contains__(self, id_) -> bool:
        try:
            i = int(id_)
        except (TypeError, ValueError):
            return False
        return bool(self._query("SELECT 1 FROM items WHERE id = ?", (i,)))

    def ids(self) -> np.ndarray:
        """All ids, sorted, int64 ``(n,)``."""
        rows = self._query("SELECT id FROM items ORDER BY id")
        return np.array([r[0] for r in rows], dtype=np.int64)

    def sources(self) -> list[str]:
        """All sources, in id order."""
        return [r[0] for r in self._query("SELECT source FROM items ORDER BY id")]

    def next_id(self) -> int:
        """One more than the largest id (0 for an empty catalog)."""
        return int(self._query("SELECT COALESCE(MAX(id) + 1, 0) FROM items")[0][0])

    def records(self) -> list[CatalogRecord]:
        """Every record, in id order."""
        cols = ", ".join(_COLUMNS)
        return [CatalogRecord(*r) for r in self._query(f"SELECT {cols} FROM items ORDER BY id")]

    def upsert(self, records: Iterable[CatalogRecord | Mapping]) -> list[int]:
        """Insert or update records, all in one transaction.

        A :class:`CatalogRecord` writes all of its fields. A mapping writes only the keys it
        has: on an existing row the other fields keep their values; on a new row they are
        NULL. A record is matched by ``id`` when it has one, else by ``source`` (a record
        without an id whose source is new gets the next free id). ``added`` is set to the
        current time on insertion unless given, and kept on update.

        Returns:
            The ids of the records, in order.

        Raises:
            ValueError: an unknown field, a new row without a source, a source already used
                by another id, a negative id (nothing is written).
            TypeError: a field of the wrong type.
        """
        recs = [_normalise_record(r, i) for i, r in enumerate(records)]
        if not recs:
            return []
        now = time.time()
        out: list[int] = []
        keys = tuple(recs[0])
        if ("id" in keys and "source" in keys and "added" not in keys
                and all(tuple(d) == keys and d["id"] is not None and d["source"] for d in recs)):
            # fast path (bulk loads): one executemany UPSERT keyed on id; on a conflict the
            # row-by-row path below reruns the batch to name the offending record
            cols = ", ".join(keys) + ", added"
            marks = ", ".join("?" * (len(keys) + 1))
            sets = ", ".join(f"{k} = excluded.{k}" for k in keys if k != "id")
            sql = f"INSERT INTO items ({cols}) VALUES ({marks}) ON CONFLICT(id) DO UPDATE SET {sets}"
            try:
                with self._tx() as c:
                    c.executemany(sql, [(*d.values(), now) for d in recs])
                return [d["id"] for d in recs]
            except sqlite3.IntegrityError:
                pass
        with self._tx() as c:
            try:
                for i, d in enumerate(recs):
                    rid = d.get("id")
                    if rid is None and d.get("source") is not None:
                        row = c.execute("SELECT id FROM items WHERE source = ?", (d["source"],)).fetchone()
                        if row is not None:
                            rid = row[0]
                    exists = rid is not None and c.execute(
                        "SELECT 1 FROM items WHERE id = ?", (rid,)).fetchone() is not None
                    fields = {k: v for k, v in d.items() if k != "id"}
                    if exists:
                        if fields:
                            sets = ", ".join(f"{k} = ?" for k in fields)
                            c.execute(f"UPDATE items SET {sets} WHERE id = ?", (*fields.values(), rid))
                    else:
                        if not fields.get("source"):
                            raise ValueError(f"Catalog.upsert: record {i} (id {rid}) is new and has no source")
                        fields.setdefault("added", now)
                        if fields["added"] is None:
                            fields["added"] = now
                        if rid is not None:
                            fields = {"id": rid, **fields}
                        cols = ", ".join(fields)
                        marks = ", ".join("?" * len(fields))
                        cur = c.execute(f"INSERT INTO items ({cols}) VALUES ({marks})", tuple(fields.values()))
                        rid = cur.lastrowid if rid is None else rid
                    out.append(int(rid))
            except sqlite3.IntegrityError as e:
                raise ValueError(f"Catalog.upsert: record {i} ({recs[i].get('source')!r}) conflicts: {e} "
                                 f"(a source may belong to only one id)") from None
        return out

    def get(self, ids, missing: str = "raise") -> list[CatalogRecord | None]:
        """The records of ``ids``, in the order given.

        Args:
            ids: an int or a sequence / array of ints.
            missing: ``'raise'`` (KeyError naming the unknown ids), ``'none'`` (None in their
                place) or ``'skip'`` (left out).

        Raises:
            KeyError: unknown ids with ``missing='raise'``.
        """
        if missing not in ("raise", "none", "skip"):
            raise ValueError(f"Catalog.get: missing must be 'raise', 'none' or 'skip', got {missing!r}")
        id_list = [int(i) for i in np.asarray(ids).reshape(-1).tolist()]
        found: dict[int, CatalogRecord] = {}
        cols = ", ".join(_COLUMNS)
        uniq = list(dict.fromkeys(id_list))
        with self._lock:
            conn = self._connection()
            for s in range(0, len(uniq), _CHUNK):
                part = uniq[s:s + _CHUNK]
                marks = ", ".join("?" * len(part))
                for r in conn.execute(f"SELECT {cols} FROM items WHERE id IN ({marks})", part):
                    found[r[0]] = CatalogRecord(*r)
        if missing == "raise":
            unknown = [i for i in uniq if i not in found]
            if unknown:
                raise KeyError(f"Catalog.get: {len(unknown)} id(s) not in the catalog: {unknown[:10]}")
        if missing == "skip":
            return [found[i] for i in id_list if i in found]
        return [found.get(i) for i in id_list]

    def get_by_source(self, source: str | os.PathLike) -> CatalogRecord | None:
        """The record whose source is ``source`` (a str key; a path-like is made absolute
        with :func:`source_for_path`), or None."""
        if not isinstance(source, str):
            source = source_for_path(source)
        cols = ", ".join(_COLUMNS)
        rows = self._query(f"SELECT {cols} FROM items WHERE source = ?", (source,))
        return CatalogRecord(*rows[0]) if rows else None

    def delete(self, ids, missing: str = "raise") -> int:
        """Delete ids in one transaction.

        Args:
            ids: an int or a sequence of ints.
            missing: ``'raise'`` (KeyError naming unknown ids; nothing is deleted) or
                ``'ignore'``.

        Returns:
            The number of rows deleted.
        """
        if missing not in ("raise", "ignore"):
            raise ValueError(f"Catalog.delete: missing must be 'raise' or 'ignore', got {missing!r}")
        id_list = list(dict.fromkeys(int(i) for i in np.asarray(ids).reshape(-1).tolist()))
        n = 0
        with self._tx() as c:
            for s in range(0, len(id_list), _CHUNK):
                part = id_list[s:s + _CHUNK]
                marks = ", ".join("?" * len(part))
                n += c.execute(f"DELETE FROM items WHERE id IN ({marks})", part).rowcount
            if missing == "raise" and n != len(id_list):
                raise KeyError(f"Catalog.delete: {len(id_list) - n} id(s) not in the catalog "
                               f"(nothing deleted)")
        return n

    def _file_rows(self, prefix: str) -> dict[str, tuple]:
        """source -> (id, size, mtime, sha256) for the sources under folder ``prefix``."""
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._query("SELECT source, id, size, mtime, sha256 FROM items "
                           "WHERE source LIKE ? ESCAPE '\\'", (like,))
        return {r[0]: r[1:] for r in rows if r[0].startswith(prefix)}

    def backup(self, path: str | os.PathLike) -> None:
        """Copy the catalog to ``path`` atomically (SQLite's online backup into a temporary
        file in the same folder, then ``os.replace``)."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            dst = sqlite3.connect(tmp)
            try:
                with self._lock:
                    self._connection().backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise


def _uri_path(path: str) -> str:
    from urllib.parse import quote

    return quote(os.path.abspath(path))


# --------------------------------------------------------------------------------------
# incremental folder scan
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class FolderPlan:
    """What :func:`plan_folder` found; unpacks as ``(new, changed, unchanged, vanished)``.

    Attributes:
        new: paths (absolute, sorted) not in the catalog.
        changed: ``(path, id)`` for catalogued files whose content changed.
        unchanged: ids of catalogued files whose content is the same (size and mtime equal,
            or those changed but the sha256 is equal: a "touched" file).
        vanished: ids of catalogued files under the folder that no longer exist (or no longer
            match the extensions).
        touched: ``(path, id)`` of the unchanged files whose size/mtime changed but content
            did not (their catalog size/mtime were refreshed when ``refresh=True``).
        stats: path -> ``(size, mtime)`` of every file found.
        hashes: path -> sha256 for the files that were hashed (changed and touched ones).
    """

    new: list[str]
    changed: list[tuple[str, int]]
    unchanged: list[int]
    vanished: list[int]
    touched: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    stats: dict[str, tuple[int, float]] = dataclasses.field(default_factory=dict)
    hashes: dict[str, str] = dataclasses.field(default_factory=dict)

    def __iter__(self):
        return iter((self.new, self.changed, self.unchanged, self.vanished))

    def record_for(self, path: str) -> dict:
        """A partial catalog record (source, size, mtime, sha256) for a path found by the scan,
        reusing the size/mtime seen and the hash when it was computed."""
        size, mtime = self.stats[path]
        sha = self.hashes.get(path)
        if sha is None:
            sha = sha256_file(path)
            self.hashes[path] = sha
        return {"source": path, "size": size, "mtime": mtime, "sha256": sha}


def _scan(folder: str, extensions: tuple[str, ...], recursive: bool) -> dict[str, tuple[int, float]]:
    found: dict[str, tuple[int, float]] = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if not recursive:
            dirs[:] = []
        for name in files:
            if name.startswith(".") or not name.lower().endswith(extensions):
                continue
            p = os.path.join(root, name)
            try:
                st = os.stat(p)
            except OSError:  # vanished during the scan or a dangling link
                continue
            if not os.path.isfile(p):
                continue
            found[p] = (int(st.st_size), float(st.st_mtime))
    return found


def plan_folder(catalog: Catalog, folder: str | os.PathLike,
                extensions: Iterable[str] = IMAGE_EXTENSIONS, recursive: bool = True,
                refresh: bool = True) -> FolderPlan:
    """Compare a folder of image files with the catalog (incremental indexing).

    A file is matched to the catalog by its source (:func:`source_for_path`: the absolute
    path). Catalogued files with the same size and mtime are unchanged and are not read;
    when either differs the file is hashed and counts as changed only when its sha256
    differs from the catalogued one. Hidden files and folders (a leading dot) are skipped.

    Args:
        catalog: the :class:`Catalog`.
        folder: the folder to scan.
        extensions: file name endings to pick up (case-insensitive), default
            :data:`IMAGE_EXTENSIONS`.
        recursive: scan sub-folders (default).
        refresh: write the new size/mtime of touched (same content) files into the catalog,
            so the next scan skips them without hashing.

    Returns:
        a :class:`FolderPlan` (unpacks as ``new_paths, changed, unchanged_ids, vanished_ids``).

    Raises:
        FileNotFoundError: ``folder`` does not exist. NotADirectoryError: it is a file.
    """
    folder = source_for_path(folder)
    if not os.path.exists(folder):
        raise FileNotFoundError(f"plan_folder: {folder!r} does not exist")
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"plan_folder: {folder!r} is not a folder")
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    if not exts:
        raise ValueError("plan_folder: extensions is empty")
    found = _scan(folder, exts, recursive)
    known = catalog._file_rows(folder.rstrip(os.sep) + os.sep)
    plan = FolderPlan([], [], [], [], stats=found)
    refreshed = []
    for path in sorted(found):
        size, mtime = found[path]
        row = known.get(path)
        if row is None:
            plan.new.append(path)
            continue
        rid, csize, cmtime, csha = row
        if csize == size and cmtime == mtime:
            plan.unchanged.append(rid)
            continue
        try:
            sha = sha256_file(path)
        except OSError:  # vanished or unreadable since the scan: treat as changed
            plan.changed.append((path, rid))
            continue
        plan.hashes[path] = sha
        if sha == csha:
            plan.unchanged.append(rid)
            plan.touched.append((path, rid))
            refreshed.append({"id": rid, "size": size, "mtime": mtime})
        else:
            plan.changed.append((path, rid))
    plan.vanished = sorted(rid for src, (rid, *_r) in known.items() if src not in found)
    if refresh and refreshed:
        catalog.upsert(refreshed)
    return plan
