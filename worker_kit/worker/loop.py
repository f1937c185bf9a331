"""The worker loop: claim jobs, run them, keep their leases, report, drain on stop.

Three kinds of task share one event loop: one claim loop (a long-poll for as many jobs
as there are free slots, sent again as soon as a slot frees), one heartbeat loop
(renews leases and receives cancels and timeouts), and one task per job (runs the
handler through `execution.Run` and delivers its result through `reporting.JobReporter`).

`Worker` never installs signal handlers; `worker_kit.start()` and the CLI do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from .. import protocol
from ..errors import AuthError, RateLimited, ServiceError, ServiceUnavailable
from ..job import DEFAULT_EXECUTION_TIMEOUT_MS, JobState
from ..retrying import Backoff
from .execution import Job, Outcome, Run
from .isolation import IsolatedRun
from .leases import Leases
from .memory import MB, over_cap
from .pool import ChildPool
from .registry import Concurrency, Handler
from .reporting import JobReporter, final_report, release
from .settings import EXIT_CONFIG, EXIT_MEMORY, EXIT_OK, EXIT_REFUSED, EXIT_STUCK
from .transport import ClaimedJob, Final, NativeTransport, Transport

log = logging.getLogger("worker_kit.worker")

RELEASE = "RELEASE"  # a stop reason of our own: shutting down, hand the job back
DEFAULT_RESULT_LIMIT = 20 * 1024 * 1024
MAX_CLAIM = 100
#: Exit code when the worker's own claim or heartbeat loop failed (a bug: see the log).
EXIT_INTERNAL = 1


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(slots=True, eq=False)
class _Active:
    claimed: ClaimedJob
    run: Run | IsolatedRun
    reporter: JobReporter
    stopped: asyncio.Future[str]
    started: float
    finishing: bool = False


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
        self._pool: ChildPool | None = None
        self.exit_code = EXIT_OK
        self._validate = None
        if handler.input_schema is not None:
            from ..validation import validate

            self._validate = validate
        self._leases = Leases(self.transport, self._on_stop, lambda: (self._capacity_now, self._occupied))
        self._occupied = 0
        self._active: dict[str, _Active] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._cut = asyncio.Event()
        self._finished = asyncio.Event()
        self._grace = grace_s
        self._run_began = False
        self._failed_loops: set[asyncio.Task[None]] = set()
        self.stats = {"completed": 0, "failed": 0, "timed_out": 0, "stopped": 0, "released": 0}

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
        claim = loop.create_task(self._claim_loop(stop_waiter))
        heartbeat = loop.create_task(self._leases.run())
        try:
            await asyncio.wait({stop_waiter, claim, heartbeat}, return_when=asyncio.FIRST_COMPLETED)
            self._check_loop("claim", claim)
            self._check_loop("heartbeat", heartbeat)
            await asyncio.wait({claim})
            self._check_loop("claim", claim)
            await self._drain()
        finally:
            for active in self._active.values():  # only if run() itself was cancelled
                active.reporter.abandon(RELEASE)
                active.run.interrupt()
            leftover = [*self._tasks, claim, heartbeat, stop_waiter]
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
        self._pool = ChildPool(self.handler, max_rss_mb=self.max_rss_mb, kill_rss_mb=self.kill_rss_mb)
        error = await self._pool.start_unless(self._capacity_now, self._stop_requested)
        if error is None:
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
        return self._occupied

    # -- stopping -------------------------------------------------------------------------
    def _request_stop(self, grace_s: float) -> None:
        if not self._stop_requested.is_set():
            self._grace = grace_s
            self._stop_requested.set()
            self._slot_freed.set()  # a claim loop waiting for a free slot sees the stop
        elif grace_s < self._grace:
            self._grace = grace_s
            self._cut.set()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        if self._tasks:
            log.info("draining: %d job(s) running; waiting up to %.6g s", len(self._tasks), self._grace)
        began = loop.time()
        cut = loop.create_task(self._cut.wait())
        try:
            while self._tasks:
                left = began + self._grace - loop.time()  # a second stop() may shorten the grace
                if left <= 0:
                    break
                if cut.done():
                    self._cut.clear()
                    cut = loop.create_task(self._cut.wait())
                await asyncio.wait({*self._tasks, cut}, timeout=None if math.isinf(left) else left,
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            cut.cancel()
        for job_id in list(self._active):
            self._on_stop(job_id, RELEASE)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.stuck_grace_s + 5)

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
                    self._occupied)
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
        backoff = Backoff()
        while not self._stop_requested.is_set():
            capacity = self._capacity()
            free = min(capacity - self._occupied, MAX_CLAIM)
            if self._pool is not None and free > 0:  # only as many jobs as ready handler processes
                if not await self._pool.ready_unless(stop_waiter):
                    continue
                free = min(free, self._pool.available())
            if free <= 0:
                self._slot_freed.clear()
                with contextlib.suppress(TimeoutError):
                    # A dynamic concurrency is consulted again at least once a second.
                    async with asyncio.timeout(1.0 if callable(self._concurrency) else None):
                        await self._slot_freed.wait()
                continue
            req = asyncio.create_task(
                self.transport.claim(free, self.claim_wait_ms, concurrency=capacity, running=self._occupied)
            )
            await asyncio.wait({req, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not req.done():
                req.cancel()  # jobs the service may still hand this request come back by lease
                await asyncio.wait({req})
            if req.cancelled():
                return
            try:
                jobs, lease_ms = req.result()
            except (ServiceUnavailable, RateLimited) as exc:
                await backoff.sleep(getattr(exc, "retry_after", None) or 0.0, self._stop_requested, "claim")
                continue
            except ServiceError as exc:
                hint = "check WORKER_KIT_API_KEY" if isinstance(exc, AuthError) else "check WORKER_KIT_URL"
                log.error("the service refused this worker's claim (%s); %s", exc, hint)
                self.exit_code = EXIT_REFUSED
                self._request_stop(0.0)
                return
            except Exception:  # a reply this worker cannot read: say so, keep trying
                log.exception("claim failed")
                await backoff.sleep(0.0, self._stop_requested, "claim")
                continue
            backoff.reset()
            self._leases.set_lease(lease_ms)
            for claimed in jobs:
                self._launch(claimed)

    def _launch(self, claimed: ClaimedJob) -> None:
        # Synchronous up to the task: the slot is taken before the claim loop asks again.
        if self._stop_requested.is_set():
            coro = self._release(claimed)  # claimed as we began to stop: never started
        else:
            coro = self._process(self._prepare(claimed))
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one job --------------------------------------------------------------------------
    def _timeout_for(self, claimed: ClaimedJob) -> float:
        # The service sends executionTimeout only when the client chose it; then the
        # handler's timeout, then the worker's, then the default.
        job_ms = claimed.policy.get("executionTimeout")
        if isinstance(job_ms, int | float) and not isinstance(job_ms, bool) and job_ms > 0:
            seconds = job_ms / 1000
        else:
            seconds = self.handler.timeout or self.timeout_s or DEFAULT_EXECUTION_TIMEOUT_MS / 1000
        if claimed.deadline_ms is not None:  # the service's own deadline (TTL included)
            deadline_s = max(0.0, claimed.deadline_ms / 1000)
            if deadline_s < seconds - 0.05:  # not just the same deadline, rounded
                seconds = deadline_s
        return seconds

    def _result_limit_for(self, claimed: ClaimedJob) -> int:
        if self.result_limit is not None:
            return self.result_limit
        # An endpoint configured above the default takes larger results; below it, the service's
        # 413 refuses them and the job fails saying so.
        return max(DEFAULT_RESULT_LIMIT, claimed.result_limit or 0)

    def _final_report(self, outcome: Outcome, claimed: ClaimedJob) -> Final:
        limit = self._result_limit_for(claimed)
        if not outcome.output_optional:
            return final_report(outcome.state, outcome.output, outcome.error, outcome.error_detail, limit)
        # A stream's list the handler did not ask for must fit the service's own limit too, or
        # it is left out: the job completed, and its chunks are on /stream.
        limit = min(limit, claimed.result_limit or limit)
        final = final_report(outcome.state, outcome.output, outcome.error, outcome.error_detail, limit)
        if final.state == JobState.FAILED:
            log.warning("job %s: %s; its output is left empty (the chunks are on /stream)", claimed.id,
                        final.error, extra={"job_id": claimed.id})
            final = Final(JobState.COMPLETED)
        return final

    def _prepare(self, claimed: ClaimedJob) -> _Active:
        loop = asyncio.get_running_loop()
        job_id = claimed.id
        if job_id in self._active:
            # The service gave this job out again (its lease expired, say while heartbeats could
            # not get through), and to us: the earlier attempt here has lost its lease.
            log.warning("job %s claimed again (attempt %d) while its earlier attempt still runs here; "
                        "stopping that one", job_id, claimed.attempt, extra={"job_id": job_id})
            self._on_stop(job_id, protocol.STOP_LOST)
        job = Job(job_id, claimed.input, attempt=claimed.attempt, policy=claimed.policy,
                  webhook=claimed.webhook)
        reporter = JobReporter(self.transport, job_id, claimed.token,
                               on_lost=lambda: self._on_stop(job_id, protocol.STOP_LOST, claimed.token))
        run: Run | IsolatedRun
        if self._pool is not None:
            run = self._pool.new_run(job, reporter)
        else:
            run = Run(self.handler, job, reporter, self._validate)
        active = _Active(claimed, run, reporter, loop.create_future(), loop.time())
        self._active[job_id] = active
        self._leases.hold(job_id, claimed.token)
        self._occupied += 1
        run.settled.add_done_callback(self._on_settled)
        return active

    async def _process(self, active: _Active) -> None:
        loop = asyncio.get_running_loop()
        claimed, run, reporter = active.claimed, active.run, active.reporter
        job_id = claimed.id
        active.started = loop.time()
        timeout_s = self._timeout_for(claimed)
        ids = {"job_id": job_id}
        log.info("job %s started (attempt %d, timeout %.6g s)", job_id, claimed.attempt, timeout_s, extra=ids)
        run.start()
        try:
            await asyncio.wait({run.result, active.stopped}, timeout=timeout_s,
                               return_when=asyncio.FIRST_COMPLETED)
            # A result that is already there when the drain's grace runs out (same loop step)
            # is delivered: handing the job back would run it again although it ended.
            if active.stopped.done() and not (active.stopped.result() == RELEASE and run.result.done()):
                await self._stopped(active, active.stopped.result())
                return
            if run.result.done():
                outcome = run.result.result()
                if outcome.state is None:  # the handler raised JobInterrupted on its own
                    error = "JobInterrupted: the handler raised JobInterrupted"
                    outcome = Outcome(JobState.FAILED, error=error)
            else:
                run.interrupt()
                error = f"execution timeout: the job ran longer than {timeout_s:.6g} s"
                outcome = Outcome(JobState.TIMED_OUT, error=error)
            active.finishing = True
            final = self._final_report(outcome, claimed)
            delivered = await reporter.finish(final)
            elapsed = loop.time() - active.started
            state, error = final.state, final.error
            if delivered:
                self.stats[state.lower()] = self.stats.get(state.lower(), 0) + 1
                level = logging.INFO if state is JobState.COMPLETED else logging.WARNING
                log.log(level, "job %s %s in %.3f s%s", job_id, state, elapsed, f": {error}" if error else "",
                        extra={**ids, "state": state, "duration_ms": int(elapsed * 1000)})
            if state is JobState.TIMED_OUT:
                await self._watch(active)
        except asyncio.CancelledError:
            if active.finishing:  # run() ended (cancelled, or the drain's last wait ran out)
                log.error("job %s: the worker stopped before its result was delivered; the job runs "
                          "again once its lease expires", job_id, extra=ids)
            raise
        except Exception:  # a bug or a reply nothing expected: say so; the lease brings the job back
            log.exception("job %s: reporting failed; the job runs again once its lease expires", job_id,
                          extra=ids)
            active.reporter.abandon(JobState.FAILED)
            run.interrupt()
        finally:
            # Only this attempt's entries: a later attempt of the same job may run here now.
            if self._active.get(job_id) is active:
                del self._active[job_id]
            self._leases.unhold(job_id, claimed.token)

    async def _stopped(self, active: _Active, reason: str) -> None:
        job_id = active.claimed.id
        active.reporter.abandon(reason)
        active.run.interrupt()
        elapsed = asyncio.get_running_loop().time() - active.started
        if reason == RELEASE:
            await self._release(active.claimed)
        else:
            self.stats["stopped"] += 1
            log.warning("job %s stopped by the service (%s) after %.3f s", job_id, reason, elapsed,
                        extra={"job_id": job_id, "state": reason, "duration_ms": int(elapsed * 1000)})
        await self._watch(active)

    async def _watch(self, active: _Active) -> None:
        """Wait for an interrupted handler to end; if it will not, the worker is stuck."""
        if active.run.settled.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(active.run.settled), self.stuck_grace_s)
        except TimeoutError:
            if isinstance(active.run, IsolatedRun):  # its process is replaced; the worker goes on
                await active.run.kill(f"its handler did not stop within {self.stuck_grace_s:.6g} s")
            else:
                self._poison(active.claimed.id)

    async def _release(self, claimed: ClaimedJob) -> None:
        if await release(self.transport, claimed.id, claimed.token):
            self.stats["released"] += 1

    def _on_settled(self, _: asyncio.Future[None]) -> None:
        self._occupied -= 1
        self._slot_freed.set()
        if self.max_rss_mb is not None and self._pool is None:  # a pool checks each child
            self._check_memory()

    def _on_stop(self, job_id: str, reason: str, token: str | None = None) -> None:
        active = self._active.get(job_id)
        if active is None or (token is not None and active.claimed.token != token):
            return
        if reason == RELEASE and (active.finishing or active.run.result.done()):
            return  # its result exists: it is delivered, not handed back (the drain waits for it)
        if not active.stopped.done():
            active.stopped.set_result(reason)
        if active.finishing:
            active.reporter.abandon(reason)  # cancelled, lost or shutting down while delivering
        self._leases.unhold(job_id, active.claimed.token)
