"""The Engine end to end on the embedded sample: brief training, text/image search quality
floors, save/load round trip, incremental folder indexing, bad input."""
import json
import os
import shutil

import numpy as np
import pytest

from pixrank.data.captions import CLASS_NAMES
from pixrank.search.engine import Engine, SearchResult
from pixrank.search.index import Index
from pixrank.text import UnknownQueryError

from search_helpers import fresh_engine, sample_data, trained_encoder, write_png

# Floors measured on this machine with the shared encoder (3 epochs on the 6,000-image
# sample, seed 0; see tests/search_helpers.py): precision@10 of "ankle boot" = 1.0,
# "sneakers" = 1.0, mean precision@10 over the ten class names 0.94; image->image precision@10
# over 100 test queries 0.80. Chance is 0.1. The floors below leave a margin for other
# machines / BLAS rounding.
FLOOR_CLASS_P10 = 0.8
FLOOR_MEAN_CLASS_P10 = 0.75
FLOOR_IMAGE_P10 = 0.6


@pytest.fixture(scope="module")
def engine():
    eng = fresh_engine()
    yield eng
    eng.close()


def _p10(results, label):
    return np.mean([r.label_id == label for r in results[:10]])


def test_class_query_ranks_that_class_first(engine):
    res = engine.search_text("ankle boot", k=10)
    assert len(res) == 10 and all(isinstance(r, SearchResult) for r in res)
    assert [r.rank for r in res] == list(range(1, 11))
    assert all(a.score >= b.score for a, b in zip(res, res[1:]))
    assert res[0].label == "Ankle boot"
    assert _p10(res, 9) >= FLOOR_CLASS_P10
    assert _p10(engine.search_text("sneakers", k=10), 7) >= FLOOR_CLASS_P10
    names = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
    p = [_p10(engine.search_text(n, k=10), i) for i, n in enumerate(names)]
    assert np.mean(p) >= FLOOR_MEAN_CLASS_P10, p


def test_results_join_the_catalog(engine):
    _, (xt, yt) = sample_data()
    res = engine.search_text("a bag", k=5)
    for r in res:
        i = int(r.source.split(":")[2])
        assert r.source == f"fashion-mnist:test:{i}"
        assert r.label_id == yt[i] and r.label == CLASS_NAMES[yt[i]]
        assert r.caption.endswith(("bag", "handbag")) or "bag" in r.caption


def test_image_query_finds_itself_and_its_class(engine):
    _, (xt, yt) = sample_data()
    hits = []
    for i in range(0, 1000, 10):
        res = engine.search_image(xt[i], k=10)
        assert res[0].source == f"fashion-mnist:test:{i}"
        assert res[0].score == pytest.approx(1.0, abs=1e-4)
        hits.append(_p10(res, yt[i]))
    assert np.mean(hits) >= FLOOR_IMAGE_P10


def test_search_vector_and_k_larger_than_collection():
    eng = fresh_engine(index_test=False)
    _, (xt, yt) = sample_data()
    eng.index_dataset(xt[:7], yt[:7], split="test")
    v = eng.encode_text("dress")
    res = eng.search_vector(v, k=50)
    assert len(res) == 7
    assert eng.search_vector(v, k=3)[0].id == res[0].id
    empty = fresh_engine(index_test=False)
    assert empty.search_text("dress", k=5) == []


def test_index_dataset_is_incremental():
    eng = fresh_engine(index_test=False)
    _, (xt, yt) = sample_data()
    rep = eng.index_dataset(xt[:20], yt[:20], split="test")
    assert (rep.added, rep.unchanged) == (20, 0)
    rep = eng.index_dataset(xt[:25], yt[:25], split="test")
    assert (rep.added, rep.unchanged, rep.updated) == (5, 20, 0)
    changed = xt[:25].copy()
    changed[3] = 255 - changed[3]
    rep = eng.index_dataset(changed, yt[:25], split="test")
    assert (rep.updated, rep.unchanged) == (1, 24)
    assert len(eng.index) == len(eng.catalog) == 25
    rec = eng.catalog.get_by_source("fashion-mnist:test:3")
    assert eng.search_image(changed[3], k=1)[0].id == rec.id
    assert rec.caption.split()[1] in ("dark", "medium", "light")


def test_index_dataset_checks_the_labels_before_embedding():
    eng = fresh_engine(index_test=False)
    _, (xt, yt) = sample_data()
    with pytest.raises(TypeError, match="y must hold integer class ids, got dtype float64"):
        eng.index_dataset(xt[:3], np.array([0.5, 1.0, 2.0]))  # used to become classes 0, 1, 2
    with pytest.raises(ValueError, match="class ids must be >= 0, got -3 at index 1"):
        eng.index_dataset(xt[:3], np.array([0, -3, 2]))  # used to fail after embedding
    assert len(eng.index) == len(eng.catalog) == 0
    # ids beyond the ten named classes stay allowed (another data set): stored without a name
    eng.index_dataset(xt[:2], np.array([3, 50]), split="other")
    rec = eng.catalog.get_by_source("fashion-mnist:other:1")
    assert rec.label_id == 50

