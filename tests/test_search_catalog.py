"""pixrank.search.catalog: Catalog round trips, transactions, bad files, the folder planner."""
from __future__ import annotations

import hashlib
import os
import sqlite3
import threading

import numpy as np
import pytest

from pixrank.search.catalog import (SCHEMA_VERSION, Catalog, CatalogRecord, plan_folder,
                                    sha256_file, source_for_path)


@pytest.fixture
def cat(tmp_path):
    c = Catalog(tmp_path / "catalog.db")
    yield c
    c.close()


def test_round_trip(tmp_path):
    path = tmp_path / "catalog.db"
    with Catalog(path) as c:
        assert c.schema_version == SCHEMA_VERSION and len(c) == 0
        ids = c.upsert([
            CatalogRecord(id=10, source="fashion-mnist:test:0", label_id=9, label="ankle boot",
                          caption="a dark ankle boot", width=28, height=28),
            {"id": 11, "source": "/pics/a.png", "size": 1234, "mtime": 1.7e9, "sha256": "ab" * 32},
        ])
        assert ids == [10, 11]
        assert c.get_meta("journal") is None
    with Catalog.open(path) as c:
        assert len(c) == 2 and 10 in c and 12 not in c
        r10, r11 = c.get([10, 11])
        assert (r10.label, r10.label_id, r10.caption, r10.width, r10.height) == \
               ("ankle boot", 9, "a dark ankle boot", 28, 28)
        assert (r11.size, r11.mtime, r11.sha256) == (1234, 1.7e9, "ab" * 32)
        assert r10.added is not None and r11.label is None
        assert c.get_by_source("/pics/a.png").id == 11 and c.get_by_source("nope") is None
        assert c.sources() == ["fashion-mnist:test:0", "/pics/a.png"]
        assert c.ids().tolist() == [10, 11] and c.next_id() == 12
        assert [r.id for r in c.get([11, 10, 11])] == [11, 10, 11]
        assert c.get(np.array([10, 99]), missing="none")[1] is None
        assert len(c.get([10, 99], missing="skip")) == 1
        with pytest.raises(KeyError, match="99"):
            c.get([10, 99])
        assert c.get_meta("magic") == "pixrank-catalog"
    # WAL mode
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_upsert_partial_update_and_auto_ids(cat):
    [a] = cat.upsert([{"source": "s:a", "label": "x", "caption": "c"}])
    added = cat.get([a])[0].added
    assert cat.upsert([{"id": a, "label": "y"}]) == [a]
    r = cat.get([a])[0]
    assert (r.source, r.label, r.caption, r.added) == ("s:a", "y", "c", added)
    # matched by source when no id is given
    assert cat.upsert([{"source": "s:a", "caption": "d"}]) == [a]
    assert cat.get([a])[0].caption == "d"
    b, c2 = cat.upsert([{"source": "s:b"}, {"source": "s:c"}])
    assert len({a, b, c2}) == 3 and len(cat) == 3
    # a CatalogRecord writes every field
    cat.upsert([CatalogRecord(id=a, source="s:a")])
    assert cat.get([a])[0].label is None and cat.get([a])[0].added == added


def test_failed_batch_leaves_nothing(cat):
    cat.upsert([{"id": 1, "source": "s:1"}])
    with pytest.raises(ValueError, match="s:1"):
        cat.upsert([{"id": 2, "source": "s:2"}, {"id": 3, "source": "s:1"}])  # duplicate source
    assert len(cat) == 1 and 2 not in cat
    with pytest.raises(TypeError, match="width"):
        cat.upsert([{"id": 4, "source": "s:4"}, {"id": 5, "source": "s:5", "width": "wide"}])
    with pytest.raises(ValueError, match="unknown fields"):
        cat.upsert([{"id": 6, "source": "s:6", "colour": "red"}])
    with pytest.raises(ValueError, match="no source"):
        cat.upsert([{"id": 7, "label": "x"}])
    assert len(cat) == 1
    with pytest.raises(KeyError, match="not in the catalog"):
        cat.delete([1, 42])
    assert 1 in cat  # all or nothing
    assert cat.delete([42], missing="ignore") == 0
    assert cat.delete([1]) == 1 and len(cat) == 0


def test_reserved_meta(cat):
    cat.set_meta("model", "dual-encoder v1")
    assert cat.get_meta("model") == "dual-encoder v1"
    with pytest.raises(ValueError, match="reserved"):
        cat.set_meta("schema_version", "2")


def test_closed_catalog_raises(tmp_path):
    c = Catalog(tmp_path / "c.db")
    c.close()
    with pytest.raises(ValueError, match="closed"):
        len(c)


