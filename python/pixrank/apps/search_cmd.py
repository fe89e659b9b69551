"""Search sub-commands: ``demo``, ``index``, ``search``, ``evaluate-search``.

::

    pixrank demo [--data DIR] [--out DIR] [--epochs N] [--seed S]
    pixrank index --engine DIR --images FOLDER [--from-engine DIR | --data DIR --epochs N]
    pixrank search --engine DIR "dark ankle boots" -k 12 [--grid results.png]
    pixrank search --engine DIR --image query.png -k 12
    pixrank evaluate-search --engine DIR [--json FILE]

``demo`` without ``--data`` uses the embedded Fashion-MNIST sample shipped in the package
(6,000 training and 1,000 test images): it never depends on what is installed elsewhere.
``--data DIR`` reads the four IDX files of DIR (e.g. ``/usr/share/datasets/fashion-mnist``).

``index`` adds a folder of image files to an engine, incrementally (new files embedded,
changed ones re-embedded, unchanged ones skipped, vanished ones removed). When the engine
folder does not exist yet it is created: with the models of ``--from-engine DIR`` (e.g. the
``engine/`` folder ``pixrank demo`` wrote), or else by training a dual encoder on
Fashion-MNIST first (``--data DIR``, default the embedded sample; ``--epochs``).
The usual path is ``pixrank demo --out demo/`` then
``pixrank index --engine demo/engine --images ~/pictures``.

Errors (a missing or corrupt engine folder, an empty or unknown-word query, a missing or
unreadable image, ``-k 0``) print ``pixrank <command>: error: ...`` and exit with status 2.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import sys
import time

DEMO_TEXT_QUERIES = ("dark ankle boots", "light trousers", "a bag", "sneakers", "shirt with long sleeves")


def _positive_int(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
    return v


def register(sub) -> None:
    p = sub.add_parser("demo", help="train a text/image dual encoder on Fashion-MNIST, index the test "
                                    "split, run example queries and write an HTML page",
                       description="Train the dual encoder on the training split, index the test split, answer "
                                   "example text queries and one image query, write contact sheets, index.html "
                                   "and the saved engine into --out, and print an evaluation summary.")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="folder with the four Fashion-MNIST IDX files (default: the embedded sample)")
    p.add_argument("--out", metavar="DIR", default="pixrank-demo", help="output folder (default ./pixrank-demo/)")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="training epochs (default: 12 for <= 10,000 training images, else 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="pairs per training step (default 256)")
    p.add_argument("-k", type=_positive_int, default=12, help="results per example query (default 12)")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation summary")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("index", help="add a folder of images to a search engine (incremental)",
                       description="Index a folder of image files into an engine folder. If the engine folder "
                                   "does not exist, it is created from --from-engine's models, or by training on "
                                   "Fashion-MNIST first (--data, default the embedded sample).")
    p.add_argument("--engine", metavar="DIR", required=True, help="engine folder (created if missing)")
    p.add_argument("--images", metavar="FOLDER", required=True, help="folder of image files (scanned recursively)")
    p.add_argument("--from-engine", metavar="DIR", default=None,
                   help="for a new engine: reuse the trained models of this engine folder")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="for a new engine without --from-engine: Fashion-MNIST folder to train on")
    p.add_argument("--epochs", type=_positive_int, default=None, help="for a new engine: training epochs")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search an engine by text or by image",
                       description="Rank the engine's images by similarity to a text query or to an image.")
    p.add_argument("--engine", metavar="DIR", required=True, help="engine folder")
    p.add_argument("query", nargs="?", default=None, help="text query, e.g. \"dark ankle boots\"")
    p.add_argument("--image", metavar="PATH", default=None, help="query by this image file instead of text")
    p.add_argument("-k", type=_positive_int, default=12, help="number of results (default 12)")
    p.add_argument("--ef", type=_positive_int, default=None, help="HNSW candidate list (default: the engine's)")
    p.add_argument("--grid", metavar="PNG", default=None, help="also write a contact sheet of the results")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("evaluate-search", help="retrieval metrics of an engine on its indexed labelled images",
                       description="recall@k, precision@k and mAP@k (k = 1, 10, 100) for held-out text queries "
                                   "(per relevance kind) and image->image queries, HNSW recall@10 vs exact "
                                   "search, and the median latency of a warm text query.")
    p.add_argument("--engine", metavar="DIR", required=True, help="engine folder")
    p.add_argument("--queries", metavar="JSON", default=None, help="evaluation queries (default: the held-out set)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the full report as JSON")
    p.add_argument("--per-query", action="store_true", help="print AP@10 of each text query")
    p.set_defaults(func=cmd_evaluate)


# ----------------------------------------------------------------------------- helpers

def _err(msg):
    from pixrank.cli import CLIError
    return CLIError(msg)


def _check_k(k):
    if k <= 0:
        raise _err(f"-k must be >= 1, got {k}")


def _check_at_least_1(value, flag):
    """``--epochs 0`` must not silently mean "the default", nor ``--ef -5`` "k"."""
    if value is not None and value < 1:
        raise _err(f"{flag} must be >= 1, got {value}")


def _load_data(data):
    """``(x_train, y_train), (x_test, y_test), dataset-info`` from --data or the embedded sample."""
    from pixrank.data import SAMPLE_DIR, load_idx_folder
    from pixrank.search.engine import EMBEDDED_SAMPLE
    if data is None:
        return (*load_idx_folder(SAMPLE_DIR), {"name": "fashion-mnist", "path": EMBEDDED_SAMPLE})
    path = os.path.abspath(os.path.expanduser(data))
    if not os.path.isdir(path):
        raise _err(f"--data {data!r} is not a folder")
    return (*load_idx_folder(path), {"name": "fashion-mnist", "path": path})


def _auto_epochs(n_train):
    return 12 if n_train <= 10_000 else 4


def _print_results(results, file=None):
    file = sys.stdout if file is None else file
    print(f"{'rank':>4s}  {'score':>7s}  {'id':>6s}  {'label':12s}  source", file=file)
    for r in results:
        print(f"{r.rank:4d}  {r.score:7.4f}  {r.id:6d}  {str(r.label or '-'):12s}  {_printable(r.source)}", file=file)


def _printable(text: str) -> str:
    """``text`` on one line of the table: control characters (a newline in a file name) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _sheet(engine, results, title, path):
    from pixrank.data.images import contact_sheet, save_png_atomic
    import numpy as np
    tiles, caps = [], []
    for r in results:
        t = engine.thumbnail(r.source)
        if t is None:
            t = np.zeros((28, 28), np.uint8)
        tiles.append(t)
        caps.append(f"#{r.rank}  cos {r.score:.3f}\n{r.label or os.path.basename(r.source)}")
    if not tiles:
        return False
    save_png_atomic(contact_sheet(tiles, caps, cols=min(6, len(tiles)), scale=3, title=title), path)
    return True


