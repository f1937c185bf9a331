"""`worker-kit work handler.py [flags]`: run a handler file as a worker.

The file runs as __main__ (runpy) with the flags in sys.argv, exactly as
`python handler.py [flags]` would, so a file that calls worker_kit.start() works as is.
A file that only registers a handler with @worker_kit.handler is started afterwards.
Without HANDLER_FILE, $WORKER_KIT_HANDLER names it (the worker image sets it from its HANDLER
build argument, since an exec-form ENTRYPOINT cannot expand a variable).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .handler_file import exit_code, fail, run_file

PROG = "worker-kit work"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "work",
        help="run a handler file as a worker",
        description="Run HANDLER_FILE as a worker: it claims jobs from the queue service at WORKER_KIT_URL "
        "(with the endpoint's worker key in WORKER_KIT_API_KEY, not its client key). "
        "Flags after the file go to the worker; `worker-kit work handler.py --help` lists them.",
    )
    p.add_argument(
        "file", metavar="HANDLER_FILE", nargs="?",
        help="a Python file with a @worker_kit.handler function (default: $WORKER_KIT_HANDLER)",
    )
    p.add_argument("args", nargs=argparse.REMAINDER, help="worker flags (--url, --concurrency, ...)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..worker import entrypoint

    file = args.file or os.environ.get("WORKER_KIT_HANDLER")
    if not file:
        return fail(PROG, "no handler file: pass HANDLER_FILE or set WORKER_KIT_HANDLER")
    path = Path(file)
    if not path.is_file():
        return fail(PROG, f"{file}: no such file; pass the path of a handler file")
    code = run_file(path, list(args.args), PROG)
    if code is not None:
        return code
    # The file only registered its handler: start the worker for it, with the same flags.
    sys.argv = [str(path), *args.args]
    try:
        entrypoint.start()
    except SystemExit as exc:
        return exit_code(exc)
    return 0
