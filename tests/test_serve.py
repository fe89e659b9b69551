"""The local web UI (``pixrank.serve``, ``pixrank serve``).

One small engine is built for the whole module: a dual encoder trained for one epoch on 600
images of the embedded Fashion-MNIST sample (seeded), with the sample's first 200 test
images indexed, saved to a temporary folder and served by ``create_app(folder)`` through
Starlette's TestClient. Results are checked against the same engine folder opened
separately (``Engine.load``) and against numpy dot products of the embeddings; thumbnails
against the sample's pixels.
"""
from __future__ import annotations

import concurrent.futures as cf
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import warnings

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
if not any(__import__("importlib").util.find_spec(m) for m in ("python_multipart", "multipart")):
    pytest.skip("python-multipart is not installed (the web extra)", allow_module_level=True)

with warnings.catch_warnings():  # recent Starlette warns that its TestClient prefers httpx2
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from PIL import Image

N_TRAIN, N_INDEXED = 600, 200
BASE = "http://127.0.0.1"


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def sample():
    from pixrank.data import SAMPLE_DIR, load_idx_folder
    return load_idx_folder(SAMPLE_DIR)


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory, sample):
    from pixrank.search.engine import EMBEDDED_SAMPLE, Engine
    (x, y), (xt, yt) = sample
    eng = Engine.train(x[:N_TRAIN], y[:N_TRAIN], epochs=1, batch_size=128, seed=0, progress=False,
                       dataset={"name": "fashion-mnist", "path": EMBEDDED_SAMPLE})
    eng.index_dataset(xt[:N_INDEXED], yt[:N_INDEXED], split="test")
    folder = tmp_path_factory.mktemp("serve") / "engine"
    eng.save(folder)
    eng.close()
    return str(folder)


@pytest.fixture(scope="module")
def ref(engine_dir):
    """The same engine folder, opened on its own: the reference for the API's answers."""
    from pixrank.search.engine import Engine
    eng = Engine.load(engine_dir)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def client(engine_dir):
    from pixrank.serve import create_app
    app = create_app(engine_dir)
    with TestClient(app, base_url=BASE) as c:
        yield c


def png_bytes(arr, mode=None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, np.uint8), mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def decode_png(content: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(content))
    assert im.format == "PNG"
    im.load()
    return np.asarray(im)


def sample_index(source: str) -> int:
    m = re.fullmatch(r"fashion-mnist:test:(\d+)", source)
    assert m, source
    return int(m.group(1))


def assert_error(resp, status: int, *fragments: str):
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    for f in fragments:
        assert f.lower() in body["error"].lower(), (f, body["error"])


# ----------------------------------------------------------------------------- the page

def test_page_and_static_files_load_without_external_assets(client):
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    for needle in ('id="q"', 'id="k"', 'id="image"', 'id="results"', "/static/app.js", "/static/style.css"):
        assert needle in page
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    for path, ctype in (("/static/app.js", "javascript"), ("/static/style.css", "text/css"),
                        ("/static/favicon.svg", "image/svg+xml")):
        s = client.get(path)
        assert s.status_code == 200, path
        assert ctype in s.headers["content-type"], (path, s.headers["content-type"])
        # offline machine: nothing fetched from elsewhere (the SVG names its XML namespace only)
        text = s.text.replace("http://www.w3.org/2000/svg", "")
        assert not re.search(r"https?://", text), path
    assert not re.search(r"(src|href)=\"https?://", page)
    js = client.get("/static/app.js").text
    assert "innerHTML" not in js  # results are built with textContent only
    for api in ("/api/search?", "/api/search/image", "/api/info", "like"):
        assert api in js


def test_info_describes_the_engine(client, ref):
    r = client.get("/api/info")
    assert r.status_code == 200
    info = r.json()
    assert info["count"] == len(ref) == N_INDEXED
    assert info["dim"] == ref.dim
    assert info["ef"] == ref.ef
    assert info["M"] == ref.index.M and info["ef_construction"] == ref.index.ef_construction
    assert info["space"] == "cosine" and info["exact"] is False
    assert info["image_model"] == ref.image_model.name and info["text_model"] == ref.text_model.name
    assert info["input"]["height"] == 28 and info["input"]["channels"] == 1
    assert info["training"]["train_images"] == N_TRAIN and "history" not in info["training"]
    assert info["limits"] == {"max_k": 200, "default_k": 12, "max_upload_bytes": 10 * 2 ** 20,
                              "max_image_pixels": 40_000_000, "max_query_chars": 500}