def _check_out_file(path, flag):
    """Refuse an output path that is a folder, or in a missing folder, before any work."""
    if path is None:
        return
    if os.path.isdir(path):
        raise _err(f"{flag} {path!r} is a folder; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise _err(f"{flag} {path!r}: folder {parent!r} does not exist")


def _open_engine(folder):
    from pixrank.search.engine import Engine
    return Engine.load(folder)


# ----------------------------------------------------------------------------- demo

def cmd_demo(args) -> int:
    import numpy as np
    from pixrank.data.images import save_png_atomic
    from pixrank.search.engine import Engine
    from pixrank.search.evaluation import evaluate_engine, format_report

    _check_k(args.k)
    _check_at_least_1(args.epochs, "--epochs")
    if args.batch_size < 2:
        raise _err(f"--batch-size must be >= 2, got {args.batch_size}")
    t_start = time.perf_counter()
    out = os.path.abspath(os.path.expanduser(args.out))
    if os.path.exists(out) and not os.path.isdir(out):
        raise _err(f"--out {args.out!r} exists and is not a folder")
    (x_train, y_train), (x_test, y_test), dataset = _load_data(args.data)
    epochs = args.epochs or _auto_epochs(len(x_train))
    src = "the embedded sample" if args.data is None else dataset["path"]
    print(f"pixrank demo: training on {len(x_train):,} images of {src} for {epochs} epochs "
          f"(seed {args.seed}), indexing {len(x_test):,} test images; output in {out}/", flush=True)
    os.makedirs(out, exist_ok=True)
    engine = Engine.train(x_train, y_train, epochs=epochs, batch_size=args.batch_size, seed=args.seed,
                          progress=True, dataset=dataset,
                          log=lambda s: print(s, flush=True))
    t_train = time.perf_counter() - t_start
    rep = engine.index_dataset(x_test, y_test, name="fashion-mnist", split="test", progress=True)
    print(f"indexed the test split: {rep}", flush=True)
    engine.save(os.path.join(out, "engine"))
    engine = Engine.load(os.path.join(out, "engine"))

    sections = []
    for qi, q in enumerate(DEMO_TEXT_QUERIES, start=1):
        try:
            res = engine.search_text(q, k=args.k)
        except ValueError as exc:  # a query the vocabulary cannot express
            print(f"\nquery {q!r}: skipped ({exc})")
            continue
        print(f"\ntext query {qi}: {q!r}")
        _print_results(res)
        png = f"query-{qi:02d}.png"
        _sheet(engine, res, f'"{q}"', os.path.join(out, png))
        sections.append((f"text: “{q}”", png, None, res))
    # one image query: a training image (not in the index)
    qimg_i = int(np.flatnonzero(y_train == 7)[0]) if (y_train == 7).any() else 0
    qimg = x_train[qimg_i]
    save_png_atomic(qimg, os.path.join(out, "image-query.png"))
    res = engine.search_image(qimg, k=args.k)
    print(f"\nimage query: training image {qimg_i} (label {engine_label(y_train[qimg_i])}), not in the index")
    _print_results(res)
    _sheet(engine, res, f"image query: train #{qimg_i}", os.path.join(out, "query-image.png"))
    sections.append((f"image: training image #{qimg_i}", "query-image.png", "image-query.png", res))

    summary = None
    if not args.no_eval:
        print("\nevaluating (held-out text queries, image->image on the test split, HNSW vs exact)...", flush=True)
        summary = evaluate_engine(engine, latency_repeats=200)
        print(format_report(summary))
        with open(os.path.join(out, "evaluation.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    _write_html(os.path.join(out, "index.html"), sections, summary, engine, len(x_train), epochs, src)
    engine.close()
    wall = time.perf_counter() - t_start
    print(f"\nwrote {out}/index.html, {len(sections)} contact sheets and the engine in {out}/engine/ "
          f"(training {t_train:.0f} s, total {wall:.0f} s)")
    print(f"next: pixrank search --engine {os.path.join(args.out, 'engine')} \"dark ankle boots\" -k 12 --grid results.png")
    return 0


def engine_label(y):
    from pixrank.data.captions import CLASS_NAMES
    return CLASS_NAMES[int(y)]


def _write_html(path, sections, summary, engine, n_train, epochs, src):
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>pixrank demo</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
             "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}section{margin-bottom:2em}"
             "img{image-rendering:pixelated}</style></head><body>",
             "<h1>pixrank demo</h1>",
             f"<p>Dual encoder trained on {n_train:,} Fashion-MNIST images of {e(str(src))} for {epochs} epochs; "
             f"{len(engine):,} test images indexed (HNSW, M={engine.index.M}, ef={engine.ef}). "
             f"The engine is in <code>engine/</code>.</p>"]
    for title, png, query_png, res in sections:
        parts.append(f"<section><h2>{e(title)}</h2>")
        if query_png:
            parts.append(f"<p>query image: <img src='{e(query_png)}' width='84' alt='query'></p>")
        parts.append(f"<img src='{e(png)}' alt='{e(title)}'>")
        parts.append("<table><tr><th>rank</th><th>score</th><th>id</th><th>label</th><th>source</th></tr>")
        for r in res:
            parts.append(f"<tr><td>{r.rank}</td><td>{r.score:.4f}</td><td>{r.id}</td><td>{e(str(r.label))}</td>"
                         f"<td>{e(r.source)}</td></tr>")
        parts.append("</table></section>")
    if summary:
        from pixrank.search.evaluation import format_report
        parts.append(f"<section><h2>evaluation</h2><pre>{e(format_report(summary))}</pre></section>")
    parts.append("</body></html>")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- index

def cmd_index(args) -> int:
    from pixrank.search.engine import Engine
    _check_at_least_1(args.epochs, "--epochs")
    folder = os.path.abspath(os.path.expanduser(args.engine))
    images = os.path.expanduser(args.images)
    if not os.path.exists(images):
        raise FileNotFoundError(f"--images {args.images!r} does not exist")
    if not os.path.isdir(images):
        raise _err(f"--images {args.images!r} is not a folder")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise _err(f"--engine {args.engine!r} is a file, not an engine folder")
    if os.path.exists(os.path.join(folder, "engine.json")):
        if args.from_engine:
            raise _err(f"--from-engine is only for a new engine; {args.engine!r} already exists")
        engine = Engine.load(folder)
    elif os.path.exists(folder) and os.listdir(folder):
        raise _err(f"--engine {args.engine!r} exists but is not a pixrank engine folder")
    elif args.from_engine:
        src = Engine.load(args.from_engine)
        engine = Engine(src.image_model, src.text_model, ef=src.ef,
                        info={k: v for k, v in src.info.items() if k != "dataset"})
        src.close()
        print(f"new engine {folder} with the models of {args.from_engine}")
    else:
        (x_train, y_train), _, dataset = _load_data(args.data)
        epochs = args.epochs or _auto_epochs(len(x_train))
        print(f"new engine {folder}: training a dual encoder on {len(x_train):,} Fashion-MNIST images "
              f"for {epochs} epochs first (use --from-engine DIR to reuse trained models)", flush=True)
        engine = Engine.train(x_train, y_train, epochs=epochs, seed=args.seed, progress=True,
                              log=lambda s: print(s, flush=True))
    t0 = time.perf_counter()
    import warnings
    from pixrank.data.images import ImageLoadWarning
    with warnings.catch_warnings():
        # each skipped file is listed below, once; Python's warning format would print it a
        # second time, followed by a line of pixrank's source code
        warnings.simplefilter("ignore", ImageLoadWarning)
        rep = engine.index_images(images, progress=True)
    engine.save(folder)
    engine.close()
    print(f"{images}: {rep} in {time.perf_counter() - t0:.1f} s; the engine holds {len(engine.index)} images")
    for p, why in rep.failures[:20]:
        # a file name of non-UTF-8 bytes is shown with the bytes escaped (printing it as it is
        # raises UnicodeEncodeError)
        shown = os.fsencode(p).decode("utf-8", "backslashreplace")
        print(f"  skipped {shown}: {why}")
    return 0


# ----------------------------------------------------------------------------- search

def cmd_search(args) -> int:
    _check_k(args.k)
    _check_at_least_1(args.ef, "--ef")
    _check_out_file(args.grid, "--grid")
    if (args.query is None) == (args.image is None):
        raise _err("give either a text query or --image PATH (one of them)")
    if args.query is not None and not args.query.strip():
        raise _err("the query is empty")
    if args.image is not None and not os.path.exists(args.image):
        raise FileNotFoundError(f"--image {args.image!r} does not exist")
    engine = _open_engine(args.engine)
    try:
        t0 = time.perf_counter()
        if args.query is not None:
            res = engine.search_text(args.query, k=args.k, ef=args.ef)
            title = f'"{args.query}"'
        else:
            res = engine.search_image(args.image, k=args.k, ef=args.ef)
            title = f"image {os.path.basename(args.image)}"
        ms = (time.perf_counter() - t0) * 1e3
        if args.json:
            import dataclasses
            print(json.dumps([dataclasses.asdict(r) for r in res], indent=1))
        else:
            print(f"{title}: {len(res)} results of {len(engine.index)} images ({ms:.1f} ms)")
            _print_results(res)
        if args.grid:
            if _sheet(engine, res, title, args.grid):
                print(f"wrote {args.grid}")
    finally:
        engine.close()
    return 0


# ----------------------------------------------------------------------------- evaluate

def cmd_evaluate(args) -> int:
    from pixrank.search.evaluation import evaluate_engine, format_report
    _check_out_file(args.json, "--json")
    queries = None
    if args.queries:
        from pixrank.data.captions import load_eval_queries
        queries = load_eval_queries(args.queries)
    engine = _open_engine(args.engine)
    try:
        rep = evaluate_engine(engine, queries=queries)
    finally:
        engine.close()
    print(format_report(rep))
    if args.per_query:
        for q in rep["text_per_query"]:
            print(f"  AP@10 {q['AP@10']:.3f}  {q['kind']:10s}  {q['variant']:10s}  {q['query']!r}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rep, f, indent=1)
    return 0