def test_save_load_round_trip_gives_identical_results(engine, tmp_path):
    _, (xt, _) = sample_data()
    before_t = engine.search_text("dark ankle boots", k=20)
    before_i = engine.search_image(xt[5], k=20)
    engine.save(tmp_path / "eng")
    cfg = json.loads((tmp_path / "eng" / "engine.json").read_text())
    assert cfg["embed_dim"] == engine.dim and cfg["space"] == "cosine"
    assert cfg["M"] == 16 and cfg["ef_construction"] == 200 and cfg["ef"] == engine.ef
    assert cfg["catalog"]["schema_version"] >= 1 and cfg["index"]["count"] == 1000
    assert cfg["image_encoder"]["input_spec"]["height"] == 28
    assert len(cfg["image_encoder"]["model_sha256"]) == 64
    with Engine.load(tmp_path / "eng") as again:
        assert again.search_text("dark ankle boots", k=20) == before_t
        assert again.search_image(xt[5], k=20) == before_i
        # saving over the folder it was loaded from, then searching, still works
        again.save(tmp_path / "eng")
        assert again.search_text("dark ankle boots", k=20) == before_t
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary leftovers


def _pics(tmp_path):
    _, (xt, _) = sample_data()
    d = tmp_path / "pics"
    (d / "sub").mkdir(parents=True)
    for i in range(5):
        write_png(d / f"img{i}.png", xt[i], mtime=1_700_000_000 + i)
    write_png(d / "sub" / "img5.png", xt[5], mtime=1_700_000_005)
    return d


def test_incremental_folder_indexing(tmp_path):
    _, (xt, _) = sample_data()
    eng = fresh_engine(index_test=False)
    d = _pics(tmp_path)
    rep = eng.index_images(d)
    assert (rep.added, rep.updated, rep.unchanged, rep.removed, rep.failed) == (6, 0, 0, 0, 0)
    rec = eng.catalog.get_by_source(str(d / "img2.png"))
    assert (rec.width, rec.height) == (28, 28) and len(rec.sha256) == 64
    # a PNG of a test image is found by that image, as the first result
    assert eng.search_image(str(d / "img2.png"), k=1)[0].source == str(d / "img2.png")
    assert eng.index_images(d).unchanged == 6
    # change one file, remove one, add one, add an unreadable one
    write_png(d / "img1.png", xt[50], mtime=1_700_000_100)
    os.remove(d / "img4.png")
    write_png(d / "new.png", xt[60], mtime=1_700_000_200)
    (d / "broken.png").write_bytes(b"this is not a png")
    id1 = eng.catalog.get_by_source(str(d / "img1.png")).id
    id4 = eng.catalog.get_by_source(str(d / "img4.png")).id
    with pytest.warns(UserWarning, match="broken.png"):
        rep = eng.index_images(d)
    assert (rep.added, rep.updated, rep.unchanged, rep.removed, rep.failed) == (1, 1, 4, 1, 1)
    assert id4 not in eng.index and id4 not in eng.catalog
    assert len(eng.index) == len(eng.catalog) == 6
    top = eng.search_image(xt[50], k=1)[0]
    assert top.id == id1 and top.score == pytest.approx(1.0, abs=1e-3)
    # the state survives save/load, and a further scan is a no-op
    eng.save(tmp_path / "eng")
    with Engine.load(tmp_path / "eng") as again:
        with pytest.warns(UserWarning):
            rep = again.index_images(d)
        assert (rep.added, rep.updated, rep.unchanged, rep.removed) == (0, 0, 6, 0)


def test_explicit_paths_and_arrays(tmp_path):
    _, (xt, yt) = sample_data()
    eng = fresh_engine(index_test=False)
    write_png(tmp_path / "a.png", xt[0])
    rep = eng.index_images([tmp_path / "a.png"])
    assert rep.added == 1
    assert eng.index_images(str(tmp_path / "a.png")).unchanged == 1
    with pytest.raises(FileNotFoundError, match="does not exist"):
        eng.index_images([tmp_path / "missing.png"])
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(ValueError):
        eng.index_images([tmp_path / "notes.png"])
    rep = eng.index_images(xt[10:13], keys=["k1", "k2", "k3"], labels=yt[10:13])
    assert rep.added == 3 and eng.catalog.get_by_source("k2").label_id == yt[11]
    with pytest.raises(ValueError, match="2 keys"):
        eng.index_images(xt[:3], keys=["x", "y"])
    with pytest.raises(TypeError):
        eng.index_images(42)


