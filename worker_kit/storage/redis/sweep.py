"""The Redis backend's sweep of one endpoint, in bounded batches.

Each batch: one read-only script collects up to `batch_size` overdue jobs (all kinds together) with
the facts storage/rules.py needs; the rules decide each job's outcome and error here; one
script applies the decisions, each only if the job is still as collected and still overdue
(so a heartbeat or finish in between, or another replica's sweep, wins); one script deletes
records past their retention. Every script does bounded work, and other clients' commands
run between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...job import JobState
from .. import rules
from ..base import SweepResult
from .records import record_from_hash, unpack_reply

if TYPE_CHECKING:
    from .backend import RedisStorage


def _decide(kind: str, state: bytes, fact: bytes, max_attempts: int, worker: str | None) -> rules.Overdue:
    if kind == "run":
        return rules.execution_timeout(int(fact))
    if kind in ("ttlq", "ttlr"):
        return rules.ttl_expired(JobState(state.decode()), int(fact))
    return rules.lease_expired(int(fact), max_attempts, worker)


async def _batch(
    storage: RedisStorage, endpoint: str, result: SweepResult, max_attempts: int, grace_ms: int, leases: bool
) -> bool:
    """One batch; True when a limit was reached (work may be left)."""
    grace_s, limit = grace_ms / 1000.0, storage.batch_size
    collected = unpack_reply(await storage.run("SWEEP_COLLECT", endpoint, repr(grace_s), limit, int(leases)))
    args: list[Any] = [repr(grace_s)]
    budget = limit - sum(len(jobs) for jobs in collected)
    for kind, jobs in zip(("run", "ttlq", "ttlr", "lease"), collected, strict=True):
        for job_id, state, token, worker, fact in jobs:
            if not state:
                continue  # the index outlived the record; the record's own expiry handles it
            outcome = _decide(kind, state, fact, max_attempts, worker.decode() or None)
            args += [kind, job_id, token, "" if outcome.requeue else outcome.state.value,  # type: ignore[union-attr]
                     outcome.error or ""]  # fmt: skip
    if len(args) > 1:
        for change in unpack_reply(await storage.run("SWEEP_APPLY", endpoint, *args)):
            job_id, worker = change[1].decode(), change[2].decode() or None
            storage._notify(rules.stopped(endpoint, job_id, worker, worker is not None))
            if change[0] == b"R":
                result.requeued.append(job_id)
                storage._notify(rules.claimable(endpoint, job_id))
            else:
                result.ended.append(record_from_hash(endpoint, change[3]))
    if budget <= 0:
        return True
    forget_before = storage.clock() - rules.WORKER_FORGET_S
    deleted = await storage.run("SWEEP_EXPIRE", endpoint, budget, repr(forget_before))
    result.deleted += len(deleted)
    for job_id in deleted:
        storage._notify(rules.changed(job_id.decode()))
    return len(deleted) >= budget


async def sweep_endpoint(
    storage: RedisStorage, endpoint: str, result: SweepResult, max_attempts: int, grace_ms: int, leases: bool
) -> None:
    for _ in range(storage.sweep_batches):
        more = await _batch(storage, endpoint, result, max_attempts, grace_ms, leases)
        if not more:
            return
    result.more = True
