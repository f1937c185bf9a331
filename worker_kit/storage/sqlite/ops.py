"""Job state transitions as SQL, run by the SQLite backend's writer thread.

Each function takes the write connection and a list to which it appends the
notification channels to publish after COMMIT. Each runs inside its own SAVEPOINT, so
an exception rolls back exactly that operation. Every token check and the transition it
guards happen in the same transaction, so no two callers can both win a race.

The decisions (what a transition may do, which stop a heartbeat answers, how output
sequences are checked, which channels wake) are the backend-neutral rules of
`storage/rules.py`; this module only applies them in SQL. `now` comes from the backend's
clock. Functions return raw rows; decoding msgpack happens in the caller's coroutine, off
the writer thread. Each change of a job's state, and each requeue, is stated with
`counting.moved` once written: the in-memory counts take it when the transaction commits.
A worker's claims and heartbeats are in claims.py.
"""

from __future__ import annotations

import functools
import operator
import sqlite3
import time
from typing import Any

from ...errors import JobNotFound
from ...job import JobState
from .. import rules
from ..rules import ENDED_BY_SERVICE, ENDED_BY_WORKER
from . import stream
from .connections import LOOP_BYTES, LoopConnection, loop_bound
from .counting import RETRIED, moved
from .schema import RECORD_COLUMNS

Row = tuple[Any, ...]
#: A packed output item: (seq, kind, msgpack blob).
PackedItem = tuple[int, str, bytes]

QUEUED, RUNNING = JobState.IN_QUEUE.value, JobState.IN_PROGRESS.value

_last_qpos = 0


def next_qpos() -> int:
    """A queue position: increasing within this process and roughly by time across restarts."""
    global _last_qpos
    _last_qpos = max(_last_qpos + 1, time.time_ns())
    return _last_qpos


def live(conn: sqlite3.Connection, endpoint: str, job_id: str, now: float, columns: str) -> Row | None:
    """The job's columns, or None when unknown, of another endpoint, or past its retention."""
    row = conn.execute(f"SELECT endpoint, expires_at, {columns} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None or row[0] != endpoint or (row[1] is not None and row[1] <= now):
        return None
    return tuple(row[2:])


def read_record(conn: sqlite3.Connection, endpoint: str, job_id: str, now: float) -> Row | None:
    return live(conn, endpoint, job_id, now, RECORD_COLUMNS)


def _record(conn: sqlite3.Connection, job_id: str, columns: str = RECORD_COLUMNS) -> Row:
    return conn.execute(f"SELECT {columns} FROM jobs WHERE id = ?", (job_id,)).fetchone()  # type: ignore[no-any-return]


#: RECORD_COLUMNS with NULL for the job's output and input: what ending a job hands back when its
#: caller has no use for them (an exchange's finishes), so an input of megabytes stays where it is.
WITHOUT_PAYLOADS = RECORD_COLUMNS.replace(", output, input", ", NULL, NULL")
assert WITHOUT_PAYLOADS.endswith("NULL, NULL")


def bump_retried(conn: sqlite3.Connection, endpoint: str) -> None:
    conn.execute(
        "INSERT INTO endpoint_stats (endpoint, retried) VALUES (?, 1) "
        "ON CONFLICT (endpoint) DO UPDATE SET retried = retried + 1",
        (endpoint,),
    )
    moved(conn, endpoint, None, RETRIED)


def _cleared(fields: tuple[str, ...]) -> str:
    return ", ".join([*(f"{f} = NULL" for f in fields), *(f"{f} = 0" for f in rules.STREAM_RESETS)])


_REQUEUE_SET = _cleared(rules.REQUEUE_CLEARS)
_RETRY_SET = _cleared(rules.RETRY_CLEARS)


def requeue(conn: sqlite3.Connection, endpoint: str, job_id: str, attempt_delta: int) -> None:
    """A running job back to the queue at its old position (rules.REQUEUE_CLEARS)."""
    conn.execute(
        f"UPDATE jobs SET state = 'IN_QUEUE', {_REQUEUE_SET}, attempt = attempt + ? WHERE id = ?",
        (attempt_delta, job_id),
    )
    moved(conn, endpoint, RUNNING, QUEUED)
    conn.execute("DELETE FROM chunks WHERE job_id = ?", (job_id,))


def end_job(
    conn: sqlite3.Connection,
    job_id: str,
    state: JobState,
    now: float,
    ended_by: str,
    *,
    was: str,
    error: str | None = None,
    extra_sql: str = "",
    extra_args: tuple[Any, ...] = (),
    where_sql: str = "",
    where_args: tuple[Any, ...] = (),
    returning: str = RECORD_COLUMNS,
) -> Row:
    """The job's row (`returning`) once ended from state `was` (None when `where_sql`, more
    conditions, left it as it was)."""
    row = conn.execute(
        f"UPDATE jobs SET state = ?, finished_at = ?, expires_at = ? + retention_ms / 1000.0, "
        f"lease_until = NULL, ended_by = ?, error = coalesce(?, error){extra_sql} "
        f"WHERE id = ?{where_sql} RETURNING {returning}",
        (state.value, now, now, ended_by, error, *extra_args, job_id, *where_args),
    ).fetchone()
    if row is not None:
        moved(conn, row[1], was, state.value)
    return row  # type: ignore[no-any-return]


# -- client side -------------------------------------------------------------------------------
_INSERT_JOB = (
    "INSERT INTO jobs (id, endpoint, state, qpos, execution_timeout_ms, timeout_explicit, ttl_ms, "
    "retention_ms, created_at, ttl_deadline, webhook, input) "
    "VALUES (?, ?, 'IN_QUEUE', ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_JOB_NULL_WEBHOOK = _INSERT_JOB.replace("?, ?)", "NULL, ?)")


