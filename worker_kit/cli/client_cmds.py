"""Client commands: submit, run, status, stream, cancel, retry, purge, health.

Exit codes (documented in docs/client.md) say how the job ended or why the command failed,
so scripts can branch without parsing output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from ..job import JobState

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMED_OUT = 3
EXIT_CANCELLED = 4
EXIT_UNREACHABLE = 5
EXIT_AUTH = 6
EXIT_NOT_FOUND = 7
EXIT_TOO_LARGE = 8
EXIT_RATE_LIMITED = 9
EXIT_WAIT_TIMEOUT = 10
EXIT_SERVICE_ERROR = 11
EXIT_INTERRUPTED = 130
EXIT_STDOUT_CLOSED = 141  # as a shell reports a process ended by SIGPIPE

STATE_EXIT = {
    JobState.COMPLETED: EXIT_COMPLETED,
    JobState.FAILED: EXIT_FAILED,
    JobState.TIMED_OUT: EXIT_TIMED_OUT,
    JobState.CANCELLED: EXIT_CANCELLED,
}

EXIT_CODES_HELP = """\
exit codes:
  0  job COMPLETED (or the request succeeded)   1  job FAILED
  2  usage error (bad flags, bad JSON input)     3  job TIMED_OUT
  4  job CANCELLED                               5  service unreachable
  6  authentication refused (401/403)            7  job not found or expired (404)
  8  request too large (413)                     9  rate limited (429) after retries
  10 --timeout passed, job still running        11 other service error (400, 409, 5xx)
  130 interrupted (Ctrl-C)                       141 stdout closed early (e.g. piped into head)
