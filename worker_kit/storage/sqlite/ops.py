"""Job state transitions as SQL, run by the SQLite backend's writer thread.

Each function takes the write connection and a list to which it appends the
notification channels to publish after COMMIT. Each runs inside its own SAVEPOINT, so
an exception rolls back exactly that operation. Every token check and the transition it
guards happen in the same transaction, so no two callers can both win a race.

Functions return raw rows; decoding msgpack happens in the caller's coroutine, off the
writer thread.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from ...errors import JobConflict, JobNotFound, QueueFull, SequenceGap, StaleLease
from ...job import RETRYABLE_STATES, JobState
from ...protocol import STOP_CANCELLED, STOP_LOST, STOP_TIMED_OUT
from ..base import StopSignal, job_channel, queue_channel, worker_channel
from .schema import RECORD_COLUMNS

Row = tuple[Any, ...]
#: A packed output item: (seq, kind, msgpack blob).
PackedItem = tuple[int, str, bytes]

ENDED_BY_WORKER = "worker"
ENDED_BY_SERVICE = "service"

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


def _record(conn: sqlite3.Connection, job_id: str) -> Row:
    return conn.execute(f"{_SELECT} WHERE id = ?", (job_id,)).fetchone()  # type: ignore[no-any-return]


def bump_retried(conn: sqlite3.Connection, endpoint: str) -> None:
    conn.execute(
        "INSERT INTO endpoint_stats (endpoint, retried) VALUES (?, 1) "
        "ON CONFLICT (endpoint) DO UPDATE SET retried = retried + 1",
        (endpoint,),
    )


def requeue(conn: sqlite3.Connection, job_id: str, attempt_delta: int) -> None:
    """Back to the queue at its old position; the stream restarts, as the next claim's seq does."""
    conn.execute(
        "UPDATE jobs SET state = 'IN_QUEUE', token = NULL, worker_id = NULL, lease_until = NULL, "
        "started_at = NULL, run_deadline = NULL, progress = NULL, next_seq = 0, stream_len = 0, "
        "read_cursor = 0, attempt = attempt + ? WHERE id = ?",
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
) -> Row:
    return conn.execute(  # type: ignore[no-any-return]
        f"UPDATE jobs SET state = ?, finished_at = ?, expires_at = ? + retention_ms / 1000.0, "
        f"lease_until = NULL, ended_by = ?, error = coalesce(?, error){extra_sql} "
        f"WHERE id = ? RETURNING {RECORD_COLUMNS}",
        (state.value, now, now, ended_by, error, *extra_args, job_id),
    ).fetchone()


# -- client side -------------------------------------------------------------------------------
def submit(
    conn: sqlite3.Connection,
    notes: list[str],
    *,
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
    now = time.time()
    if queue_limit is not None:
        row = conn.execute(
            "SELECT n FROM job_counts WHERE endpoint = ? AND state = 'IN_QUEUE'", (endpoint,)
        ).fetchone()
        depth = row[0] if row else 0
        if depth > queue_limit:
            raise QueueFull(f"the queue of {endpoint!r} holds {depth} jobs, over {queue_limit}", depth)
    conn.execute(
        "INSERT INTO jobs (id, endpoint, state, qpos, execution_timeout_ms, timeout_explicit, ttl_ms, "
        "retention_ms, created_at, ttl_deadline, webhook, input) "
        "VALUES (?, ?, 'IN_QUEUE', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (job_id, endpoint, next_qpos(), execution_timeout_ms, int(timeout_explicit), ttl_ms, retention_ms,
         now, now + ttl_ms / 1000.0, webhook, input_blob),
    )  # fmt: skip
    notes += [queue_channel(endpoint), job_channel(job_id)]
    return now


def set_retention(
    conn: sqlite3.Connection, notes: list[str], endpoint: str, job_id: str, ttl_ms: int
) -> Row | None:
    now = time.time()
    found = _live(conn, endpoint, job_id, now, "state")
    if found is None:
        return None
    if JobState(found[0]).is_terminal:
        conn.execute("UPDATE jobs SET expires_at = ? WHERE id = ?", (now + ttl_ms / 1000.0, job_id))
    else:
        conn.execute("UPDATE jobs SET retention_ms = ? WHERE id = ?", (ttl_ms, job_id))
    notes.append(job_channel(job_id))
    return _record(conn, job_id)


def cancel(conn: sqlite3.Connection, notes: list[str], endpoint: str, job_id: str) -> Row | None:
    now = time.time()
    found = _live(conn, endpoint, job_id, now, "state, worker_id")
    if found is None:
        return None
    state, worker_id = JobState(found[0]), found[1]
    if state.is_terminal:
        return _record(conn, job_id)
    row = end_job(conn, job_id, JobState.CANCELLED, now, ENDED_BY_SERVICE)
    notes.append(job_channel(job_id))
    if state is JobState.IN_PROGRESS and worker_id is not None:
        notes.append(worker_channel(endpoint, worker_id))
    return row


