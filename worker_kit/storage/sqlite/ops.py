"""Job state transitions as SQL, run by the SQLite backend's writer thread.

Each function takes the write connection and a list to which it appends the
notification channels to publish after COMMIT. Each runs inside its own SAVEPOINT, so
an exception rolls back exactly that operation. Every token check and the transition it
guards happen in the same transaction, so no two callers can both win a race.

The decisions (what a transition may do, which stop a heartbeat answers, how output
sequences are checked, which channels wake) are the backend-neutral rules of
`storage/rules.py`; this module only applies them in SQL. `now` comes from the backend's
clock. Functions return raw rows; decoding msgpack happens in the caller's coroutine, off
the writer thread.
"""

from __future__ import annotations

import operator
import secrets
import sqlite3
import time
from typing import Any

from ...errors import JobNotFound
from ...job import JobState
from .. import rules
from ..base import StopSignal
from ..rules import ENDED_BY_SERVICE, ENDED_BY_WORKER
from . import stream
from .connections import LOOP_BYTES, LoopConnection, loop_bound
from .schema import RECORD_COLUMNS

Row = tuple[Any, ...]
#: A packed output item: (seq, kind, msgpack blob).
PackedItem = tuple[int, str, bytes]

_SELECT = f"SELECT {RECORD_COLUMNS} FROM jobs"

_last_qpos = 0


def next_qpos() -> int:
    """A queue position: increasing within this process and roughly by time across restarts."""
    global _last_qpos
    _last_qpos = max(_last_qpos + 1, time.time_ns())
    return _last_qpos


