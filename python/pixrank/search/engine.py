"""The search engine: a dual encoder, an index of image embeddings and a catalog of metadata.

:class:`Engine` ties together

* an :class:`~pixrank.search.encoder.ImageEncoder` and a
  :class:`~pixrank.search.encoder.TextEncoder` (two towers into one ``d``-dimensional space),
* an :class:`~pixrank.search.index.Index` (HNSW by default, cosine space) holding one
  L2-normalised vector per image under an integer id, and
* a :class:`~pixrank.search.catalog.Catalog` (SQLite) holding per id the source (file path or
  data-set key such as ``fashion-mnist:test:123``), size, mtime, sha256, label, caption,
  width and height.

Indexing embeds images and writes catalog rows and vectors under the same ids; a query
(text, image or vector) is embedded, ranked by the index and joined with the catalog into
:class:`SearchResult` rows.

On disk (:meth:`Engine.save` / :meth:`Engine.load`) an engine is one folder::

    engine.json          format, version, embedding dim, space, M, ef_construction, query ef,
                         the encoders' names/versions/sha256, the index header's sha256 and
                         count, the catalog's schema version and count, training record,
                         the data set the test split came from (for thumbnails / evaluation)
    image_encoder/       model.pxr + encoder.json (InputSpec, sha256 of model.pxr)
    text_encoder/        model.pxr + encoder.json (tokenizer, sha256 of model.pxr)
    index/               pixrank.search.index.Index folder
    catalog.sqlite       pixrank.search.catalog.Catalog

A save writes a complete new folder under a temporary name next to the target and renames
it into place (the previous folder, if any, is renamed away first and removed after), so a
crash leaves either the old engine or the new one. Loading checks every part against
``engine.json`` and raises ``ValueError`` naming the disagreement (an index of another
dimension, a model file that is not the one recorded, a catalog that does not match the index).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from typing import Sequence

import numpy as np

from pixrank.search.catalog import Catalog, plan_folder, source_for_path
from pixrank.search.encoder import DualEncoder, ImageEncoder, TextEncoder, ENCODER_VERSION
from pixrank.search.index import Index

__all__ = ["Engine", "SearchResult", "IndexReport", "ENGINE_FORMAT", "ENGINE_VERSION", "EMBEDDED_SAMPLE"]

ENGINE_FORMAT = "pixrank.engine"
ENGINE_VERSION = 1
CONFIG_NAME = "engine.json"
#: how ``engine.json`` names the embedded Fashion-MNIST sample (its path depends on the install)
EMBEDDED_SAMPLE = "<embedded-sample>"
_DEFAULT_EF = 64


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """One ranked result.

    Attributes:
        rank: 1-based position. score: cosine similarity in [-1, 1] (higher is better).
        id: the index/catalog id. source: file path or data-set key.
        label: class name where known (else None). caption: the catalog caption (or None).
        label_id: class id where known.
    """

    rank: int
    score: float
    id: int
    source: str
    label: str | None
    caption: str | None
    label_id: int | None = None


@dataclasses.dataclass
class IndexReport:
    """What an indexing call did: counts of added, updated (re-embedded), unchanged (skipped),
    removed (vanished) and failed (unreadable, skipped with a warning) items, plus the
    ``(path, reason)`` of each failure."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    failures: list = dataclasses.field(default_factory=list)

    def __str__(self):
        return (f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
                f"{self.removed} removed, {self.failed} unreadable")


def _check_k(k, who) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{who}: k must be an int, got {type(k).__name__} {k!r}")
    if k <= 0:
        raise ValueError(f"{who}: k must be >= 1, got {k}")
    return int(k)


def _sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _utf8_name(path: str) -> bool:
    """Whether ``path`` can be stored in the catalog: a file name of undecodable bytes (not UTF-8)
    reaches Python as lone surrogates, which SQLite's text columns cannot hold."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _cfg_int(value, field: str, cpath: str) -> int:
    """An integer field of ``engine.json``; ValueError naming the file and field otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{cpath!r}: the field {field!r} must be an int, got {value!r} (corrupt?)")
    return value


