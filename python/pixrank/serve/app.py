"""The web application: one page and a JSON API over a :class:`~pixrank.search.engine.Engine`.

Routes (all ``GET`` routes also answer ``HEAD``):

================================  ===========================================================
``GET /``                         the single-page UI (``static/index.html``; no external assets)
``GET /static/...``               its script, style sheet and icon
``GET /api/info``                 the engine's configuration: model names, embedding ``dim``,
                                  item ``count``, ``space``, ``M``, ``ef_construction``, query
                                  ``ef``, input size, data set, training summary, and the
                                  server's limits (``max_k`` ...)
``GET /api/search?q=TEXT&k=12``   text query
``GET /api/search?like=ID&k=12``  the items most similar to indexed item ``ID`` (query by its
                                  image; the item itself comes first)
``POST /api/search/image``        query by an uploaded image: ``multipart/form-data`` with a
                                  file field ``image`` (and optionally a field ``k``, or ``?k=``)
``GET /thumb/{id}.png``           the item's image as PNG: shrunk to fit 256x256 (EXIF
                                  orientation applied); images under 112 pixels are magnified
                                  by an integer factor, pixel for pixel (28x28 -> 112x112)
================================  ===========================================================

A search answers::

    {"query": {"kind": "text", "text": "dark ankle boots"},     # or kind "image" / "like"
     "k": 12, "took_ms": 1.7, "count": 1000,                    # count: items in the engine
     "results": [{"rank": 1, "score": 0.83, "id": 231, "source": "fashion-mnist:test:230",
                  "label": "Ankle boot", "caption": "a dark ankle boot",
                  "thumb_url": "/thumb/231.png"}, ...]}

with results in descending ``score`` (cosine similarity), ``rank`` 1-based; ``took_ms`` is
the engine's time (encoding the query, the index search and the catalog look-up) in
milliseconds.

Errors are JSON ``{"error": MESSAGE, "status": CODE}`` with a 4xx code, never a 500 for bad
input: 400 for an empty / whitespace-only / too long query, a query of only unknown words,
``k`` that is not an integer from 1 to ``max_k``, a malformed upload or one without the
``image`` field; 404 for an unknown item id or route; 413 for an upload over
``max_upload_bytes`` or an image over ``max_image_pixels``; 415 for an upload that is not
an image Pillow can read, or a body that is not ``multipart/form-data``.

Threading: the engine is loaded once, when the application is built. Its search calls run
in Starlette's thread pool (``run_in_threadpool``), so the event loop keeps serving pages,
thumbnails and other requests while a query is encoded. The encoding steps themselves are
serialised by a lock, because :func:`pixrank.autograd.no_grad` switches a process-wide flag
(two threads entering and leaving it interleaved can leave gradient recording switched
off or on for the whole process); the index and the catalog are safe to query from several
threads.

Security: the server binds to 127.0.0.1 by default and has no authentication. Requests whose
``Host`` header is not a loopback name are refused (400) unless other hosts are allowed, which
defeats DNS-rebinding pages in a browser; the page sets a strict Content-Security-Policy
(same origin only) and builds result cards with ``textContent``, never HTML from data.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import threading
import time
import warnings
from collections import OrderedDict

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pixrank.serve import (
    DEFAULT_K,
    MAX_IMAGE_PIXELS,
    MAX_K,
    MAX_QUERY_CHARS,
    MAX_UPLOAD_BYTES,
)

__all__ = ["LOOPBACK_HOSTS", "APIError", "create_app"]

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
#: the ``Host`` names accepted by default (plus "testserver", Starlette's TestClient default)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
#: a thumbnail of an image file fits in this square (pixels)
THUMB_BOX = 256
#: smaller images are magnified (nearest neighbour, integer factor) to at least this size (pixels)
THUMB_MIN = 112
#: multipart overhead allowed on top of the image bytes (headers, boundary, a ``k`` field)
_FORM_OVERHEAD = 64 * 1024
_INT_RE = re.compile(r"^\s*\+?[0-9]+\s*$")
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                               "style-src 'self'; script-src 'self'; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class APIError(Exception):
    """A request the API refuses: becomes ``{"error": message, "status": status}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = int(status)
        self.message = str(message)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": int(status)}, status_code=int(status))