def retry(conn: sqlite3.Connection, notes: list[str], endpoint: str, job_id: str) -> Row:
    now = time.time()
    found = _live(conn, endpoint, job_id, now, "state")
    if found is None:
        raise JobNotFound(f"job {job_id} not found")
    state = JobState(found[0])
    if state not in RETRYABLE_STATES:
        raise JobConflict(
            f"job {job_id} is {state.value}; only FAILED or TIMED_OUT jobs can be retried", state.value
        )
    # A new run: its time to live counts from now, else a job that timed out by TTL would
    # time out again at the next sweep.
    conn.execute(
        "UPDATE jobs SET state = 'IN_QUEUE', qpos = ?, created_at = ?, ttl_deadline = ? + ttl_ms / 1000.0, "
        "started_at = NULL, run_deadline = NULL, finished_at = NULL, expires_at = NULL, attempt = 0, "
        "retries = retries + 1, worker_id = NULL, token = NULL, lease_until = NULL, ended_by = NULL, "
        "next_seq = 0, stream_len = 0, read_cursor = 0, error = NULL, error_detail = NULL, progress = NULL, "
        "output = NULL WHERE id = ?",
        (next_qpos(), now, now, job_id),
    )
    conn.execute("DELETE FROM chunks WHERE job_id = ?", (job_id,))
    bump_retried(conn, endpoint)
    notes += [queue_channel(endpoint), job_channel(job_id)]
    return _record(conn, job_id)


def purge(conn: sqlite3.Connection, notes: list[str], endpoint: str) -> int:
    ids = conn.execute(
        "DELETE FROM jobs WHERE endpoint = ? AND state = 'IN_QUEUE' RETURNING id", (endpoint,)
    ).fetchall()
    notes += [job_channel(job_id) for (job_id,) in ids]
    return len(ids)


def _within(sizes: Iterable[tuple[Any, int]], max_bytes: int | None) -> list[Any]:
    """The keys of the leading (key, size) pairs whose sizes sum to at most max_bytes; at least one."""
    taken: list[Any] = []
    total = 0
    for key, size in sizes:
        total += size or 0
        if taken and max_bytes is not None and total > max_bytes:
            break
        taken.append(key)
    return taken


def chunks_from(conn: sqlite3.Connection, job_id: str, start: int, max_bytes: int | None) -> list[bytes]:
    """The job's chunks from index `start` on, bounded by max_bytes (at least one)."""
    if max_bytes is None:
        rows = conn.execute(
            "SELECT data FROM chunks WHERE job_id = ? AND idx >= ? ORDER BY idx", (job_id, start)
        ).fetchall()
        return [blob for (blob,) in rows]
    # Sizes first (length() reads no blob content), then only the chunks that fit: the
    # answer is built without ever holding more than the bound plus one chunk.
    sizes = conn.execute(
        "SELECT idx, length(data) FROM chunks WHERE job_id = ? AND idx >= ? ORDER BY idx", (job_id, start)
    )
    try:
        taken = _within(sizes, max_bytes)
    finally:
        sizes.close()
    if not taken:
        return []
    rows = conn.execute(
        "SELECT data FROM chunks WHERE job_id = ? AND idx >= ? AND idx <= ? ORDER BY idx",
        (job_id, start, taken[-1]),
    ).fetchall()
    return [blob for (blob,) in rows]


def consume_stream(
    conn: sqlite3.Connection, notes: list[str], endpoint: str, job_id: str, max_bytes: int | None = None
) -> tuple[Row, list[bytes], int]:
    now = time.time()
    found = _live(conn, endpoint, job_id, now, "read_cursor")
    if found is None:
        raise JobNotFound(f"job {job_id} not found")
    (cursor,) = found
    chunks = chunks_from(conn, job_id, cursor, max_bytes)
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
    conn: sqlite3.Connection, notes: list[str], endpoint: str, worker_id: str, max_jobs: int, lease_ms: int,
    concurrency: int | None, max_bytes: int | None = None,
) -> list[Row]:  # fmt: skip
    now = time.time()
    before = _running(conn, endpoint, worker_id)
    # A job past its time to live is left for the sweep to time out, never handed out.
    # length() reads the input's size from the row header, not the input itself.
    queued = conn.execute(
        "SELECT id, length(input) FROM jobs WHERE endpoint = ? AND state = 'IN_QUEUE' AND ttl_deadline > ? "
        "ORDER BY qpos LIMIT ?",
        (endpoint, now, max_jobs),
    ).fetchall()
    rows = []
    for job_id in _within(queued, max_bytes):
        rows.append(
            conn.execute(
                "UPDATE jobs SET state = 'IN_PROGRESS', token = ?, attempt = attempt + 1, worker_id = ?, "
                "started_at = ?, run_deadline = ? + execution_timeout_ms / 1000.0, lease_until = ?, "
                f"next_seq = 0 WHERE id = ? RETURNING {RECORD_COLUMNS}",
                (secrets.token_hex(16), worker_id, now, now, now + lease_ms / 1000.0, job_id),
            ).fetchone()
        )
        notes.append(job_channel(job_id))
    # Without a stated concurrency, busy slots plus the free slots asked for is the best guess.
    _upsert_worker(conn, endpoint, worker_id, before + len(rows), concurrency, before + max_jobs, now)
    return rows


