"""`worker-kit` command line: one sub-module per group of commands.

Each module in COMMAND_MODULES exposes `register(subparsers)`, which adds its parsers and
sets `func(args) -> int` as the parser default. Modules are imported only to build the
parser, so a command pays only for what it imports inside its `func`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__

COMMAND_MODULES = (
    "worker_kit.cli.serve",  # serve: the queue service
    "worker_kit.cli.work",  # work: run a handler file as a worker
    "worker_kit.cli.dev",  # dev: service + worker in one process on localhost
    "worker_kit.cli.client_cmds",  # submit, run, status, stream, cancel, retry, purge, health
    "worker_kit.cli.requests_cmd",  # requests: the endpoint's recent jobs
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="worker-kit",
        description="Self-hosted serverless jobs: queue service, workers and client.",
    )
    parser.add_argument("--version", action="version", version=f"worker-kit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a command group not built yet
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        sys.exit(2)
    sys.exit(args.func(args))