# ----------------------------------------------------------------------------- parsing

def _parse_k(raw, default: int, max_k: int) -> int:
    """``k`` from a query-string or form value: an integer from 1 to ``max_k``."""
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return default
    if not isinstance(raw, str) or not _INT_RE.match(raw):
        shown = raw if isinstance(raw, str) else type(raw).__name__
        if isinstance(shown, str) and len(shown) > 40:
            shown = shown[:40] + "..."
        raise APIError(400, f"k must be an integer from 1 to {max_k}, got {shown!r}")
    k = int(raw)
    if k < 1:
        raise APIError(400, f"k must be >= 1, got {k}")
    if k > max_k:
        raise APIError(400, f"k must be at most {max_k}, got {k}")
    return k


def _parse_id(raw: str, what: str) -> int:
    """An item id (a non-negative 64-bit integer) from a URL; 400 when it is not one."""
    if raw is None or not _INT_RE.match(raw):
        shown = raw if raw is None or len(raw) <= 40 else raw[:40] + "..."
        raise APIError(400, f"{what} must be an item id (a non-negative integer), got {shown!r}")
    return int(raw)


def _result_rows(results) -> list[dict]:
    return [{"rank": int(r.rank), "score": float(r.score), "id": int(r.id), "source": r.source,
             "label": r.label, "caption": r.caption, "thumb_url": f"/thumb/{int(r.id)}.png"}
            for r in results]


# ----------------------------------------------------------------------------- the app