# ----------------------------------------------------------------------------- searches

def test_text_search_matches_the_engine_and_numpy(client, ref, sample):
    _, (xt, _) = sample
    q, k = "dark ankle boots", 7
    r = client.get("/api/search", params={"q": q, "k": k})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == {"kind": "text", "text": q}
    assert body["k"] == k and body["count"] == N_INDEXED
    assert isinstance(body["took_ms"], float) and body["took_ms"] >= 0
    res = body["results"]
    assert [row["rank"] for row in res] == list(range(1, k + 1))
    scores = [row["score"] for row in res]
    assert scores == sorted(scores, reverse=True)
    expect = ref.search_text(q, k)
    assert [row["id"] for row in res] == [e.id for e in expect]
    np.testing.assert_allclose(scores, [e.score for e in expect], rtol=0, atol=1e-6)
    # independent reference: the cosine of the query's and the image's embeddings
    qv = ref.encode_text(q)
    for row in res:
        i = sample_index(row["source"])
        assert row["score"] == pytest.approx(float(qv @ ref.encode_image(xt[i])), abs=1e-4)
        assert row["thumb_url"] == f"/thumb/{row['id']}.png"
        assert set(row) == {"rank", "score", "id", "source", "label", "caption", "thumb_url"}
        assert row["label"] and row["caption"]


def test_thumbnails_are_the_items_pixels(client, sample):
    _, (xt, _) = sample
    res = client.get("/api/search", params={"q": "bag", "k": 5}).json()["results"]
    for row in res:
        t = client.get(row["thumb_url"])
        assert t.status_code == 200
        assert t.headers["content-type"] == "image/png"
        px = decode_png(t.content)
        assert px.shape == (112, 112, 3)  # 28x28 drawn 4x, pixel for pixel
        i = sample_index(row["source"])
        for c in range(3):
            np.testing.assert_array_equal(px[::4, ::4, c], xt[i])
        np.testing.assert_array_equal(px[3::4, 3::4, 0], xt[i])


def test_default_k_and_k_up_to_the_count(client):
    assert len(client.get("/api/search", params={"q": "shirt"}).json()["results"]) == 12
    body = client.get("/api/search", params={"q": "shirt", "k": "200"}).json()
    assert len(body["results"]) == N_INDEXED == len({row["id"] for row in body["results"]})