def test_bad_queries(engine, tmp_path):
    for q in ("", "   ", "\t\n"):
        with pytest.raises(ValueError, match="empty"):
            engine.search_text(q, k=5)
    with pytest.raises(UnknownQueryError, match="known"):
        engine.search_text("qqqq xxxx", k=5)
    with pytest.raises(TypeError):
        engine.search_text(None)
    for k in (0, -3):
        with pytest.raises(ValueError, match="k must be >= 1"):
            engine.search_text("dress", k=k)
        with pytest.raises(ValueError, match="k must be >= 1"):
            engine.search_vector(np.ones(engine.dim), k=k)
    with pytest.raises(TypeError):
        engine.search_text("dress", k=2.5)
    with pytest.raises(FileNotFoundError):
        engine.search_image(tmp_path / "nope.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError):
        engine.search_image(tmp_path / "text.png")
    with pytest.raises(ValueError, match="shape"):
        engine.search_vector(np.ones(engine.dim + 1), k=3)
    with pytest.raises(ValueError, match="NaN"):
        engine.search_vector(np.full(engine.dim, np.nan), k=3)
    # a zero vector has no direction: refused, not an arbitrary list of score-0 "results"
    with pytest.raises(ValueError, match="zero vector"):
        engine.search_vector(np.zeros(engine.dim), k=3)
    with pytest.raises(TypeError, match="real-valued"):
        engine.search_vector(np.ones(engine.dim) * 1j, k=3)
    # entries whose float32 squared norm overflows still rank by direction
    v = engine.encode_text("dress")
    want = [r.id for r in engine.search_vector(v, k=5)]
    assert [r.id for r in engine.search_vector(v.astype(np.float64) * 1e37, k=5)] == want
    assert [r.id for r in engine.search_vector(v.astype(np.float64) * 1e300, k=5)] == want


def test_load_rejects_missing_corrupt_and_mismatched_parts(engine, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Engine.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a pixrank engine"):
        Engine.load(tmp_path / "empty")
    good = tmp_path / "good"
    engine.save(good)

    def copy(name):
        dst = tmp_path / name
        shutil.copytree(good, dst)
        return dst

    bad = copy("badjson")
    (bad / "engine.json").write_text("{ half written")
    with pytest.raises(ValueError, match="corrupt"):
        Engine.load(bad)
    # a model file from another engine
    from pixrank.search.encoder import ImageEncoder, ImageTower
    foreign = ImageEncoder(ImageTower(embed_dim=engine.dim, name="image_tower"))
    bad = copy("foreign_model")
    foreign.save(bad / "image_encoder")
    with pytest.raises(ValueError, match="another engine"):
        Engine.load(bad)
    # a corrupted tokenizer vocabulary (encoder.json is not covered by the model's sha256):
    # one flipped letter used to load silently and change how queries are encoded
    bad = copy("bad_vocab")
    meta = bad / "text_encoder" / "encoder.json"
    text = meta.read_text()
    i = text.index('"<an"')
    meta.write_text(text[:i] + '"<ax"' + text[i + 5:])
    with pytest.raises(ValueError, match=r"text_encoder: .*encoder\.json' is not the one engine\.json records"):
        Engine.load(bad)
    # an index of another dimension (with engine.json made to agree with its header)
    bad = copy("other_dim")
    shutil.rmtree(bad / "index")
    ix = Index(engine.dim // 2)
    ix.add(np.eye(engine.dim // 2, dtype=np.float32)[:3], np.arange(3))
    ix.save(bad / "index")
    with pytest.raises(ValueError, match="not the one engine.json records"):
        Engine.load(bad)
    import hashlib
    cfg = json.loads((bad / "engine.json").read_text())
    cfg["index"]["header_sha256"] = hashlib.sha256((bad / "index" / "index.json").read_bytes()).hexdigest()
    (bad / "engine.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="dimension"):
        Engine.load(bad)
    # a catalog that is not SQLite
    bad = copy("bad_catalog")
    (bad / "catalog.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError):
        Engine.load(bad)
    # a missing part
    bad = copy("no_text")
    shutil.rmtree(bad / "text_encoder")
    with pytest.raises(FileNotFoundError):
        Engine.load(bad)
    # refuses to overwrite a folder that is not an engine
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing"):
        engine.save(tmp_path / "precious")
    assert (tmp_path / "precious" / "thesis.txt").read_text() == "keep me"


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(ef="abc"), r"records ef = 'abc'"),
    (lambda c: c.update(ef=0), r"records ef = 0"),
    (lambda c: c.update(index=None), r"a field of the wrong kind"),
    (lambda c: c.update(embed_dim="64"), r"the field 'embed_dim' must be an int"),
    (lambda c: c["index"].update(count=[1]), r"the field 'index.count' must be an int"),
    (lambda c: c.update(info=[1]), r"the field 'info' must be an object"),
    (lambda c: c["index"].update(folder="../../elsewhere"), r"not inside the engine folder"),
    (lambda c: c["index"].update(folder="/etc"), r"not inside the engine folder"),
    (lambda c: c["catalog"].update(file=5), r"names an engine part 5"),
])
def test_load_names_the_bad_field_of_engine_json(engine, tmp_path, edit, message):
    """A hand-edited or damaged engine.json gives a ValueError naming engine.json and the field,
    not a bare 'NoneType is not subscriptable' or 'invalid literal for int()', and never reads
    parts outside the engine folder."""
    folder = tmp_path / "eng"
    engine.save(folder)
    cfg = json.loads((folder / "engine.json").read_text())
    edit(cfg)
    (folder / "engine.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=message) as info:
        Engine.load(folder)
    assert "engine.json" in str(info.value)

def test_engine_construction_errors():
    de = trained_encoder()
    with pytest.raises(ValueError, match="dimensions"):
        Engine(de.image, de.text, Index(de.embed_dim + 1))
    with pytest.raises(TypeError):
        Engine(de.text, de.text)
    with pytest.raises(ValueError, match="ef"):
        Engine(de.image, de.text, ef=0)


def test_indexing_into_a_loaded_engine_leaves_the_folder_unchanged_until_save(tmp_path):
    # `pixrank index` stopped by Ctrl-C between indexing and save used to leave a folder
    # whose catalog (written in place) listed more items than its index: unloadable.
    _, (xt, yt) = sample_data()
    eng = fresh_engine(index_test=False)
    eng.index_dataset(xt[:20], yt[:20], split="test")
    folder = tmp_path / "eng"
    eng.save(folder)
    eng.close()
    before = {p: open(os.path.join(folder, p), "rb").read()
              for p in ("engine.json", "catalog.sqlite")}
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(3):
        write_png(pics / f"p{i}.png", xt[100 + i])
    loaded = Engine.load(folder)
    rep = loaded.index_images(str(pics))
    assert rep.added == 3 and len(loaded) == 23 and len(loaded.catalog) == 23
    loaded.remove([loaded.search_text("dress", k=1)[0].id])
    loaded.close()  # no save: as if interrupted
    assert sorted(os.listdir(folder)) == sorted(["engine.json", "catalog.sqlite", "image_encoder",
                                                 "index", "text_encoder"])
    for p, data in before.items():
        assert open(os.path.join(folder, p), "rb").read() == data, p
    again = Engine.load(folder)
    assert len(again) == 20 and len(again.catalog) == 20
    # saving is still what records new state
    again.index_images(str(pics))
    again.save(folder)
    again.close()
    final = Engine.load(folder)
    assert len(final) == 23 and len(final.catalog) == 23
    assert final.search_image(str(pics / "p1.png"), k=1)[0].source.endswith("p1.png")
    final.close()


def test_load_reads_a_read_only_engine_folder(tmp_path):
    _, (xt, yt) = sample_data()
    eng = fresh_engine(index_test=False)
    eng.index_dataset(xt[:10], yt[:10], split="test")
    folder = tmp_path / "ro"
    eng.save(folder)
    eng.close()
    modes = {}
    for root, dirs, files in os.walk(folder):
        for n in files + dirs:
            modes[os.path.join(root, n)] = os.stat(os.path.join(root, n)).st_mode
    try:
        for p in sorted(modes, reverse=True):
            os.chmod(p, 0o555 if os.path.isdir(p) else 0o444)
        os.chmod(folder, 0o555)
        loaded = Engine.load(folder)
        assert len(loaded.search_text("dress", k=3)) == 3
        loaded.close()
        assert sorted(os.listdir(folder)) == sorted(["engine.json", "catalog.sqlite", "image_encoder",
                                                     "index", "text_encoder"])
    finally:
        os.chmod(folder, 0o755)
        for p, m in modes.items():
            os.chmod(p, m)


def test_saved_engine_files_follow_the_umask(tmp_path):
    # mkdtemp/mkstemp create 0700/0600: an engine saved for a web server run by another user
    # was unreadable to it
    eng = fresh_engine(index_test=False)
    old = os.umask(0o022)
    try:
        eng.save(tmp_path / "e")
    finally:
        os.umask(old)
        eng.close()
    folder = tmp_path / "e"
    assert os.stat(folder).st_mode & 0o777 == 0o755
    for sub in ("image_encoder", "text_encoder"):
        assert os.stat(folder / sub / "encoder.json").st_mode & 0o777 == 0o644
        assert os.stat(folder / sub / "model.pxr").st_mode & 0o777 == 0o644
    assert os.stat(folder / "engine.json").st_mode & 0o777 == 0o644
