"""`worker-kit dev handler.py`: the service and a worker for one handler file, on localhost.

The file runs as `__main__` with `--serve` and the given flags in sys.argv, exactly as
`python handler.py --serve ...` would, so `worker_kit.start()` in it routes into the harness.
A file that never calls start() is served with the handler its import registered.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .handler_file import fail, run_file

PROG = "worker-kit dev"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dev",
        help="serve one handler file's client API on localhost (service + worker in one process)",
        description="Serve the whole client API (/run, /runsync, /status, /stream, /cancel, /retry, "
        "/purge-queue, /health) for one handler file on localhost, with the real service and worker.",
    )
    parser.add_argument("file", help="the handler file, e.g. handler.py")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="jobs run at once (default: the handler's, or 1)"
    )
    parser.add_argument("--endpoint", default=None, metavar="ID", help="endpoint id (default local)")
    parser.add_argument("--storage", default=None, metavar="URL", help="storage URL (default in memory)")
    parser.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback --host without API keys"
    )
    parser.set_defaults(func=run)


def harness_argv(args: argparse.Namespace) -> list[str]:
    argv = ["--serve", "--host", args.host, "--port", str(args.port)]
    for flag, value in (
        ("--concurrency", args.concurrency),
        ("--endpoint", args.endpoint),
        ("--storage", args.storage),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if args.insecure:
        argv.append("--insecure")
    return argv


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        return fail(PROG,
            f"{args.file}: no such file; pass the path of a handler file, e.g. worker-kit dev handler.py"
        )
    argv = harness_argv(args)
    # Starting a real worker instead of the dev server would surprise; --serve in argv already
    # routes start() to the harness, and this keeps a stray WORKER_KIT_URL out of the way.
    os.environ.pop("WORKER_KIT_URL", None)
    code = run_file(path, argv, PROG)
    if code is not None:
        return code
    # The file imported without calling worker_kit.start(): serve what it registered.
    from ..errors import ConfigError
    from ..harness import main as harness_main
    from ..worker.registry import get_handler

    try:
        handler = get_handler()
    except (ConfigError, LookupError) as exc:
        return fail(PROG, f"{path}: {exc}")
    return harness_main(handler, argv)
