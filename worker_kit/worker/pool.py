"""The worker's handler processes under process isolation (see isolation.py).

Idle children wait in a queue; the claim loop asks for jobs only while a child is ready
(`available`, `wait_available`), so a job never waits for a process to start or a model to
load against its own timeout. A child that died, was killed or is over the memory cap is
replaced in the background; a child that cannot start is retried with back-off, and the
worker claims nothing meanwhile, so jobs wait in the queue for other workers instead of failing.
"""

from __future__ import annotations

import asyncio
import collections
import logging

from .execution import Job, Sink
from .isolation import Child, ChildStartError, IsolatedRun, handler_spec
from .memory import MB, over_cap
from .registry import Handler

log = logging.getLogger("worker_kit.worker")

MAX_RETRY_S = 60.0


class ChildPool:
    """Handler processes for one worker."""

    def __init__(self, handler: Handler, *, max_rss_mb: float | None = None,
                 kill_rss_mb: float | None = None) -> None:
        self.spec = handler_spec(handler)
        self.max_rss_mb = max_rss_mb
        self.kill_rss_mb = kill_rss_mb
        root = logging.getLogger()
        self._log_level = logging.getLevelName(root.getEffectiveLevel())
        json_format = any(type(h.formatter).__name__ == "JsonFormatter" for h in root.handlers)
        self._log_format = "json" if json_format else "text"
        self._idle: collections.deque[Child] = collections.deque()
        self._changed = asyncio.Event()  # a child became idle, or a start failed
        self._starting = 0
        self._failures = 0  # starts failed in a row
        self._children: set[Child] = set()
        self._starts: set[asyncio.Task[None]] = set()  # cancelled by close()
        self._closing: set[asyncio.Task[None]] = set()  # awaited by close()
        self._closed = False

    # -- starting -------------------------------------------------------------------------
    async def start(self, count: int) -> None:
        """Start `count` children; returns once the first is ready. Raises ChildStartError if it
        cannot start (the handler does not load in a fresh interpreter): a setup error."""
        first = await Child.start(self.spec, self._log_level, self._log_format)
        log.info("handler process %d ready", first.pid)
        self._add_idle(first)
        for _ in range(count - 1):
            self._start_one()

    def _start_one(self, delay: float = 0.0) -> None:
        if self._closed:
            return
        self._starting += 1
        task = asyncio.get_running_loop().create_task(self._start(delay))
        self._starts.add(task)
        task.add_done_callback(self._starts.discard)

    def _retire(self, child: Child) -> None:
        self._children.discard(child)
        task = asyncio.get_running_loop().create_task(child.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _start(self, delay: float) -> None:
        try:
            if delay:
                await asyncio.sleep(delay)
            child = await Child.start(self.spec, self._log_level, self._log_format)
        except Exception as exc:
            self._failures += 1
            retry = min(MAX_RETRY_S, 2.0 ** (self._failures - 1))
            reason = str(exc) if isinstance(exc, ChildStartError) else f"{type(exc).__name__}: {exc}"
            log.error("could not start a handler process (%s); trying again in %.0f s", reason, retry)
            self._starting -= 1
            self._start_one(retry)
            return
        self._starting -= 1
        self._failures = 0
        log.info("handler process %d ready", child.pid)
        self._add_idle(child)

    def _on_exit(self, child: Child) -> None:
        if self._closed:
            return
        if child in self._idle:  # busy children are handled by their run, retired ones are gone
            self._idle.remove(child)
            self._children.discard(child)
            why = child.cause[0] if child.cause else "ended"
            log.warning("handler process %d ended while idle (%s); starting a fresh one", child.pid, why)
            self._start_one()

    def _add_idle(self, child: Child) -> None:
        child.on_exit = self._on_exit
        self._children.add(child)
        self._idle.append(child)
        self._changed.set()

    async def start_unless(self, count: int, stopping: asyncio.Event) -> str | None:
        """`start()`, given up if `stopping` is set first. Returns why it failed, else None.
        The worker claims nothing before (a module's import may load a model for minutes)."""
        starting = asyncio.ensure_future(self.start(count))
        stop = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({starting, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not starting.done():
            starting.cancel()
            await asyncio.wait({starting})
            return None
        exc = starting.exception()
        if exc is None or isinstance(exc, ChildStartError):
            return None if exc is None else str(exc)
        return f"could not start a handler process: {type(exc).__name__}: {exc}"

    # -- lending --------------------------------------------------------------------------
    def available(self) -> int:
        """Children ready for a job now (the dead are dropped and replaced)."""
        for child in [c for c in self._idle if not c.alive]:  # ended; its on_exit is on its way
            self._idle.remove(child)
            self._children.discard(child)
            self._start_one()
        return len(self._idle)

    async def wait_available(self) -> None:
        """Until a child is idle. Starts one if none is idle or starting."""
        while self.available() == 0:
            if self._starting == 0:
                self._start_one()
            self._changed.clear()
            await self._changed.wait()

    async def ready_unless(self, stop_waiter: asyncio.Future[object]) -> bool:
        """Until a child is idle; False if `stop_waiter` ends first."""
        if self.available():
            return True
        waiter = asyncio.ensure_future(self.wait_available())
        await asyncio.wait({waiter, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        return waiter.done() and not waiter.cancelled()

    def take(self) -> Child | None:
        self.available()
        return self._idle.popleft() if self._idle else None

    async def acquire(self) -> Child:
        while (child := self.take()) is None:
            await self.wait_available()
        return child

    def give_back(self, child: Child) -> None:
        """After a job: keep the child for the next one, or replace it (dead, or too big)."""
        if self._closed:
            self._retire(child)
            return
        if not child.alive:
            self._children.discard(child)
            self._start_one()
            return
        rss = over_cap(child.pid, self.max_rss_mb)
        if rss is not None:
            log.warning("memory guard: handler process %d uses %.0f MB, over WORKER_KIT_MAX_RSS_MB=%.6g; "
                        "replacing it with a fresh one", child.pid, rss / MB, self.max_rss_mb)
            self._retire(child)
            self._start_one()
            return
        self._idle.append(child)
        self._changed.set()

    def new_run(self, job: Job, sink: Sink) -> IsolatedRun:
        # The child is reserved now, synchronously, so the next claim counts it as busy.
        return IsolatedRun(self, job, sink, self.take())

    async def close(self) -> None:
        """End every child (busy ones too: the worker has handed their jobs back)."""
        self._closed = True
        self._idle.clear()
        for task in list(self._starts):
            task.cancel()
        await asyncio.gather(*self._starts, return_exceptions=True)
        await asyncio.gather(*self._closing, *(c.close() for c in self._children), return_exceptions=True)
        self._children.clear()
        self._idle.clear()
