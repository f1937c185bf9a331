"""What every client command shares: its connection and input arguments, the endpoint they name,
the job input and policy they give, and how results are printed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

#: The client's key variable, and the worker's, which the CLI once read for both.
CLIENT_KEY_ENV, WORKER_KEY_ENV = "WORKER_KIT_CLIENT_API_KEY", "WORKER_KIT_API_KEY"


class UsageError(Exception):
    """Bad flags or input: the command says why on stderr and exits 2."""


# -- argument plumbing --------------------------------------------------------------------------
def common_args() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument(
        "--url",
        help="service URL: http://HOST:PORT/v2/ENDPOINT, or http://HOST:PORT with --endpoint "
        "(default: $WORKER_KIT_CLIENT_URL, else $WORKER_KIT_URL)",
    )
    group.add_argument(
        "--endpoint", help="endpoint id when --url has no /v2/ENDPOINT (default: $WORKER_KIT_ENDPOINT)"
    )
    group.add_argument(
        "--api-key", metavar="KEY",
        help="the endpoint's client key, not its worker key (default: $WORKER_KIT_CLIENT_API_KEY)",
    )
    group.add_argument(
        "--retries", type=int, default=3,
        help="retries of requests safe to repeat, after 5xx/429/network errors (default 3)",
    )
    common.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    common.add_argument("--quiet", "-q", action="store_true", help="no live status line on stderr")
    return common


def input_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input", nargs="?", default=None,
        help="the job input: JSON text, @FILE holding JSON, or - (or nothing) to read JSON from stdin",
    )
    parser.add_argument("--webhook", help="URL to POST the final status to when the job ends")
    parser.add_argument("--execution-timeout", type=int, metavar="MS", help="policy.executionTimeout in ms")
    parser.add_argument("--ttl", type=int, metavar="MS", help="policy.ttl in ms (whole life of the job)")


def open_endpoint(args: argparse.Namespace) -> Any:
    from ..client import AsyncEndpoint

    url = args.url or os.environ.get("WORKER_KIT_CLIENT_URL") or os.environ.get("WORKER_KIT_URL")
    if not url:
        raise UsageError(
            "no service URL: pass --url http://HOST:PORT/v2/ENDPOINT or set WORKER_KIT_CLIENT_URL"
        )
    endpoint = args.endpoint
    if endpoint is None and "/v2/" not in url:
        endpoint = os.environ.get("WORKER_KIT_ENDPOINT")
        if not endpoint:
            raise UsageError(
                f"no endpoint id in {url!r}: pass a URL ending in /v2/ENDPOINT, or --endpoint ID "
                "(or set WORKER_KIT_ENDPOINT)"
            )
    return AsyncEndpoint(url, endpoint, api_key=_client_key(args), retries=max(0, args.retries))


def _client_key(args: argparse.Namespace) -> str | None:
    """--api-key, else $WORKER_KIT_CLIENT_API_KEY, else (said on stderr) $WORKER_KIT_API_KEY.

    The last is the worker's variable, read here before the client had its own; in a shell set
    up for a worker it holds a worker key, which client routes refuse (403) where keys are set.
    """
    key = args.api_key or os.environ.get(CLIENT_KEY_ENV)
    if key:
        return key
    legacy = os.environ.get(WORKER_KEY_ENV)
    if legacy:
        print(
            f"worker-kit: note: no {CLIENT_KEY_ENV}; sending ${WORKER_KEY_ENV} (the worker's key variable) "
            f"as the client key. Set {CLIENT_KEY_ENV} to the client key; this fallback will go away.",
            file=sys.stderr,
        )
    return legacy or None


def read_input(raw: str | None) -> Any:
    if raw is None or raw == "-":
        if raw is None and sys.stdin.isatty():
            raise UsageError("no input: give it as JSON text, @FILE, or on stdin")
        text, source = sys.stdin.read(), "stdin"
    elif raw.startswith("@"):
        try:
            with open(raw[1:], encoding="utf-8") as fh:
                text, source = fh.read(), raw[1:]
        except OSError as exc:
            raise UsageError(f"cannot read the input file {raw[1:]!r}: {exc.strerror}") from None
    else:
        text, source = raw, "the input argument"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source} is not valid JSON: {exc}") from None


def policy_of(args: argparse.Namespace) -> dict[str, int] | None:
    policy = {}
    if args.execution_timeout is not None:
        policy["executionTimeout"] = args.execution_timeout
    if args.ttl is not None:
        policy["ttl"] = args.ttl
    return policy or None


# -- output ----------------------------------------------------------------------------------
def print_json(value: Any, compact: bool) -> None:
    from ..protocol import dumps_json

    text = dumps_json(value)
    if not compact:
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    print(text, flush=True)


def print_value(value: Any) -> None:
    if isinstance(value, str):
        print(value, flush=True)
    else:
        print_json(value, compact=False)


def live_line(args: argparse.Namespace, job_id: str, *, stdout_too: bool = False) -> Any:
    from ..client.live_line import LiveLine

    enabled = not args.quiet and sys.stderr.isatty() and not (stdout_too and sys.stdout.isatty())
    return LiveLine(job_id, enabled=enabled)


