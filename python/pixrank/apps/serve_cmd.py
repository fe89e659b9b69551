"""``pixrank serve``: the local web UI over a saved search engine.

::

    pixrank serve --engine DIR [--host 127.0.0.1] [--port 8000] [--log-level info]

The engine folder (written by ``pixrank demo --out DIR`` into ``DIR/engine``, or by
``pixrank index``; given ``DIR`` itself, its ``engine/`` sub-folder is used) is loaded
once, before the server starts: a missing or corrupt folder prints
``pixrank serve: error: ...`` and exits with status 2, as does a port that cannot be
listened on. ``--port 0`` picks a free port (the URL is printed). The server binds to
127.0.0.1 by default; ``--host 0.0.0.0`` makes it reachable from other machines (it has no
authentication; a warning says so).

The web stack (Starlette, uvicorn, python-multipart) is the optional ``web`` extra and is
imported only here: without it the command says ``install pixrank[web]``.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys

_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _port(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {s!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0: any free port), got {v}")
    return v


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve the local web UI (text and image search) for an engine",
                       description="Load an engine folder and serve a web page and a JSON API for text "
                                   "queries, image uploads and 'more like this' searches. Needs the web "
                                   "extra: pip install 'pixrank[web]'.")
    p.add_argument("--engine", metavar="DIR", required=True,
                   help="engine folder (e.g. the engine/ folder that `pixrank demo --out DIR` wrote)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="server log level (default info: one line per request)")
    p.set_defaults(func=cmd_serve)


def _require_web_stack():
    """Import-check Starlette, uvicorn and python-multipart; CLIError naming the extra if absent."""
    from pixrank.cli import CLIError
    missing = [name for name, mods in (("starlette", ("starlette",)), ("uvicorn", ("uvicorn",)),
                                       ("python-multipart", ("python_multipart", "multipart")))
               if not any(importlib.util.find_spec(m) is not None for m in mods)]
    if missing:
        raise CLIError(f"the web UI needs {', '.join(missing)}, which "
                       f"{'is' if len(missing) == 1 else 'are'} not installed: install pixrank[web] "
                       f"(pip install 'pixrank[web]')")


def _listen(host: str, port: int):
    """A bound TCP socket for ``host:port`` (uvicorn starts listening on it)."""
    import socket

    from pixrank.cli import CLIError
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CLIError(f"--host {host!r} is not an address this machine can listen on ({exc.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise CLIError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def cmd_serve(args) -> int:
    _require_web_stack()
    import os

    import uvicorn

    from pixrank.serve import create_app
    folder = args.engine
    if not os.path.isfile(os.path.join(folder, "engine.json")) and \
            os.path.isfile(os.path.join(folder, "engine", "engine.json")):
        folder = os.path.join(folder, "engine")  # the output folder of `pixrank demo --out DIR`
        print(f"pixrank serve: using the engine in {folder}", flush=True)
    loopback = args.host in _LOOPBACK_NAMES
    # loaded once, now: a missing or corrupt folder fails here (exit 2), before anything is served
    app = create_app(folder, allowed_hosts=None if loopback else ["*"])
    svc = app.state.service
    try:
        sock = _listen(args.host, args.port)
    except BaseException:
        svc.engine.close()
        raise
    port = sock.getsockname()[1]
    shown = f"[{args.host.strip('[]')}]" if ":" in args.host else args.host
    print(f"pixrank serve: {len(svc.engine):,} images from {svc.folder}", flush=True)
    if not loopback:
        print(f"pixrank serve: warning: listening on {args.host}, reachable from other machines; "
              f"the server has no authentication", file=sys.stderr, flush=True)
    print(f"pixrank serve: open http://{shown}:{port}/ (Ctrl+C to stop)", flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, lifespan="on", server_header=False)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it handled once it has shut down
        pass
    finally:
        sock.close()
    print("pixrank serve: stopped", flush=True)
    return 0