def submit(
    conn: sqlite3.Connection,
    notes: list[str],
    *,
    now: float,
    job_id: str,
    endpoint: str,
    input_blob: bytes,
    execution_timeout_ms: int,
    timeout_explicit: bool,
    ttl_ms: int,
    webhook: str | None,
    retention_ms: int,
    queue_limit: int | None = None,
) -> float:
    if queue_limit is not None:
        rules.check_queue(endpoint, conn.counts.queued(conn, endpoint), queue_limit)  # type: ignore[attr-defined]
    # Parameters of the types sqlite3 binds straight (str, int, float, bytearray): a None or a
    # bytes goes through its adapter lookup, two failed attribute lookups each (~3 k instructions).
    # Without a webhook, the statement says NULL itself; the input is the same blob as a bytearray.
    statement, hook = (_INSERT_JOB_NULL_WEBHOOK, ()) if webhook is None else (_INSERT_JOB, (webhook,))
    conn.execute(
        statement,
        (job_id, endpoint, next_qpos(), execution_timeout_ms, int(timeout_explicit), ttl_ms, retention_ms,
         now, now + ttl_ms / 1000.0, *hook, bytearray(input_blob)),
    )  # fmt: skip
    moved(conn, endpoint, None, QUEUED)
    notes += rules.submitted(endpoint)
    return now


def set_retention(
    conn: sqlite3.Connection, notes: list[str], *, now: float, endpoint: str, job_id: str, ttl_ms: int
) -> Row | None:
    found = live(conn, endpoint, job_id, now, "state")
    if found is None:
        return None
    expires_at = rules.set_retention_expiry(JobState(found[0]), now, ttl_ms)
    if expires_at is not None:
        conn.execute("UPDATE jobs SET expires_at = ? WHERE id = ?", (expires_at, job_id))
    else:
        conn.execute("UPDATE jobs SET retention_ms = ? WHERE id = ?", (ttl_ms, job_id))
    notes += rules.changed(job_id)
    return _record(conn, job_id)


def cancel(
    conn: sqlite3.Connection, notes: list[str], *, now: float, endpoint: str, job_id: str
) -> Row | None:
    found = live(conn, endpoint, job_id, now, "state, worker_id")
    if found is None:
        return None
    state, worker_id = JobState(found[0]), found[1]
    if state.is_terminal:
        return _record(conn, job_id)
    row = end_job(conn, job_id, JobState.CANCELLED, now, ENDED_BY_SERVICE, was=state.value)
    notes += rules.stopped(endpoint, job_id, worker_id, state is JobState.IN_PROGRESS)
    return row


def retry(conn: sqlite3.Connection, notes: list[str], *, now: float, endpoint: str, job_id: str) -> Row:
    found = live(conn, endpoint, job_id, now, "state")
    if found is None:
        raise JobNotFound(f"job {job_id} not found")
    rules.check_retry(job_id, JobState(found[0]))
    conn.execute(
        f"UPDATE jobs SET state = 'IN_QUEUE', qpos = ?, created_at = ?, ttl_deadline = ? + ttl_ms / 1000.0, "
        f"{_RETRY_SET}, attempt = 0, retries = retries + 1 WHERE id = ?",
        (next_qpos(), now, now, job_id),
    )
    moved(conn, endpoint, found[0], QUEUED)
    conn.execute("DELETE FROM chunks WHERE job_id = ?", (job_id,))
    bump_retried(conn, endpoint)
    notes += rules.claimable(endpoint, job_id)
    return _record(conn, job_id)


