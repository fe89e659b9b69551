"""The local web UI of pixrank: a single page and a small JSON API over a saved
:class:`~pixrank.search.engine.Engine`.

Start it from the command line::

    pixrank serve --engine demo/engine            # http://127.0.0.1:8000/

or build the ASGI application yourself (any ASGI server runs it)::

    from pixrank.serve import create_app
    app = create_app("demo/engine")             # a Starlette application

The web stack (Starlette, uvicorn, python-multipart) is the optional ``web`` extra:
``pip install 'pixrank[web]'``. This package imports it only when :func:`create_app` is
called, so ``import pixrank.serve`` works without it.

See :mod:`pixrank.serve.app` for the routes and their errors.
"""
from __future__ import annotations

__all__ = ["DEFAULT_K", "MAX_IMAGE_PIXELS", "MAX_K", "MAX_QUERY_CHARS", "MAX_UPLOAD_BYTES", "create_app"]

#: the most results one request may ask for
MAX_K = 200
#: results per request when ``k`` is not given
DEFAULT_K = 12
#: the largest image upload accepted, in bytes (10 MiB)
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: the longest text query accepted, in characters
MAX_QUERY_CHARS = 500
#: the most pixels (width x height) an uploaded image may declare (a decompression-bomb guard)
MAX_IMAGE_PIXELS = 40_000_000


def create_app(engine, **kwargs):
    """Build the web application over an engine folder or an open engine.

    See :func:`pixrank.serve.app.create_app` for the arguments and errors.
    """
    from pixrank.serve.app import create_app as _create_app
    return _create_app(engine, **kwargs)
