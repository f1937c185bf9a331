"""The worker side's claims and heartbeats as SQL, run like every transition in ops.py.

A claim at concurrency 1 (one job asked for, the common case) is one UPDATE of the oldest
queued job, chosen in a subquery, RETURNING its record; a larger one reads the queue first,
to bound the jobs it takes by their input sizes (rules.within). A claim that states the
worker's concurrency does not count the jobs the worker already holds: that count only ever
served as a guess of the concurrency, and workers() counts held jobs itself.
"""

from __future__ import annotations

import functools
import sqlite3
from typing import Any

from ...job import JobState
from .. import rules
from ..base import FINISH_ANSWERS, StopSignal
from . import ops
from .connections import loop_bound
from .counting import moved
from .ops import QUEUED, RUNNING, Row, live
from .schema import RECORD_COLUMNS

#: How stale a worker's `seen_at` may grow before a claim that changes nothing else rewrites it
#: (a worker at concurrency 1 claims once per job). workers() looks back MAX_POLL + 5 s.
SEEN_EVERY_S = 1.0


def _upsert_worker(
    conn: sqlite3.Connection, endpoint: str, worker_id: str, running: int | None, concurrency: int | None,
    fallback_concurrency: int, now: float,
) -> None:  # fmt: skip
    """Record that the worker was seen. `running`: its own count, kept for diagnosis only
    (workers() counts the jobs it holds); None leaves the last one (a claim stating its
    concurrency does not count them first). A claim that would change nothing but a `seen_at`
    less than SEEN_EVERY_S old leaves the row as it is: a write costs a page of the WAL."""
    conn.execute(
        "INSERT INTO workers (endpoint, worker_id, running, concurrency, seen_at) "
        "VALUES (?1, ?2, coalesce(?3, 0), ?4, ?5) "
        "ON CONFLICT (endpoint, worker_id) DO UPDATE SET running = coalesce(?3, workers.running), "
        "concurrency = coalesce(?6, workers.concurrency), seen_at = excluded.seen_at "
        "WHERE ?3 IS NOT NULL OR ?6 IS NOT workers.concurrency OR workers.seen_at < ?5 - ?7",
        (endpoint, worker_id, running, concurrency if concurrency is not None else fallback_concurrency,
         now, concurrency, SEEN_EVERY_S),
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
    if concurrency is not None:
        if max_jobs == 1:
            rows = _claim_one(conn, notes, endpoint, worker_id, now, lease_ms)
        else:
            rows = _claim(conn, notes, endpoint, worker_id, now, max_jobs, lease_ms, max_bytes)
        _upsert_worker(conn, endpoint, worker_id, None, concurrency, concurrency, now)
        return rows
    # Without a stated concurrency, busy slots plus the free slots asked for is the best guess.
    before = _running(conn, endpoint, worker_id)
    rows = _claim(conn, notes, endpoint, worker_id, now, max_jobs, lease_ms, max_bytes)
    _upsert_worker(conn, endpoint, worker_id, before + len(rows), None, before + max_jobs, now)
    return rows


_CLAIM_SET = (
    "state = 'IN_PROGRESS', attempt = attempt + 1, worker_id = ?, started_at = ?, "
    "run_deadline = ? + execution_timeout_ms / 1000.0, lease_until = ?, next_seq = 0"
)
#: A job past its time to live is left for the sweep to time out, never handed out.
_NEXT_QUEUED = (
    "SELECT id{} FROM jobs WHERE endpoint = ? AND state = 'IN_QUEUE' AND ttl_deadline > ? "
    "ORDER BY created_at, qpos LIMIT ?"
)
#: The oldest queued job, claimed in one statement (a worker at concurrency 1, the common case).
_CLAIM_ONE = (
    f"UPDATE jobs SET {_CLAIM_SET}, token = lower(hex(randomblob(16))) "
    f"WHERE id = ({_NEXT_QUEUED.format('')}) RETURNING {RECORD_COLUMNS}, length(input)"
)


def _claim_one(
    conn: sqlite3.Connection, notes: list[str], endpoint: str, worker_id: str, now: float, lease_ms: int
) -> list[Row]:
    lease_until = now + lease_ms / 1000.0
    row = conn.execute(_CLAIM_ONE, (worker_id, now, now, lease_until, endpoint, now, 1)).fetchone()
    if row is None:
        return []
    # The input's size is known only once claimed: a large one rolls the whole batch back here,
    # to run again on the writer thread (connections.loop_bound).
    loop_bound(conn, row[-1])
    moved(conn, endpoint, QUEUED, RUNNING)
    notes += rules.changed(row[0])
    return [row[:-1]]


def _claim(
    conn: sqlite3.Connection, notes: list[str], endpoint: str, worker_id: str, now: float, max_jobs: int,
    lease_ms: int, max_bytes: int | None,
) -> list[Row]:  # fmt: skip
    # length() reads the input's size from the row header, not the input itself.
    queued = conn.execute(_NEXT_QUEUED_SIZES, (endpoint, now, max_jobs)).fetchall()
    loop_bound(conn, sum(size for _, size in queued))  # before any write
    taken = rules.within(queued, max_bytes)
    if not taken:
        return []
    # One statement for them all (each row its own random token), not one per job.
    lease_until = now + lease_ms / 1000.0
    rows = conn.execute(_claim_ids_sql(len(taken)), (worker_id, now, now, lease_until, *taken)).fetchall()
    order = {job_id: n for n, job_id in enumerate(taken)}
    rows.sort(key=lambda row: order[row[0]])  # RETURNING keeps no order: the queue's, oldest first
    for job_id in taken:
        moved(conn, endpoint, QUEUED, RUNNING)
        notes += rules.changed(job_id)
    return rows  # type: ignore[no-any-return]


_CLAIM_IDS = (
    f"UPDATE jobs SET {_CLAIM_SET}, token = lower(hex(randomblob(16))) WHERE id IN ({{}}) "
    f"RETURNING {RECORD_COLUMNS}"
)
_NEXT_QUEUED_SIZES = _NEXT_QUEUED.format(", length(input)")


@functools.cache  # one text per count of jobs (at most MAX_CLAIM): made once, not per claim
def _claim_ids_sql(count: int) -> str:
    return _CLAIM_IDS.format(", ".join("?" * count))


def heartbeat(
    conn: sqlite3.Connection, notes: list[str], *, now: float, endpoint: str, worker_id: str,
    leases: dict[str, str], lease_ms: int, concurrency: int | None, running: int | None = None,
) -> list[StopSignal]:  # fmt: skip
    stops: list[StopSignal] = []
    for job_id, token in leases.items():
        found = live(conn, endpoint, job_id, now, "state, token, ended_by")
        state, current, ended_by = (None, None, None) if found is None else (JobState(found[0]), *found[1:])
        if rules.renews(state, current, token):
            conn.execute("UPDATE jobs SET lease_until = ? WHERE id = ?", (now + lease_ms / 1000.0, job_id))
        elif stop := rules.heartbeat_stop(state, current, ended_by, token):
            stops.append(StopSignal(job_id, stop))
    reported = len(leases) if running is None else running
    _upsert_worker(conn, endpoint, worker_id, reported, concurrency, max(reported, len(leases)), now)
    return stops


def exchange(
    conn: sqlite3.Connection, notes: list[str], *, now: float, endpoint: str, finishes: list[dict[str, Any]],
    worker_id: str, max_jobs: int, lease_ms: int, concurrency: int | None, max_bytes: int | None,
) -> tuple[list[Any], list[Row]]:  # fmt: skip
    """ops.finish of each of `finishes` (its keyword arguments; the rows come back without
    output and input), then a claim: one operation, so one transaction. A finish refused with an
    answer (FINISH_ANSWERS, raised before it wrote anything) is that entry's value; any other
    error fails the whole operation, claim included."""
    results: list[Any] = []
    # The finishes of running jobs without trailing items (nearly all) end in one statement;
    # whatever that leaves (a repeat, a stale token, items to apply) takes ops.finish's checks.
    plain = [kwargs for kwargs in finishes if not kwargs["items"]]
    ended: dict[str, Any] = {}
    if len(plain) > 1 and len({kwargs["job_id"] for kwargs in plain}) == len(plain):
        ended = ops.finish_running(conn, notes, now=now, endpoint=endpoint, finishes=plain)
    for kwargs in finishes:
        row = ended.get(kwargs["job_id"]) if not kwargs["items"] else None
        if row is not None:
            results.append(row)
            continue
        changes = conn.total_changes
        try:
            results.append(ops.finish(conn, notes, now=now, endpoint=endpoint, payloads=False, **kwargs))
        except FINISH_ANSWERS as exc:
            if conn.total_changes != changes:
                raise  # it wrote before it refused: only undoing the whole operation is safe
            results.append(exc)
    if max_jobs < 1:
        return results, []
    rows = claim(conn, notes, now=now, endpoint=endpoint, worker_id=worker_id, max_jobs=max_jobs,
                 lease_ms=lease_ms, concurrency=concurrency, max_bytes=max_bytes)  # fmt: skip
    return results, rows