class _Service:
    """The engine plus what the routes need around it (lock, limits, thumbnail cache)."""

    def __init__(self, engine, folder, *, max_k, default_k, max_upload_bytes, max_image_pixels,
                 max_query_chars, thumb_cache):
        self.engine = engine
        self.folder = folder
        self.max_k, self.default_k = max_k, default_k
        self.max_upload_bytes, self.max_image_pixels = max_upload_bytes, max_image_pixels
        self.max_query_chars = max_query_chars
        self.lock = threading.Lock()
        self.thumb_cache_bytes = thumb_cache
        self._thumbs: OrderedDict[int, bytes] = OrderedDict()  # id -> PNG, least recently used first
        self._thumbs_size = 0
        self._thumbs_lock = threading.Lock()

    # -------------------------------------------------------------- engine calls (worker threads)
    def _timed(self, fn, *args):
        with self.lock:
            t0 = time.perf_counter()
            res = fn(*args)
            ms = (time.perf_counter() - t0) * 1e3
        return res, ms

    def search_text(self, q: str, k: int):
        try:
            return self._timed(self.engine.search_text, q, k)
        except (ValueError, TypeError) as exc:  # empty, unknown words (UnknownQueryError), bad k
            raise APIError(400, _clean(str(exc))) from None

    def record(self, item_id: int):
        """The catalog record of ``item_id``; 404 when the engine has no such item."""
        if item_id >= 2 ** 63:
            raise APIError(404, f"no item with id {item_id} in this engine")
        rec = self.engine.catalog.get([item_id], missing="none")[0]
        if rec is None:
            raise APIError(404, f"no item with id {item_id} in this engine")
        return rec

    def image_of(self, item_id: int):
        """What :meth:`Engine.thumbnail` gives for the item (a path or an array); 404 when
        the item is unknown or its image is no longer available."""
        rec = self.record(item_id)
        src = self.engine.thumbnail(rec.source)
        if src is None:
            raise APIError(404, f"the image of item {item_id} ({rec.source}) is not available: "
                                f"the file or data set it came from cannot be found")
        return src

    def search_like(self, item_id: int, k: int):
        src = self.image_of(item_id)
        try:
            return self._timed(self.engine.search_image, src, k)
        except FileNotFoundError:
            raise APIError(404, f"the image of item {item_id} is no longer available") from None
        except ValueError as exc:  # the file changed into something unreadable
            raise APIError(404, f"the image of item {item_id} cannot be read: {_clean(str(exc))}") from None

    def search_upload(self, data: bytes, filename: str, k: int):
        from PIL import Image
        name = filename or "the upload"
        # the header alone: refuse non-images and decompression bombs before decoding pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as im:
                    fmt, (w, h) = im.format, im.size
        except Image.DecompressionBombError:
            raise APIError(413, f"{name!r} is too large an image to decode safely") from None
        except Exception:  # noqa: BLE001 - UnidentifiedImageError, truncated headers, plugin errors
            raise APIError(415, f"{name!r} is not an image file Pillow can read "
                                f"(PNG, JPEG, WebP, BMP, GIF, TIFF ...)") from None
        if w * h > self.max_image_pixels:
            raise APIError(413, f"{name!r} is {w}x{h} pixels; the limit is {self.max_image_pixels:,} pixels")
        fd, tmp = tempfile.mkstemp(prefix="pixrank-upload-", suffix="." + (fmt or "img").lower())
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            try:
                res, ms = self._timed(self.engine.search_image, tmp, k)
            except (ValueError, TypeError) as exc:  # corrupt / truncated pixel data
                msg = _clean(str(exc)).replace(repr(tmp), repr(name)).replace(tmp, name)
                raise APIError(415, msg) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return res, ms, {"width": int(w), "height": int(h), "format": fmt}

    def thumb_png(self, item_id: int) -> bytes:
        """The item's thumbnail as PNG bytes, from a least-recently-used cache of at most
        ``thumb_cache_bytes`` bytes (errors are not cached)."""
        with self._thumbs_lock:
            png = self._thumbs.get(item_id)
            if png is not None:
                self._thumbs.move_to_end(item_id)
                return png
        png = self._thumb_png(item_id)
        if len(png) <= self.thumb_cache_bytes:
            with self._thumbs_lock:
                if item_id not in self._thumbs:
                    self._thumbs[item_id] = png
                    self._thumbs_size += len(png)
                while self._thumbs_size > self.thumb_cache_bytes:
                    _, old = self._thumbs.popitem(last=False)
                    self._thumbs_size -= len(old)
        return png

    def _thumb_png(self, item_id: int) -> bytes:
        import numpy as np

        from pixrank.data.images import contact_sheet, load_image
        src = self.image_of(item_id)
        try:
            if isinstance(src, (str, os.PathLike)):
                img = load_image(src)
                img.thumbnail((THUMB_BOX, THUMB_BOX))
                side = max(img.size)
            else:
                img = np.asarray(src)
                side = max(img.shape[:2])
            scale = max(1, -(-THUMB_MIN // max(1, side)))  # small images: magnified pixel for pixel
            sheet = contact_sheet([img], cols=1, scale=scale, pad=0)
        except FileNotFoundError:
            raise APIError(404, f"the image of item {item_id} is no longer available") from None
        except (ValueError, TypeError, OSError) as exc:
            raise APIError(404, f"the image of item {item_id} cannot be drawn: {_clean(str(exc))}") from None
        buf = io.BytesIO()
        sheet.save(buf, format="PNG")
        return buf.getvalue()

    def info(self) -> dict:
        e = self.engine
        idx = e.index
        training = dict((e.info or {}).get("training") or {})
        training.pop("history", None)
        return {
            "count": len(e), "dim": int(e.dim), "space": idx.space, "exact": bool(idx.exact),
            "M": int(idx.M), "ef_construction": int(idx.ef_construction), "ef": int(e.ef),
            "image_model": e.image_model.name, "text_model": e.text_model.name,
            "input": e.image_model.spec.to_dict(),
            "engine_dir": self.folder,
            "dataset": (e.info or {}).get("dataset"),
            "training": training or None,
            "limits": {"max_k": self.max_k, "default_k": self.default_k,
                       "max_upload_bytes": self.max_upload_bytes, "max_image_pixels": self.max_image_pixels,
                       "max_query_chars": self.max_query_chars},
        }


def _clean(msg: str) -> str:
    """Drop the Python function prefix (``search_text: ``) of an engine message."""
    return re.sub(r"^(search_text|search_image|search|tokenizer): ", "", msg)


def create_app(engine, *, max_k: int = MAX_K, default_k: int = DEFAULT_K,
               max_upload_bytes: int = MAX_UPLOAD_BYTES, max_image_pixels: int = MAX_IMAGE_PIXELS,
               max_query_chars: int = MAX_QUERY_CHARS, allowed_hosts=None, thumb_cache: int = 32 * 2 ** 20,
               close_engine: bool | None = None) -> Starlette:
    """The web UI and JSON API (see the module docstring) over one engine.

    Args:
        engine: an engine folder (str / PathLike, opened now with
            :meth:`pixrank.search.engine.Engine.load`, so a missing or corrupt folder fails
            here, before anything is served) or an open :class:`~pixrank.search.engine.Engine`.
        max_k: the largest ``k`` a request may ask for (default 200). default_k: ``k`` when
            a request gives none (default 12).
        max_upload_bytes: the largest image upload in bytes (default 10 MiB).
        max_image_pixels: the most pixels an uploaded image may have (default 40 million).
        max_query_chars: the longest text query (default 500 characters).
        allowed_hosts: ``Host`` header names to accept; default the loopback names
            (:data:`LOOPBACK_HOSTS`) and ``testserver``; ``["*"]`` accepts any.
        thumb_cache: bytes of thumbnails (PNG) kept in memory, least recently used dropped
            first (default 32 MiB: over 10,000 data-set thumbnails; 0: none).
        close_engine: close the engine's catalog when the application shuts down (default:
            True when this function opened it from a folder).

    Returns:
        a :class:`starlette.applications.Starlette` application.

    Raises:
        FileNotFoundError: the engine folder or one of its parts is missing.
        ValueError: a corrupt engine folder, or a limit that is not a positive int
            (``default_k`` must lie in 1..``max_k``).
        TypeError: ``engine`` is neither a folder nor an Engine.
    """
    from pixrank.search.engine import Engine

    for name, v in (("max_k", max_k), ("default_k", default_k), ("max_upload_bytes", max_upload_bytes),
                    ("max_image_pixels", max_image_pixels), ("max_query_chars", max_query_chars)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"create_app: {name} must be an int >= 1, got {v!r}")
    if default_k > max_k:
        raise ValueError(f"create_app: default_k ({default_k}) must not exceed max_k ({max_k})")
    if isinstance(thumb_cache, bool) or not isinstance(thumb_cache, int) or thumb_cache < 0:
        raise ValueError(f"create_app: thumb_cache must be an int >= 0, got {thumb_cache!r}")
    folder = None
    if isinstance(engine, (str, os.PathLike)):
        folder = os.path.abspath(os.fspath(engine))
        engine = Engine.load(folder)
        if close_engine is None:
            close_engine = True
    elif not isinstance(engine, Engine):
        raise TypeError(f"create_app: engine must be an engine folder or a pixrank Engine, "
                        f"got {type(engine).__name__}")
    svc = _Service(engine, folder, max_k=max_k, default_k=default_k, max_upload_bytes=max_upload_bytes,
                   max_image_pixels=max_image_pixels, max_query_chars=max_query_chars,
                   thumb_cache=thumb_cache)

    # ------------------------------------------------------------------ handlers
    async def page(request: Request):
        return FileResponse(os.path.join(STATIC_DIR, "index.html"), media_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    async def api_info(request: Request):
        return JSONResponse(svc.info())

    async def api_search(request: Request):
        params = request.query_params
        k = _parse_k(params.get("k"), svc.default_k, svc.max_k)
        q, like = params.get("q"), params.get("like")
        if q is not None and like is not None:
            raise APIError(400, "give either q (a text query) or like (an item id), not both")
        if like is not None:
            item_id = _parse_id(like, "like")
            res, ms = await run_in_threadpool(svc.search_like, item_id, k)
            query = {"kind": "like", "id": item_id}
        else:
            if q is None:
                raise APIError(400, "missing the query: give q=TEXT (or like=ID)")
            if not q.strip():
                raise APIError(400, "the query is empty: type a few words, e.g. \"dark ankle boots\"")
            if len(q) > svc.max_query_chars:
                raise APIError(400, f"the query is too long ({len(q)} characters; the limit is "
                                    f"{svc.max_query_chars})")
            res, ms = await run_in_threadpool(svc.search_text, q, k)
            query = {"kind": "text", "text": q}
        return JSONResponse({"query": query, "k": k, "took_ms": round(ms, 3), "count": len(svc.engine),
                             "results": _result_rows(res)})

    async def api_search_image(request: Request):
        ctype = request.headers.get("content-type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            raise APIError(415, "send the image as multipart/form-data with a file field named 'image'")
        limit = svc.max_upload_bytes + _FORM_OVERHEAD
        too_big = (f"the upload is larger than the limit of {svc.max_upload_bytes:,} bytes "
                   f"({svc.max_upload_bytes / 2 ** 20:.0f} MiB)")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise APIError(413, too_big)
        # read the body ourselves, so that a chunked upload cannot exceed the limit either
        chunks, n = [], 0
        try:
            async for chunk in request.stream():
                n += len(chunk)
                if n > limit:
                    raise APIError(413, too_big)
                chunks.append(chunk)
        except ClientDisconnect:
            return Response(status_code=400)
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await request.receive()

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
        except HTTPException as exc:  # Starlette's MultiPartException -> 400
            raise APIError(400, f"malformed multipart upload: {exc.detail}") from None
        except Exception as exc:  # noqa: BLE001 - python-multipart errors Starlette does not wrap
            raise APIError(400, f"malformed multipart upload ({type(exc).__name__})") from None
        try:
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                raise APIError(400, "the upload has no file field named 'image'")
            raw_k = form.get("k")
            if raw_k is None:
                raw_k = request.query_params.get("k")
            if raw_k is not None and not isinstance(raw_k, str):
                raise APIError(400, "k must be a plain form field, not a file")
            k = _parse_k(raw_k, svc.default_k, svc.max_k)
            data = await upload.read()
            filename = os.path.basename(upload.filename or "") or "upload"
        finally:
            await form.close()
        if not data:
            raise APIError(400, f"the uploaded file {filename!r} is empty")
        if len(data) > svc.max_upload_bytes:
            raise APIError(413, too_big)
        res, ms, meta = await run_in_threadpool(svc.search_upload, data, filename, k)
        return JSONResponse({"query": {"kind": "image", "filename": filename, **meta}, "k": k,
                             "took_ms": round(ms, 3), "count": len(svc.engine),
                             "results": _result_rows(res)})

    async def thumb(request: Request):
        raw = request.path_params["item"]
        m = re.fullmatch(r"([0-9]{1,20})\.png", raw)
        if not m:
            raise APIError(404, f"no thumbnail {raw!r}: thumbnails are /thumb/ID.png")
        png = await run_in_threadpool(svc.thumb_png, int(m.group(1)))
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    # ------------------------------------------------------------------ errors
    async def on_api_error(request: Request, exc: APIError):
        return _error(exc.status, exc.message)

    async def on_http_error(request: Request, exc: HTTPException):
        msg = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            msg = f"not found: {request.url.path}"
        elif exc.status_code == 405:
            msg = f"method {request.method} is not allowed on {request.url.path}"
        return JSONResponse({"error": msg, "status": exc.status_code}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    async def on_server_error(request: Request, exc: Exception):  # a bug: say so, without a traceback
        return _error(500, f"internal error ({type(exc).__name__}); see the server's log")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            if close_engine:
                svc.engine.close()

    class _SecurityHeaders:
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.app(scope, receive, send)

            async def send_with_headers(message):
                if message["type"] == "http.response.start":
                    have = {k.lower() for k, _ in message.get("headers", [])}
                    extra = [(k.lower().encode(), v.encode()) for k, v in _SECURITY_HEADERS.items()
                             if k.lower().encode() not in have]
                    message = {**message, "headers": list(message.get("headers", [])) + extra}
                await send(message)

            await self.app(scope, receive, send_with_headers)

    hosts = list(allowed_hosts) if allowed_hosts is not None else [*LOOPBACK_HOSTS, "testserver"]
    routes = [
        Route("/", page, methods=["GET"]),
        Route("/api/info", api_info, methods=["GET"]),
        Route("/api/search", api_search, methods=["GET"]),
        Route("/api/search/image", api_search_image, methods=["POST"]),
        Route("/thumb/{item}", thumb, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts), Middleware(_SecurityHeaders)],
        exception_handlers={APIError: on_api_error, HTTPException: on_http_error, Exception: on_server_error},
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.service = svc
    return app