def test_open_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        Catalog.open(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
    text = tmp_path / "text.db"
    text.write_text("this is not a database at all " * 100)
    with pytest.raises(ValueError, match="not an SQLite database"):
        Catalog(text)
    assert text.read_text().startswith("this is not")  # untouched
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    with pytest.raises(ValueError, match="not a pixrank catalog"):
        Catalog(other)
    assert other.read_bytes() == before
    with pytest.raises(ValueError, match="folder"):
        Catalog(tmp_path)
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        Catalog.open(empty)


def test_corrupt_and_newer_files(tmp_path):
    path = tmp_path / "c.db"
    with Catalog(path) as c:
        c.upsert([{"id": i, "source": f"s:{i}", "caption": "x" * 200} for i in range(300)])
    # a newer schema version
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match="schema version 99"):
        Catalog.open(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
    conn.commit()
    conn.close()
    Catalog.open(path).close()
    # garbage over the middle of the file
    data = bytearray(path.read_bytes())
    data[4096:12288] = os.urandom(8192)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt|not a pixrank catalog"):
        Catalog.open(path)
    # truncated to its header page
    path.write_bytes(bytes(data[:100]))
    with pytest.raises(ValueError):
        Catalog.open(path)


def test_threads_share_one_catalog(cat):
    cat.upsert([{"id": i, "source": f"s:{i}"} for i in range(100)])
    errors = []

    def work(t):
        try:
            for i in range(50):
                cat.upsert([{"id": 1000 + t * 100 + i, "source": f"t{t}:{i}"}])
                assert cat.get([i])[0].source == f"s:{i}"
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(cat) == 300


def test_backup(tmp_path, cat):
    cat.upsert([{"id": 1, "source": "s:1", "label": "bag"}])
    cat.backup(tmp_path / "copy.db")
    with Catalog.open(tmp_path / "copy.db") as c2:
        assert c2.get([1])[0].label == "bag"


# ---- the folder planner --------------------------------------------------------------------------------


def _write(path, data: bytes, mtime: float):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def _catalog_files(cat, plan, paths):
    recs = [plan.record_for(p) for p in paths]
    cat.upsert(recs)


def test_plan_folder_incremental(tmp_path, cat, monkeypatch):
    folder = tmp_path / "pics"
    t0 = 1_700_000_000.0
    _write(folder / "a.png", b"aaaa", t0)
    _write(folder / "b.JPG", b"bbbb", t0)
    _write(folder / "sub" / "c.webp", b"cccc", t0)
    _write(folder / "notes.txt", b"ignore me", t0)
    _write(folder / ".hidden.png", b"hidden", t0)
    new, changed, unchanged, vanished = plan_folder(cat, folder)
    expect = sorted(source_for_path(folder / n) for n in ("a.png", "b.JPG", "sub/c.webp"))
    assert new == expect and changed == [] and unchanged == [] and vanished == []
    plan = plan_folder(cat, folder)
    _catalog_files(cat, plan, plan.new)
    rec = cat.get_by_source(folder / "a.png")
    assert rec.sha256 == hashlib.sha256(b"aaaa").hexdigest() and rec.size == 4 and rec.mtime == t0
    ids = {r.source: r.id for r in cat.records()}

    # nothing changed: every file is skipped without being read
    def no_reading(path):
        raise AssertionError(f"{path} was read")

    monkeypatch.setattr("pixrank.search.catalog.sha256_file", no_reading)
    new, changed, unchanged, vanished = plan_folder(cat, folder)
    assert new == [] and changed == [] and vanished == [] and sorted(unchanged) == sorted(ids.values())
    monkeypatch.undo()

    # change a (same size, new content, new mtime), touch b (same content, new mtime),
    # remove c, add d; an unrelated data-set item must not count as vanished
    cat.upsert([{"source": "fashion-mnist:test:5"}])
    _write(folder / "a.png", b"AAAA", t0 + 10)
    os.utime(folder / "b.JPG", (t0 + 20, t0 + 20))
    (folder / "sub" / "c.webp").unlink()
    _write(folder / "d.bmp", b"dddd", t0)
    a, b, c = (source_for_path(folder / n) for n in ("a.png", "b.JPG", "sub/c.webp"))
    plan = plan_folder(cat, folder)
    assert plan.new == [source_for_path(folder / "d.bmp")]
    assert plan.changed == [(a, ids[a])]
    assert plan.unchanged == [ids[b]] and plan.touched == [(b, ids[b])]
    assert plan.vanished == [ids[c]]
    assert plan.hashes[a] == hashlib.sha256(b"AAAA").hexdigest()
    # the touched file's new mtime was written back: the next scan skips it without hashing
    assert cat.get([ids[b]])[0].mtime == t0 + 20
    # a size change is a change too
    _write(folder / "a.png", b"AAAAAA", t0 + 10)
    assert plan_folder(cat, folder).changed == [(a, ids[a])]


def test_plan_folder_options_and_errors(tmp_path, cat):
    folder = tmp_path / "p"
    _write(folder / "x.png", b"x", 1e9)
    _write(folder / "deep" / "y.png", b"y", 1e9)
    assert len(plan_folder(cat, folder, recursive=False).new) == 1
    assert len(plan_folder(cat, folder, extensions=["jpg"]).new) == 0
    with pytest.raises(FileNotFoundError):
        plan_folder(cat, tmp_path / "nope")
    with pytest.raises(NotADirectoryError):
        plan_folder(cat, folder / "x.png")
    # a sibling folder whose name extends this one's is not "under" it
    _write(tmp_path / "p2" / "z.png", b"z", 1e9)
    plan = plan_folder(cat, tmp_path / "p2")
    cat.upsert([plan.record_for(p) for p in plan.new])
    assert plan_folder(cat, folder).vanished == []


def test_sha256_file(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"hello" * 100000)
    assert sha256_file(p) == hashlib.sha256(b"hello" * 100000).hexdigest()
