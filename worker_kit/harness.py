"""The local harness: the real queue service and the real worker in one process.

`python handler.py --test-input '{"input": ...}'` runs one job and prints what happens;
`python handler.py --serve` (or `worker-kit dev handler.py`) serves the whole client API on
localhost. Both use the production service and worker over loopback HTTP, so what works here
works deployed: there is no simulated code path.

Output of --test-input: every stream chunk as one JSON line on stdout as it arrives, then the
final status JSON as the last stdout line; progress updates and notes go to stderr.
Exit codes: 0 the job COMPLETED, 1 it ended otherwise, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, ServiceError, StorageError
from .harness_input import (
    FROM_FILE,
    TEST_INPUT_FILE,
    UsageError,
    find_test_input_file,
    load_test_input,
    parse_test_input,
    read_text_file,
)
from .job import JobState
from .protocol import dumps_json
from .testing import LOCAL_ENDPOINT, LocalStack, local_stack

if TYPE_CHECKING:
    from .client import AsyncEndpoint
    from .worker.loop import Worker
    from .worker.registry import Handler

EXIT_USAGE = 2
#: How long Ctrl-C lets running jobs finish in --serve before handing them back.
SERVE_GRACE_S = 5.0



# --- command line -----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse prints usage and exits; one line is enough
        raise UsageError(f"{message} (see --help)")


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Run a worker_kit handler locally: one test job, or the whole client API.",
        allow_abbrev=False,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--test-input",
        "--test_input",  # the hosted SDK's spelling, so its users' habits work here too
        dest="test_input",
        metavar="JSON",
        nargs="?",
        const=FROM_FILE,
        help='run one job with this input, e.g. \'{"input": {"x": 1}}\' (or @file.json); without a '
        f"value: {TEST_INPUT_FILE} from the current directory, else from beside the handler file",
    )
    mode.add_argument("--serve", action="store_true", help="serve the client API on localhost")
    parser.add_argument("--host", default="127.0.0.1", help="--serve: address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8000, help="--serve: port (default 8000; 0 = any free port)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=None, help="jobs run at once (default: the handler's, or 1)"
    )
    parser.add_argument("--endpoint", default=LOCAL_ENDPOINT, help=f"endpoint id (default {LOCAL_ENDPOINT})")
    parser.add_argument(
        "--storage",
        default="sqlite://:memory:",
        help="--serve: storage URL (default in memory; e.g. sqlite:///dev.db keeps jobs across restarts)",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="--serve: allow a non-loopback --host without API keys"
    )
    return parser


def main(handler: Handler, argv: list[str]) -> int:
    """Entry point used by `worker_kit.start()` and `worker-kit dev`; returns the exit code."""
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "handler.py"
    try:
        opts = _parser(prog).parse_args(argv)
        from .ids import ENDPOINT_ID_RULE, valid_endpoint_id

        if not valid_endpoint_id(opts.endpoint):
            raise UsageError(f"--endpoint {opts.endpoint!r}: {ENDPOINT_ID_RULE}")
        if opts.concurrency is not None and opts.concurrency < 1:
            raise UsageError(f"--concurrency must be at least 1, got {opts.concurrency}")
        # The handler's own setting may be a callable (adaptive); the Worker takes either.
        concurrency = opts.concurrency or getattr(handler, "concurrency", None) or 1
        if opts.serve:
            if not opts.insecure and not _is_loopback(opts.host):
                raise UsageError(
                    f"--host {opts.host} would expose the dev server, which has no API keys, beyond "
                    "this machine; add --insecure if that is what you want"
                )
            _configure_logging("info")
            return _run_async(serve(handler, opts, concurrency))
        request = load_test_input(opts.test_input, handler)
        _configure_logging("warning")  # stdout and stderr belong to the job's output here
        return _run_async(run_test_job(handler, request, concurrency=concurrency, endpoint_id=opts.endpoint))
    except UsageError as exc:
        _note(f"error: {exc}")
        return EXIT_USAGE
    except ConfigError as exc:
        _note(f"error: {exc}")
        return EXIT_USAGE


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _configure_logging(level: str) -> None:
    from .logs import configure_logging

    configure_logging(level=level)


def _run_async(coro: Any) -> int:
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:  # a second Ctrl-C: the user wants out now
        _note("interrupted")
        return 130


def _note(message: str) -> None:
    print(f"worker_kit: {message}", file=sys.stderr, flush=True)


def _out(line: str) -> None:
    try:
        print(line, flush=True)
    except BrokenPipeError:
        # The reader left (`... | head`): drop further output and let the job end normally,
        # so the exit code still says how it ended, with no traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


# --- one test job -------------------------------------------------------------------------------


async def run_test_job(
    handler: Handler, request: dict[str, Any], *, concurrency: Any = 1, endpoint_id: str = LOCAL_ENDPOINT
) -> int:
    """Submit one job to a local stack and print it as it runs; 0 if it COMPLETED, else 1."""
    interrupted = asyncio.Event()
    _on_signals(interrupted, (signal.SIGINT, signal.SIGTERM))
    async with (
        local_stack(handler, concurrency=concurrency, endpoint_id=endpoint_id) as stack,
        stack.client() as ep,
    ):
        try:
            job = await ep.run(request["input"], webhook=request.get("webhook"), policy=request.get("policy"))
        except ServiceError as exc:  # the test input itself was refused (400, 413)
            raise UsageError(f"the service refused the test input: {exc.message}") from None
        _note(f"job {job.id} submitted to {stack.url} (handler {_name(handler)})")
        watch = asyncio.create_task(_print_events(ep, job.id))
        stop = asyncio.create_task(interrupted.wait())
        worker = stack.worker_task
        done, _ = await asyncio.wait({watch, stop, worker}, return_when=asyncio.FIRST_COMPLETED)
        if stop in done and watch not in done:
            _note("interrupted: cancelling the job (Ctrl-C again to quit at once)")
            _restore_signals((signal.SIGINT,))
            await job.cancel()
            done, _ = await asyncio.wait({watch, worker}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if watch not in done:
            watch.cancel()
            _note(f"the worker stopped before the job ended ({_worker_end(worker)})")
            status = await job.status()
            _out(dumps_json(status))
            return 1
        status = watch.result()
    return 0 if status.get("status") == JobState.COMPLETED else 1


async def _print_events(ep: AsyncEndpoint, job_id: str) -> dict[str, Any]:
    """Print chunks and progress as they arrive; return (and print) the final status."""
    last_progress: Any = None
    final: dict[str, Any] | None = None
    async for kind, data, _cursor in ep.follow(job_id):
        if kind == "chunk":
            _out(dumps_json(data))
        elif kind == "update":
            running = data.get("status") == JobState.IN_PROGRESS
            if running and "output" in data and data["output"] != last_progress:
                last_progress = data["output"]
                _note(f"progress: {dumps_json(last_progress)}")
        elif kind == "status":
            final = data
    if final is None:
        final = await ep.job(job_id).status()
    detail = final.get("errorDetail") or {}
    if isinstance(detail, dict) and detail.get("traceback"):
        print(str(detail["traceback"]).rstrip(), file=sys.stderr, flush=True)
    _note(f"job {job_id} {final.get('status')} in {final.get('executionTime', 0)} ms")
    _out(dumps_json(final))
    return final


def _name(handler: Handler) -> str:
    return str(getattr(handler, "name", None) or getattr(handler, "__name__", "handler"))


def _on_signals(event: asyncio.Event, signals: tuple[signal.Signals, ...]) -> None:
    loop = asyncio.get_running_loop()
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, event.set)


def _restore_signals(signals: tuple[signal.Signals, ...]) -> None:
    loop = asyncio.get_running_loop()
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(sig)


# --- serving the client API ---------------------------------------------------------------------


async def serve(handler: Handler, opts: argparse.Namespace, concurrency: Any) -> int:
    """Serve the client API until SIGINT/SIGTERM; 0 after a clean stop."""
    stop = asyncio.Event()
    _on_signals(stop, (signal.SIGINT, signal.SIGTERM))
    try:
        stack_cm = local_stack(
            handler,
            concurrency=concurrency,
            host=opts.host,
            port=opts.port,
            storage=opts.storage,
            endpoint_id=opts.endpoint,
            insecure=opts.insecure,
        )
        stack = await stack_cm.__aenter__()
    except (StorageError, ImportError) as exc:  # the store's fault, not the handler file's
        from .storage import redacted

        raise UsageError(f"cannot open storage {redacted(opts.storage)!r}: {exc}") from None
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {opts.host}:{opts.port}: {_os_reason(exc)}; pass another --port"
        ) from None
    cutter: asyncio.Task[None] | None = None
    try:
        _banner(stack, handler, concurrency)
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({stopper, stack.worker_task}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if stack.worker_task.done():
            _note(f"the worker stopped unexpectedly ({_worker_end(stack.worker_task)}); shutting down")
            code = 1
        else:
            running = stack.worker.running
            _note(
                f"stopping: {running} running job(s) get up to {SERVE_GRACE_S:g} s to finish "
                "(Ctrl-C again to stop them now)"
            )
            stop.clear()
            cutter = asyncio.create_task(_cut_on(stop, stack.worker))
            code = 0
    finally:
        try:
            await stack_cm.__aexit__(None, None, None)
        except Exception as exc:  # the worker's crash, re-raised by local_stack; already noted
            _note(f"shutdown: {type(exc).__name__}: {exc}")
            code = 1
        finally:
            if cutter is not None:
                cutter.cancel()
    _note("stopped")
    return code


def _os_reason(exc: OSError) -> str:
    """"address already in use", not aiohttp's "error while attempting to bind on address
    ('127.0.0.1', 8000): address already in use", which would repeat the address."""
    return os.strerror(exc.errno).lower() if exc.errno else str(exc)


