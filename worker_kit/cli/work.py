"""`worker-kit work handler.py [flags]`: run a handler file as a worker.

The file runs as __main__ (runpy) with the flags in sys.argv, exactly as
`python handler.py [flags]` would, so a file that calls worker_kit.start() works as is.
A file that only registers a handler with @worker_kit.handler is started afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "work",
        help="run a handler file as a worker",
        description="Run HANDLER_FILE as a worker: it claims jobs from the queue service at WORKER_KIT_URL. "
        "Flags after the file go to the worker; `worker-kit work handler.py --help` lists them.",
    )
    p.add_argument("file", metavar="HANDLER_FILE", help="a Python file with a @worker_kit.handler function")
    p.add_argument("args", nargs=argparse.REMAINDER, help="worker flags (--url, --concurrency, ...)")
    p.set_defaults(func=run)


def _code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    import runpy

    from .. import entrypoint

    path = args.file
    if not os.path.isfile(path):
        print(f"worker-kit work: error: no such file: {path}", file=sys.stderr)
        return 2
    sys.argv = [path, *args.args]
    # As `python handler.py` does: the file's own directory is importable.
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        runpy.run_path(path, run_name="__main__")
        if not entrypoint.started:
            entrypoint.start()
    except SystemExit as exc:
        return _code(exc)
    return 0