environment (the client's own; a worker's WORKER_KIT_URL and WORKER_KIT_API_KEY are its, not yours):
  WORKER_KIT_CLIENT_URL      endpoint URL (else WORKER_KIT_URL, which is the same URL)
  WORKER_KIT_CLIENT_API_KEY  the endpoint's client key (else, deprecated, WORKER_KIT_API_KEY)
  WORKER_KIT_ENDPOINT        endpoint id, when the URL has no /v2/ENDPOINT"""

#: The client's key variable, and the worker's, which the CLI once read for both.
CLIENT_KEY_ENV, WORKER_KEY_ENV = "WORKER_KIT_CLIENT_API_KEY", "WORKER_KIT_API_KEY"


class UsageError(Exception):
    pass


# -- argument plumbing --------------------------------------------------------------------------
def _common() -> argparse.ArgumentParser:
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


def _input_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input", nargs="?", default=None,
        help="the job input: JSON text, @FILE holding JSON, or - (or nothing) to read JSON from stdin",
    )
    parser.add_argument("--webhook", help="URL to POST the final status to when the job ends")
    parser.add_argument("--execution-timeout", type=int, metavar="MS", help="policy.executionTimeout in ms")
    parser.add_argument("--ttl", type=int, metavar="MS", help="policy.ttl in ms (whole life of the job)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = _common()

    def add(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return subparsers.add_parser(
            name, parents=[common], help=help, description=description, epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    p = add("submit", "submit a job and print its id",
            "Submit a job (POST /run) and print its id; does not wait. --json prints {\"id\", \"status\"}.")
    _input_args(p)
    p.set_defaults(func=_sync(cmd_submit))

    p = add("run", "submit a job and wait for its output",
            "Submit a job and wait until it ends, showing its state, elapsed time and progress on\n"
            "stderr (when a terminal). Prints the output (strings as-is, other values as JSON);\n"
            "--json prints the final status JSON. The exit code says how the job ended.")
    _input_args(p)
    p.add_argument("--timeout", type=float, metavar="S", help="stop waiting after S seconds (exit 10)")
    p.add_argument("--stream", action="store_true", help="print stream chunks as they arrive")
    p.set_defaults(func=_sync(cmd_run))

    p = add("status", "print a job's status",
            "Print a job's status JSON (GET /status). With --wait, wait until the job ends\n"
            "and exit with the code of its final state: the service holds the request until\n"
            "then (GET /status-sync); on a terminal a live line follows state and progress.")
    p.add_argument("job_id")
    p.add_argument("--wait", action="store_true", help="wait until the job ends")
    p.add_argument("--timeout", type=float, metavar="S", help="with --wait: stop waiting after S seconds")
    p.set_defaults(func=_sync(cmd_status))

    p = add("stream", "print a job's stream chunks as they arrive",
            "Follow a job's stream (Server-Sent Events, resumed after dropped connections) and\n"
            "print each chunk: strings as-is, other values as JSON lines. --json prints one\n"
            "{\"output\": chunk} line per chunk, then the final status line. Reading consumes nothing.")
    p.add_argument("job_id")
    p.add_argument("--cursor", type=int, default=0, help="start after this many chunks (default 0)")
    p.set_defaults(func=_sync(cmd_stream))

    p = add("cancel", "cancel a queued or running job", "Cancel a job (POST /cancel).")
    p.add_argument("job_id")
    p.set_defaults(func=_sync(cmd_cancel))

    p = add("retry", "requeue a FAILED or TIMED_OUT job",
            "Requeue a FAILED or TIMED_OUT job under the same id (POST /retry); other states: exit 11.")
    p.add_argument("job_id")
    p.set_defaults(func=_sync(cmd_retry))

    p = add("purge", "cancel every queued job of the endpoint",
            "Cancel every IN_QUEUE job of the endpoint (POST /purge-queue): each ends CANCELLED with an "
            "error saying it was purged, and its webhook fires. Running jobs go on.")
    p.set_defaults(func=_sync(cmd_purge))

    p = add("health", "print the endpoint's job and worker counts", "Print GET /health.")
    p.set_defaults(func=_sync(cmd_health))


def _show_client_notes(args: argparse.Namespace) -> None:
    """The client's INFO notes (waiting out a 429's Retry-After) as lines on stderr."""
    import logging

    if getattr(args, "quiet", False):
        return
    logger = logging.getLogger("worker_kit.client")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        clear = "\r\x1b[K" if sys.stderr.isatty() else ""  # start clean of a live status line
        handler.setFormatter(logging.Formatter(f"{clear}worker-kit {args.command}: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _sync(command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        _show_client_notes(args)
        try:
            return asyncio.run(command(args))
        except KeyboardInterrupt:
            print("worker-kit: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            # The reader of stdout left (`worker-kit stream ID | head`): stop quietly, as
            # Unix tools do, and keep the interpreter's final flush from failing too.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return EXIT_STDOUT_CLOSED
        except UsageError as exc:
            print(f"worker-kit {args.command}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except Exception as exc:
            code, message = describe_error(exc)
            print(f"worker-kit {args.command}: {message}", file=sys.stderr)
            return code

    return run


def describe_error(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an exception raised by the client."""
    from ..client import NotFound, WaitTimeout
    from ..errors import (
        AuthError,
        ConfigError,
        JobError,
        PayloadTooLarge,
        RateLimited,
        ServiceError,
        ServiceUnavailable,
    )

    if isinstance(exc, ConfigError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, ServiceUnavailable):
        return EXIT_UNREACHABLE, str(exc)
    if isinstance(exc, AuthError):
        hint = (f"; --api-key (or ${CLIENT_KEY_ENV}) must be one of the endpoint's client keys"
                if exc.status == 403 else f"; pass --api-key or set {CLIENT_KEY_ENV}")
        return EXIT_AUTH, f"authentication refused ({exc.status}): {exc.message}{hint}"
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND, f"not found (404): {exc.message}"
    if isinstance(exc, PayloadTooLarge):
        return EXIT_TOO_LARGE, f"request too large (413): {exc.message}"
    if isinstance(exc, RateLimited):
        return EXIT_RATE_LIMITED, f"rate limited (429), still after retries: {exc.message}"
    if isinstance(exc, ServiceError):
        return EXIT_SERVICE_ERROR, f"the service refused ({exc.status}): {exc.message}"
    if isinstance(exc, WaitTimeout):
        return EXIT_WAIT_TIMEOUT, f"{exc}; it goes on (follow it with: worker-kit status --wait {exc.job_id})"
    if isinstance(exc, JobError):
        return STATE_EXIT.get(str(exc.status.get("status")), EXIT_FAILED), str(exc)
    return EXIT_SERVICE_ERROR, f"{type(exc).__name__}: {exc}"


def _endpoint(args: argparse.Namespace) -> Any:
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


def _read_input(raw: str | None) -> Any:
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


def _policy(args: argparse.Namespace) -> dict[str, int] | None:
    policy = {}
    if args.execution_timeout is not None:
        policy["executionTimeout"] = args.execution_timeout
    if args.ttl is not None:
        policy["ttl"] = args.ttl
    return policy or None


# -- output ----------------------------------------------------------------------------------
def _print_json(value: Any, compact: bool) -> None:
    from ..protocol import dumps_json

    text = dumps_json(value)
    if not compact:
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    print(text, flush=True)


def _print_value(value: Any) -> None:
    if isinstance(value, str):
        print(value, flush=True)
    else:
        _print_json(value, compact=False)


def _finish(status: dict[str, Any], args: argparse.Namespace, *, print_output: bool = True) -> int:
    state = str(status.get("status"))
    if args.json:
        _print_json(status, compact=True)
    elif state == JobState.COMPLETED:
        if print_output and status.get("output") is not None:
            _print_value(status["output"])
    if state != JobState.COMPLETED:
        error = status.get("error")
        print(f"job {status.get('id')} {state}" + (f": {error}" if error else ""), file=sys.stderr)
    return STATE_EXIT.get(state, EXIT_SERVICE_ERROR)