def test_image_upload_finds_the_indexed_image_itself(client, ref, sample):
    _, (xt, _) = sample
    for i in (17, 123):
        r = client.post("/api/search/image", files={"image": (f"item{i}.png", png_bytes(xt[i]), "image/png")},
                        data={"k": "5"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query"] == {"kind": "image", "filename": f"item{i}.png", "width": 28, "height": 28,
                                 "format": "PNG"}
        res = body["results"]
        assert len(res) == 5 and [row["rank"] for row in res] == [1, 2, 3, 4, 5]
        assert res[0]["source"] == f"fashion-mnist:test:{i}"
        assert res[0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert [row["id"] for row in res] == [e.id for e in ref.search_image(xt[i], 5)]
    # k as a query parameter, and the default k
    r = client.post("/api/search/image?k=3", files={"image": ("a.png", png_bytes(xt[3]), "image/png")})
    assert len(r.json()["results"]) == 3
    r = client.post("/api/search/image", files={"image": ("a.png", png_bytes(xt[3]), "image/png")})
    assert len(r.json()["results"]) == 12


def test_image_upload_other_formats(client, sample):
    _, (xt, _) = sample
    # an RGB JPEG twice the size: still a query that finds images of the same class first
    big = Image.fromarray(xt[40]).resize((56, 56), Image.Resampling.NEAREST).convert("RGB")
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=95)
    r = client.post("/api/search/image", files={"image": ("q.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 200, r.text
    assert r.json()["query"]["format"] == "JPEG" and r.json()["query"]["width"] == 56


def test_like_searches_by_an_indexed_items_image(client, ref, sample):
    _, (xt, _) = sample
    first = client.get("/api/search", params={"q": "sneaker", "k": 3}).json()["results"][2]
    r = client.get("/api/search", params={"like": first["id"], "k": 6})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == {"kind": "like", "id": first["id"]}
    res = body["results"]
    assert len(res) == 6
    assert res[0]["id"] == first["id"] and res[0]["score"] == pytest.approx(1.0, abs=1e-4)
    i = sample_index(first["source"])
    assert [row["id"] for row in res] == [e.id for e in ref.search_image(xt[i], 6)]
    scores = [row["score"] for row in res]
    assert scores == sorted(scores, reverse=True)


def test_an_engine_of_image_files(tmp_path, ref, sample):
    """Thumbnails of image files: shrunk to fit 256x256, small ones magnified by an integer
    factor (30x60 -> 60x120), EXIF orientation applied; like=<id>
    finds the file itself; a file that vanished since indexing gives 404, never a 500."""
    from pixrank.search.engine import Engine
    from pixrank.serve import create_app
    _, (xt, _) = sample
    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.fromarray(xt[0]).save(folder / "a.png")
    Image.fromarray(xt[1]).resize((600, 300)).convert("RGB").save(folder / "wide.jpg", quality=90)
    rot = Image.fromarray(xt[2]).resize((60, 30)).convert("RGB")
    exif = rot.getexif()
    exif[0x0112] = 6  # stored landscape, shown rotated by 90 degrees: 30 wide, 60 tall
    rot.save(folder / "rotated.jpg", exif=exif, quality=90)
    Image.fromarray(xt[3]).save(folder / "gone.png")
    eng = Engine(ref.image_model, ref.text_model)
    assert eng.index_images(str(folder)).added == 4
    ids = {os.path.basename(r.source): r.id for r in eng.catalog.records()}
    with TestClient(create_app(eng), base_url=BASE) as c:
        sizes = {}
        for name in ("a.png", "wide.jpg", "rotated.jpg"):
            t = c.get(f"/thumb/{ids[name]}.png")
            assert t.status_code == 200, t.text
            px = decode_png(t.content)
            sizes[name] = px.shape[1], px.shape[0]
        assert sizes == {"a.png": (112, 112), "wide.jpg": (256, 128), "rotated.jpg": (60, 120)}
        r = c.get("/api/search", params={"like": ids["a.png"], "k": 4}).json()["results"]
        assert r[0]["id"] == ids["a.png"] and r[0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert r[0]["source"] == str(folder / "a.png")
        os.remove(folder / "gone.png")
        assert_error(c.get(f"/thumb/{ids['gone.png']}.png"), 404, "not available")
        assert_error(c.get("/api/search", params={"like": ids["gone.png"]}), 404, "not available")
    eng.close()


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("params, status, fragments", [
    ({"q": ""}, 400, ("empty",)),
    ({"q": "   \t "}, 400, ("empty",)),
    ({"q": "zzqxv qqwvj"}, 400, ("known",)),
    ({"q": "boots", "k": "0"}, 400, ("k must be >= 1",)),
    ({"q": "boots", "k": "-3"}, 400, ("k must be an integer",)),
    ({"q": "boots", "k": "abc"}, 400, ("k must be an integer", "'abc'")),
    ({"q": "boots", "k": "2.5"}, 400, ("k must be an integer",)),
    ({"q": "boots", "k": "201"}, 400, ("at most 200",)),
    ({"q": "boots", "k": "9" * 40}, 400, ("at most 200",)),
    ({"q": "x" * 501}, 400, ("too long",)),
    ({}, 400, ("missing the query",)),
    ({"q": "boots", "like": "1"}, 400, ("not both",)),
    ({"like": "abc"}, 400, ("item id",)),
    ({"like": "-1"}, 400, ("item id",)),
    ({"like": "987654"}, 404, ("no item with id 987654",)),
    ({"like": "9" * 30}, 404, ("no item",)),
])
def test_bad_search_requests(client, params, status, fragments):
    assert_error(client.get("/api/search", params=params), status, *fragments)


def test_bad_uploads(client, engine_dir, sample):
    _, (xt, _) = sample
    good = png_bytes(xt[0])
    post = client.post
    assert_error(post("/api/search/image", files={"image": ("notes.txt", b"just some text", "text/plain")}),
                 415, "notes.txt", "not an image")
    assert_error(post("/api/search/image", files={"image": ("t.png", good[:60], "image/png")}),
                 415, "t.png", "truncated or corrupt")
    assert_error(post("/api/search/image", files={"image": ("e.png", b"", "image/png")}), 400, "empty")
    assert_error(post("/api/search/image", files={"other": ("a.png", good, "image/png")}),
                 400, "no file field named 'image'")
    assert_error(post("/api/search/image", content=b'{"image": 1}', headers={"content-type": "application/json"}),
                 415, "multipart/form-data")
    assert_error(post("/api/search/image", content=b"garbage",
                      headers={"content-type": "multipart/form-data; boundary=xyz"}), 400, "malformed")
    assert_error(post("/api/search/image", files={"image": ("a.png", good, "image/png")}, data={"k": "0"}),
                 400, "k must be >= 1")
    assert_error(post("/api/search/image", files={"image": ("a.png", good, "image/png")}, data={"k": "many"}),
                 400, "k must be an integer")
    # over the default cap of 10 MiB (the declared length is refused before the body is read)
    assert_error(post("/api/search/image", files={"image": ("big.png", b"\0" * (10 * 2 ** 20 + 1), "image/png")}),
                 413, "larger than the limit")
    assert_error(client.get("/api/search/image"), 405, "not allowed")


def test_upload_limits_without_content_length(engine_dir, ref, sample):
    """A chunked body (no Content-Length) is cut off at the cap too; an image that declares
    more pixels than allowed is refused before it is decoded."""
    from pixrank.serve import create_app
    _, (xt, _) = sample
    app = create_app(ref, max_upload_bytes=2048, max_image_pixels=28 * 28 - 1)
    boundary = "pixrankboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.bin\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + b"\1" * 200_000 + \
        f"\r\n--{boundary}--\r\n".encode()

    def chunks():
        for s in range(0, len(body), 4096):
            yield body[s:s + 4096]

    with TestClient(app, base_url=BASE) as c:
        r = c.post("/api/search/image", content=chunks(),
                   headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert "content-length" not in {k.lower() for k in r.request.headers}
        assert_error(r, 413, "larger than the limit of 2,048 bytes")
        assert_error(c.post("/api/search/image", files={"image": ("a.png", png_bytes(xt[0]), "image/png")}),
                     413, "28x28 pixels", "limit is 783 pixels")
    # the engine passed in is not closed by the app's shutdown
    assert len(ref.search_text("bag", 1)) == 1


def test_thumbnail_cache_stays_within_its_budget(client, ref):
    from pixrank.serve import create_app
    ids = [row["id"] for row in client.get("/api/search", params={"q": "coat", "k": 6}).json()["results"]]
    expect = {i: client.get(f"/thumb/{i}.png").content for i in ids}
    budget = sum(len(v) for v in expect.values()) // 2
    for cache in (0, budget):
        app = create_app(ref, thumb_cache=cache)
        svc = app.state.service
        with TestClient(app, base_url=BASE) as c:
            for _ in range(2):
                for i in ids:
                    assert c.get(f"/thumb/{i}.png").content == expect[i]
                    assert svc._thumbs_size == sum(len(v) for v in svc._thumbs.values()) <= cache
        assert (len(svc._thumbs) > 0) == (cache > 0)
    with pytest.raises(ValueError, match="thumb_cache"):
        create_app(ref, thumb_cache=-1)


def test_thumbnail_errors(client):
    assert_error(client.get("/thumb/987654.png"), 404, "no item with id 987654")
    assert_error(client.get("/thumb/abc.png"), 404, "/thumb/ID.png")
    assert_error(client.get("/thumb/12"), 404, "/thumb/ID.png")
    assert_error(client.get("/thumb/" + "9" * 20 + ".png"), 404, "no item")
    assert_error(client.get("/no/such/page"), 404, "not found")


def test_foreign_host_header_is_refused(client):
    r = client.get("/api/search", params={"q": "bag"}, headers={"host": "attacker.example"})
    assert r.status_code == 400
    assert client.get("/api/info", headers={"host": "localhost:8000"}).status_code == 200


# ----------------------------------------------------------------------------- concurrency

def test_concurrent_requests(client, sample):
    """Text, like, upload and thumbnail requests from 4 threads at once all succeed with the
    answers they get one at a time, and leave gradient recording as it was."""
    from pixrank import autograd
    _, (xt, _) = sample
    grad_before = autograd.is_grad_enabled()

    def text(q):
        return client.get("/api/search", params={"q": q, "k": 8})

    def like(i):
        return client.get("/api/search", params={"like": i, "k": 8})

    def upload(i):
        return client.post("/api/search/image", files={"image": ("q.png", png_bytes(xt[i]), "image/png")},
                           data={"k": "8"})

    def thumb(i):
        return client.get(f"/thumb/{i}.png")

    jobs = [(text, q) for q in ("dark ankle boots", "light trousers", "a bag", "sneakers", "shirt")] + \
           [(like, i) for i in (1, 50, 99, 150)] + [(upload, i) for i in (2, 60, 111)] + \
           [(thumb, i) for i in (5, 6, 7)]
    jobs = jobs * 2
    serial = [fn(arg) for fn, arg in jobs]
    with cf.ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda job: job[0](job[1]), jobs))
    for (fn, arg), a, b in zip(jobs, serial, parallel):
        assert a.status_code == b.status_code == 200, (fn.__name__, arg, b.text[:200])
        if fn is thumb:
            assert a.content == b.content
        else:
            ra, rb = a.json()["results"], b.json()["results"]
            assert [x["id"] for x in ra] == [x["id"] for x in rb]
            np.testing.assert_allclose([x["score"] for x in ra], [x["score"] for x in rb], atol=1e-6)
    assert autograd.is_grad_enabled() == grad_before


# ----------------------------------------------------------------------------- create_app / CLI

def test_create_app_errors(tmp_path, ref):
    from pixrank.serve import create_app
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_app(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "engine.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        create_app(bad)
    with pytest.raises(TypeError, match="engine folder or a pixrank Engine"):
        create_app(42)
    with pytest.raises(ValueError, match="max_k"):
        create_app(ref, max_k=0)
    with pytest.raises(ValueError, match="default_k"):
        create_app(ref, max_k=10, default_k=11)


def test_cli_serve_refuses_a_missing_or_corrupt_engine(tmp_path, capsys):
    from pixrank.cli import main
    assert main(["serve", "--engine", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pixrank serve: error:") and "does not exist" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "engine.json").write_text(json.dumps({"format": "pixrank.engine", "version": 1}))
    assert main(["serve", "--engine", str(bad)]) == 2
    assert "pixrank serve: error:" in capsys.readouterr().err


def test_cli_serve_finds_the_engine_in_a_demo_folder(engine_dir, capsys, monkeypatch):
    """Given the folder `pixrank demo --out DIR` wrote, serve uses DIR/engine (checked up to the
    port: the port is taken, so it stops there with status 2)."""
    from pixrank.cli import main
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        assert main(["serve", "--engine", os.path.dirname(engine_dir), "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert f"using the engine in {engine_dir}" in out
    assert f"cannot listen on 127.0.0.1:{port}" in err


def test_cli_serve_port_in_use(engine_dir, capsys):
    from pixrank.cli import main
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        assert main(["serve", "--engine", engine_dir, "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_cli_serve_without_the_web_extra(engine_dir, capsys, monkeypatch):
    import importlib.util

    from pixrank.cli import main
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert main(["serve", "--engine", engine_dir]) == 2
    err = capsys.readouterr().err
    assert "uvicorn" in err and "install pixrank[web]" in err


def test_cli_serve_bad_port(capsys):
    from pixrank.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--engine", "x", "--port", "70000"])
    assert exc.value.code == 2
    assert "0..65535" in capsys.readouterr().err


def test_pixrank_serve_end_to_end(engine_dir, tmp_path):
    """The real server (uvicorn) on a free loopback port: the printed URL answers a search,
    and Ctrl+C (SIGINT) stops it with status 0."""
    import signal
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pixrank.cli", "serve", "--engine", engine_dir, "--port", "0",
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)
    try:
        url, lines = None, []
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"open (http://127\.0\.0\.1:\d+/)", line)
            if m:
                url = m.group(1)
        assert url, ("".join(lines), proc.stderr.read() if proc.poll() is not None else "")
        assert f"{N_INDEXED:,} images" in "".join(lines)
        body = None
        while body is None and time.monotonic() < deadline:  # uvicorn may need a moment after the print
            try:
                with urllib.request.urlopen(url + "api/search?q=ankle+boot&k=4", timeout=30) as resp:
                    body = json.load(resp)
            except (ConnectionError, urllib.error.URLError):
                time.sleep(0.2)
        assert body is not None and len(body["results"]) == 4
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert b'id="results"' in resp.read()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