def _part_path(folder: str, name, cpath: str) -> str:
    """The path of an engine part named in ``engine.json``: a relative name inside ``folder``.

    Raises:
        ValueError: ``name`` is not a string, is absolute or leads outside the engine folder.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cpath!r} names an engine part {name!r}; expected a file or folder name")
    path = os.path.normpath(os.path.join(folder, name))
    if os.path.isabs(name) or os.path.commonpath([folder, path]) != folder or path == folder:
        raise ValueError(f"{cpath!r} names the part {name!r}, which is not inside the engine folder "
                         f"(corrupt or tampered with)")
    return path


class Engine:
    """Text and image search over a collection of images.

    Args:
        image_model: an :class:`~pixrank.search.encoder.ImageEncoder`.
        text_model: a :class:`~pixrank.search.encoder.TextEncoder` with the same dimension.
        index: an :class:`~pixrank.search.index.Index` of that dimension in the ``'cosine'``
            space (default: a new empty HNSW index, ``M=16``, ``ef_construction=200``).
        catalog: a :class:`~pixrank.search.catalog.Catalog` (default: an in-memory one; it is
            written to the engine folder by :meth:`save`).
        ef: HNSW candidate-list size at query time (default 64; raised to ``k`` per query).
        info: extra JSON-able facts recorded in ``engine.json`` (training, data set).

    Raises:
        TypeError: an argument of the wrong kind.
        ValueError: the towers' dimensions differ, the index has another dimension or space.

    Example::

        engine = Engine.train(x_train, y_train, epochs=8)
        engine.index_dataset(x_test, y_test, split="test")
        for r in engine.search_text("dark ankle boots", k=5):
            print(r.rank, round(r.score, 3), r.source, r.label)
        engine.save("my-engine/")
        again = Engine.load("my-engine/")
    """

    def __init__(self, image_model: ImageEncoder, text_model: TextEncoder, index: Index | None = None,
                 catalog: Catalog | None = None, *, ef: int = _DEFAULT_EF, info: dict | None = None):
        if not isinstance(image_model, ImageEncoder):
            raise TypeError(f"Engine: image_model must be an ImageEncoder, got {type(image_model).__name__}")
        if not isinstance(text_model, TextEncoder):
            raise TypeError(f"Engine: text_model must be a TextEncoder, got {type(text_model).__name__}")
        if image_model.embed_dim != text_model.embed_dim:
            raise ValueError(f"Engine: the image model outputs {image_model.embed_dim} dimensions but the "
                             f"text model {text_model.embed_dim}")
        self.image_model, self.text_model = image_model, text_model
        dim = image_model.embed_dim
        if index is None:
            index = Index(dim, space="cosine", M=16, ef_construction=200, ef=int(ef))
        if not isinstance(index, Index):
            raise TypeError(f"Engine: index must be a pixrank.search.index.Index, got {type(index).__name__}")
        if index.dim != dim:
            raise ValueError(f"Engine: the index holds {index.dim}-dimensional vectors but the models "
                             f"produce {dim} dimensions (an index built by another model?)")
        if index.space != "cosine":
            raise ValueError(f"Engine: the index must use the 'cosine' space, got {index.space!r}")
        if catalog is None:
            catalog = Catalog(":memory:")
        if not isinstance(catalog, Catalog):
            raise TypeError(f"Engine: catalog must be a pixrank.search.catalog.Catalog, got {type(catalog).__name__}")
        self.index, self.catalog = index, catalog
        if isinstance(ef, bool) or not isinstance(ef, (int, np.integer)) or ef < 1:
            raise ValueError(f"Engine: ef must be an int >= 1, got {ef!r}")
        self.ef = int(ef)
        self.info = dict(info or {})
        self._dataset_cache = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def train(cls, x_train, y_train, *, epochs: int = 8, batch_size: int = 256, embed_dim: int = 64,
              learning_rate: float = 2e-3, seed: int = 0, progress: bool = True, log=None,
              M: int = 16, ef_construction: int = 200, ef: int = _DEFAULT_EF, dataset: dict | None = None) -> "Engine":
        """Train a dual encoder on Fashion-MNIST (see
        :func:`pixrank.search.encoder.train_dual_encoder`) and return an engine with an empty
        index (HNSW with ``M`` / ``ef_construction``) and an in-memory catalog.

        Args:
            dataset: optional description of the data (``{"name", "path"}``) recorded in
                ``engine.json``; ``path`` lets :meth:`thumbnail` and evaluation find images of
                data-set keys later.
        """
        from pixrank.search.encoder import train_dual_encoder
        t0 = time.perf_counter()
        de: DualEncoder = train_dual_encoder(x_train, y_train, epochs=epochs, batch_size=batch_size,
                                             embed_dim=embed_dim, learning_rate=learning_rate, seed=seed,
                                             progress=progress, log=log)
        info = {"training": {"epochs": int(epochs), "batch_size": int(batch_size), "seed": int(seed),
                             "learning_rate": float(learning_rate), "train_images": int(len(x_train)),
                             "seconds": round(time.perf_counter() - t0, 1),
                             "logit_scale": round(math.exp(de.log_temp), 3), "history": de.history}}
        if dataset:
            info["dataset"] = dict(dataset)
        index = Index(de.embed_dim, space="cosine", M=M, ef_construction=ef_construction, ef=ef,
                      capacity=max(1024, 2 * len(x_train) // 5))
        return cls(de.image, de.text, index, Catalog(":memory:"), ef=ef, info=info)

    @property
    def dim(self) -> int:
        return self.image_model.embed_dim

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self):
        return (f"Engine(dim={self.dim}, items={len(self.index)}, image={self.image_model.name!r}, "
                f"text={self.text_model.name!r}, ef={self.ef})")

    # ------------------------------------------------------------------ indexing
    def _commit(self, vectors, records, report_field, report) -> list[int]:
        """Catalog upsert then index add (same ids)."""
        if not records:
            return []
        ids = self.catalog.upsert(records)
        self.index.add(np.asarray(vectors, np.float32), np.asarray(ids, np.int64))
        setattr(report, report_field, getattr(report, report_field) + len(ids))
        return ids

    def index_dataset(self, x, y=None, *, name: str = "fashion-mnist", split: str = "test",
                      batch_size: int = 512, progress: bool = False) -> IndexReport:
        """Index an array data set; item ``i`` gets the source key ``f"{name}:{split}:{i}"``.

        Items already catalogued with the same pixels (sha256 of the image bytes) are skipped;
        changed ones are re-embedded. The caption is generated from the label and the measured
        tone (:func:`pixrank.data.captions.caption_of`).

        Args:
            x: uint8 ``(n, H, W)`` / ``(n, H, W, C)`` images in the image model's input size.
            y: optional int ``(n,)`` class ids (Fashion-MNIST: 0..9).
            name, split: parts of the source key. batch_size: images per forward pass.
            progress: a tqdm bar while embedding.

        Raises:
            ValueError: shapes that disagree with the model's input or with ``y``; a negative
                class id.
            TypeError: ``y`` is not an integer array.
        """
        from pixrank.data.captions import CLASS_NAMES, caption_of, tone_of
        x = np.asarray(x)
        if x.ndim not in (3, 4) or len(x) == 0:
            raise ValueError(f"index_dataset: x must be a non-empty (n, H, W[, C]) array, got shape {x.shape}")
        if y is not None:
            y = np.asarray(y)
            if y.shape != (len(x),):
                raise ValueError(f"index_dataset: y must have shape ({len(x)},), got {y.shape}")
            # float labels were truncated by int() (0.5 -> class 0) and negative ones failed only
            # after the whole array was embedded
            if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
                raise TypeError(f"index_dataset: y must hold integer class ids, got dtype {y.dtype}")
            if y.size and int(y.min()) < 0:
                bad = int(np.argmin(y))
                raise ValueError(f"index_dataset: class ids must be >= 0, got {int(y[bad])} at index {bad}")
        if not isinstance(name, str) or not name or ":" in name or not isinstance(split, str) or ":" in split:
            raise ValueError(f"index_dataset: name and split must be non-empty strings without ':', got {name!r}, {split!r}")
        self.image_model.prepare(x[:1])  # validates the size before any work
        keys = [f"{name}:{split}:{i}" for i in range(len(x))]
        shas = [_sha256_bytes(np.ascontiguousarray(x[i]).tobytes()) for i in range(len(x))]
        known = {r.source: (r.id, r.sha256) for r in self.catalog.records() if r.source.startswith(f"{name}:{split}:")}
        report = IndexReport()
        todo = []
        for i, (k, s) in enumerate(zip(keys, shas)):
            hit = known.get(k)
            if hit is not None and hit[1] == s:
                report.unchanged += 1
            else:
                todo.append(i)
        if not todo:
            return report
        todo = np.asarray(todo)
        labelled = y is not None and x.ndim in (3, 4) and x.shape[1:3] == (28, 28) and y.max(initial=0) < len(CLASS_NAMES)
        tones = tone_of(x[todo]) if labelled else None
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = lambda it: tqdm(it, desc="embedding", unit="batch")  # noqa: E731
        vecs = self.image_model.encode(x[todo], batch_size=batch_size, progress=bar)
        new_recs, new_vecs, upd_recs, upd_vecs = [], [], [], []
        for j, i in enumerate(todo.tolist()):
            rec = {"source": keys[i], "size": int(x[i].nbytes), "sha256": shas[i],
                   "height": int(x.shape[1]), "width": int(x.shape[2])}
            if y is not None:
                rec["label_id"] = int(y[i])
                if labelled:
                    rec["label"] = CLASS_NAMES[int(y[i])]
                    rec["caption"] = caption_of(int(y[i]), int(tones[j]))
            hit = known.get(keys[i])
            if hit is None:
                new_recs.append(rec)
                new_vecs.append(vecs[j])
            else:
                rec["id"] = hit[0]
                upd_recs.append(rec)
                upd_vecs.append(vecs[j])
        self._commit(new_vecs, new_recs, "added", report)
        self._commit(upd_vecs, upd_recs, "updated", report)
        return report

    def _embed_files(self, paths, on_error, progress):
        from pixrank.data.images import load_images
        if not paths:
            return np.empty((0, self.dim), np.float32), [], [], []
        batch, ok, failures, sizes = load_images(paths, self.image_model.spec, on_error=on_error,
                                                 progress=progress, with_sizes=True)
        if len(ok) == 0:
            return np.empty((0, self.dim), np.float32), [], failures, []
        vecs = self.image_model.encode(batch)
        return vecs, ok, failures, sizes

    def index_images(self, items, *, keys: Sequence[str] | None = None, labels=None, captions=None,
                     on_error: str | None = None, recursive: bool = True, progress: bool = False) -> IndexReport:
        """Index image files, a folder (incrementally) or an array of images.

        Args:
            items: one of
                * a folder (str / PathLike): scanned with :func:`pixrank.search.catalog.plan_folder`;
                  new files are added, changed ones re-embedded, unchanged ones skipped and
                  catalogued files that vanished from the folder removed from index and catalog.
                  Unreadable files are skipped with a warning and counted (``on_error='warn'``).
                * a file path or a list of file paths: each is added (or re-embedded when its
                  size/mtime changed; skipped when not). Missing paths raise FileNotFoundError;
                  unreadable files raise ValueError (``on_error='raise'``, the default here) or
                  are skipped with a warning (``'warn'``).
                * an array ``(n, H, W[, C])`` (uint8 or float in [0, 1]) in the model's input
                  size: indexed under ``keys`` (default ``array:<sha256 prefix>``).
            keys: source keys of array items. labels: optional class ids (arrays only).
            captions: optional captions, one per array item.
            on_error: ``'warn'`` or ``'raise'`` (see above).
            recursive: scan sub-folders. progress: tqdm bars.

        Returns:
            an :class:`IndexReport`.

        Raises:
            FileNotFoundError: a folder or explicit path that does not exist.
            ValueError: an unreadable explicit file (``on_error='raise'``), bad array shapes,
                keys/labels/captions of the wrong length.
            TypeError: ``items`` of an unsupported kind.
        """
        if isinstance(items, np.ndarray):
            return self._index_arrays(items, keys, labels, captions)
        if isinstance(items, (str, os.PathLike)):
            p = os.fspath(items)
            if isinstance(p, str) and not _utf8_name(p):
                raise ValueError(f"index_images: the path {p!r} is not valid UTF-8; rename it")
            if os.path.isdir(p):
                return self._index_folder(p, on_error or "warn", recursive, progress)
            items = [p]
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"index_images: expected a folder, a path, a list of paths or an array, "
                            f"got {type(items).__name__}")
        paths = [os.fspath(p) for p in items]
        for p in paths:
            if not os.path.exists(p):
                raise FileNotFoundError(f"index_images: {p!r} does not exist")
            if os.path.isdir(p):
                raise ValueError(f"index_images: {p!r} is a folder; pass folders on their own")
            if isinstance(p, str) and not _utf8_name(p):
                raise ValueError(f"index_images: the file name {p!r} is not valid UTF-8; rename the file")
        return self._index_paths(paths, on_error or "raise", progress)

    def _index_paths(self, paths, on_error, progress) -> IndexReport:
        from pixrank.search.catalog import file_record
        report = IndexReport()
        new, changed = [], []
        for p in paths:
            rec = self.catalog.get_by_source(source_for_path(p))
            st = os.stat(p)
            if rec is not None and rec.size == st.st_size and rec.mtime == float(st.st_mtime):
                report.unchanged += 1
            elif rec is None:
                new.append(p)
            else:
                changed.append((p, rec.id))
        todo = new + [p for p, _ in changed]
        ids_of = {p: rid for p, rid in changed}
        vecs, ok, failures, sizes = self._embed_files(todo, on_error, progress)
        report.failures.extend(failures)
        report.failed += len(failures)
        self._commit_files(vecs, ok, sizes, ids_of, file_record, report)
        return report

    def _index_folder(self, folder, on_error, recursive, progress) -> IndexReport:
        report = IndexReport()
        plan = plan_folder(self.catalog, folder, recursive=recursive)
        report.unchanged = len(plan.unchanged)
        if plan.vanished:
            self.remove(plan.vanished)
            report.removed = len(plan.vanished)
        todo = list(plan.new) + [p for p, _ in plan.changed]
        ids_of = {p: rid for p, rid in plan.changed}
        # a name that is not UTF-8 used to abort the whole run at the catalog write (after
        # embedding everything); such files are skipped like unreadable ones
        bad_names = [p for p in todo if not _utf8_name(p)]
        if bad_names:
            import warnings
            from pixrank.data.images import ImageLoadWarning
            todo = [p for p in todo if _utf8_name(p)]
            for p in bad_names:
                why = "the file name is not valid UTF-8 (rename the file to index it)"
                if on_error == "raise":
                    raise ValueError(f"{p!r}: {why}")
                warnings.warn(f"skipped {p!r}: {why}", ImageLoadWarning, stacklevel=3)
                report.failures.append((p, why))
            report.failed += len(bad_names)
        vecs, ok, failures, sizes = self._embed_files(todo, on_error, progress)
        report.failures.extend(failures)
        report.failed += len(failures)
        # a catalogued file that changed and no longer reads: drop the stale entry
        stale = [ids_of[p] for p, _ in failures if p in ids_of]
        if stale:
            self.remove(stale)
            report.removed += len(stale)
        self._commit_files(vecs, ok, sizes, ids_of, plan.record_for, report)
        return report

    def _commit_files(self, vecs, paths, sizes, ids_of, record_for, report) -> None:
        """Commit embedded files: paths already in ``ids_of`` (path -> id) are updated under their id,
        the others added; ``record_for(path)`` gives each file's catalog record (source, size, mtime,
        sha256)."""
        recs_new, v_new, recs_upd, v_upd = [], [], [], []
        for v, p, (w, h) in zip(vecs, paths, sizes):
            rec = {**record_for(p), "width": int(w), "height": int(h)}
            if p in ids_of:
                rec["id"] = ids_of[p]
                recs_upd.append(rec)
                v_upd.append(v)
            else:
                recs_new.append(rec)
                v_new.append(v)
        self._commit(v_new, recs_new, "added", report)
        self._commit(v_upd, recs_upd, "updated", report)

    def _index_arrays(self, x, keys, labels, captions) -> IndexReport:
        n = len(x)
        if n == 0:
            raise ValueError("index_images: the array holds no images")
        vecs = self.image_model.encode(x)
        if keys is None:
            keys = ["array:" + _sha256_bytes(np.ascontiguousarray(x[i]).tobytes())[:16] for i in range(n)]
        keys = [str(k) for k in keys]
        for what, seq in (("keys", keys), ("labels", labels), ("captions", captions)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"index_images: {n} images but {len(seq)} {what}")
        if len(set(keys)) != n:
            raise ValueError("index_images: keys must be unique (identical images get identical default keys)")
        report = IndexReport()
        recs_new, v_new, recs_upd, v_upd = [], [], [], []
        for i in range(n):
            rec = {"source": keys[i], "size": int(np.asarray(x[i]).nbytes),
                   "sha256": _sha256_bytes(np.ascontiguousarray(x[i]).tobytes()),
                   "height": int(x.shape[1]), "width": int(x.shape[2])}
            if labels is not None:
                rec["label_id"] = int(labels[i])
            if captions is not None:
                rec["caption"] = str(captions[i])
            old = self.catalog.get_by_source(keys[i])
            if old is not None:
                if old.sha256 == rec["sha256"]:
                    report.unchanged += 1
                    continue
                rec["id"] = old.id
                recs_upd.append(rec)
                v_upd.append(vecs[i])
            else:
                recs_new.append(rec)
                v_new.append(vecs[i])
        self._commit(v_new, recs_new, "added", report)
        self._commit(v_upd, recs_upd, "updated", report)
        return report

    def remove(self, ids) -> int:
        """Remove ids from the index and the catalog; returns how many were removed.

        Raises:
            KeyError: an id that is in neither.
        """
        ids = [int(i) for i in np.asarray(ids).reshape(-1).tolist()]
        if not ids:
            return 0
        unknown = [i for i in ids if i not in self.index and i not in self.catalog]
        if unknown:
            raise KeyError(f"Engine.remove: unknown ids {unknown[:10]}")
        in_index = [i for i in ids if i in self.index]
        if in_index:
            self.index.delete(in_index)
        self.catalog.delete(ids, missing="ignore")
        return len(ids)

    # ------------------------------------------------------------------ queries
    def encode_text(self, query: str) -> np.ndarray:
        """The embedding of one text query, float32 ``(d,)``.

        Raises:
            TypeError: not a str. ValueError: empty / whitespace-only, or no known word and no
            n-gram seen in training (:class:`pixrank.text.UnknownQueryError`).
        """
        if not isinstance(query, str):
            raise TypeError(f"search_text: query must be a str, got {type(query).__name__}")
        if not query.strip():
            raise ValueError("search_text: the query is empty (only whitespace)")
        return self.text_model.encode([query])[0]

    def encode_image(self, image) -> np.ndarray:
        """The embedding of one image (a path, a PIL image, or an array), float32 ``(d,)``.

        Arrays already in the model's input size (``(H, W)`` / ``(H, W, C)`` uint8, or float in
        [0, 1]) are used as they are; anything else goes through
        :func:`pixrank.data.images.image_to_array` with the model's InputSpec.

        Raises:
            FileNotFoundError: a path that does not exist. ValueError: not a readable image, or
            a bad array. TypeError: an unsupported object.
        """
        from pixrank.data.images import image_to_array
        spec = self.image_model.spec
        if isinstance(image, (str, os.PathLike)):
            p = os.fspath(image)
            if not os.path.exists(p):
                raise FileNotFoundError(f"search_image: {p!r} does not exist")
            if os.path.isdir(p):
                raise ValueError(f"search_image: {p!r} is a folder, expected an image file")
            x = image_to_array(p, spec)
        elif isinstance(image, np.ndarray) and image.shape[:2] == (spec.height, spec.width) and \
                (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == spec.channels)):
            x = self.image_model.prepare(image[None]) if image.dtype == np.uint8 else image_to_array(image, spec)
        else:
            x = image_to_array(image, spec)
        return self.image_model.encode(x)[0]

    def search_vector(self, v, k: int = 10, ef: int | None = None) -> list[SearchResult]:
        """The ``k`` indexed images closest to vector ``v`` (cosine), best first.

        Args:
            v: ``(d,)`` (or ``(1, d)``) query vector. k: results wanted (>= 1; fewer come back
                when the index holds fewer). ef: HNSW candidate list (default the engine's).

        Raises:
            ValueError: ``k <= 0``, a vector of the wrong dimension, with NaN/inf, or zero.
            TypeError: ``k`` not an int; a complex or non-numeric vector.
        """
        k = _check_k(k, "search")
        a = np.asarray(v)
        if a.dtype.kind not in "fiub":  # complex (imaginary part would be dropped), str, object
            raise TypeError(f"search_vector: v must be a real-valued numeric vector, got dtype {a.dtype}")
        v = a.astype(np.float64)
        if v.ndim == 2 and v.shape[0] == 1:
            v = v[0]
        if v.shape != (self.dim,):
            raise ValueError(f"search_vector: v must have shape ({self.dim},), got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError("search_vector: v contains NaN or infinity")
        # normalise in float64: a zero vector has no direction (every cosine would be 0 and
        # the "ranking" arbitrary), and float32 |v|^2 overflows for entries above ~1e19
        scale = np.max(np.abs(v))
        if scale == 0:
            raise ValueError("search_vector: v is the zero vector (no direction to rank by)")
        v = v / scale
        v = (v / np.linalg.norm(v)).astype(np.float32)
        if len(self.index) == 0:
            return []
        ids, scores = self.index.query(v[None], k=k, ef=max(self.ef if ef is None else int(ef), k))
        ids, scores = ids[0], scores[0]
        recs = self.catalog.get(ids, missing="none")
        out = []
        for r, (i, s, rec) in enumerate(zip(ids.tolist(), scores.tolist(), recs), start=1):
            if rec is None:  # pragma: no cover - index and catalog are written together
                out.append(SearchResult(r, float(s), int(i), "?", None, None, None))
            else:
                out.append(SearchResult(r, float(s), int(i), rec.source, rec.label, rec.caption, rec.label_id))
        return out

    def search_text(self, query: str, k: int = 10, ef: int | None = None) -> list[SearchResult]:
        """Images best matching a text query (see :meth:`encode_text` for the errors)."""
        _check_k(k, "search_text")
        return self.search_vector(self.encode_text(query), k, ef)

    def search_image(self, image, k: int = 10, ef: int | None = None) -> list[SearchResult]:
        """Images most similar to an image (see :meth:`encode_image` for the errors)."""
        _check_k(k, "search_image")
        return self.search_vector(self.encode_image(image), k, ef)

    # ------------------------------------------------------------------ thumbnails
    def dataset_arrays(self, split: str = "test"):
        """The images of the data set recorded in ``engine.json`` (``info['dataset']``) for
        ``split`` as uint8 ``(n, 28, 28)``, or None when no readable data set is recorded."""
        ds = self.info.get("dataset") or {}
        path = ds.get("path")
        if not path:
            return None
        if self._dataset_cache is None:
            from pixrank.data import SAMPLE_DIR, load_idx_folder
            folder = SAMPLE_DIR if path == EMBEDDED_SAMPLE else path
            try:
                (xtr, _), (xte, _) = load_idx_folder(folder)
            except (OSError, ValueError):
                return None
            self._dataset_cache = {"train": xtr, "test": xte}
        return self._dataset_cache.get(split)

    def thumbnail(self, source: str):
        """Something :func:`pixrank.data.images.contact_sheet` can draw for a result's source:
        the file path, the data-set image (uint8 ``(28, 28)``) of a key, or None."""
        if ":" in source and not os.path.exists(source):
            parts = source.split(":")
            if len(parts) == 3 and parts[2].isdigit():
                arr = self.dataset_arrays(parts[1])
                if arr is not None and int(parts[2]) < len(arr):
                    return arr[int(parts[2])]
            return None
        return source if os.path.exists(source) else None

    # ------------------------------------------------------------------ persistence
    def _config(self, index_header_sha, enc_meta) -> dict:
        return {
            "format": ENGINE_FORMAT, "version": ENGINE_VERSION,
            "pixrank_version": _pixrank_version(), "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "embed_dim": self.dim, "space": self.index.space, "M": self.index.M,
            "ef_construction": self.index.ef_construction, "ef": self.ef,
            "image_encoder": {"folder": "image_encoder", "name": self.image_model.name,
                              "version": ENCODER_VERSION, "model_sha256": enc_meta["image"]["model_sha256"],
                              "input_spec": enc_meta["image"]["input_spec"]},
            "text_encoder": {"folder": "text_encoder", "name": self.text_model.name,
                             "version": ENCODER_VERSION, "model_sha256": enc_meta["text"]["model_sha256"],
                             "vocabulary": self.text_model.tokenizer.num_words,
                             "buckets": self.text_model.tokenizer.buckets},
            "index": {"folder": "index", "header_sha256": index_header_sha, "count": len(self.index),
                      "dim": self.index.dim, "exact": self.index.exact},
            "catalog": {"file": "catalog.sqlite", "schema_version": self.catalog.schema_version,
                        "count": len(self.catalog)},
            "info": self.info,
        }

    def save(self, folder) -> None:
        """Write the engine to ``folder`` (see the module docstring), atomically.

        Raises:
            ValueError: ``folder`` exists and is neither empty nor a pixrank engine (refuses
                to replace other data). OSError: it cannot be written.
        """
        folder = os.path.abspath(os.fspath(folder))
        if os.path.exists(folder):
            if not os.path.isdir(folder):
                raise ValueError(f"Engine.save: {folder!r} exists and is not a folder")
            if os.listdir(folder) and not os.path.isfile(os.path.join(folder, CONFIG_NAME)):
                raise ValueError(f"Engine.save: {folder!r} exists and is not a pixrank engine folder; "
                                 f"refusing to replace it")
        parent = os.path.dirname(folder)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.tmp-", dir=parent)
        try:
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; the engine folder follows the umask
            meta = {"image": self.image_model.save(os.path.join(tmp, "image_encoder")),
                    "text": self.text_model.save(os.path.join(tmp, "text_encoder"))}
            self.index.save(os.path.join(tmp, "index"))
            self.catalog.backup(os.path.join(tmp, "catalog.sqlite"))
            header_sha = _sha256_file(os.path.join(tmp, "index", "index.json"))
            cfg = self._config(header_sha, meta)
            for key, sub in (("image_encoder", "image_encoder"), ("text_encoder", "text_encoder")):
                # encoder.json holds the tokenizer vocabulary and the input spec, which the
                # model file's sha256 does not cover
                cfg[key]["meta_sha256"] = _sha256_file(os.path.join(tmp, sub, "encoder.json"))
            with open(os.path.join(tmp, CONFIG_NAME), "w", encoding="utf-8") as f:
                json.dump(cfg, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = None
        if os.path.exists(folder):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.old-", dir=parent)
            os.rmdir(old)
            os.replace(folder, old)
        os.replace(tmp, folder)
        # a catalog opened from the folder just replaced follows it to the new copy
        cpath = getattr(self.catalog, "path", ":memory:")
        if old is not None and cpath != ":memory:" and os.path.abspath(cpath).startswith(folder + os.sep):
            self.catalog.close()
            self.catalog = Catalog.open(os.path.join(folder, "catalog.sqlite"))
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder, *, ef: int | None = None) -> "Engine":
        """Open an engine folder written by :meth:`save`.

        The folder is only read: the catalog is loaded as an in-memory copy
        (:meth:`Catalog.open_copy`), so indexing into the loaded engine changes nothing on
        disk until :meth:`save`; an indexing run stopped midway (an error, Ctrl-C) leaves the
        folder as it was, with its catalog and index still agreeing.

        Raises:
            FileNotFoundError: the folder or one of its parts is missing.
            ValueError: not an engine folder, a corrupt or unreadable part, or parts that
                disagree with ``engine.json`` or with each other (the message says which).
        """
        folder = os.path.abspath(os.fspath(folder))
        if not os.path.exists(folder):
            raise FileNotFoundError(f"engine folder {folder!r} does not exist")
        if not os.path.isdir(folder):
            raise ValueError(f"engine folder {folder!r} is not a folder")
        cpath = os.path.join(folder, CONFIG_NAME)
        if not os.path.isfile(cpath):
            raise FileNotFoundError(f"{folder!r} is not a pixrank engine (no {CONFIG_NAME}); create one with "
                                    f"`pixrank demo --out DIR` or `pixrank index --engine DIR --images FOLDER`")
        try:
            with open(cpath, encoding="utf-8") as f:
                cfg = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{cpath!r} is corrupt: {exc}") from None
        if not isinstance(cfg, dict) or cfg.get("format") != ENGINE_FORMAT:
            raise ValueError(f"{cpath!r} is not a pixrank engine configuration")
        if cfg.get("version") != ENGINE_VERSION:
            raise ValueError(f"{cpath!r} has engine format version {cfg.get('version')!r}; this pixrank "
                             f"reads version {ENGINE_VERSION}")
        try:
            dim = _cfg_int(cfg["embed_dim"], "embed_dim", cpath)
            parts = {}
            for key, loader in (("image_encoder", ImageEncoder.load), ("text_encoder", TextEncoder.load)):
                rec = cfg[key]
                sub = _part_path(folder, rec["folder"], cpath)
                meta_path = os.path.join(sub, "encoder.json")
                if "meta_sha256" in rec and os.path.isfile(meta_path) and \
                        _sha256_file(meta_path) != rec["meta_sha256"]:
                    raise ValueError(f"engine {folder!r}: {key}: {meta_path!r} is not the one engine.json "
                                     f"records (sha256 differs: corrupt, or from another engine)")
                try:
                    enc = loader(sub)
                except FileNotFoundError:
                    raise
                except ValueError as exc:
                    raise ValueError(f"engine {folder!r}: {key}: {exc}") from None
                except Exception as exc:  # a corrupt model file
                    raise ValueError(f"engine {folder!r}: {key} cannot be loaded ({type(exc).__name__}: {exc})") from None
                with open(os.path.join(sub, "encoder.json"), encoding="utf-8") as f:
                    sha = json.load(f).get("model_sha256")
                if sha != rec["model_sha256"]:
                    raise ValueError(f"engine {folder!r}: {key} holds model sha256 {str(sha)[:12]}..., but "
                                     f"engine.json records {rec['model_sha256'][:12]}... (a model from another engine?)")
                if enc.embed_dim != dim:
                    raise ValueError(f"engine {folder!r}: {key} produces {enc.embed_dim} dimensions, "
                                     f"engine.json records {dim}")
                parts[key] = enc
            irec = cfg["index"]
            ipath = _part_path(folder, irec["folder"], cpath)
            hpath = os.path.join(ipath, "index.json")
            if not os.path.isfile(hpath):
                raise FileNotFoundError(f"engine {folder!r}: the index ({hpath!r}) is missing")
            if _sha256_file(hpath) != irec["header_sha256"]:
                raise ValueError(f"engine {folder!r}: the index is not the one engine.json records "
                                 f"(index.json sha256 differs)")
            try:
                index = Index.load(ipath)
            except FileNotFoundError:
                raise
            except Exception as exc:
                raise ValueError(f"engine {folder!r}: the index cannot be loaded ({exc})") from None
            if index.dim != dim:
                raise ValueError(f"engine {folder!r}: the index holds {index.dim}-dimensional vectors but the "
                                 f"models produce {dim} (an index built by another model)")
            if len(index) != _cfg_int(irec["count"], "index.count", cpath):
                raise ValueError(f"engine {folder!r}: the index holds {len(index)} items, engine.json records {irec['count']}")
            crec = cfg["catalog"]
            cat_path = _part_path(folder, crec["file"], cpath)
            catalog = Catalog.open_copy(cat_path)
            if catalog.schema_version != _cfg_int(crec["schema_version"], "catalog.schema_version", cpath):
                catalog.close()
                raise ValueError(f"engine {folder!r}: the catalog has schema version {catalog.schema_version}, "
                                 f"engine.json records {crec['schema_version']}")
            if len(catalog) != len(index):
                n = len(catalog)
                catalog.close()
                raise ValueError(f"engine {folder!r}: the catalog lists {n} items but the index holds {len(index)}")
            if ef is None:
                ef = cfg.get("ef", _DEFAULT_EF)
                if isinstance(ef, bool) or not isinstance(ef, int) or ef < 1:
                    catalog.close()
                    raise ValueError(f"{cpath!r} records ef = {ef!r}; it must be an int >= 1 (corrupt?)")
            info = cfg.get("info") or {}
            if not isinstance(info, dict):
                catalog.close()
                raise ValueError(f"{cpath!r}: the field 'info' must be an object, got {type(info).__name__}")
        except KeyError as exc:
            raise ValueError(f"{cpath!r} lacks the field {exc.args[0]!r} (corrupt or from another version)") from None
        except (TypeError, AttributeError) as exc:
            # a field holding the wrong kind of value (e.g. "index": null, "count": [1])
            raise ValueError(f"{cpath!r} has a field of the wrong kind ({exc}); corrupt or from another "
                             f"version") from None
        return cls(parts["image_encoder"], parts["text_encoder"], index, catalog, ef=ef, info=info)

    def close(self) -> None:
        """Close the catalog's database connection."""
        self.catalog.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _pixrank_version() -> str:
    try:
        import pixrank
        return str(getattr(pixrank, "__version__", "?"))
    except Exception:  # pragma: no cover
        return "?"
