"""The SQLite backend's sweep: time limits, lost leases and retention, one bounded batch at a time.

Runs on the writer thread like every transition in ops.py. One call changes at most `limit`
jobs and says whether work is left; the backend runs batches as separate write operations,
so requests queued meanwhile are served between them. What happens to each overdue job is
`storage/rules.py`'s.

The time limits come from one scan of one index (schema.DUE: the first limit each active job
reaches), in the order they fell due, so a batch costs O(limit log n). A job past several
limits meets the first that applies in the rules' order: its execution timeout, its time to
live, then its lease.
"""

from __future__ import annotations

import sqlite3

from ...job import JobState
from .. import rules
from ..rules import ENDED_BY_SERVICE
from .counting import moved
from .ops import Row, bump_retried, end_job, requeue
from .schema import ACTIVE, DUE

_RUNNING = JobState.IN_PROGRESS.value

# The conditions after the first keep a batch from filling up with jobs it must pass over: a
# running job within its grace, or one whose lease the caller leaves alone (expire_leases).
_OVERDUE = (
    "SELECT id, endpoint, worker_id, state, execution_timeout_ms, ttl_ms, ttl_deadline, run_deadline, "
    f"lease_until, attempt FROM jobs WHERE {ACTIVE} AND {DUE} < :now "
    "AND (state = 'IN_QUEUE' OR run_deadline < :graced OR ttl_deadline < :graced "
    f"OR (:leases AND lease_until < :now)) ORDER BY {DUE} LIMIT :limit"
)


def _outcome(
    row: Row, now: float, grace: float, expire_leases: bool, max_attempts: int
) -> rules.Overdue | None:
    """What the rules do to a job _OVERDUE found: the first limit it is past, in the rules' order."""
    _, _, worker_id, state, exec_ms, ttl_ms, ttl_deadline, run_deadline, lease_until, attempt = row
    running = state == _RUNNING
    if running and run_deadline is not None and run_deadline < now - grace:
        return rules.execution_timeout(exec_ms)
    if rules.ttl_due(JobState(state), ttl_deadline, now, grace):
        return rules.ttl_expired(JobState(state), ttl_ms)
    if running and expire_leases and lease_until is not None and lease_until < now:
        return rules.lease_expired(attempt, max_attempts, worker_id)
    return None


def sweep(
    conn: sqlite3.Connection, notes: list[str], *, now: float, max_attempts: int, deadline_grace_ms: int,
    expire_leases: bool = True, limit: int = rules.BATCH,
) -> tuple[list[Row], list[str], int, bool]:  # fmt: skip
    """Returns (rows of jobs ended, ids requeued, records deleted, whether work is left)."""
    grace = deadline_grace_ms / 1000.0
    ended: list[Row] = []
    requeued: list[str] = []
    overdue = conn.execute(
        _OVERDUE, {"now": now, "graced": now - grace, "leases": int(expire_leases), "limit": limit}
    ).fetchall()
    for row in overdue:
        job_id, endpoint, worker_id, state = row[:4]
        outcome = _outcome(row, now, grace, expire_leases, max_attempts)
        if outcome is None:
            continue
        if outcome.requeue:
            requeue(conn, endpoint, job_id, attempt_delta=0)
            bump_retried(conn, endpoint)
            requeued.append(job_id)
            notes.extend(rules.stopped(endpoint, job_id, worker_id, True))
            notes.extend(rules.claimable(endpoint, job_id))
            continue
        assert outcome.state is not None
        ended.append(end_job(conn, job_id, outcome.state, now, ENDED_BY_SERVICE, was=state,
                             error=outcome.error))  # fmt: skip
        notes.extend(rules.stopped(endpoint, job_id, worker_id, state == _RUNNING))
    budget = limit - len(overdue)

    deleted = conn.execute(
        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE expires_at <= ? LIMIT ?) "
        "RETURNING id, endpoint, state",
        (now, max(budget, 0)),
    ).fetchall()
    for job_id, endpoint, state in deleted:
        moved(conn, endpoint, state, None)
        notes.extend(rules.changed(job_id))
    budget -= len(deleted)
    conn.execute("DELETE FROM workers WHERE seen_at < ?", (now - rules.WORKER_FORGET_S,))
    return ended, requeued, len(deleted), budget <= 0
