"""How a client command ends: its exit codes (documented in docs/client.md), the mapping from the
client's errors to them, and the runner that turns a command coroutine into an exit code."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from ..job import JobState
from .client_args import CLIENT_KEY_ENV, UsageError

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

def show_client_notes(args: argparse.Namespace) -> None:
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


def run_command(command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> Callable[..., int]:
    """The parser's `func` for an async command: runs it, and turns how it ended into an exit code."""

    def run(args: argparse.Namespace) -> int:
        show_client_notes(args)
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


