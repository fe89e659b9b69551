"""`pixrank demo / index / search / evaluate-search` through pixrank.cli.main."""
import json
import os

import pytest

from pixrank.cli import main

from search_helpers import fresh_engine, sample_data, write_png


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli") / "engine"
    eng = fresh_engine()
    eng.save(d)
    eng.close()
    return str(d)


def test_search_text_prints_ranked_results_and_grid(engine_dir, tmp_path, capsys):
    grid = tmp_path / "results.png"
    assert main(["search", "--engine", engine_dir, "ankle boots", "-k", "5", "--grid", str(grid)]) == 0
    out = capsys.readouterr().out
    rows = [l for l in out.splitlines() if l.strip()[:1].isdigit()]
    assert len(rows) == 5
    assert rows[0].split()[0] == "1" and "Ankle boot" in rows[0]
    from PIL import Image
    with Image.open(grid) as im:
        assert im.width > 5 * 28 and im.height > 28


def test_search_json_and_image_query(engine_dir, tmp_path, capsys):
    _, (xt, yt) = sample_data()
    q = tmp_path / "q.png"
    write_png(q, xt[0])
    assert main(["search", "--engine", engine_dir, "--image", str(q), "-k", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in res] == [1, 2, 3]
    assert res[0]["source"] == "fashion-mnist:test:0" and res[0]["label_id"] == int(yt[0])


@pytest.mark.parametrize("argv, message", [
    (["search", "--engine", "{eng}", ""], "empty"),
    (["search", "--engine", "{eng}", "   "], "empty"),
    (["search", "--engine", "{eng}", "qqqq xxxx"], "known"),
    (["search", "--engine", "{eng}", "dress", "-k", "0"], "-k must be >= 1"),
    (["search", "--engine", "{eng}", "dress", "-k", "-2"], "-k must be >= 1"),
    (["search", "--engine", "{eng}", "dress", "--ef", "0"], "--ef must be >= 1, got 0"),
    (["search", "--engine", "{eng}", "dress", "--grid", "{tmp}"], "is a folder"),
    (["search", "--engine", "{eng}", "dress", "--grid", "{tmp}/no/sheet.png"], "does not exist"),
    (["evaluate-search", "--engine", "{eng}", "--json", "{tmp}/no/report.json"], "does not exist"),
    (["search", "--engine", "{eng}", "dress", "--ef", "-5"], "--ef must be >= 1, got -5"),
    (["demo", "--out", "{tmp}/demo", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["index", "--engine", "{tmp}/new", "--images", "{tmp}", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["search", "--engine", "{eng}", "--image", "{tmp}/missing.png"], "does not exist"),
    (["search", "--engine", "{eng}", "--image", "{tmp}/text.png"], "text.png"),
    (["search", "--engine", "{eng}"], "either a text query or --image"),
    (["search", "--engine", "{tmp}/no-engine", "dress"], "does not exist"),
    (["search", "--engine", "{tmp}/corrupt", "dress"], "corrupt"),
    (["evaluate-search", "--engine", "{tmp}/no-engine"], "does not exist"),
    (["index", "--engine", "{tmp}/new", "--images", "{tmp}/missing-folder"], "does not exist"),
    (["index", "--engine", "{tmp}/text.png", "--images", "{tmp}"], "is a file, not an engine folder"),
])
def test_bad_input_exits_2_with_a_clear_message(engine_dir, tmp_path, capsys, argv, message):
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "engine.json").write_text("{oops")
    argv = [a.format(eng=engine_dir, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pixrank {argv[0]}: error:"), err
    assert message in err, err


def test_index_creates_from_engine_then_updates_incrementally(engine_dir, tmp_path, capsys):
    _, (xt, _) = sample_data()
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(4):
        write_png(pics / f"p{i}.png", xt[100 + i], mtime=1_700_000_000 + i)
    new = tmp_path / "mine"
    assert main(["index", "--engine", str(new), "--images", str(pics), "--from-engine", engine_dir]) == 0
    out = capsys.readouterr().out
    assert "4 added" in out
    assert main(["index", "--engine", str(new), "--images", str(pics)]) == 0
    assert "0 added, 0 updated, 4 unchanged" in capsys.readouterr().out
    os.remove(pics / "p3.png")
    write_png(pics / "p0.png", xt[200], mtime=1_700_000_100)
    assert main(["index", "--engine", str(new), "--images", str(pics)]) == 0
    assert "0 added, 1 updated, 2 unchanged, 1 removed" in capsys.readouterr().out
    assert main(["search", "--engine", str(new), "--image", str(pics / "p0.png"), "-k", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res[0]["source"] == str(pics / "p0.png") and res[0]["score"] > 0.999


def test_evaluate_search_prints_all_metrics(engine_dir, tmp_path, capsys):
    rep_path = tmp_path / "rep.json"
    assert main(["evaluate-search", "--engine", engine_dir, "--json", str(rep_path)]) == 0
    out = capsys.readouterr().out
    for needle in ("text->image (class", "text->image (class+tone", "image->image", "HNSW recall@10",
                   "mAP@10", "recall@100", "precision@1"):
        assert needle in out
    rep = json.loads(rep_path.read_text())
    assert set(rep["text"]) == {"class", "class+tone"}
    for k in (1, 10, 100):
        for m in ("recall", "precision", "mAP"):
            assert 0.0 <= rep["image"][f"{m}@{k}"] <= 1.0
    assert rep["text"]["class"]["mAP@10"] > 0.5  # chance is about 0.1
    assert rep["hnsw_recall@10"] >= 0.95
    assert rep["items"] == 1000


def test_demo_on_the_embedded_sample(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "-k", "4"]) == 0
    text = capsys.readouterr().out
    assert "embedded sample" in text and "dark ankle boots" in text and "image query" in text
    assert "HNSW recall@10" in text
    html = (out / "index.html").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "query-image.png" in pngs and "image-query.png" in pngs and "query-01.png" in pngs
    for p in pngs:
        assert f"src='{p}'" in html  # relative links
    assert (out / "engine" / "engine.json").exists()
    assert json.loads((out / "evaluation.json").read_text())["items"] == 1000


def test_index_lists_an_unreadable_file_once_without_a_python_warning(engine_dir, tmp_path, capsys):
    import warnings
    _, (xt, _) = sample_data()
    pics = tmp_path / "pics"
    pics.mkdir()
    write_png(pics / "ok.png", xt[0])
    (pics / "broken.png").write_bytes(b"\x89PNG not really")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["index", "--engine", str(tmp_path / "e"), "--images", str(pics),
                     "--from-engine", engine_dir]) == 0
    assert not [w for w in caught if "broken.png" in str(w.message)]
    cap = capsys.readouterr()
    assert "1 added" in cap.out and "1 unreadable" in cap.out
    assert len([line for line in (cap.out + cap.err).splitlines() if "broken.png" in line]) == 1


def test_evaluation_table_columns_line_up():
    """Every metric column of format_report sits under its header, whatever the row names' length."""
    from pixrank.search.evaluation import format_report
    metrics = {f"{m}@{k}": 0.5 for m in ("recall", "precision", "mAP") for k in (1, 10, 100)}
    rep = {"items": 1000, "ef": 64, "ks": [1, 10, 100], "hnsw_recall@10": 1.0,
           "text": {"class": dict(metrics, queries=20), "class+tone": dict(metrics, queries=22)},
           "image": dict(metrics, queries=1000)}
    lines = format_report(rep).splitlines()
    head = lines[1]
    ends = [head.index(name) + len(name) for name in head.split()]
    for line in lines[2:5]:
        assert [line.rindex(" ", 0, e) for e in ends] == [e - len("0.5000") - 1 for e in ends], line
        assert line.count("0.5000") == 9


@pytest.mark.skipif(os.name != "posix", reason="file names of arbitrary bytes are a POSIX matter")
def test_index_skips_a_non_utf8_file_name_and_keeps_odd_names_on_one_line(engine_dir, tmp_path, capsys):
    # one file whose name is not UTF-8 used to abort the whole `pixrank index` run (SQLite cannot
    # store lone surrogates); a newline in a file name split the result table's row
    _, (xt, _) = sample_data()
    pics = tmp_path / "pics"
    pics.mkdir()
    write_png(pics / "plain.png", xt[300])
    write_png(pics / "new\nline.png", xt[301])
    write_png(os.fsdecode(os.fsencode(str(pics)) + b"/bad\xff\xfe.png"), xt[302])
    new = tmp_path / "mine"
    assert main(["index", "--engine", str(new), "--images", str(pics), "--from-engine", engine_dir]) == 0
    out = capsys.readouterr().out
    assert "2 added, 0 updated, 0 unchanged, 0 removed, 1 unreadable" in out
    assert "bad\\xff\\xfe.png: the file name is not valid UTF-8" in out
    assert main(["index", "--engine", str(new), "--images", str(pics)]) == 0
    assert "0 added, 0 updated, 2 unchanged" in capsys.readouterr().out
    assert main(["search", "--engine", str(new), "--image", str(pics / "new\nline.png"), "-k", "2"]) == 0
    rows = [l for l in capsys.readouterr().out.splitlines() if l.strip()[:1].isdigit()]
    assert len(rows) == 2 and rows[0].endswith("new\\nline.png")
    from pixrank.search import Engine
    with Engine.load(new) as eng:
        with pytest.raises(ValueError, match="not valid UTF-8"):
            eng.index_images([os.fsdecode(os.fsencode(str(pics)) + b"/bad\xff\xfe.png")])