async def _cut_on(stop: asyncio.Event, worker: Worker) -> None:
    await stop.wait()
    _note("stopping now: running jobs go back to the queue")
    await worker.stop(grace_s=0)


def _worker_end(task: asyncio.Task[int]) -> str:
    if not task.done():
        return "still running"
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return f"{type(exc).__name__}: {exc}" if exc else f"exit code {task.result()}"


def _banner(stack: LocalStack, handler: Handler, concurrency: Any) -> None:
    url = stack.url
    shown = concurrency if isinstance(concurrency, int) else "adaptive"
    _out(f"worker_kit dev server: handler {_name(handler)!r}, concurrency {shown}, pid {os.getpid()}")
    _out(f"  endpoint: {url}")
    body, source = _banner_body(handler)
    _out(f"  try:      curl -s {url}/runsync -H 'Content-Type: application/json' -d {body}")
    if source is None:
        _out(f"            (an empty input: write your handler's to {TEST_INPUT_FILE} and this line uses it)")
    _out("Press Ctrl-C to stop.")


def _banner_body(handler: Handler) -> tuple[str, Path | None]:
    """The curl `-d` argument of the banner: the handler's own test input when there is one,
    since an empty input fails most handlers; else an empty one."""
    path = find_test_input_file(handler)
    if path is None:
        return shlex.quote('{"input": {}}'), None
    try:
        request = parse_test_input(read_text_file(path), str(path))
    except UsageError:
        return shlex.quote("@" + _shown_path(path)), path  # curl reads it; the user sees curl's answer
    text = dumps_json(request)
    if len(text) > 200:
        return shlex.quote("@" + _shown_path(path)), path
    return shlex.quote(text), path


def _shown_path(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)
