"""The narrow interface every storage backend implements.

A backend applies every state transition of a job atomically, following the
backend-neutral rules of `rules.py`: the service only validates input, calls one method
and renders the result. Each mutating method
publishes a change notification (see `Notifier`) so that long-polls, /runsync waits
and stream readers wake up, across service replicas when the backend is shared.

Every backend must pass tests/storage/test_conformance.py.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from ..errors import JobNotFound, SequenceGap, StaleLease
from ..job import JobRecord, JobState, Policy
from ..protocol import OutputItem, StopSignal
from . import rules
from .channels import job_channel, queue_channel, worker_channel
from .coordination import SharedState

__all__ = ["FINISH_ANSWERS", "Finish", "Notifier", "StopSignal", "Storage", "SweepResult", "WorkerInfo",
           "job_channel", "queue_channel", "worker_channel"]  # fmt: skip


def targeted(channel: str) -> bool:
    """Whether a publish on `channel` wakes only as many waiters as it names (queue channels:
    one new job can fill one waiting claim) rather than all of them (a job's or a worker's
    channel, where every waiter wants every change)."""
    return channel.startswith("q:")


class Notifier:
    """In-process change notifications keyed by channel name.

    `wait()` returns True when `publish()` was called for the channel after the wait
    began, False on timeout. Callers re-read storage after waking: a notification
    carries no data, so a missed one costs latency, never correctness, provided the
    caller checks state before waiting.

    On a `targeted` channel, `publish(channel, count)` wakes the `count` longest-waiting
    waiters only, so a new job wakes one waiting claim, not every idle worker's.
    """

    def __init__(self) -> None:
        # Insertion-ordered, so targeted wakes go to the longest waiters first.
        self._waiters: dict[str, dict[asyncio.Future[None], None]] = defaultdict(dict)

    def publish(self, channel: str, count: int = 1) -> None:
        waiters = self._waiters.get(channel)
        if not waiters:
            return
        if not targeted(channel):
            del self._waiters[channel]
            chosen = list(waiters)
        else:
            chosen = [fut for fut in waiters if not fut.done()][: max(1, count)]
            for fut in chosen:
                del waiters[fut]
            if not waiters:
                del self._waiters[channel]
        for fut in chosen:
            if not fut.done():
                fut.set_result(None)

    def wake_all(self) -> None:
        """Wake every waiter on a job's or an endpoint's channel, so each re-reads storage.

        For when notifications may have been lost (a replica's Redis subscription dropped).
        Targeted channels (waiting claims) are left alone: they re-read on their own every
        few seconds, and a wake there is handed on to another waiter when unused."""
        for channel in [name for name in self._waiters if not targeted(name)]:
            self.publish(channel)

    def waiting(self, channel: str) -> int:
        """How many waiters the channel has in this process (for tests and diagnostics)."""
        return len(self._waiters.get(channel, ()))

    async def wait(self, channel: str, timeout: float) -> bool:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[channel][fut] = None
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await fut
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(channel)
            if waiters is not None:
                waiters.pop(fut, None)
                if not waiters:
                    del self._waiters[channel]


@dataclass(slots=True)
class SweepResult:
    """What one sweep changed; the service logs it and fires webhooks for ended jobs. The records
    of `ended` may leave out the job's input (None): reporting an ending does not need it."""

    ended: list[JobRecord] = field(default_factory=list)  # TIMED_OUT by deadline/TTL, FAILED by lost worker
    requeued: list[str] = field(default_factory=list)  # leases that expired with attempts left
    deleted: int = 0  # records past their retention
    #: True when the sweep stopped at its batch bound with overdue work left: sweep again soon.
    more: bool = False


@dataclass(frozen=True, slots=True)
class Finish:
    """One job's finish as `Storage.finish` takes it: what `Storage.exchange` carries several of."""

    job_id: str
    token: str
    state: JobState
    output: Any = None
    error: str | None = None
    error_detail: dict[str, Any] | None = None
    items: list[OutputItem] | None = None


#: What `finish` raises as its answer to a report (not a failure of the store): in an exchange,
#: such an exception is that finish's entry and the others go on.
FINISH_ANSWERS = (StaleLease, JobNotFound, SequenceGap)


@dataclass(slots=True)
class WorkerInfo:
    worker_id: str
    #: IN_PROGRESS jobs the worker holds now: drops the moment one ends (finish, release,
    #: cancel, sweep), without waiting for the worker's next request. 0 means idle.
    running: int
    #: Job slots, as the worker last stated them (else a guess from its claims).
    concurrency: int
    seen_at: float


@dataclass(slots=True)
class JobPage:
    """One page of `Storage.list_jobs`, newest first."""

    jobs: list[JobRecord]
    #: Jobs of the endpoint matching the state filter, across all pages (from the per-state
    #: counts, so it may include records past their retention that no sweep removed yet).
    total: int
    #: Whether older matching jobs follow the last one of this page.
    has_more: bool


#: The largest page `list_jobs` serves.
MAX_PAGE = 1000


class Storage(SharedState, ABC):
    """A job store. All methods are coroutines and safe to call concurrently.

    The replica-shared methods (held hosted leases, webhook outbox, leader leases) are
    declared in coordination.py."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.notifier = Notifier()
        #: Epoch seconds; every time rule reads it, so tests can move time (rules.FakeClock).
        self.clock: Callable[[], float] = clock or time.time
        #: Jobs one maintenance step changes at most, and sweep steps per sweep() call.
        self.batch_size = rules.BATCH
        self.sweep_batches = rules.SWEEP_MAX_BATCHES

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:  # an optional hook
        pass

    async def close(self) -> None:  # an optional hook
        pass

    def publish(self, channel: str, count: int = 1) -> None:
        """Wake local waiters on `channel` (on a targeted channel, `count` of them: as many as
        jobs became claimable); shared backends also tell other replicas."""
        self.notifier.publish(channel, count)

    async def wait(self, channel: str, timeout: float) -> bool:
        return await self.notifier.wait(channel, timeout)

    # -- client side -------------------------------------------------------------------------
    @abstractmethod
    async def submit(
        self,
        endpoint: str,
        input: Any,
        *,
        policy: Policy,
        webhook: str | None = None,
        retention_ms: int,
        queue_limit: int | None = None,
    ) -> JobRecord:
        """Store a new IN_QUEUE job. Returns only once the job is durable.

        With `queue_limit`, raise QueueFull instead when the endpoint already holds more than
        that many IN_QUEUE jobs, checked in the same atomic step as the insert, so replicas
        sharing the store agree on backpressure."""

    @abstractmethod
    async def get(self, endpoint: str, job_id: str) -> JobRecord | None:
        """The job, or None when unknown, of another endpoint, or past its retention."""

    async def status(self, endpoint: str, job_id: str) -> dict[str, Any] | None:
        """The job's public status (`JobRecord.to_status()`: what `/status` answers), or None as
        `get` would. A backend may read less of the job for it than `get` does."""
        job = await self.get(endpoint, job_id)
        return None if job is None else job.to_status()

    @abstractmethod
    async def set_retention(self, endpoint: str, job_id: str, ttl_ms: int) -> JobRecord | None:
        """/status?ttl=: keep a finished job `ttl_ms` from now; for a job still running,
        keep it `ttl_ms` after it ends."""

    @abstractmethod
    async def cancel(self, endpoint: str, job_id: str) -> JobRecord | None:
        """IN_QUEUE or IN_PROGRESS → CANCELLED (a running job's worker is signalled on its
        worker channel). A job already terminal is returned unchanged. None if unknown."""

    @abstractmethod
    async def retry(self, endpoint: str, job_id: str) -> JobRecord:
        """FAILED/TIMED_OUT → IN_QUEUE with the same id and input; output, error, progress
        and stream are cleared, `retries` incremented, `attempt` reset.
        Raises JobNotFound, or JobConflict for any other state."""

    @abstractmethod
    async def purge(self, endpoint: str, *, limit: int = rules.BATCH) -> list[JobRecord]:
        """End up to `limit` IN_QUEUE jobs of the endpoint (oldest first) as CANCELLED with
        rules.PURGED_ERROR, starting their retention like any ending; returns them, without
        their input (None). One bounded step: /purge-queue calls it until fewer than
        `limit` come back."""

    @abstractmethod
    async def read_stream(
        self, endpoint: str, job_id: str, cursor: int | None = None, *, max_bytes: int | None = None
    ) -> tuple[JobRecord, list[Any], int]:
        """Stream chunks of a job: (job, chunks, next_cursor).

        cursor None: the chunks not yet read, which are then marked read (consumed).
        cursor N: the chunks from index N on, consuming nothing.
        max_bytes: take chunks in order while the running total of their stored sizes stays
        within it, but always at least one when any is there; only the chunks returned are
        consumed, and next_cursor is where the rest begins. None: every chunk there is.
        A reader knows it has everything once the job is terminal and next_cursor equals the
        record's `stream_len` (both from the same snapshot).
        Raises JobNotFound.
        """

    @abstractmethod
    async def counts(self, endpoint: str) -> dict[str, int]:
        """Job counts for /health: one key per JobState value present, plus 'retried'
        (jobs requeued by /retry or by a lost lease)."""

    @abstractmethod
    async def list_jobs(
        self,
        endpoint: str,
        *,
        limit: int,
        after: tuple[float, str] | None = None,
        states: Collection[JobState] | None = None,
        include_io: bool = False,
    ) -> JobPage:
        """The endpoint's jobs, newest first, for /requests: ordered by (created_at, id)
        descending, at most `limit` (1..MAX_PAGE) of them, starting strictly after the key
        `after` = (created_at, id) of the last job of the previous page.

        Paging by key keeps pages stable while jobs arrive: a new job sorts before every page
        already read, so paging on sees each older job exactly once (a job /retry requeues
        gets a new created_at, so it moves to the front). `states` keeps jobs in those states
        only (None: all). Records past their retention are left out. Without `include_io`,
        `input`, `output` and `progress` are None (they are not read at all).
        A page costs O(limit · log n) however many jobs are stored (an index walk)."""

    # -- worker side ---------------------------------------------------------------------------
    @abstractmethod
    async def claim(
        self,
        endpoint: str,
        worker_id: str,
        max_jobs: int,
        lease_ms: int,
        *,
        concurrency: int | None = None,
        max_bytes: int | None = None,
    ) -> list[JobRecord]:
        """Atomically move up to `max_jobs` IN_QUEUE jobs (oldest first) to IN_PROGRESS,
        each with a fresh fencing token, `attempt` + 1, and a lease of `lease_ms`.
        `max_bytes` bounds the answer: jobs are taken oldest first while the running total of
        their stored input sizes stays within it, but always at least one job (None: no bound),
        so a claim may return fewer than `max_jobs` while more are queued.
        Never blocks waiting for jobs: the service long-polls with `wait(queue_channel)`.
        Records the worker as seen, with `concurrency` (its job slots) when it states them."""

    @abstractmethod
    async def heartbeat(
        self,
        endpoint: str,
        worker_id: str,
        leases: dict[str, str],
        lease_ms: int,
        *,
        concurrency: int | None = None,
        running: int | None = None,
    ) -> list[StopSignal]:
        """Renew the leases {job_id: token} the worker holds and record the worker as seen,
        with `concurrency` when stated and `running` (the worker's own count of busy slots,
        which backends may keep for diagnosis; `workers()` counts held jobs instead).
        Returns a stop for every listed job the worker must abandon: CANCELLED or TIMED_OUT
        when the job ended that way, nothing for a job this same token already finished (the
        worker's own report ended it), LOST when the token is no longer current or the job is
        gone or ended otherwise (e.g. FAILED by the service after its lease expired)."""

    # Payloads (a finish's `output`, an item's `data`) may arrive as protocol.Packed: their msgpack
    # form, made once by the service. protocol.pack() returns such a value as it is, so a backend
    # that encodes with it stores those very bytes (tests/storage/test_conformance.py).
    @abstractmethod
    async def append_output(
        self, endpoint: str, job_id: str, token: str, items: list[OutputItem]
    ) -> int:
        """Apply stream chunks and progress updates in sequence order; returns next_seq.

        Items below next_seq are duplicates of a retried request and are skipped; an item
        above it raises SequenceGap. Raises StaleLease when the token is not current or the
        job is terminal (nothing may change a terminal job), JobNotFound if unknown."""

    @abstractmethod
    async def finish(
        self,
        endpoint: str,
        job_id: str,
        token: str,
        state: JobState,
        *,
        output: Any = None,
        error: str | None = None,
        error_detail: dict[str, Any] | None = None,
        items: list[OutputItem] | None = None,
    ) -> JobRecord:
        """Apply the trailing `items`, then end the job in `state` (COMPLETED, FAILED or
        TIMED_OUT) and start its retention. Idempotent: the same token finishing a job
        that this token already ended returns the job. Raises StaleLease otherwise."""

    async def exchange(
        self,
        endpoint: str,
        finishes: list[Finish],
        worker_id: str,
        max_jobs: int,
        lease_ms: int,
        *,
        concurrency: int | None = None,
        max_bytes: int | None = None,
    ) -> tuple[list[JobRecord | Exception], list[JobRecord]]:
        """`finish` each of `finishes`, then `claim` up to `max_jobs` (nothing when 0): what one
        `/worker/exchange` does. Each finish stands alone: its entry is the job as it ended (a
        backend may leave out its output and input: None, as the service has no use for them),
        or the FINISH_ANSWERS exception `finish` raised for it. Any other error raises, and then
        nothing was claimed (finishes are idempotent: the worker may send them again).

        This default makes the calls in turn; a backend that can apply them all in one
        transaction overrides it (SQLite: one commit, one hand-over)."""
        done = await asyncio.gather(
            *(self.finish(endpoint, f.job_id, f.token, f.state, output=f.output, error=f.error,
                          error_detail=f.error_detail, items=f.items) for f in finishes),
            return_exceptions=True,
        )  # fmt: skip
        results: list[JobRecord | Exception] = []
        for outcome in done:
            if isinstance(outcome, BaseException) and not isinstance(outcome, FINISH_ANSWERS):
                raise outcome
            results.append(outcome)
        if max_jobs < 1:
            return results, []
        return results, await self.claim(endpoint, worker_id, max_jobs, lease_ms, concurrency=concurrency,
                                         max_bytes=max_bytes)  # fmt: skip

    @abstractmethod
    async def release(self, endpoint: str, job_id: str, token: str) -> bool:
        """Hand a running job back to the queue (worker draining) without counting the
        attempt. False if the token is not current."""

    @abstractmethod
    async def workers(self, endpoint: str, seen_within_s: float) -> list[WorkerInfo]:
        """Workers of the endpoint seen (claim or heartbeat) within the window; each one's
        `running` is the number of IN_PROGRESS jobs it holds as of now."""

    # -- housekeeping ----------------------------------------------------------------------
    @abstractmethod
    async def sweep(
        self, max_attempts: int, deadline_grace_ms: int, *, expire_leases: bool = True
    ) -> SweepResult:
        """Enforce time limits across all endpoints, as of now:
        - IN_PROGRESS past started_at + executionTimeout + grace → TIMED_OUT (worker signalled);
        - any active job past created_at + ttl → TIMED_OUT with an error naming the TTL;
        - IN_PROGRESS with an expired lease → IN_QUEUE again, or FAILED with an error saying
          the worker was lost once `attempt` reached `max_attempts` (skipped when
          `expire_leases` is False: the service's first lease period after it starts, since
          no worker could renew a lease while the service was down);
        - records past expires_at → deleted.
        Works in bounded batches (rules.BATCH jobs each) that let other operations run between
        them, at most rules.SWEEP_MAX_BATCHES per call; `more` in the result says work is left."""