def _live(conn: sqlite3.Connection, endpoint: str, job_id: str, now: float, columns: str) -> Row | None:
    """The job's columns, or None when unknown, of another endpoint, or past its retention."""
    row = conn.execute(f"SELECT endpoint, expires_at, {columns} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None or row[0] != endpoint or (row[1] is not None and row[1] <= now):
        return None
    return tuple(row[2:])


def read_record(conn: sqlite3.Connection, endpoint: str, job_id: str, now: float) -> Row | None:
    return _live(conn, endpoint, job_id, now, RECORD_COLUMNS)


#: `read_small_record` reads a record whose payloads hold at most this many bytes together.
SMALL_PAYLOADS = 64 * 1024
#: What `read_small_record` returns for a record with larger payloads.
TOO_LARGE: Any = object()
_PAYLOADS = ("error_detail", "progress", "output", "input")
_FITS = " + ".join(f"coalesce(length({c}), 0)" for c in _PAYLOADS) + f" <= {SMALL_PAYLOADS}"
# length() of a blob reads its size from the row header, so a large payload is never loaded:
# each payload column is read only when they all fit.
_SMALL_SELECT = (
    f"SELECT endpoint, expires_at, {_FITS}, "
    + RECORD_COLUMNS.rsplit(", error_detail", 1)[0]
    + "".join(f", CASE WHEN {_FITS} THEN {c} END" for c in _PAYLOADS)
    + " FROM jobs WHERE id = ?"
)
assert RECORD_COLUMNS.endswith(", ".join(_PAYLOADS))


def read_small_record(conn: sqlite3.Connection, endpoint: str, job_id: str, now: float) -> Row | None:
    """`read_record`, or TOO_LARGE when the payloads hold more than SMALL_PAYLOADS bytes (so a
    caller on the event loop never copies megabytes there)."""
    row = conn.execute(_SMALL_SELECT, (job_id,)).fetchone()
    if row is None or row[0] != endpoint or (row[1] is not None and row[1] <= now):
        return None
    return tuple(row[3:]) if row[2] else TOO_LARGE


def _record(conn: sqlite3.Connection, job_id: str) -> Row:
    return conn.execute(f"{_SELECT} WHERE id = ?", (job_id,)).fetchone()  # type: ignore[no-any-return]


def bump_retried(conn: sqlite3.Connection, endpoint: str) -> None:
    conn.execute(
        "INSERT INTO endpoint_stats (endpoint, retried) VALUES (?, 1) "
        "ON CONFLICT (endpoint) DO UPDATE SET retried = retried + 1",
        (endpoint,),
    )


def _cleared(fields: tuple[str, ...]) -> str:
    return ", ".join([*(f"{f} = NULL" for f in fields), *(f"{f} = 0" for f in rules.STREAM_RESETS)])


_REQUEUE_SET = _cleared(rules.REQUEUE_CLEARS)
_RETRY_SET = _cleared(rules.RETRY_CLEARS)


def requeue(conn: sqlite3.Connection, job_id: str, attempt_delta: int) -> None:
    """Back to the queue at its old position (rules.REQUEUE_CLEARS)."""
    conn.execute(
        f"UPDATE jobs SET state = 'IN_QUEUE', {_REQUEUE_SET}, attempt = attempt + ? WHERE id = ?",
        (attempt_delta, job_id),
    )
    conn.execute("DELETE FROM chunks WHERE job_id = ?", (job_id,))


def end_job(
    conn: sqlite3.Connection,
    job_id: str,
    state: JobState,
    now: float,
    ended_by: str,
    *,
    error: str | None = None,
    extra_sql: str = "",
    extra_args: tuple[Any, ...] = (),
    where_sql: str = "",
    where_args: tuple[Any, ...] = (),
) -> Row:
    """The job's row once ended (None when `where_sql`, more conditions, left it as it was)."""
    return conn.execute(  # type: ignore[no-any-return]
        f"UPDATE jobs SET state = ?, finished_at = ?, expires_at = ? + retention_ms / 1000.0, "
        f"lease_until = NULL, ended_by = ?, error = coalesce(?, error){extra_sql} "
        f"WHERE id = ?{where_sql} RETURNING {RECORD_COLUMNS}",
        (state.value, now, now, ended_by, error, *extra_args, job_id, *where_args),
    ).fetchone()


# -- client side -------------------------------------------------------------------------------
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
        row = conn.execute(
            "SELECT n FROM job_counts WHERE endpoint = ? AND state = 'IN_QUEUE'", (endpoint,)
        ).fetchone()
        rules.check_queue(endpoint, row[0] if row else 0, queue_limit)
    conn.execute(
        "INSERT INTO jobs (id, endpoint, state, qpos, execution_timeout_ms, timeout_explicit, ttl_ms, "
        "retention_ms, created_at, ttl_deadline, webhook, input) "
        "VALUES (?, ?, 'IN_QUEUE', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (job_id, endpoint, next_qpos(), execution_timeout_ms, int(timeout_explicit), ttl_ms, retention_ms,
         now, now + ttl_ms / 1000.0, webhook, input_blob),
    )  # fmt: skip
    notes += rules.claimable(endpoint, job_id)
    return now


def set_retention(
    conn: sqlite3.Connection, notes: list[str], *, now: float, endpoint: str, job_id: str, ttl_ms: int
) -> Row | None:
    found = _live(conn, endpoint, job_id, now, "state")
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
    found = _live(conn, endpoint, job_id, now, "state, worker_id")
    if found is None:
        return None
    state, worker_id = JobState(found[0]), found[1]
    if state.is_terminal:
        return _record(conn, job_id)
    row = end_job(conn, job_id, JobState.CANCELLED, now, ENDED_BY_SERVICE)
    notes += rules.stopped(endpoint, job_id, worker_id, state is JobState.IN_PROGRESS)
    return row


