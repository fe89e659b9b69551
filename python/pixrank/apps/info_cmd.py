"""``pixrank info``: the version, the SIMD path, the thread count and the compiler."""
from __future__ import annotations


def _run(args) -> int:
    import json

    import pixrank

    print(json.dumps(pixrank.info(), indent=2))
    return 0


def register(sub) -> None:
    p = sub.add_parser("info", help="show the version, SIMD path, threads and compiler")
    p.set_defaults(func=_run)
