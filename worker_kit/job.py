"""The job record shared by the service, its storage backends and the client.

A job is plain data: behaviour lives on the storage backends (state transitions) and
on the client and worker (transport). Times are epoch seconds as floats; durations on
the wire are milliseconds, as in the hosted service's API.
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass, field
from typing import Any


class JobState(enum.StrEnum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    def __str__(self) -> str:
        return self.value


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED})
ACTIVE_STATES = frozenset({JobState.IN_QUEUE, JobState.IN_PROGRESS})
#: States a worker may report when it finishes a job (CANCELLED is only ever set by the service).
WORKER_FINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.TIMED_OUT})
#: States from which /retry may requeue a job.
RETRYABLE_STATES = frozenset({JobState.FAILED, JobState.TIMED_OUT})

DEFAULT_EXECUTION_TIMEOUT_MS = 600_000
DEFAULT_TTL_MS = 24 * 3600 * 1000
RUN_RETENTION_MS = 30 * 60 * 1000
RUNSYNC_RETENTION_MS = 60 * 1000
#: A streamed chunk's payload is at most this many bytes (the hosted service's documented cap).
MAX_CHUNK_BYTES = 1024 * 1024


def new_job_id() -> str:
    """32 hex digits: the time in milliseconds (12 digits), then 80 random bits from the OS's
    CSPRNG (20 digits), as a UUIDv7 orders its bits.

    Ids that grow with time go to the end of SQLite's index on the id, onto a page a recent
    submit has just written (and that is still in SQLite's cache), where random ids went to a
    random page of it: on a file of 200 000 jobs a submit costs a fifth less CPU, and a commit
    of several submits writes one page of that index instead of one each (docs/storage.md).
    80 random bits keep an id as unguessable as a key."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def now() -> float:
    return time.time()


#: The largest sequence number of a job's output item (storage keeps signed 64-bit integers).
MAX_SEQ = 2**62


@dataclass(frozen=True, slots=True)
class Policy:
    execution_timeout_ms: int = DEFAULT_EXECUTION_TIMEOUT_MS
    ttl_ms: int = DEFAULT_TTL_MS
    #: True when the client chose `execution_timeout_ms`; False when it is the endpoint's
    #: default, which a handler's own timeout may then undercut (docs/worker.md). Left out (a
    #: Policy a user builds), it is True when the timeout differs from the default.
    execution_timeout_explicit: bool = None  # type: ignore[assignment]  # resolved in __post_init__

    def __post_init__(self) -> None:
        if self.execution_timeout_explicit is None:
            chosen = self.execution_timeout_ms != DEFAULT_EXECUTION_TIMEOUT_MS
            object.__setattr__(self, "execution_timeout_explicit", chosen)

    def to_wire(self) -> dict[str, int]:
        """The policy on the wire, from a client to the service and from the service to a
        worker: executionTimeout only when it was chosen, so a handler's own timeout can apply
        otherwise (the endpoint's default must not outrank it)."""
        wire = {"ttl": self.ttl_ms}
        if self.execution_timeout_explicit:
            wire = {"executionTimeout": self.execution_timeout_ms, **wire}
        return wire


@dataclass(slots=True)
class JobRecord:
    """One job as storage holds it. `to_status()` renders the public status JSON."""

    id: str
    endpoint: str
    input: Any
    state: JobState = JobState.IN_QUEUE
    policy: Policy = field(default_factory=Policy)
    webhook: str | None = None
    #: How long the result is kept once the job ends (30 min for /run, 60 s for /runsync).
    retention_ms: int = RUN_RETENTION_MS
    created_at: float = field(default_factory=now)
    started_at: float | None = None
    finished_at: float | None = None
    #: When the record is deleted; set when the job ends, or by /status?ttl=.
    expires_at: float | None = None
    output: Any = None
    error: str | None = None
    error_detail: dict[str, Any] | None = None
    #: The latest progress update, shown as `output` while the job runs.
    progress: Any = None
    #: Claims so far in the current run (a lost lease counts; a drain hand-back does not).
    attempt: int = 0
    #: Times /retry requeued the job.
    retries: int = 0
    worker_id: str | None = None
    #: The fencing token of the current lease; reports carrying another token are refused.
    token: str | None = None
    lease_until: float | None = None
    #: Sequence number the next output item from the worker must carry.
    next_seq: int = 0
    #: Number of stream chunks stored, and how many /stream has handed out (consumed).
    stream_len: int = 0
    read_cursor: int = 0

    @property
    def delay_ms(self) -> int:
        return _delay_ms(self.created_at, self.started_at, self.finished_at)

    @property
    def execution_ms(self) -> int:
        return _execution_ms(self.started_at, self.finished_at)

    def to_status(self) -> dict[str, Any]:
        return status_answer(
            self.id, self.state.value, self.created_at, self.started_at, self.finished_at, self.retries,
            self.worker_id, self.error, self.error_detail, self.progress, self.output,
        )  # fmt: skip


_TERMINAL_VALUES = frozenset(state.value for state in TERMINAL_STATES)


def _delay_ms(created_at: float, started_at: float | None, finished_at: float | None) -> int:
    """How long the job waited: until it started (or ended unstarted), or until now."""
    end = started_at or finished_at or now()
    return max(0, int((end - created_at) * 1000))


def _execution_ms(started_at: float | None, finished_at: float | None) -> int:
    """How long the job has run: 0 before it started, until it ended or until now."""
    if started_at is None:
        return 0
    end = finished_at or now()
    return max(0, int((end - started_at) * 1000))


def status_answer(
    job_id: str, state: str, created_at: float, started_at: float | None, finished_at: float | None,
    retries: int, worker_id: str | None, error: str | None, error_detail: Any, progress: Any, output: Any,
) -> dict[str, Any]:  # fmt: skip
    """A job's public status (`JobRecord.to_status()`), from its parts: what a store that reads
    only these (the SQLite backend's `/status`) answers without building a record. `state` is
    the state's value; the output shown is the progress while the job runs, the output once it
    ended."""
    status: dict[str, Any] = {
        "id": job_id,
        "status": state,
        "delayTime": _delay_ms(created_at, started_at, finished_at),
        "executionTime": _execution_ms(started_at, finished_at),
    }
    if state == "IN_PROGRESS":
        if progress is not None:
            status["output"] = progress
    elif output is not None and state in _TERMINAL_VALUES:
        status["output"] = output
    if error is not None:
        status["error"] = error
    if error_detail is not None:
        status["errorDetail"] = error_detail
    if retries:
        status["retries"] = retries
    if worker_id is not None:
        status["workerId"] = worker_id
    return status
