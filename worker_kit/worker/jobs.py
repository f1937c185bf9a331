"""The jobs a worker runs now: each claimed job's life from its start to its delivered result.

`Jobs.launch` takes a claimed job's slot at once and starts one task for it, which runs the
handler through `execution.Run` in that task (or a handler process, `isolation.IsolatedRun`),
until its result, a stop from the service or the timeout, and delivers the result through
`reporting.JobReporter`. A stop or the timeout hands the job to a task of its own, so that it is
reported at once whatever the handler does. The worker loop (loop.py) claims the jobs and
decides when to stop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from .. import protocol
from ..job import DEFAULT_EXECUTION_TIMEOUT_MS, JobState
from .execution import Outcome, Run
from .handler_job import Job
from .leases import Leases
from .registry import Handler
from .reporting import JobReporter, final_report, release
from .transport import ClaimedJob, Final, Transport

if TYPE_CHECKING:  # process isolation loads only when a worker uses it (cold start)
    from .isolation import IsolatedRun
    from .pool import ChildPool

log = logging.getLogger("worker_kit.worker")

RELEASE = "RELEASE"  # a stop reason of our own: shutting down, hand the job back
DEFAULT_RESULT_LIMIT = 20 * 1024 * 1024


@dataclass(slots=True, eq=False)
class Attempt:
    """One claimed job running here (one attempt of it, named by its lease token)."""

    claimed: ClaimedJob
    run: Run | IsolatedRun
    reporter: JobReporter
    started: float
    #: `_until_due`'s: done once the run has a result, a stop came or the timeout passed.
    wake: asyncio.Future[None] | None = None
    stop_reason: str | None = None
    finishing: bool = False
    #: The task the handler runs in, while it runs there (`Jobs._process_here`).
    task: asyncio.Task[None] | None = None


@dataclass(slots=True)
class JobSettings:
    """What the worker's settings say about each job (see `Worker`)."""

    handler: Handler
    timeout_s: float | None
    result_limit: int | None
    stuck_grace_s: float
    validate: Callable[[Any, Any], Any] | None = None


def timeout_for(claimed: ClaimedJob, handler_s: float | None, worker_s: float | None) -> float:
    # The service sends executionTimeout only when the client chose it; then the
    # handler's timeout, then the worker's, then the default.
    job_ms = claimed.policy.get("executionTimeout")
    if isinstance(job_ms, int | float) and not isinstance(job_ms, bool) and job_ms > 0:
        seconds = job_ms / 1000
    else:
        seconds = handler_s or worker_s or DEFAULT_EXECUTION_TIMEOUT_MS / 1000
    if claimed.deadline_ms is not None:  # the service's own deadline (TTL included)
        deadline_s = max(0.0, claimed.deadline_ms / 1000)
        if deadline_s < seconds - 0.05:  # not just the same deadline, rounded
            seconds = deadline_s
    return seconds


def final_for(outcome: Outcome, claimed: ClaimedJob, configured_limit: int | None) -> Final:
    """The final report of `outcome`, its output packed and checked against the result limit:
    the worker's own when configured, else the default or the endpoint's when that is higher
    (below the default, the service's 413 refuses larger results and the job fails saying so)."""
    limit = configured_limit if configured_limit is not None else max(
        DEFAULT_RESULT_LIMIT, claimed.result_limit or 0)
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


def _wake(waiter: asyncio.Future[None], _: object = None) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _until_due(attempt: Attempt, timeout_s: float) -> None:
    """Until the attempt's run has a result, a stop comes (`Jobs.on_stop` wakes the attempt)
    or `timeout_s` pass: one future per job (the attempt's own) on every job's path."""
    result = attempt.run.result
    if result.done() or attempt.stop_reason is not None:
        return
    waiter = attempt.wake = asyncio.get_running_loop().create_future()
    wake = functools.partial(_wake, waiter)
    result.add_done_callback(wake)
    timer = asyncio.get_running_loop().call_later(timeout_s, _wake, waiter)
    try:
        await waiter
    finally:
        timer.cancel()
        result.remove_done_callback(wake)