def purge(conn: sqlite3.Connection, notes: list[str], *, now: float, endpoint: str, limit: int) -> list[Row]:
    """End up to `limit` queued jobs (oldest first) CANCELLED with rules.PURGED_ERROR.

    Rows come back without their input (None in its place): a purge only reports endings."""
    ids = conn.execute(
        "SELECT id FROM jobs WHERE endpoint = ? AND state = 'IN_QUEUE' ORDER BY created_at, qpos LIMIT ?",
        (endpoint, limit),
    ).fetchall()
    rows = []
    for (job_id,) in ids:
        row = end_job(conn, job_id, JobState.CANCELLED, now, ENDED_BY_SERVICE, was=QUEUED,
                      error=rules.PURGED_ERROR)  # fmt: skip
        rows.append((*row[:-1], None))
        notes += rules.changed(job_id)
    return rows


def consume_stream(
    conn: sqlite3.Connection, notes: list[str], *, now: float, endpoint: str, job_id: str,
    max_bytes: int | None = None,
) -> tuple[Row, list[bytes], int]:  # fmt: skip
    found = live(conn, endpoint, job_id, now, "read_cursor")
    if found is None:
        raise JobNotFound(f"job {job_id} not found")
    (cursor,) = found
    chunks = stream.chunks_from(conn, job_id, cursor, max_bytes, decode=False)
    if chunks:  # only what is handed out counts as read
        conn.execute("UPDATE jobs SET read_cursor = ? WHERE id = ?", (cursor + len(chunks), job_id))
    return _record(conn, job_id), chunks, cursor + len(chunks)


# -- worker side -------------------------------------------------------------------------------
def _current(
    conn: sqlite3.Connection, endpoint: str, job_id: str, token: str, now: float
) -> tuple[JobState, int, int]:
    """(state, next_seq, stream_len) of a job this token may still report on."""
    found = live(conn, endpoint, job_id, now, "state, token, next_seq, stream_len")
    if found is None:
        raise JobNotFound(f"job {job_id} not found")
    state = JobState(found[0])
    rules.check_report(job_id, state, found[1], token)
    return state, found[2], found[3]


#: A packed item's seq (one C call per item: a token stream applies thousands per request).
_SEQ_OF = operator.itemgetter(0)


def _apply_items(
    conn: sqlite3.Connection, job_id: str, next_seq: int, stream_len: int, items: list[PackedItem]
) -> tuple[int, bool]:
    """Apply items in seq order; returns (next_seq, whether anything changed)."""
    fresh = rules.fresh_items(next_seq, items, _SEQ_OF)
    if not fresh:
        return next_seq, False
    chunks = [blob for _, kind, blob in fresh if kind == "chunk"]
    progress = [blob for _, kind, blob in fresh if kind == "progress"]
    if chunks:
        stream.insert_run(conn, job_id, stream_len, chunks)
    expected = next_seq + len(fresh)
    conn.execute(
        "UPDATE jobs SET next_seq = ?, stream_len = ?, progress = coalesce(?, progress) WHERE id = ?",
        (expected, stream_len + len(chunks), progress[-1] if progress else None, job_id),
    )
    return expected, True


def append_output(
    conn: sqlite3.Connection, notes: list[str], *, now: float, endpoint: str, job_id: str, token: str,
    items: list[PackedItem],
) -> int:  # fmt: skip
    _, next_seq, stream_len = _current(conn, endpoint, job_id, token, now)
    next_seq, changed = _apply_items(conn, job_id, next_seq, stream_len, items)
    if changed:
        notes += rules.changed(job_id)
    return next_seq