def retry(conn: sqlite3.Connection, notes: list[str], *, now: float, endpoint: str, job_id: str) -> Row:
    found = _live(conn, endpoint, job_id, now, "state")
    if found is None:
        raise JobNotFound(f"job {job_id} not found")
    rules.check_retry(job_id, JobState(found[0]))
    conn.execute(
        f"UPDATE jobs SET state = 'IN_QUEUE', qpos = ?, created_at = ?, ttl_deadline = ? + ttl_ms / 1000.0, "
        f"{_RETRY_SET}, attempt = 0, retries = retries + 1 WHERE id = ?",
        (next_qpos(), now, now, job_id),
    )
    conn.execute("DELETE FROM chunks WHERE job_id = ?", (job_id,))
    bump_retried(conn, endpoint)
    notes += rules.claimable(endpoint, job_id)
    return _record(conn, job_id)


def purge(conn: sqlite3.Connection, notes: list[str], *, now: float, endpoint: str, limit: int) -> list[Row]:
    """End up to `limit` queued jobs (oldest first) CANCELLED with rules.PURGED_ERROR.

    Rows come back without their input (None in its place): a purge only reports endings."""
    ids = conn.execute(
        "SELECT id FROM jobs WHERE endpoint = ? AND state = 'IN_QUEUE' ORDER BY qpos LIMIT ?",
        (endpoint, limit),
    ).fetchall()
    rows = []
    for (job_id,) in ids:
        row = end_job(conn, job_id, JobState.CANCELLED, now, ENDED_BY_SERVICE, error=rules.PURGED_ERROR)
        rows.append((*row[:-1], None))
        notes += rules.changed(job_id)
    return rows


def consume_stream(
    conn: sqlite3.Connection, notes: list[str], *, now: float, endpoint: str, job_id: str,
    max_bytes: int | None = None,
) -> tuple[Row, list[bytes], int]:  # fmt: skip
    found = _live(conn, endpoint, job_id, now, "read_cursor")
    if found is None:
        raise JobNotFound(f"job {job_id} not found")
    (cursor,) = found
    chunks = stream.chunks_from(conn, job_id, cursor, max_bytes, decode=False)
    if chunks:  # only what is handed out counts as read
        conn.execute("UPDATE jobs SET read_cursor = ? WHERE id = ?", (cursor + len(chunks), job_id))
    return _record(conn, job_id), chunks, cursor + len(chunks)


# -- worker side -------------------------------------------------------------------------------
def _upsert_worker(
    conn: sqlite3.Connection, endpoint: str, worker_id: str, running: int, concurrency: int | None,
    fallback_concurrency: int, now: float,
) -> None:  # fmt: skip
    conn.execute(
        "INSERT INTO workers (endpoint, worker_id, running, concurrency, seen_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (endpoint, worker_id) DO UPDATE SET running = excluded.running, "
        "concurrency = coalesce(?, workers.concurrency), seen_at = excluded.seen_at",
        (endpoint, worker_id, running, concurrency if concurrency is not None else fallback_concurrency,
         now, concurrency),
    )  # fmt: skip


def _running(conn: sqlite3.Connection, endpoint: str, worker_id: str) -> int:
    return conn.execute(  # type: ignore[no-any-return]
        "SELECT count(*) FROM jobs WHERE endpoint = ? AND worker_id = ? AND state = 'IN_PROGRESS'",
        (endpoint, worker_id),
    ).fetchone()[0]


def claim(
    conn: sqlite3.Connection, notes: list[str], *, now: float, endpoint: str, worker_id: str, max_jobs: int,
    lease_ms: int, concurrency: int | None, max_bytes: int | None = None,
) -> list[Row]:  # fmt: skip
    before = _running(conn, endpoint, worker_id)
    # A job past its time to live is left for the sweep to time out, never handed out.
    # length() reads the input's size from the row header, not the input itself.
    queued = conn.execute(
        "SELECT id, length(input) FROM jobs WHERE endpoint = ? AND state = 'IN_QUEUE' AND ttl_deadline > ? "
        "ORDER BY qpos LIMIT ?",
        (endpoint, now, max_jobs),
    ).fetchall()
    loop_bound(conn, sum(size for _, size in queued))  # before any write
    rows = []
    for job_id in rules.within(queued, max_bytes):
        rows.append(
            conn.execute(
                "UPDATE jobs SET state = 'IN_PROGRESS', token = ?, attempt = attempt + 1, worker_id = ?, "
                "started_at = ?, run_deadline = ? + execution_timeout_ms / 1000.0, lease_until = ?, "
                f"next_seq = 0 WHERE id = ? RETURNING {RECORD_COLUMNS}",
                (secrets.token_hex(16), worker_id, now, now, now + lease_ms / 1000.0, job_id),
            ).fetchone()
        )
        notes += rules.changed(job_id)
    # Without a stated concurrency, busy slots plus the free slots asked for is the best guess.
    _upsert_worker(conn, endpoint, worker_id, before + len(rows), concurrency, before + max_jobs, now)
    return rows