class Jobs:
    """The attempts running in this worker, by job id. `on_freed()` runs each time a slot
    frees (the handler's code has ended); `on_stuck(job_id)` when a stopped handler will not
    end within `stuck_grace_s` (thread isolation: the worker must be replaced)."""

    def __init__(self, settings: JobSettings, transport: Transport, leases: Leases, pool: ChildPool | None,
                 on_freed: Callable[[], None], on_stuck: Callable[[str], None]) -> None:
        self.settings, self.transport, self.leases, self.pool = settings, transport, leases, pool
        self._on_freed, self._on_stuck = on_freed, on_stuck
        self.active: dict[str, Attempt] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.occupied = 0
        self.stopping = False  # jobs claimed from now on are handed back, not started
        self.abandoned = False  # run() itself was cancelled (abandon_all): nothing more is sent
        self.stats = {"completed": 0, "failed": 0, "timed_out": 0, "stopped": 0, "released": 0}

    def launch(self, claimed: ClaimedJob) -> None:
        # Synchronous up to the task: the slot is taken before the claim loop asks again.
        if self.stopping:
            coro = self._release(claimed)  # claimed as we began to stop: never started
        else:
            attempt = self._prepare(claimed)
            coro = self._process(attempt) if self.pool is not None else self._process_here(attempt)
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _prepare(self, claimed: ClaimedJob) -> Attempt:
        job_id = claimed.id
        if job_id in self.active:
            # The service gave this job out again (its lease expired, say while heartbeats could
            # not get through), and to us: the earlier attempt here has lost its lease.
            log.warning("job %s claimed again (attempt %d) while its earlier attempt still runs here; "
                        "stopping that one", job_id, claimed.attempt, extra={"job_id": job_id})
            self.on_stop(job_id, protocol.STOP_LOST)
        job = Job(job_id, claimed.input, attempt=claimed.attempt, policy=claimed.policy,
                  webhook=claimed.webhook)
        reporter = JobReporter(self.transport, job_id, claimed.token,
                               on_lost=lambda: self.on_stop(job_id, protocol.STOP_LOST, claimed.token))
        run: Run | IsolatedRun
        if self.pool is not None:
            run = self.pool.new_run(job, reporter)
        else:
            run = Run(self.settings.handler, job, reporter, self.settings.validate)
        attempt = Attempt(claimed, run, reporter, 0.0)
        self.active[job_id] = attempt
        self.leases.hold(job_id, claimed.token)
        self.occupied += 1
        run.settled.add_done_callback(self._on_settled)
        return attempt

    def _begin(self, attempt: Attempt) -> float:
        """The attempt starts now; its timeout in seconds."""
        claimed = attempt.claimed
        attempt.started = asyncio.get_running_loop().time()
        timeout_s = timeout_for(claimed, self.settings.handler.timeout, self.settings.timeout_s)
        if log.isEnabledFor(logging.INFO):
            log.info("job %s started (attempt %d, timeout %.6g s)", claimed.id, claimed.attempt, timeout_s,
                     extra={"job_id": claimed.id})
        return timeout_s

    async def _process(self, attempt: Attempt) -> None:
        """A job whose handler runs in a task of its own (a handler process's run, or a job
        stopped before it began): until its result, a stop or its timeout, then `_conclude`."""
        timeout_s = self._begin(attempt)
        attempt.run.start()
        try:
            await _until_due(attempt, timeout_s)
        except BaseException:
            self._forget(attempt)
            raise
        await self._conclude(attempt, timeout_s)

    async def _process_here(self, attempt: Attempt) -> None:
        """A job whose handler runs in this task (no task of its own per job). A stop or the
        timeout hands the job at once to a new task (`_handover`), which reports it whatever the
        handler does with its interruption; this task then only lets the handler end."""
        if attempt.stop_reason is not None:  # stopped before it began
            await self._process(attempt)
            return
        task = attempt.task = asyncio.current_task()
        timeout_s = self._begin(attempt)
        timer = asyncio.get_running_loop().call_later(timeout_s, self._due, attempt, timeout_s)
        try:
            await cast(Run, attempt.run).run_here(task)  # never raises: its outcome is run.result
        finally:
            timer.cancel()
        if attempt.task is not task:
            return  # handed over
        attempt.task = None
        if task is not None and task.cancelling():
            if self.abandoned:  # the worker's run() ended meanwhile
                self._forget(attempt)
                raise asyncio.CancelledError
            # The handler cancelled its own task (it runs in the job's): the job still ends
            # with what the handler came to, as when it had a task of its own.
            task.uncancel()
        await self._conclude(attempt, timeout_s)

    def _due(self, attempt: Attempt, timeout_s: float) -> None:
        if attempt.task is not None and not attempt.run.result.done():
            self._handover(attempt, timeout_s)

    def _handover(self, attempt: Attempt, timeout_s: float) -> None:
        """A stop or the timeout came while the handler runs in the job's task: a task of its own
        concludes the job now; the job's task, no longer one a drain waits for, only lets its
        handler end (an interrupted handler that will not end is `_watch`'s to find)."""
        here, attempt.task = attempt.task, None
        if here is not None:
            self.tasks.discard(here)
        task = asyncio.get_running_loop().create_task(self._conclude(attempt, timeout_s))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _conclude(self, attempt: Attempt, timeout_s: float) -> None:
        """Deliver the attempt's end once its result, a stop or its timeout came: the result, a
        TIMED_OUT, or the stop's own handling (`_stopped`)."""
        loop = asyncio.get_running_loop()
        claimed, run, reporter = attempt.claimed, attempt.run, attempt.reporter
        job_id = claimed.id
        ids = {"job_id": job_id}
        try:
            # A result that is already there when the drain's grace runs out (same loop step)
            # is delivered: handing the job back would run it again although it ended.
            reason = attempt.stop_reason
            if reason is not None and not (reason == RELEASE and run.result.done()):
                await self._stopped(attempt, reason)
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
            attempt.finishing = True
            final = final_for(outcome, claimed, self.settings.result_limit)
            delivered = await reporter.finish(final)
            elapsed = loop.time() - attempt.started
            state, error = final.state, final.error
            if delivered:
                self.stats[state.lower()] = self.stats.get(state.lower(), 0) + 1
                level = logging.INFO if state is JobState.COMPLETED else logging.WARNING
                if log.isEnabledFor(level):
                    log.log(level, "job %s %s in %.3f s%s", job_id, state, elapsed,
                            f": {error}" if error else "",
                            extra={**ids, "state": state, "duration_ms": int(elapsed * 1000)})
            if state is JobState.TIMED_OUT:
                await self._watch(attempt)
        except asyncio.CancelledError:
            if attempt.finishing:  # run() ended (cancelled, or the drain's last wait ran out)
                log.error("job %s: the worker stopped before its result was delivered; the job runs "
                          "again once its lease expires", job_id, extra=ids)
            raise
        except Exception:  # a bug or a reply nothing expected: say so; the lease brings the job back
            log.exception("job %s: reporting failed; the job runs again once its lease expires", job_id,
                          extra=ids)
            attempt.reporter.abandon(JobState.FAILED)
            run.interrupt()
        finally:
            self._forget(attempt)

    def _forget(self, attempt: Attempt) -> None:
        # Only this attempt's entries: a later attempt of the same job may run here now.
        job_id = attempt.claimed.id
        if self.active.get(job_id) is attempt:
            del self.active[job_id]
        self.leases.unhold(job_id, attempt.claimed.token)

    async def _stopped(self, attempt: Attempt, reason: str) -> None:
        job_id = attempt.claimed.id
        attempt.reporter.abandon(reason)
        attempt.run.interrupt()
        elapsed = asyncio.get_running_loop().time() - attempt.started
        if reason == RELEASE:
            await self._release(attempt.claimed)
        else:
            self.stats["stopped"] += 1
            log.warning("job %s stopped by the service (%s) after %.3f s", job_id, reason, elapsed,
                        extra={"job_id": job_id, "state": reason, "duration_ms": int(elapsed * 1000)})
        await self._watch(attempt)

    async def _watch(self, attempt: Attempt) -> None:
        """Wait for an interrupted handler to end; if it will not, the worker is stuck."""
        if attempt.run.settled.done():
            return
        grace = self.settings.stuck_grace_s
        try:
            await asyncio.wait_for(asyncio.shield(attempt.run.settled), grace)
        except TimeoutError:
            if self.pool is not None:  # its process is replaced; the worker goes on
                await cast("IsolatedRun", attempt.run).kill(f"its handler did not stop within {grace:.6g} s")
            else:
                self._on_stuck(attempt.claimed.id)

    async def _release(self, claimed: ClaimedJob) -> None:
        if await release(self.transport, claimed.id, claimed.token):
            self.stats["released"] += 1

    def _on_settled(self, _: asyncio.Future[None]) -> None:
        self.occupied -= 1
        self._on_freed()

    def on_stop(self, job_id: str, reason: str, token: str | None = None) -> None:
        """The job must stop (`reason`: a stop signal from the service, or RELEASE)."""
        attempt = self.active.get(job_id)
        if attempt is None or (token is not None and attempt.claimed.token != token):
            return
        if reason == RELEASE and (attempt.finishing or attempt.run.result.done()):
            return  # its result exists: it is delivered, not handed back (the drain waits for it)
        if attempt.stop_reason is None:
            attempt.stop_reason = reason
            if attempt.wake is not None:
                _wake(attempt.wake)
            if attempt.task is not None and not attempt.run.result.done():
                self._handover(attempt, 0.0)
        if attempt.finishing:
            attempt.reporter.abandon(reason)  # cancelled, lost or shutting down while delivering
        self.leases.unhold(job_id, attempt.claimed.token)

    def abandon_all(self) -> None:
        """run() itself was cancelled: stop every handler and send nothing more."""
        self.abandoned = True
        for attempt in self.active.values():
            attempt.reporter.abandon(RELEASE)
            attempt.run.interrupt()