def _live(args: argparse.Namespace, job_id: str, *, stdout_too: bool = False) -> Any:
    from ..client.live_line import LiveLine

    enabled = not args.quiet and sys.stderr.isatty() and not (stdout_too and sys.stdout.isatty())
    return LiveLine(job_id, enabled=enabled)


# -- commands --------------------------------------------------------------------------------
async def cmd_submit(args: argparse.Namespace) -> int:
    job_input = _read_input(args.input)
    async with _endpoint(args) as ep:
        handle = await ep.run(job_input, webhook=args.webhook, policy=_policy(args))
    if args.json:
        _print_json(handle.last_status or {"id": handle.id}, compact=True)
    else:
        print(handle.id, flush=True)
    return EXIT_COMPLETED


async def cmd_run(args: argparse.Namespace) -> int:
    job_input = _read_input(args.input)
    async with _endpoint(args) as ep:
        handle = await ep.run(job_input, webhook=args.webhook, policy=_policy(args))
        try:
            if args.stream:
                return await _follow_stream(handle, args, cursor=0, timeout=args.timeout)
            async with _live(args, handle.id) as live:
                status = handle.last_status
                async for status in handle.watch(timeout=args.timeout):
                    live.update(status)
        except asyncio.CancelledError:  # Ctrl-C: stop waiting, but say the job itself goes on
            print(f"worker-kit run: job {handle.id} goes on in the service; stop it with: "
                  f"worker-kit cancel {handle.id}", file=sys.stderr)
            raise
        return _finish(status, args)


async def cmd_status(args: argparse.Namespace) -> int:
    async with _endpoint(args) as ep:
        handle = ep.job(args.job_id)
        if not args.wait:
            _print_json(await handle.status(), compact=args.json)
            return EXIT_COMPLETED
        async with _live(args, handle.id) as live:
            if live.enabled:  # a person watching: follow state and progress by push (SSE)
                status = None
                async for status in handle.watch(timeout=args.timeout):
                    live.update(status)
            else:  # a script: /status-sync holds the request until the job ends
                status = await handle.status(wait=math.inf if args.timeout is None else args.timeout)
                if status.get("status") not in STATE_EXIT:
                    from ..client.errors import WaitTimeout

                    raise WaitTimeout(handle.id, status, args.timeout or 0.0)
        assert status is not None
        _print_json(status, compact=args.json)
        return STATE_EXIT.get(str(status.get("status")), EXIT_SERVICE_ERROR)


async def cmd_stream(args: argparse.Namespace) -> int:
    if args.cursor < 0:
        raise UsageError("--cursor must be 0 or more")
    async with _endpoint(args) as ep:
        return await _follow_stream(ep.job(args.job_id), args, cursor=args.cursor, timeout=None)


async def _follow_stream(handle: Any, args: argparse.Namespace, *, cursor: int, timeout: float | None) -> int:
    from ..errors import JobError

    streamed = 0
    async with _live(args, handle.id, stdout_too=True) as live:
        try:
            async with asyncio.timeout(timeout):
                async for chunk in handle.stream(cursor=cursor, on_status=live.update):
                    streamed += 1
                    if args.json:
                        _print_json({"output": chunk}, compact=True)
                    elif isinstance(chunk, str):
                        sys.stdout.write(chunk)
                        sys.stdout.flush()
                    else:
                        _print_json(chunk, compact=True)
        except JobError:
            pass  # the final status says how it ended
        except TimeoutError:
            from ..client import WaitTimeout

            raise WaitTimeout(handle.id, handle.last_status, timeout or 0.0) from None
    if streamed and not args.json and sys.stdout.isatty():
        print()  # end the line of raw text chunks
    status = handle.last_status or await handle.status()
    # The chunks were the output; a handler that streamed nothing has only its return value.
    return _finish(status, args, print_output=not streamed and cursor == 0)


async def cmd_cancel(args: argparse.Namespace) -> int:
    async with _endpoint(args) as ep:
        answer = await ep.job(args.job_id).cancel()
    _report(answer, args)
    return EXIT_COMPLETED


async def cmd_retry(args: argparse.Namespace) -> int:
    async with _endpoint(args) as ep:
        answer = await ep.job(args.job_id).retry()
    _report(answer, args)
    return EXIT_COMPLETED


def _report(answer: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        _print_json(answer, compact=True)
    else:
        print(f"job {answer.get('id', args.job_id)} {answer.get('status')}", flush=True)


async def cmd_purge(args: argparse.Namespace) -> int:
    async with _endpoint(args) as ep:
        answer = await ep.purge_queue()
    if args.json:
        _print_json(answer, compact=True)
    else:
        print(f"removed {answer.get('removed', 0)} queued jobs", flush=True)
    return EXIT_COMPLETED


async def cmd_health(args: argparse.Namespace) -> int:
    async with _endpoint(args) as ep:
        _print_json(await ep.health(), compact=args.json)
    return EXIT_COMPLETED
