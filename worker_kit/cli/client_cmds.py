"""Client commands: submit, run, status, stream, cancel, retry, purge, health.

Exit codes (exits.py, documented in docs/client.md) say how the job ended or why the command
failed, so scripts can branch without parsing output.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from typing import TYPE_CHECKING, Any

from ..job import JobState
from .client_args import (
    UsageError,
    common_args,
    input_args,
    live_line,
    open_endpoint,
    policy_of,
    print_json,
    print_value,
    read_input,
)
from .exits import EXIT_CODES_HELP, EXIT_COMPLETED, EXIT_SERVICE_ERROR, STATE_EXIT, run_command

if TYPE_CHECKING:  # the client is imported when a command runs, not for `--help`
    from ..client import AsyncEndpoint, AsyncJobHandle

#: How long a Ctrl-C during a submit still waits for the service's answer (the job's id).
SUBMIT_ANSWER_WAIT_S = 5.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = common_args()

    def add(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return subparsers.add_parser(
            name, parents=[common], help=help, description=description, epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    p = add("submit", "submit a job and print its id",
            "Submit a job (POST /run) and print its id; does not wait. --json prints {\"id\", \"status\"}.")
    input_args(p)
    p.set_defaults(func=run_command(cmd_submit))

    p = add("run", "submit a job and wait for its output",
            "Submit a job and wait until it ends, showing its state, elapsed time and progress on\n"
            "stderr (when a terminal). Prints the output (strings as-is, other values as JSON);\n"
            "--json prints the final status JSON. The exit code says how the job ended.")
    input_args(p)
    p.add_argument("--timeout", type=float, metavar="S", help="stop waiting after S seconds (exit 10)")
    p.add_argument("--stream", action="store_true", help="print stream chunks as they arrive")
    p.set_defaults(func=run_command(cmd_run))

    p = add("status", "print a job's status",
            "Print a job's status JSON (GET /status). With --wait, wait until the job ends\n"
            "and exit with the code of its final state: the service holds the request until\n"
            "then (GET /status-sync); on a terminal a live line follows state and progress.")
    p.add_argument("job_id")
    p.add_argument("--wait", action="store_true", help="wait until the job ends")
    p.add_argument("--timeout", type=float, metavar="S", help="with --wait: stop waiting after S seconds")
    p.set_defaults(func=run_command(cmd_status))

    p = add("stream", "print a job's stream chunks as they arrive",
            "Follow a job's stream (Server-Sent Events, resumed after dropped connections) and\n"
            "print each chunk: strings as-is, other values as JSON lines. --json prints one\n"
            "{\"output\": chunk} line per chunk, then the final status line. Reading consumes nothing.")
    p.add_argument("job_id")
    p.add_argument("--cursor", type=int, default=0, help="start after this many chunks (default 0)")
    p.set_defaults(func=run_command(cmd_stream))

    p = add("cancel", "cancel a queued or running job", "Cancel a job (POST /cancel).")
    p.add_argument("job_id")
    p.set_defaults(func=run_command(cmd_cancel))

    p = add("retry", "requeue a FAILED or TIMED_OUT job",
            "Requeue a FAILED or TIMED_OUT job under the same id (POST /retry); other states: exit 11.")
    p.add_argument("job_id")
    p.set_defaults(func=run_command(cmd_retry))

    p = add("purge", "cancel every queued job of the endpoint",
            "Cancel every IN_QUEUE job of the endpoint (POST /purge-queue): each ends CANCELLED with an "
            "error saying it was purged, and its webhook fires. Running jobs go on.")
    p.set_defaults(func=run_command(cmd_purge))

    p = add("health", "print the endpoint's job and worker counts", "Print GET /health.")
    p.set_defaults(func=run_command(cmd_health))


def _finish(status: dict[str, Any], args: argparse.Namespace, *, print_output: bool = True) -> int:
    state = str(status.get("status"))
    if args.json:
        print_json(status, compact=True)
    elif state == JobState.COMPLETED:
        if print_output and status.get("output") is not None:
            print_value(status["output"])
    if state != JobState.COMPLETED:
        error = status.get("error")
        print(f"job {status.get('id')} {state}" + (f": {error}" if error else ""), file=sys.stderr)
    return STATE_EXIT.get(state, EXIT_SERVICE_ERROR)


# -- commands --------------------------------------------------------------------------------
async def cmd_submit(args: argparse.Namespace) -> int:
    job_input = read_input(args.input)
    async with open_endpoint(args) as ep:
        handle = await _submit_through_ctrl_c(ep, args, job_input)
    if args.json:
        print_json(handle.last_status or {"id": handle.id}, compact=True)
    else:
        print(handle.id, flush=True)
    return EXIT_COMPLETED


async def _submit_through_ctrl_c(
    ep: AsyncEndpoint, args: argparse.Namespace, job_input: Any
) -> AsyncJobHandle:
    """Submit; a Ctrl-C during the request still waits (briefly) for the answer, since the
    service may hold the job already: the user is told its id rather than left with a job
    running that they cannot name."""
    submit = asyncio.ensure_future(ep.run(job_input, webhook=args.webhook, policy=policy_of(args)))
    try:
        return await asyncio.shield(submit)
    except asyncio.CancelledError:
        try:
            handle = await asyncio.wait_for(submit, SUBMIT_ANSWER_WAIT_S)
        except Exception:
            raise asyncio.CancelledError from None  # no answer: nothing to name
        _say_it_goes_on(args, handle)
        raise


def _say_it_goes_on(args: argparse.Namespace, handle: AsyncJobHandle) -> None:
    print(f"worker-kit {args.command}: job {handle.id} goes on in the service; stop it with: "
          f"worker-kit cancel {handle.id}", file=sys.stderr)


async def cmd_run(args: argparse.Namespace) -> int:
    job_input = read_input(args.input)
    async with open_endpoint(args) as ep:
        handle = await _submit_through_ctrl_c(ep, args, job_input)
        try:
            if args.stream:
                return await _follow_stream(handle, args, cursor=0, timeout=args.timeout)
            async with live_line(args, handle.id) as live:
                status = handle.last_status
                async for status in handle.watch(timeout=args.timeout):
                    live.update(status)
        except asyncio.CancelledError:  # Ctrl-C: stop waiting, but say the job itself goes on
            _say_it_goes_on(args, handle)
            raise
        return _finish(status, args)


async def cmd_status(args: argparse.Namespace) -> int:
    async with open_endpoint(args) as ep:
        handle = ep.job(args.job_id)
        if not args.wait:
            print_json(await handle.status(), compact=args.json)
            return EXIT_COMPLETED
        async with live_line(args, handle.id) as live:
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
        print_json(status, compact=args.json)
        return STATE_EXIT.get(str(status.get("status")), EXIT_SERVICE_ERROR)


async def cmd_stream(args: argparse.Namespace) -> int:
    if args.cursor < 0:
        raise UsageError("--cursor must be 0 or more")
    async with open_endpoint(args) as ep:
        return await _follow_stream(ep.job(args.job_id), args, cursor=args.cursor, timeout=None)


async def _follow_stream(handle: Any, args: argparse.Namespace, *, cursor: int, timeout: float | None) -> int:
    from ..errors import JobError

    streamed = 0
    async with live_line(args, handle.id, stdout_too=True) as live:
        try:
            async with asyncio.timeout(timeout):
                async for chunk in handle.stream(cursor=cursor, on_status=live.update):
                    streamed += 1
                    if args.json:
                        print_json({"output": chunk}, compact=True)
                    elif isinstance(chunk, str):
                        sys.stdout.write(chunk)
                        sys.stdout.flush()
                    else:
                        print_json(chunk, compact=True)
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
    async with open_endpoint(args) as ep:
        answer = await ep.job(args.job_id).cancel()
    _report(answer, args)
    return EXIT_COMPLETED


async def cmd_retry(args: argparse.Namespace) -> int:
    async with open_endpoint(args) as ep:
        answer = await ep.job(args.job_id).retry()
    _report(answer, args)
    return EXIT_COMPLETED


def _report(answer: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        print_json(answer, compact=True)
    else:
        print(f"job {answer.get('id', args.job_id)} {answer.get('status')}", flush=True)


async def cmd_purge(args: argparse.Namespace) -> int:
    async with open_endpoint(args) as ep:
        answer = await ep.purge_queue()
    if args.json:
        print_json(answer, compact=True)
    else:
        print(f"removed {answer.get('removed', 0)} queued jobs", flush=True)
    return EXIT_COMPLETED


async def cmd_health(args: argparse.Namespace) -> int:
    async with open_endpoint(args) as ep:
        print_json(await ep.health(), compact=args.json)
    return EXIT_COMPLETED
