"""The SQLite backend's sweep: time limits, lost leases and retention, one bounded batch at a time.

Runs on the writer thread like every transition in ops.py. One call changes at most `limit`
jobs (each scan uses a partial index, so the batch costs O(limit log n)) and says whether
work is left; the backend runs batches as separate write operations, so requests queued
meanwhile are served between them. What happens to each overdue job is `storage/rules.py`'s.
"""

from __future__ import annotations

import sqlite3

from ...job import JobState
from .. import rules
from ..rules import ENDED_BY_SERVICE
from .ops import Row, bump_retried, end_job, requeue


def sweep(
    conn: sqlite3.Connection, notes: list[str], *, now: float, max_attempts: int, deadline_grace_ms: int,
    expire_leases: bool = True, limit: int = rules.BATCH,
) -> tuple[list[Row], list[str], int, bool]:  # fmt: skip
    """Returns (rows of jobs ended, ids requeued, records deleted, whether work is left).

    Longer than our usual 60 lines on purpose: the four steps (execution timeouts, TTLs, lost
    leases, retention) share one budget and one list of notes, and read as the rules' order."""
    grace = deadline_grace_ms / 1000.0
    ended: list[Row] = []
    requeued: list[str] = []
    budget = limit

    def end(job_id: str, endpoint: str, worker_id: str | None, was: str, outcome: rules.Overdue) -> None:
        assert outcome.state is not None
        ended.append(end_job(conn, job_id, outcome.state, now, ENDED_BY_SERVICE, error=outcome.error))
        notes.extend(rules.stopped(endpoint, job_id, worker_id, was == JobState.IN_PROGRESS.value))

    overdue = conn.execute(
        "SELECT id, endpoint, worker_id, execution_timeout_ms FROM jobs "
        "WHERE state = 'IN_PROGRESS' AND run_deadline < ? LIMIT ?",
        (now - grace, budget),
    ).fetchall()
    for job_id, endpoint, worker_id, exec_ms in overdue:
        end(job_id, endpoint, worker_id, JobState.IN_PROGRESS.value, rules.execution_timeout(exec_ms))
    budget -= len(overdue)

    # The second condition is rules.ttl_due in SQL (a running job gets the grace), so a batch never
    # fills up with jobs it must pass over; the first keeps the partial index usable.
    past_ttl = conn.execute(
        "SELECT id, endpoint, worker_id, state, ttl_ms, ttl_deadline FROM jobs "
        "WHERE state IN ('IN_QUEUE', 'IN_PROGRESS') AND ttl_deadline < ? "
        "AND (state = 'IN_QUEUE' OR ttl_deadline < ?) ORDER BY ttl_deadline LIMIT ?",
        (now, now - grace, budget),
    ).fetchall() if budget > 0 else []  # fmt: skip
    for job_id, endpoint, worker_id, state, ttl_ms, ttl_deadline in past_ttl:
        if rules.ttl_due(JobState(state), ttl_deadline, now, grace):
            end(job_id, endpoint, worker_id, state, rules.ttl_expired(JobState(state), ttl_ms))
    budget -= len(past_ttl)

    lost = conn.execute(
        "SELECT id, endpoint, worker_id, attempt FROM jobs WHERE state = 'IN_PROGRESS' AND lease_until < ? "
        "LIMIT ?",
        (now, budget),
    ).fetchall() if expire_leases and budget > 0 else []  # fmt: skip
    for job_id, endpoint, worker_id, attempt in lost:
        outcome = rules.lease_expired(attempt, max_attempts, worker_id)
        if not outcome.requeue:
            end(job_id, endpoint, worker_id, JobState.IN_PROGRESS.value, outcome)
            continue
        requeue(conn, job_id, attempt_delta=0)
        bump_retried(conn, endpoint)
        requeued.append(job_id)
        notes.extend(rules.stopped(endpoint, job_id, worker_id, True))
        notes.extend(rules.claimable(endpoint, job_id))
    budget -= len(lost)

    deleted = conn.execute(
        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE expires_at <= ? LIMIT ?) RETURNING id",
        (now, max(budget, 0)),
    ).fetchall()
    for (job_id,) in deleted:
        notes.extend(rules.changed(job_id))
    budget -= len(deleted)
    conn.execute("DELETE FROM workers WHERE seen_at < ?", (now - rules.WORKER_FORGET_S,))
    return ended, requeued, len(deleted), budget <= 0
