"""`worker_kit.start()`: the entrypoint a handler file calls.

It picks the mode from the command line and environment: the local harness for
`--test-input` / `--serve` (or a ./test_input.json when no WORKER_KIT_URL is set),
otherwise a worker that claims jobs from the queue service until SIGTERM/SIGINT.
Signal handlers are installed here, never by `Worker`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from ..errors import ConfigError
from ..logs import configure_logging
from .registry import Handler, get_handler
from .restart import log_if_restarted, replace_process
from .settings import EXIT_CONFIG, EXIT_MEMORY, EXIT_STUCK, WorkerSettings, load_settings

#: Why a worker ended with an exit code that asks for its replacement.
REPLACE_REASONS = {EXIT_STUCK: "a handler was stuck and could not be stopped",
                   EXIT_MEMORY: "over the memory cap WORKER_KIT_MAX_RSS_MB"}

log = logging.getLogger("worker_kit.worker")

#: Set once start() ran in this process (`worker-kit work` uses it to know whether the
#: file started itself).
started = False


#: Flags that select the local harness; `--test_input` is the hosted SDK's spelling.
HARNESS_FLAGS = ("--test-input", "--test_input", "--serve")


def wants_harness(
    argv: Sequence[str], env: Mapping[str, str], options: Mapping[str, Any], script: str | None = None
) -> bool:
    for arg in argv:
        if arg in HARNESS_FLAGS or arg.startswith(("--test-input=", "--test_input=")):
            return True
    has_url = bool(env.get("WORKER_KIT_URL")) or bool(options.get("url")) or any(
        a == "--url" or a.startswith("--url=") for a in argv
    )
    if has_url:
        return False
    # Without a queue to serve, a test_input.json here or beside the handler file means "try it".
    places = ["test_input.json"]
    if script:
        places.append(os.path.join(os.path.dirname(os.path.abspath(script)), "test_input.json"))
    return any(os.path.isfile(place) for place in places)


def start(handler: Callable[..., Any] | Handler | str | None = None, **options: Any) -> NoReturn:
    """Run `handler` (default: the one registered with @worker_kit.handler) and exit.

    `options` are defaults for the worker settings (url, api_key, concurrency, timeout_s,
    grace_s, stuck_grace_s, log_level, log_format, worker_id, on_stuck, isolation, max_rss_mb,
    kill_rss_mb); WORKER_KIT_* variables and
    command-line flags win over them. `python handler.py --help` lists them all.
    """
    global started
    if os.environ.get("WORKER_KIT_HANDLER_PROCESS"):
        # Loading the handler in a process-isolation child: the worker is the parent.
        from .child import StartCalled

        raise StartCalled(handler)
    started = True
    prog = os.path.basename(sys.argv[0]) or "worker"
    try:
        chosen = get_handler(handler)
    except ConfigError as exc:
        _fail(prog, str(exc))
    argv = sys.argv[1:]
    if wants_harness(argv, os.environ, options, script=sys.argv[0] if sys.argv else None):
        from ..harness import main as harness_main

        sys.exit(harness_main(chosen, list(argv)))
    try:
        settings = load_settings(argv, os.environ, options, prog=prog)
    except ConfigError as exc:
        _fail(prog, str(exc))
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    log_if_restarted(os.environ)
    code = run_worker(chosen, settings)
    if code in REPLACE_REASONS and settings.on_stuck == "restart":
        replace_process(REPLACE_REASONS[code])  # never returns
    logging.shutdown()
    if code in REPLACE_REASONS:
        # A handler thread is stuck in native code; interpreter shutdown could hang on it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _fail(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_worker(handler: Handler, settings: WorkerSettings) -> int:
    """Run a worker with the given settings until a signal stops it; returns the exit code.

    After EXIT_STUCK (or EXIT_MEMORY) the event loop is left open: closing it cancels the remaining tasks and
    waits for them, which never ends for an async handler that swallows its cancellation.
    The caller then ends the process with os._exit.
    """
    runner = asyncio.Runner(loop_factory=_new_loop)
    try:
        code = runner.run(_serve(handler, settings))
    except BaseException:
        runner.close()
        raise
    if code not in REPLACE_REASONS:
        runner.close()
    return code


async def _serve(handler: Handler, settings: WorkerSettings) -> int:
    from .loop import Worker

    transport = None
    if settings.hosted is not None:
        from .hosted_transport import HostedTransport

        transport = HostedTransport(settings.hosted)
        log.info("the hosted service's environment is set: speaking its worker protocol")
    worker = Worker(
        handler,
        settings.url,
        transport=transport,
        api_key=settings.api_key,
        concurrency=settings.concurrency,
        timeout=settings.timeout_s,
        grace_s=settings.grace_s,
        stuck_grace_s=settings.stuck_grace_s,
        worker_id=settings.worker_id or (settings.hosted.pod_id if settings.hosted else None),
        max_rss_mb=settings.max_rss_mb,
        isolation=settings.isolation,
        kill_rss_mb=settings.kill_rss_mb,
    )
    if settings.kill_rss_mb is not None and worker.isolation != "process":
        log.warning("WORKER_KIT_KILL_RSS_MB applies only with WORKER_KIT_ISOLATION=process; ignored")
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    received: list[int] = []
    stopping: set[asyncio.Task[None]] = set()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if received:
            log.warning("second %s: exiting at once; unfinished jobs return to the queue when their "
                        "leases expire", name)
            logging.shutdown()
            os._exit(128 + signum)
        received.append(signum)
        log.info("%s received: no new jobs; running jobs get %.6g s to finish (send it again to exit "
                 "at once)", name, settings.grace_s)
        stopping.add(loop.create_task(worker.stop()))

    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    # What exists now (modules, the handler's module and whatever it loaded, the worker) lives
    # as long as the process: frozen out of the cyclic collector's full passes, which would
    # otherwise walk all of it (10 ms and more, loop stopped) as a token stream allocates.
    gc.freeze()
    try:
        return await worker.run()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