def finish(
    conn: sqlite3.Connection, notes: list[str], *, now: float, endpoint: str, job_id: str, token: str,
    state: JobState, output: bytes | None, error: str | None, error_detail: bytes | None,
    items: list[PackedItem], payloads: bool = True,
) -> Row:  # fmt: skip
    """End the job; its row, without its output and input when `payloads` is False."""
    columns = RECORD_COLUMNS if payloads else WITHOUT_PAYLOADS
    if not items:
        # The common case, a running job ended by the token it runs under: one statement, whose
        # conditions are the checks below when they pass. Any other case (a repeat, a stale
        # token, a job gone, an input too large for the event loop) changes nothing here and
        # takes those checks, which answer it.
        carried = _loop_bytes(conn) if payloads else 2**62
        row = end_job(
            conn, job_id, state, now, ENDED_BY_WORKER, was=RUNNING, error=error,
            extra_sql=", output = ?, error_detail = ?", extra_args=(output, error_detail),
            where_sql=_RUNNING_UNDER, where_args=(endpoint, token, now, carried), returning=columns,
        )  # fmt: skip
        if row is not None:
            notes += rules.changed(job_id)
            return row
    # One read of the row for both checks (a repeat of this token's own finish; a live lease).
    found = live(conn, endpoint, job_id, now, "state, token, ended_by, next_seq, stream_len, length(input)")
    if found is None:
        raise JobNotFound(f"job {job_id} not found")
    current, held_token, ended_by, next_seq, stream_len, input_size = found
    if payloads:
        loop_bound(conn, input_size)  # the answer carries the input back
    if rules.is_repeat_finish(JobState(current), held_token, ended_by, token):
        return _record(conn, job_id, columns)
    rules.check_report(job_id, JobState(current), held_token, token)
    _apply_items(conn, job_id, next_seq, stream_len, items)
    row = end_job(
        conn, job_id, state, now, ENDED_BY_WORKER, was=current, error=error,
        extra_sql=", output = ?, error_detail = ?", extra_args=(output, error_detail), returning=columns,
    )  # fmt: skip
    notes += rules.changed(job_id)
    return row


def finish_running(
    conn: sqlite3.Connection, notes: list[str], *, now: float, endpoint: str, finishes: list[dict[str, Any]]
) -> dict[str, Row]:
    """End, in one statement, each of `finishes` (`finish`'s keyword arguments, without items)
    whose job runs under its token: the rows of those it ended (WITHOUT_PAYLOADS), by job id. The
    others are left as they are, for `finish` to answer."""
    params: list[Any] = [now, now, ENDED_BY_WORKER]
    for order in finishes:
        params += (order["job_id"], order["state"].value, order["error"], order["output"],
                   order["error_detail"], order["token"])  # fmt: skip
    rows = conn.execute(_finish_running_sql(len(finishes)), (*params, endpoint, now)).fetchall()
    for row in rows:
        moved(conn, endpoint, RUNNING, row[2])
        notes += rules.changed(row[0])
    return {row[0]: row for row in rows}


#: finish_running's statement: end_job's changes, joined with the finishes given as VALUES
#: (id, state, error, output, error_detail, token).
_FINISH_RUNNING = (
    "UPDATE jobs SET state = v.column2, finished_at = ?, expires_at = ? + retention_ms / 1000.0, "
    "lease_until = NULL, ended_by = ?, error = coalesce(v.column3, jobs.error), output = v.column4, "
    "error_detail = v.column5 FROM (VALUES {}) AS v WHERE jobs.id = v.column1 AND jobs.endpoint = ? "
    "AND jobs.state = 'IN_PROGRESS' AND jobs.token = v.column6 "
    f"AND (jobs.expires_at IS NULL OR jobs.expires_at > ?) RETURNING {WITHOUT_PAYLOADS}"
)


@functools.cache  # one text per count of finishes (at most an exchange's 100): made once
def _finish_running_sql(count: int) -> str:
    return _FINISH_RUNNING.format(", ".join(["(?, ?, ?, ?, ?, ?)"] * count))


#: A job `finish` may end in one statement: of this endpoint, within its retention, running under
#: this token, and with an input the connection may carry (loop_bound).
_RUNNING_UNDER = (
    " AND endpoint = ? AND state = 'IN_PROGRESS' AND token = ? AND (expires_at IS NULL OR expires_at > ?)"
    " AND coalesce(length(input), 0) <= ?"
)


def _loop_bytes(conn: sqlite3.Connection) -> int:
    return LOOP_BYTES if isinstance(conn, LoopConnection) else 2**62


def release(
    conn: sqlite3.Connection, notes: list[str], *, now: float, endpoint: str, job_id: str, token: str
) -> bool:
    found = live(conn, endpoint, job_id, now, "state, token")
    if found is None or found[0] != JobState.IN_PROGRESS.value or found[1] != token:
        return False
    requeue(conn, endpoint, job_id, attempt_delta=-1)  # a drain hand-back does not use up an attempt
    notes += rules.claimable(endpoint, job_id)
    return True
