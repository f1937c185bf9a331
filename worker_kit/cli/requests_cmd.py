"""`worker-kit requests`: an endpoint's recent jobs (GET /requests) as a table, or JSON for scripts."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..job import JobState
from .client_args import UsageError, common_args, open_endpoint, print_json
from .exits import EXIT_CODES_HELP, EXIT_COMPLETED, run_command

_STATES = tuple(state.value for state in JobState)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "requests",
        parents=[common_args()],
        help="list the endpoint's recent jobs",
        description=(
            "List the endpoint's jobs, newest first (GET /requests): id, state, when created, time\n"
            "queued and running, worker, attempt and the error of failed jobs. One page by default;\n"
            "the next page's command is printed on stderr. --json prints the page as the service\n"
            "answers it (with --all, one job per line). The service allows 10 pages per 10 s."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--limit", type=int, default=20, metavar="N", help="jobs per page, 1-1000 (default 20)")
    p.add_argument(
        "--status", metavar="STATE[,STATE]", help=f"only jobs in these states ({', '.join(_STATES)})"
    )
    p.add_argument("--cursor", help="continue after the page that printed this cursor")
    p.add_argument("--all", action="store_true", help="every page, not just the first")
    p.add_argument(
        "--include", metavar="input,output", default="", help="also fetch the jobs' input and/or output"
    )
    p.set_defaults(func=run_command(cmd_requests))


def _check(args: argparse.Namespace) -> tuple[list[str] | None, list[str]]:
    if not 1 <= args.limit <= 1000:
        raise UsageError(f"--limit must be between 1 and 1000, not {args.limit}")
    states = None
    if args.status:
        states = [s.strip().upper() for s in args.status.split(",") if s.strip()]
        unknown = [s for s in states if s not in _STATES]
        if unknown:
            raise UsageError(f"unknown state(s) {', '.join(unknown)}: use {', '.join(_STATES)}")
    include = [f.strip() for f in args.include.split(",") if f.strip()]
    if set(include) - {"input", "output"}:
        raise UsageError("--include takes input and/or output")
    return states, include


async def cmd_requests(args: argparse.Namespace) -> int:
    states, include = _check(args)
    async with open_endpoint(args) as ep:
        if args.all:
            count = 0
            rows = []
            async for entry in ep.iter_requests(status=states, include=include, page_size=args.limit):
                count += 1
                if args.json:
                    print_json(entry, compact=True)
                else:
                    rows.append(entry)
            if not args.json:
                _print_table(rows, include)
                print(f"{count} job(s)", file=sys.stderr)
            return EXIT_COMPLETED
        page = await ep.requests(limit=args.limit, status=states, cursor=args.cursor, include=include)
    if args.json:
        print_json(page, compact=True)
        return EXIT_COMPLETED
    _print_table(page["requests"], include)
    shown = len(page["requests"])
    note = f"{shown} of {page['total']} job(s)"
    if page.get("hasMore") and page.get("cursor"):
        note += f"; next page: worker-kit requests --cursor {page['cursor']}"
    print(note, file=sys.stderr)
    return EXIT_COMPLETED


def _when(ms: int | None) -> str:
    return "-" if ms is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def _duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    return f"{ms} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def _print_table(rows: list[dict[str, Any]], include: list[str]) -> None:
    from ..protocol import dumps_json

    header = ["ID", "STATUS", "CREATED", "QUEUED", "RAN", "WORKER", "ATTEMPT", "ERROR"]
    header += [f.upper() for f in include]
    table = [header]
    for e in rows:
        error = (e.get("error") or "").replace("\n", " ")
        extra = [dumps_json(e.get(f))[:60] if f in e else "-" for f in include]
        table.append([
            str(e.get("id")), str(e.get("status")), _when(e.get("createdAt")), _duration(e.get("delayTime")),
            _duration(e.get("executionTime")), str(e.get("workerId") or "-"), str(e.get("attempt", "-")),
            error[:60] + ("…" if len(error) > 60 else "") or "-", *extra,
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print(line.rstrip(), flush=True)
