"""The worker loop: claim jobs, run them, keep their leases, report, drain on stop.

Three kinds of task share one event loop: one claim loop (a long-poll for as many jobs
as there are free slots, sent again as soon as a slot frees; at concurrency above 1 it keeps
two claims in flight, claims.py), one heartbeat loop (renews leases and receives cancels and
timeouts), and one task per job (jobs.py: runs the handler through `execution.Run` and delivers
its result through `reporting.JobReporter`).

`Worker` never installs signal handlers; `worker_kit.start()` and the CLI do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
from typing import TYPE_CHECKING, Any

from ..errors import AuthError, RateLimited, ServiceError, ServiceUnavailable
from ..retrying import Backoff
from .claims import Claims
from .jobs import RELEASE, Jobs, JobSettings
from .leases import Leases
from .memory import MB, over_cap
from .registry import Concurrency, Handler
from .settings import EXIT_CONFIG, EXIT_MEMORY, EXIT_OK, EXIT_REFUSED, EXIT_STUCK
from .transport import ClaimedJob, NativeTransport, Transport

if TYPE_CHECKING:
    from .pool import ChildPool

log = logging.getLogger("worker_kit.worker")

MAX_CLAIM = 100
#: Exit code when the worker's own claim or heartbeat loop failed (a bug: see the log).
EXIT_INTERNAL = 1


class _Signal:
    """asyncio.Event's set, clear and wait for a single waiter (the claim loop, which waits on
    it once per job at concurrency 1): a future only while it waits, no waiter list."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class Worker:
    """Runs `handler` for jobs of the endpoint at `url` (…/v2/{endpoint_id}).

    `concurrency`: jobs at once, an int or `f(current) -> int` consulted before each claim
    and as jobs finish (None: the handler's, else 1). `timeout`: default execution timeout
    in seconds. `result_limit`: results larger than this many bytes (packed) fail in the worker
    (None: 20 MB, or the endpoint's limit when the service states a higher one).
    `grace_s`: how long `stop()` lets running jobs finish before handing them back.
    `stuck_grace_s`: how long a stopped handler may take to end before the worker declares
    itself stuck, stops claiming and (once its other jobs end, or are handed back after
    `grace_s`) returns EXIT_STUCK. `max_rss_mb`: once this process's RSS is over it after a
    job, the worker stops claiming and returns EXIT_MEMORY when its running jobs end.
    (worker_kit.start() turns both exit codes into an in-place restart.)
    `isolation`: "process" runs each job in a supervised child process (worker.isolation;
    None: the handler's choice, else "thread"); there `max_rss_mb` applies to each child, and
    a child over `kill_rss_mb` is killed at once.
    """

    def __init__(
        self,
        handler: Handler,
        url: str,
        *,
        api_key: str | None = None,
        concurrency: Concurrency | None = None,
        timeout: float | None = None,
        grace_s: float = 30.0,
        stuck_grace_s: float = 5.0,
        worker_id: str | None = None,
        claim_wait_s: float = 30.0,
        result_limit: int | None = None,
        transport: Transport | None = None,
        max_rss_mb: float | None = None,
        isolation: str | None = None,
        kill_rss_mb: float | None = None,
    ) -> None:
        self.handler = handler
        self.url = url.rstrip("/")
        self.worker_id = worker_id or default_worker_id()
        self.transport = transport or NativeTransport(self.url, worker_id=self.worker_id, api_key=api_key)
        self._concurrency: Concurrency = concurrency or handler.concurrency or 1
        self._capacity_now = 1 if callable(self._concurrency) else int(self._concurrency)
        self.timeout_s = timeout
        self.grace_s = grace_s
        self.stuck_grace_s = stuck_grace_s
        self.claim_wait_ms = int(claim_wait_s * 1000)
        self.result_limit = result_limit
        self.max_rss_mb = max_rss_mb
        self.isolation = isolation or handler.isolation or "thread"
        self.kill_rss_mb = kill_rss_mb
        self._pool: ChildPool | None = None  # process isolation's handler processes
        self.exit_code = EXIT_OK
        settings = JobSettings(handler, timeout, result_limit, stuck_grace_s)
        if handler.input_schema is not None:
            from ..validation import validate

            settings.validate = validate
        self._leases = Leases(self.transport, lambda *stop: self._jobs.on_stop(*stop),
                              lambda: (self._capacity_now, self._jobs.occupied))
        self._jobs = Jobs(settings, self.transport, self._leases, None, self._on_freed, self._poison)
        self.stats = self._jobs.stats
        self._changed = _Signal()  # a slot freed, a claim ended, or stop was asked
        self._claims = Claims(self.transport, self._accept, self._changed.set)
        self._backoff = Backoff()
        self._stop_requested = asyncio.Event()
        self._cut = asyncio.Event()
        self._finished = asyncio.Event()
        self._grace = grace_s
        self._run_began = False
        self._failed_loops: set[asyncio.Task[None]] = set()
        self._claim_task: asyncio.Task[None] | None = None
        self._claiming = False  # the claim loop waits for a claim's answer

    # -- public ---------------------------------------------------------------------------
    async def run(self) -> int:
        """Claim and run jobs until stopped; returns the exit code (see settings.EXIT_*).

        A Worker runs once: run() after stop() (or after an earlier run() ended) returns
        the exit code at once without claiming; run() while it is already running raises
        RuntimeError."""
        if self._run_began:
            if not self._finished.is_set():
                raise RuntimeError("Worker.run() is already running")
            return self.exit_code
        self._run_began = True
        if self._stop_requested.is_set():  # stop() came first: never start
            self._finished.set()
            return self.exit_code
        try:
            return await self._run()
        finally:
            self._finished.set()  # stop() returns even when run() failed or was cancelled

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        await self.transport.open()
        if self.isolation == "process" and not await self._start_pool():
            await self.transport.close()
            return self.exit_code
        log.info("worker %s started: handler %s, endpoint %s, concurrency %s%s", self.worker_id,
                 self.handler.name, self.url, "dynamic" if callable(self._concurrency) else self._concurrency,
                 ", each job in a handler process" if self._pool else "")
        stop_waiter = loop.create_task(self._stop_requested.wait())
        claim = self._claim_task = loop.create_task(self._claim_loop(stop_waiter))
        heartbeat = loop.create_task(self._leases.run())
        try:
            await asyncio.wait({stop_waiter, claim, heartbeat}, return_when=asyncio.FIRST_COMPLETED)
            self._check_loop("claim", claim)
            self._check_loop("heartbeat", heartbeat)
            await asyncio.wait({claim})
            self._check_loop("claim", claim)
            await self._drain()
        finally:
            self._jobs.abandon_all()  # only if run() itself was cancelled
            leftover = [*self._jobs.tasks, *self._claims.tasks, claim, heartbeat, stop_waiter]
            for task in leftover:
                task.cancel()
            await asyncio.gather(*leftover, return_exceptions=True)
            if self._pool is not None:
                await self._pool.close()
            await self.transport.close()
        log.info("worker %s stopped (exit code %d)", self.worker_id, self.exit_code)
        return self.exit_code

    async def _start_pool(self) -> bool:
        """Process isolation: start the handler processes; False (exit code 2) if they cannot."""
        from .pool import ChildPool  # loaded only under process isolation (cold start)

        self._pool = ChildPool(self.handler, max_rss_mb=self.max_rss_mb, kill_rss_mb=self.kill_rss_mb)
        error = await self._pool.start_unless(self._capacity_now, self._stop_requested)
        if error is None:
            self._jobs.pool = self._pool
            return True
        log.error("%s", error)
        self.exit_code = EXIT_CONFIG
        await self._pool.close()
        return False

    def _check_loop(self, name: str, task: asyncio.Task[None]) -> None:
        """A claim or heartbeat loop that ended on its own has a bug or met something it
        cannot handle: without it the worker would idle for ever or lose its leases, so it
        stops (handing its jobs back) and exits with EXIT_INTERNAL instead of hanging."""
        if not task.done() or task.cancelled() or task in self._failed_loops:
            return
        exc = task.exception()
        if exc is None and name == "claim" and self._stop_requested.is_set():
            return  # the claim loop's normal end
        self._failed_loops.add(task)
        log.critical("the %s loop ended unexpectedly; stopping the worker (exit code %d)", name,
                     EXIT_INTERNAL, exc_info=(type(exc), exc, exc.__traceback__) if exc else None)
        if self.exit_code == EXIT_OK:
            self.exit_code = EXIT_INTERNAL
        self._request_stop(0.0)

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop claiming, give running jobs `grace_s` (default: the worker's) to finish, hand
        the rest back to the queue, then return once `run()` has ended. Calling it again
        with a shorter grace cuts the wait. Before run() has begun it returns at once (and
        a later run() returns at once too)."""
        self._request_stop(self.grace_s if grace_s is None else grace_s)
        if not self._run_began:
            return
        await self._finished.wait()

    @property
    def running(self) -> int:
        return self._jobs.occupied

    # -- stopping -------------------------------------------------------------------------
    def _request_stop(self, grace_s: float) -> None:
        if not self._stop_requested.is_set():
            self._grace = grace_s
            self._stop_requested.set()
            self._jobs.stopping = True
            self._changed.set()  # a claim loop waiting for a free slot sees the stop
            if self._claiming or self._claims.inflight:
                # On the next turn: a claim answering in this one (the stop came from its own
                # code, say) delivers its jobs, which are then handed back at once.
                asyncio.get_running_loop().call_soon(self._cancel_claim)
        elif grace_s < self._grace:
            self._grace = grace_s
            self._cut.set()

    def _cancel_claim(self) -> None:
        if self._claiming and self._claim_task is not None:
            self._claim_task.cancel()  # jobs the service may still hand this claim come back by lease
        self._claims.cut_holds()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        tasks, answering = self._jobs.tasks, self._claims.answering
        if tasks:
            log.info("draining: %d job(s) running; waiting up to %.6g s", len(tasks), self._grace)
        began = loop.time()
        cut = loop.create_task(self._cut.wait())
        try:
            while tasks or answering():
                left = began + self._grace - loop.time()  # a second stop() may shorten the grace
                if left <= 0:
                    break
                if cut.done():
                    self._cut.clear()
                    cut = loop.create_task(self._cut.wait())
                await asyncio.wait({*tasks, *answering(), cut}, timeout=None if math.isinf(left) else left,
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            cut.cancel()
        for job_id in list(self._jobs.active):
            self._jobs.on_stop(job_id, RELEASE)
        if tasks:
            await asyncio.wait(set(tasks), timeout=self.stuck_grace_s + 5)

    def _poison(self, job_id: str) -> None:
        log.error("job %s: its handler did not stop within %.6g s (stuck in native code?); the worker "
                  "takes no more jobs and ends (code %d) once its other jobs end or, after %.6g s, are "
                  "handed back, to be replaced", job_id, self.stuck_grace_s, EXIT_STUCK, self.grace_s,
                  extra={"job_id": job_id})
        self.exit_code = EXIT_STUCK
        self._request_stop(self.grace_s)

    def _check_memory(self) -> None:
        """After a job: over the memory cap, take no more jobs, let the running ones finish,
        then end with EXIT_MEMORY (to be replaced; a leak does not outlive the process)."""
        if self.exit_code != EXIT_OK or self._stop_requested.is_set():
            return
        rss = over_cap(None, self.max_rss_mb)
        if rss is None:
            return
        log.warning("memory guard: this worker uses %.0f MB, over WORKER_KIT_MAX_RSS_MB=%.6g; it takes no "
                    "more jobs and is replaced once its %d running job(s) end", rss / MB, self.max_rss_mb,
                    self._jobs.occupied)
        self.exit_code = EXIT_MEMORY
        self._request_stop(float("inf"))

    # -- claiming -------------------------------------------------------------------------
    def _capacity(self) -> int:
        if callable(self._concurrency):
            try:
                value = max(0, min(1000, int(self._concurrency(self._capacity_now))))
            except Exception:
                log.exception("the concurrency function failed; keeping %d", self._capacity_now)
                value = self._capacity_now
            if value != self._capacity_now:
                log.info("concurrency %d -> %d", self._capacity_now, value)
            self._capacity_now = value
        return self._capacity_now

    async def _claim_loop(self, stop_waiter: asyncio.Task[Any]) -> None:
        claims = self._claims
        while not self._stop_requested.is_set():
            if claims.failed:
                if not await self._claim_failed(claims.failed.pop(0)):
                    return
                continue
            capacity = self._capacity()
            free = min(capacity - self._jobs.occupied - claims.asked, MAX_CLAIM)
            if self._pool is not None and free > 0:  # only as many jobs as ready handler processes
                if not claims.inflight and not await self._pool.ready_unless(stop_waiter):
                    continue
                free = min(free, self._pool.available() - claims.asked)
            if free > 0 and capacity > 1 and self.transport.max_claims > 1:
                ask = min(free, claims.room(capacity))
                if ask > 0:
                    claims.start(ask, self.claim_wait_ms, capacity, self._jobs.occupied)
                    continue
            elif free > 0:
                if not await self._claim_inline(free, capacity):
                    return
                continue
            self._changed.clear()
            if not callable(self._concurrency):
                await self._changed.wait()
                continue
            with contextlib.suppress(TimeoutError):
                # A dynamic concurrency is consulted again at least once a second.
                async with asyncio.timeout(1.0):
                    await self._changed.wait()

    async def _claim_inline(self, free: int, capacity: int) -> bool:
        """One claim at a time (concurrency 1, or a transport that allows no more), awaited in
        the claim loop's own task (no task per claim): stop() cancels that task while
        `_claiming` says it waits here, and only then. False: the claim loop must end."""
        self._claiming = True
        try:
            jobs, lease_ms = await self.transport.claim(free, self.claim_wait_ms, concurrency=capacity,
                                                        running=self._jobs.occupied)
        except asyncio.CancelledError:
            if self._stop_requested.is_set():
                return False  # stop() cut a long-poll short
            raise
        except Exception as exc:
            failure: Exception | None = exc
        else:
            failure = None
        finally:
            self._claiming = False
        if failure is not None:
            return await self._claim_failed(failure)
        self._accept(jobs, lease_ms)
        return True

    def _accept(self, jobs: list[ClaimedJob], lease_ms: int | None) -> None:
        self._backoff.reset()
        self._leases.set_lease(lease_ms)
        for claimed in jobs:
            self._jobs.launch(claimed)

    async def _claim_failed(self, exc: Exception) -> bool:
        """Back off after a failed claim; False (the claim loop ends) when the service refuses this worker."""
        if isinstance(exc, ServiceUnavailable | RateLimited):
            await self._backoff.sleep(getattr(exc, "retry_after", None) or 0.0, self._stop_requested, "claim")
        elif isinstance(exc, ServiceError):
            hint = "check WORKER_KIT_API_KEY" if isinstance(exc, AuthError) else "check WORKER_KIT_URL"
            log.error("the service refused this worker's claim (%s); %s", exc, hint)
            self.exit_code = EXIT_REFUSED
            self._request_stop(0.0)
            return False
        else:  # a reply this worker cannot read: say so, keep trying
            log.error("claim failed", exc_info=exc)
            await self._backoff.sleep(0.0, self._stop_requested, "claim")
        return True

    def _on_freed(self) -> None:
        self._claims.dry = False  # its report may ride with a claim: worth a look at the queue
        self._changed.set()
        if self.max_rss_mb is not None and self._pool is None:  # a pool checks each child
            self._check_memory()
