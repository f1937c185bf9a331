"""The job rules, written once for every storage backend.

A backend applies these atomically (SQLite inside one write transaction, Redis inside one
Lua script or a conditional script) but never decides them itself: which transitions are
allowed, which stop a heartbeat answers, how output sequence numbers are checked, when a
finish is a harmless repeat, what /retry and a requeue reset, what the sweep does to each
kind of overdue job and with which error, and which channels each operation wakes.

Time comes from a `Clock` the backend is given (`time.time` by default), so tests move
time forward instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import JobConflict, QueueFull, SequenceGap, StaleLease
from ..job import RETRYABLE_STATES, JobState
from ..protocol import STOP_CANCELLED, STOP_LOST, STOP_TIMED_OUT
from .channels import job_channel, queue_channel, worker_channel

#: Epoch seconds, as time.time() gives them. Backends take one so tests can move time.
Clock = Callable[[], float]
SYSTEM_CLOCK: Clock = time.time

#: Who ended a job: a worker's own report, or the service (cancel, sweep, purge).
ENDED_BY_WORKER = "worker"
ENDED_BY_SERVICE = "service"

#: The error a job ended by /purge-queue carries.
PURGED_ERROR = "purged from the queue by /purge-queue before a worker took it"

#: How many jobs one maintenance step (a sweep batch, a purge batch) changes at most: each
#: step holds SQLite's writer (or runs one Redis script) for a few milliseconds, then yields.
#: (Storage.batch_size and Storage.sweep_batches start from these.)
BATCH = 100
#: Batches one sweep() call runs at most; SweepResult.more says when work is left.
SWEEP_MAX_BATCHES = 20
#: Worker records not seen for this long are forgotten by the sweep.
WORKER_FORGET_S = 3600.0

T = TypeVar("T")


class FakeClock:
    """A clock for tests: moves on only by `tick` per reading (so events keep their order, as
    with a real clock) until moved with `advance()`."""

    def __init__(self, start: float | None = None, tick: float = 1e-6) -> None:
        self.now = time.time() if start is None else start
        self.tick = tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- worker reports ---------------------------------------------------------------------------------
def check_report(job_id: str, state: JobState, current_token: str | None, token: str) -> None:
    """A worker may report on a job (output, finish) only while it runs under this token."""
    if state.is_terminal:
        raise StaleLease(f"job {job_id} is already {state.value}; nothing may change it", state.value)
    if current_token != token:
        raise StaleLease(
            f"the lease token for job {job_id} is not current (the job was requeued or claimed again)",
            state.value,
        )


def is_repeat_finish(state: JobState, current_token: str | None, ended_by: str | None, token: str) -> bool:
    """A finish by the token that already ended the job (a retried request) answers the job as it is."""
    return state.is_terminal and current_token == token and ended_by == ENDED_BY_WORKER


def renews(state: JobState | None, current_token: str | None, token: str) -> bool:
    """Whether a heartbeat renews the lease on one held job: it runs under this very token."""
    return state is JobState.IN_PROGRESS and current_token == token


def heartbeat_stop(
    state: JobState | None, current_token: str | None, ended_by: str | None, token: str
) -> str | None:
    """The stop a heartbeat answers for one held job, or None (renewed, or nothing to stop).

    `state` None: the job is unknown or past its retention."""
    if state is None or current_token != token:
        return STOP_LOST
    if state is JobState.IN_PROGRESS:
        return None
    if state is JobState.CANCELLED:
        return STOP_CANCELLED
    if state is JobState.TIMED_OUT and ended_by == ENDED_BY_SERVICE:
        return STOP_TIMED_OUT
    if ended_by == ENDED_BY_WORKER:
        return None  # this very token finished it: nothing to stop, and nothing was lost
    return STOP_LOST


def fresh_items(next_seq: int, items: Iterable[T], seq_of: Callable[[T], int]) -> list[T]:
    """The items to apply, in order, given the job's `next_seq`.

    Items below next_seq repeat a retried request and are skipped; one above the next expected
    number means a lost request, and raises SequenceGap (the worker resends from next_seq)."""
    items = list(items)
    seqs = list(map(seq_of, items))
    if seqs and seqs == list(range(seqs[0], seqs[0] + len(seqs))) and seqs[0] <= next_seq:
        # Consecutive, as a worker sends them (thousands per request in a token stream): a slice.
        return items[next_seq - seqs[0] :]
    expected, fresh = next_seq, []
    for item in sorted(items, key=seq_of):
        seq = seq_of(item)
        if seq < expected:
            continue
        if seq > expected:
            raise SequenceGap(
                f"output item seq {seq} skips ahead; expected seq {next_seq}, resend from there", next_seq
            )
        fresh.append(item)
        expected += 1
    return fresh


def within(sizes: Iterable[tuple[T, int]], max_bytes: int | None) -> list[T]:
    """The keys of the leading (key, size) pairs whose sizes sum to at most max_bytes; at least one
    (so one oversized job or chunk still goes out, alone)."""
    taken: list[T] = []
    total = 0
    for key, size in sizes:
        total += size or 0
        if taken and max_bytes is not None and total > max_bytes:
            break
        taken.append(key)
    return taken


# -- client operations ------------------------------------------------------------------------------
def check_queue(endpoint: str, depth: int, queue_limit: int | None) -> None:
    """submit(queue_limit=N): refused while more than N jobs are queued (atomic backpressure)."""
    if queue_limit is not None and depth > queue_limit:
        raise QueueFull(f"the queue of {endpoint!r} holds {depth} jobs, over {queue_limit}", depth)


def check_retry(job_id: str, state: JobState) -> None:
    if state not in RETRYABLE_STATES:
        raise JobConflict(
            f"job {job_id} is {state.value}; only FAILED or TIMED_OUT jobs can be retried", state.value
        )


#: Fields a requeue (lost lease, drain hand-back) clears: the job keeps its queue position,
#: input, policy and attempt count; its stream restarts, as the next claim's seq does.
REQUEUE_CLEARS = ("token", "worker_id", "lease_until", "started_at", "run_deadline", "progress")
#: Fields /retry clears besides those: a new run, with its time to live counted from now (else a
#: job that timed out by TTL would time out again at the next sweep) and no trace of the last result.
RETRY_CLEARS = (*REQUEUE_CLEARS, "finished_at", "expires_at", "ended_by", "error", "error_detail", "output")
#: Counters both reset to zero (retry also resets `attempt`; a requeue keeps it).
STREAM_RESETS = ("next_seq", "stream_len", "read_cursor")


def set_retention_expiry(state: JobState, now: float, ttl_ms: int) -> float | None:
    """/status?ttl=: a finished job now expires ttl_ms from now (returned); a running one keeps
    ttl_ms as its retention, applied when it ends (None returned)."""
    return now + ttl_ms / 1000.0 if state.is_terminal else None


# -- the sweep -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Overdue:
    """What the sweep does to one job: end it (state, error) or requeue it (state None)."""

    state: JobState | None
    error: str | None = None

    @property
    def requeue(self) -> bool:
        return self.state is None


def execution_timeout(execution_timeout_ms: int) -> Overdue:
    """A running job past started_at + executionTimeout + the grace (which lets its worker
    report its own timeout first)."""
    return Overdue(
        JobState.TIMED_OUT,
        f"execution timeout of {execution_timeout_ms} ms exceeded; the service timed the job out",
    )


def ttl_due(state: JobState, ttl_deadline: float, now: float, grace_s: float) -> bool:
    """Whether an active job is past its time to live: a queued job at once (no one to wait for),
    a running one after the grace."""
    if state is JobState.IN_PROGRESS:
        return ttl_deadline < now - grace_s
    return state is JobState.IN_QUEUE and ttl_deadline < now


def ttl_expired(state: JobState, ttl_ms: int) -> Overdue:
    where = "while queued" if state is JobState.IN_QUEUE else "while running"
    error = f"time to live (ttl) of {ttl_ms} ms expired {where}; the service timed the job out"
    return Overdue(JobState.TIMED_OUT, error)


def lease_expired(attempt: int, max_attempts: int, worker_id: str | None) -> Overdue:
    """A running job whose worker stopped renewing its lease: requeued while attempts are left."""
    if attempt < max_attempts:
        return Overdue(None)
    return Overdue(
        JobState.FAILED,
        f"worker lost: the worker {worker_id} stopped renewing its lease on attempt {attempt} of "
        f"{max_attempts}; the job is not retried again",
    )


# -- notifications ----------------------------------------------------------------------------------
def submitted(endpoint: str) -> list[str]:
    """submit: a claim can take the new job. Its own channel has no one to wake: nobody knows
    its id before the submit answers, and whoever waits on it afterwards reads it first."""
    return [queue_channel(endpoint)]


def claimable(endpoint: str, job_id: str) -> list[str]:
    """retry, release and a requeue: the job changed and a claim can take it."""
    return [queue_channel(endpoint), job_channel(job_id)]


def changed(job_id: str) -> list[str]:
    """claim, output, finish, /status?ttl=, a purge, a deletion past retention."""
    return [job_channel(job_id)]


def stopped(endpoint: str, job_id: str, worker_id: str | None, was_running: bool) -> list[str]:
    """cancel or a sweep ended a job: its watchers, and the worker that runs it, must know."""
    if was_running and worker_id is not None:
        return [job_channel(job_id), worker_channel(endpoint, worker_id)]
    return [job_channel(job_id)]


def batches(items: Sequence[T], size: int = BATCH) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def as_state(value: Any) -> JobState | None:
    """A stored state value (str or bytes) as a JobState; None for a missing job."""
    if value is None:
        return None
    return JobState(value.decode() if isinstance(value, bytes) else value)
