"""Process isolation: each job's handler runs in a supervised child process.

`Child` is one handler process (worker_kit.worker.child), running one job at a time;
`pool.ChildPool` keeps them; `IsolatedRun` stands in for `execution.Run` in the worker loop: same `start()`,
`interrupt()`, `result` and `settled`, plus `kill()`. The worker keeps the connection to the
service, the leases, the heartbeats and the reporting; a child only runs the handler.

Children are started with a fresh interpreter (never forked), so a model loaded or a GPU
initialised at import happens in the child. A child that dies mid-job ends that job FAILED
at once with the cause; one that will not stop is killed (SIGTERM, then SIGKILL); one over
the memory cap after a job is retired. Each is replaced by a fresh child in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..job import JobState
from ..protocol import unpack
from .child import HANDLER_RUN_NAME, Channel
from .execution import Job, Outcome, Sink
from .memory import MB, over_cap
from .registry import Handler

if TYPE_CHECKING:
    from .pool import ChildPool

log = logging.getLogger("worker_kit.worker")

#: A child's command (`-c`, not `-m worker_kit.worker.child`: under -m that module would run as
#: __main__, a second copy beside the one the handler's `worker_kit.start()` imports).
CHILD_MAIN = "import sys; from worker_kit.worker.child import run_child; run_child(sys.argv[1:])"
#: How long a child gets to end after SIGTERM before SIGKILL.
KILL_AFTER_S = 1.0
#: How often a busy child's memory is sampled when WORKER_KIT_KILL_RSS_MB is set.
RSS_POLL_S = 0.1


class ChildStartError(Exception):
    """A handler process could not start or load the handler."""


def handler_spec(handler: Handler) -> dict[str, Any]:
    """How a fresh interpreter finds `handler`: its module by name when it is importable,
    else the file it was defined in (a handler file run as __main__)."""
    fn: Any = handler.fn
    while isinstance(fn, functools.partial):
        fn = fn.func
    module_name = getattr(fn, "__module__", None) or type(fn).__module__
    namespace = getattr(fn, "__globals__", None)
    if namespace is None:
        namespace = vars(sys.modules[module_name]) if module_name in sys.modules else {}
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = sys.modules.get(module_name)
    spec: dict[str, Any] = {"name": handler.name, "qualname": qualname, "sys_path": list(sys.path),
                            "aggregate": handler.return_aggregate_stream, "module": None, "file": None}
    if module_name not in ("__main__", "__mp_main__", HANDLER_RUN_NAME) and module is not None \
            and vars(module) is namespace:
        spec["module"] = module_name
        return spec
    main_spec = namespace.get("__spec__")
    if main_spec is not None and getattr(main_spec, "name", "__main__") != "__main__":
        spec["module"] = main_spec.name  # `python -m pkg.handler`: import it by name
        return spec
    spec["file"] = namespace.get("__file__")
    if not spec["file"]:
        raise ChildStartError(f"handler {handler.name!r}: process isolation needs a handler defined in a "
                              "module or a file (not in an interactive session)")
    spec["file"] = os.path.abspath(spec["file"])
    return spec


def describe_exit(returncode: int) -> tuple[str, dict[str, Any]]:
    """Why a handler process ended, for a job's error."""
    if returncode < 0:
        signum = -returncode
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        why = f"killed by signal {signum} ({name})"
        if signum == signal.SIGKILL:
            why += ", probably out of memory"
        return why, {"type": "HandlerProcessDied", "signal": signum, "message": why}
    why = f"exited with code {returncode}"
    return why, {"type": "HandlerProcessDied", "exit_code": returncode, "message": why}


class Child:
    """One handler process and its socket."""

    def __init__(self, proc: asyncio.subprocess.Process, channel: Channel) -> None:
        self.proc = proc
        self.channel = channel
        self.pid = proc.pid
        self.inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.killed: str | None = None  # why the worker killed it
        self.cause: tuple[str, dict[str, Any]] | None = None  # set once it has ended
        self.jobs = 0
        #: Called once the process has ended (the pool replaces an idle child at once).
        self.on_exit: Callable[[Child], None] | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, spec: dict[str, Any], log_level: str, log_format: str) -> Child:
        mine, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CHILD_MAIN, str(theirs.fileno()),
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=mine)
        channel = Channel(reader, writer)
        channel.send({"t": "init", "spec": spec, "log_level": log_level, "log_format": log_format})
        reply = await channel.recv()
        child = cls(proc, channel)
        if reply is not None and reply.get("t") == "ready":
            return child
        await child.stop("it failed to start")
        if reply is None:
            raise ChildStartError(f"the handler process {describe_exit(child.proc.returncode or 0)[0]} while "
                                  "loading the handler")
        raise ChildStartError(f"the handler process could not load the handler: {reply.get('message')}\n"
                              f"{reply.get('traceback', '')}".rstrip())

    @property
    def alive(self) -> bool:
        return self.cause is None and self.proc.returncode is None

    async def _read(self) -> None:
        try:
            while (message := await self.channel.recv()) is not None:
                self.inbox.put_nowait(message)
        except (OSError, ValueError) as exc:  # a garbled stream: treat it as the child's end
            log.error("handler process %d: unreadable message (%s); stopping it", self.pid, exc)
            self.kill_now()
        returncode = await self.proc.wait()
        self.cause = describe_exit(returncode)
        self.channel.writer.close()
        self.inbox.put_nowait(None)
        if self.on_exit is not None:
            self.on_exit(self)

    def send(self, message: dict[str, Any]) -> None:
        if self.alive:
            with contextlib.suppress(OSError, RuntimeError):
                self.channel.send(message)

    def kill_now(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    async def stop(self, reason: str) -> None:
        """End the process: SIGTERM, then SIGKILL after KILL_AFTER_S; returns once it ended."""
        self.killed = self.killed or reason
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), KILL_AFTER_S)
            except TimeoutError:
                self.kill_now()
        await asyncio.shield(self._reader)

    async def close(self) -> None:
        """Ask an idle child to leave (its socket closes; it exits), then make sure it did."""
        self.killed = self.killed or "the worker is stopping"
        with contextlib.suppress(Exception):
            self.channel.writer.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), KILL_AFTER_S)
        except TimeoutError:
            await self.stop("it did not leave when asked")
        await asyncio.shield(self._reader)


