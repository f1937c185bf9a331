"""The SQLite backend's sweep: time limits, lost leases and retention, in one operation.

Runs on the writer thread like every transition in ops.py.
"""

from __future__ import annotations

import sqlite3
import time

from ...job import JobState
from ..base import job_channel, queue_channel, worker_channel
from .ops import ENDED_BY_SERVICE, Row, bump_retried, end_job, requeue

#: How many expired records one sweep deletes; the rest go in the next sweep (get()
#: already hides them), so one sweep never holds the writer for long.
SWEEP_DELETE_LIMIT = 5000
#: Worker rows not seen for this long are forgotten.
WORKER_FORGET_S = 3600.0


def sweep(
    conn: sqlite3.Connection, notes: list[str], max_attempts: int, deadline_grace_ms: int,
    expire_leases: bool = True,
) -> tuple[list[Row], list[str], int]:  # fmt: skip
    """Returns (rows of jobs ended, ids requeued, records deleted)."""
    now = time.time()
    grace = deadline_grace_ms / 1000.0
    ended: list[Row] = []
    requeued: list[str] = []

    def stopped(job_id: str, endpoint: str, worker_id: str | None) -> None:
        notes.append(job_channel(job_id))
        if worker_id is not None:
            notes.append(worker_channel(endpoint, worker_id))

    for job_id, endpoint, worker_id, exec_ms in conn.execute(
        "SELECT id, endpoint, worker_id, execution_timeout_ms FROM jobs "
        "WHERE state = 'IN_PROGRESS' AND run_deadline < ?",
        (now - grace,),
    ).fetchall():
        error = f"execution timeout of {exec_ms} ms exceeded; the service timed the job out"
        ended.append(end_job(conn, job_id, JobState.TIMED_OUT, now, ENDED_BY_SERVICE, error=error))
        stopped(job_id, endpoint, worker_id)

    # The grace lets a running job's worker report its own timeout first; a queued job has no one to wait for.
    for job_id, endpoint, worker_id, state, ttl_ms, ttl_deadline in conn.execute(
        "SELECT id, endpoint, worker_id, state, ttl_ms, ttl_deadline FROM jobs "
        "WHERE state IN ('IN_QUEUE', 'IN_PROGRESS') AND ttl_deadline < ?",
        (now,),
    ).fetchall():
        if state == JobState.IN_PROGRESS.value and ttl_deadline >= now - grace:
            continue
        where = "while queued" if state == JobState.IN_QUEUE.value else "while running"
        error = f"time to live (ttl) of {ttl_ms} ms expired {where}; the service timed the job out"
        ended.append(end_job(conn, job_id, JobState.TIMED_OUT, now, ENDED_BY_SERVICE, error=error))
        stopped(job_id, endpoint, worker_id)

    lost = conn.execute(
        "SELECT id, endpoint, worker_id, attempt FROM jobs WHERE state = 'IN_PROGRESS' AND lease_until < ?",
        (now,),
    ).fetchall() if expire_leases else []  # fmt: skip
    for job_id, endpoint, worker_id, attempt in lost:
        if attempt >= max_attempts:
            error = (
                f"worker lost: the worker {worker_id} stopped renewing its lease on attempt {attempt} of "
                f"{max_attempts}; the job is not retried again"
            )
            ended.append(end_job(conn, job_id, JobState.FAILED, now, ENDED_BY_SERVICE, error=error))
        else:
            requeue(conn, job_id, attempt_delta=0)
            bump_retried(conn, endpoint)
            requeued.append(job_id)
            notes.append(queue_channel(endpoint))
        stopped(job_id, endpoint, worker_id)

    deleted = conn.execute(
        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE expires_at <= ? LIMIT ?) RETURNING id",
        (now, SWEEP_DELETE_LIMIT),
    ).fetchall()
    notes += [job_channel(job_id) for (job_id,) in deleted]
    conn.execute("DELETE FROM workers WHERE seen_at < ?", (now - WORKER_FORGET_S,))
    return ended, requeued, len(deleted)