def heartbeat(
    conn: sqlite3.Connection, notes: list[str], *, now: float, endpoint: str, worker_id: str,
    leases: dict[str, str], lease_ms: int, concurrency: int | None, running: int | None = None,
) -> list[StopSignal]:  # fmt: skip
    stops: list[StopSignal] = []
    for job_id, token in leases.items():
        found = _live(conn, endpoint, job_id, now, "state, token, ended_by")
        state, current, ended_by = (None, None, None) if found is None else (JobState(found[0]), *found[1:])
        if rules.renews(state, current, token):
            conn.execute("UPDATE jobs SET lease_until = ? WHERE id = ?", (now + lease_ms / 1000.0, job_id))
        elif stop := rules.heartbeat_stop(state, current, ended_by, token):
            stops.append(StopSignal(job_id, stop))
    reported = len(leases) if running is None else running
    _upsert_worker(conn, endpoint, worker_id, reported, concurrency, max(reported, len(leases)), now)
    return stops


def _current(
    conn: sqlite3.Connection, endpoint: str, job_id: str, token: str, now: float
) -> tuple[JobState, int, int]:
    """(state, next_seq, stream_len) of a job this token may still report on."""
    found = _live(conn, endpoint, job_id, now, "state, token, next_seq, stream_len")
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
    items: list[PackedItem],
) -> Row:  # fmt: skip
    if not items:
        # The common case, a running job ended by the token it runs under: one statement, whose
        # conditions are the checks below when they pass. Any other case (a repeat, a stale
        # token, a job gone, an input too large for the event loop) changes nothing here and
        # takes those checks, which answer it.
        row = end_job(
            conn, job_id, state, now, ENDED_BY_WORKER, error=error,
            extra_sql=", output = ?, error_detail = ?", extra_args=(output, error_detail),
            where_sql=_RUNNING_UNDER, where_args=(endpoint, token, now, _loop_bytes(conn)),
        )  # fmt: skip
        if row is not None:
            notes += rules.changed(job_id)
            return row
    # One read of the row for both checks (a repeat of this token's own finish; a live lease).
    found = _live(conn, endpoint, job_id, now, "state, token, ended_by, next_seq, stream_len, length(input)")
    if found is None:
        raise JobNotFound(f"job {job_id} not found")
    current, held_token, ended_by, next_seq, stream_len, input_size = found
    loop_bound(conn, input_size)  # the answer carries the input back
    if rules.is_repeat_finish(JobState(current), held_token, ended_by, token):
        return _record(conn, job_id)
    rules.check_report(job_id, JobState(current), held_token, token)
    _apply_items(conn, job_id, next_seq, stream_len, items)
    row = end_job(
        conn, job_id, state, now, ENDED_BY_WORKER, error=error,
        extra_sql=", output = ?, error_detail = ?", extra_args=(output, error_detail),
    )  # fmt: skip
    notes += rules.changed(job_id)
    return row


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
    found = _live(conn, endpoint, job_id, now, "state, token")
    if found is None or found[0] != JobState.IN_PROGRESS.value or found[1] != token:
        return False
    requeue(conn, job_id, attempt_delta=-1)  # a drain hand-back does not use up an attempt
    notes += rules.claimable(endpoint, job_id)
    return True