def heartbeat(
    conn: sqlite3.Connection, notes: list[str], endpoint: str, worker_id: str, leases: dict[str, str],
    lease_ms: int, concurrency: int | None, running: int | None = None,
) -> list[StopSignal]:  # fmt: skip
    now = time.time()
    stops: list[StopSignal] = []
    for job_id, token in leases.items():
        found = _live(conn, endpoint, job_id, now, "state, token, ended_by")
        if found is None or found[1] != token:
            stops.append(StopSignal(job_id, STOP_LOST))
            continue
        state, _, ended_by = JobState(found[0]), found[1], found[2]
        if state is JobState.IN_PROGRESS:
            conn.execute("UPDATE jobs SET lease_until = ? WHERE id = ?", (now + lease_ms / 1000.0, job_id))
        elif state is JobState.CANCELLED:
            stops.append(StopSignal(job_id, STOP_CANCELLED))
        elif state is JobState.TIMED_OUT and ended_by == ENDED_BY_SERVICE:
            stops.append(StopSignal(job_id, STOP_TIMED_OUT))
        elif ended_by == ENDED_BY_WORKER:
            pass  # this very token finished it: nothing to stop, and nothing was lost
        else:
            stops.append(StopSignal(job_id, STOP_LOST))
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
    if state.is_terminal:
        raise StaleLease(f"job {job_id} is already {state.value}; nothing may change it", state.value)
    if found[1] != token:
        raise StaleLease(
            f"the lease token for job {job_id} is not current (the job was requeued or claimed again)",
            state.value,
        )
    return state, found[2], found[3]


def _apply_items(
    conn: sqlite3.Connection, job_id: str, next_seq: int, stream_len: int, items: list[PackedItem]
) -> tuple[int, bool]:
    """Apply items in seq order; returns (next_seq, whether anything changed)."""
    expected, fresh = next_seq, []
    for seq, kind, blob in sorted(items, key=lambda item: item[0]):
        if seq < expected:
            continue  # a duplicate from a retried request
        if seq > expected:
            raise SequenceGap(
                f"output item seq {seq} skips ahead; expected seq {next_seq}, resend from there", next_seq
            )
        fresh.append((kind, blob))
        expected += 1
    if not fresh:
        return next_seq, False
    chunks = [blob for kind, blob in fresh if kind == "chunk"]
    progress = [blob for kind, blob in fresh if kind == "progress"]
    if chunks:
        conn.executemany(
            "INSERT INTO chunks (job_id, idx, data) VALUES (?, ?, ?)",
            [(job_id, stream_len + i, blob) for i, blob in enumerate(chunks)],
        )
    conn.execute(
        "UPDATE jobs SET next_seq = ?, stream_len = ?, progress = coalesce(?, progress) WHERE id = ?",
        (expected, stream_len + len(chunks), progress[-1] if progress else None, job_id),
    )
    return expected, True


def append_output(
    conn: sqlite3.Connection,
    notes: list[str],
    endpoint: str,
    job_id: str,
    token: str,
    items: list[PackedItem],
) -> int:
    _, next_seq, stream_len = _current(conn, endpoint, job_id, token, time.time())
    next_seq, changed = _apply_items(conn, job_id, next_seq, stream_len, items)
    if changed:
        notes.append(job_channel(job_id))
    return next_seq


def finish(
    conn: sqlite3.Connection, notes: list[str], endpoint: str, job_id: str, token: str, state: JobState, *,
    output: bytes | None, error: str | None, error_detail: bytes | None, items: list[PackedItem],
) -> Row:  # fmt: skip
    now = time.time()
    found = _live(conn, endpoint, job_id, now, "state, token, ended_by")
    if found is not None and JobState(found[0]).is_terminal and found[1] == token:
        if found[2] == ENDED_BY_WORKER:
            return _record(conn, job_id)  # a repeated finish by the token that ended it
    _, next_seq, stream_len = _current(conn, endpoint, job_id, token, now)
    _apply_items(conn, job_id, next_seq, stream_len, items)
    row = end_job(
        conn, job_id, state, now, ENDED_BY_WORKER, error=error,
        extra_sql=", output = ?, error_detail = ?", extra_args=(output, error_detail),
    )  # fmt: skip
    notes.append(job_channel(job_id))
    return row


def release(conn: sqlite3.Connection, notes: list[str], endpoint: str, job_id: str, token: str) -> bool:
    found = _live(conn, endpoint, job_id, time.time(), "state, token")
    if found is None or found[0] != JobState.IN_PROGRESS.value or found[1] != token:
        return False
    requeue(conn, job_id, attempt_delta=-1)  # a drain hand-back does not use up an attempt
    notes += [queue_channel(endpoint), job_channel(job_id)]
    return True
