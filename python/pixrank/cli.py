"""The ``pixrank`` command line.

Each group of sub-commands lives in its own module and registers itself here; heavy
modules are imported only inside the command that needs them, so ``pixrank --help``
starts fast.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys

# modules that define ``register(subparsers)``; each adds its own sub-commands
_COMMAND_MODULES = (
    "pixrank.apps.info_cmd",
    "pixrank.apps.train_cmd",
    "pixrank.apps.search_cmd",
    "pixrank.apps.serve_cmd",
)


class CLIError(Exception):
    """An error to report to the user as one line on stderr, with exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="pixrank",
        description="pixrank: train small image/text models and search images by text or image.",
    )
    from . import __version__
    parser.add_argument("--version", action="version", version=f"pixrank {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that group is not part of this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("pixrank: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (``pixrank search ... | head``): stop quietly, as coreutils do;
        # stdout is pointed at devnull so that the interpreter's final flush does not fail too
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (CLIError, ValueError, TypeError, FileNotFoundError, KeyError, OSError,
            sqlite3.Error) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"pixrank {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