class IsolatedRun:
    """One job's handler run in a child process; the worker loop uses it as it uses `Run`."""

    def __init__(self, pool: ChildPool, job: Job, sink: Sink, child: Child | None) -> None:
        self.pool, self.job, self.sink = pool, job, sink
        loop = asyncio.get_running_loop()
        self.result: asyncio.Future[Outcome] = loop.create_future()
        self.settled: asyncio.Future[None] = loop.create_future()
        #: Reserved when the job was claimed (claims wait for a ready child); else acquired.
        self.child: Child | None = child
        self._task: asyncio.Task[None] | None = None
        self._sent = False  # the job went to the child

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._main())

    def interrupt(self) -> None:
        """Stop the handler as in the thread mode (JobInterrupted, cancellation); `kill()` follows
        if it will not stop."""
        self.job._interrupt()
        if self._sent:
            assert self.child is not None
            self.child.send({"t": "stop"})
        elif self._task is not None and not self._task.done():
            self._task.cancel()  # still waiting for a child: nothing runs yet

    async def kill(self, reason: str) -> None:
        """The handler did not stop: end its process; a fresh one takes its place."""
        child = self.child
        if child is None or not child.alive or not self._sent:
            return
        log.warning("job %s: %s; killing its handler process %d and starting a fresh one", self.job.id,
                    reason, child.pid, extra={"job_id": self.job.id})
        await child.stop(reason)
        await asyncio.shield(self.settled)

    async def _main(self) -> None:
        try:
            try:
                if self.child is not None and not self.child.alive:  # died while reserved
                    self.pool.give_back(self.child)
                    self.child = None
                if self.child is None:
                    self.child = await self.pool.acquire()
                child = self.child
            except asyncio.CancelledError:
                self._set(Outcome(None))
                return
            try:
                await self._serve(child)
            finally:
                self.pool.give_back(child)
        finally:
            self._set(Outcome(None))  # only if nothing was set: the run ended without a result
            if not self.settled.done():
                self.settled.set_result(None)

    async def _serve(self, child: Child) -> None:
        job = self.job
        child.jobs += 1
        self._sent = True
        child.send({"t": "run", "id": job.id, "input": job.input, "attempt": job.attempt,
                    "policy": job.policy, "webhook": job.webhook})
        if job.cancelled:  # interrupted while it waited for this child
            child.send({"t": "stop"})
        poll = RSS_POLL_S if self.pool.kill_rss_mb is not None else None
        while True:
            try:
                message = await asyncio.wait_for(child.inbox.get(), poll)
            except TimeoutError:
                await self._check_kill_rss(child)
                continue
            if message is None:  # the process ended
                self._died(child)
                return
            kind = message.get("t")
            if kind == "item":
                self.sink.add(message["kind"], message["data"])
                await self.sink.wait_room()
            elif kind == "result":
                output = message.get("output")
                self._set(Outcome(_state(message["state"]), output=None if output is None else unpack(output),
                                  error=message.get("error"), error_detail=message.get("detail"),
                                  output_optional=bool(message.get("optional"))))
                if message.get("settled"):
                    return
            elif kind == "settled":
                return

    async def _check_kill_rss(self, child: Child) -> None:
        rss = over_cap(child.pid, self.pool.kill_rss_mb)
        if rss is None or child.killed:
            return
        cap = self.pool.kill_rss_mb
        why = f"its handler process used {rss / MB:.0f} MB, over WORKER_KIT_KILL_RSS_MB={cap:g}"
        self._set(Outcome(JobState.FAILED, error=f"{why}: killed",
                          error_detail={"type": "HandlerProcessDied", "message": why, "rss_mb": rss // MB}))
        log.warning("job %s: %s; killing it", self.job.id, why, extra={"job_id": self.job.id})
        child.killed = why
        child.kill_now()

    def _died(self, child: Child) -> None:
        why, detail = child.cause or ("ended", {"type": "HandlerProcessDied"})
        if child.killed:
            log.info("handler process %d ended (%s) after the worker stopped it: %s", child.pid, why,
                     child.killed)
            return
        message = f"the handler's process (pid {child.pid}) {why}"
        log.error("job %s: %s; starting a fresh one", self.job.id, message, extra={"job_id": self.job.id})
        self._set(Outcome(JobState.FAILED, error=message, error_detail={**detail, "message": message}))

    def _set(self, outcome: Outcome) -> None:
        if not self.result.done():
            self.result.set_result(outcome)


def _state(value: str | None) -> JobState | None:
    """A state as the child sent it over the pipe (None: its handler was interrupted)."""
    return None if value is None else JobState(value)
