"""The background sweep: enforces deadlines, TTLs, lease expiry and result retention.

Every replica runs this loop, but only the one holding the "sweeper" leader lease in storage
sweeps: it renews the lease on each round; when it stops (shutdown: it resigns) or dies (the
lease runs out after SWEEPER_LEASE_S), another replica takes over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from .state import STATE, ServiceState

log = logging.getLogger("worker_kit.service.sweeper")

SWEEPER_LEASE = "sweeper"
#: Ended jobs the sweep reports (log, metrics, webhook kick) between two yields to requests:
#: a mass expiry ends thousands per sweep() call, and reporting them all in one loop step
#: would hold every request back for as long.
REPORT_SLICE = 100


def sweeper_lease_ms(state: ServiceState) -> int:
    """Long enough that a busy leader keeps it between rounds; a dead leader is replaced
    this long after its last round."""
    return int(max(10 * state.config.sweep_interval_s, 5.0) * 1000)


async def sweep_once(state: ServiceState, *, expire_leases: bool = True) -> bool:
    """One bounded sweep; True when it stopped at its bound with overdue work left."""
    cfg = state.config
    result = await state.storage.sweep(cfg.max_attempts, cfg.deadline_grace_ms, expire_leases=expire_leases)
    state.metrics.sweeps.inc()
    state.metrics.requeued.inc(len(result.requeued))
    state.metrics.deleted.inc(result.deleted)
    for job_id in result.requeued:
        log.info("job %s requeued: its worker's lease expired", job_id, extra={"job_id": job_id})
    for i, job in enumerate(result.ended, 1):
        state.job_ended(job, "by the service's sweep")
        if i % REPORT_SLICE == 0:
            await asyncio.sleep(0)
    if result.deleted:
        log.debug("deleted %d job record(s) past their retention", result.deleted)
    return result.more


async def _sweep_forever(state: ServiceState) -> None:
    loop = asyncio.get_running_loop()
    # Leases that ran out while the service was down (a restart) were not the workers' fault:
    # none could renew. For one lease period after start no lease expires, so every live
    # worker has time to come back (its heartbeat retries within a third of a lease) and
    # keep its job; a worker that died meanwhile loses its job one lease period later.
    leases_from = loop.time() + state.config.lease_ms / 1000
    delay = state.config.sweep_interval_s
    while True:
        await asyncio.sleep(delay)
        try:
            more = False
            if await state.storage.lead(SWEEPER_LEASE, state.replica_id, sweeper_lease_ms(state)):
                more = await sweep_once(state, expire_leases=loop.time() >= leases_from)
            # Work left (a mass expiry): go on at once; each batch already yielded to requests.
            delay = 0.0 if more else state.config.sweep_interval_s
        except asyncio.CancelledError:
            raise
        except Exception:
            # Keep sweeping: a transient storage error must not end timeouts and lease expiry for good.
            state.metrics.sweep_errors.inc()
            log.exception("sweep failed; retrying")
            delay = min(max(delay * 2, state.config.sweep_interval_s), 30.0)


async def sweeper_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_sweep_forever(app[STATE]), name="worker-kit-sweeper")
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    try:
        await app[STATE].storage.resign(SWEEPER_LEASE, app[STATE].replica_id)
    except Exception as exc:  # the store is gone: the lease simply runs out
        log.warning("could not hand over the sweeper's lease: %s", exc)
