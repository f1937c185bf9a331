"""The store's side of /metrics: read storage before a scrape renders, and time storage calls."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from .metrics import OTHER_ENDPOINT, EndpointSnapshot, StoreSnapshot
from .scaling import read_load, scaling_document
from .state import STATE, ServiceState
from .storage_timing import time_storage

log = logging.getLogger("worker_kit.service.metrics")


async def read_store(state: ServiceState) -> None:
    """Fill the store collector's snapshot: one /scaling read per endpoint with its own label.

    When storage cannot be read, the scrape still answers (this process's own counters stay
    visible) with `worker_kit_store_up 0` and no store gauges, rather than failing whole.
    """
    try:
        state.metrics.store.snapshot = await _read(state)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("/metrics: cannot read the job store: %s", exc)
        # Counters must not seem to reset: keep the last webhook counts read.
        state.metrics.store.snapshot = StoreSnapshot(up=False, webhooks=state.metrics.store.snapshot.webhooks)


async def _read(state: ServiceState) -> StoreSnapshot:
    names = [name for name in state.metrics.endpoint.tracked() if name != OTHER_ENDPOINT]
    loads = await asyncio.gather(*(read_load(state, name) for name in names))
    endpoints: dict[str, EndpointSnapshot] = {}
    for name, (counts, workers) in zip(names, loads, strict=True):
        cfg = state.config.endpoint(name) or state.config.default
        doc = scaling_document(name, cfg, counts, workers)
        endpoints[name] = EndpointSnapshot(
            counts=counts,
            idle=doc["workersIdle"],
            busy=doc["workersBusy"],
            slots=doc["slots"],
            desired=doc["desiredWorkers"],
        )
    hooks = await state.webhook_stats()
    return StoreSnapshot(endpoints=endpoints, webhooks=hooks)


async def store_metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """Time the app's storage calls for as long as the app runs."""
    state = app[STATE]
    stop = time_storage(state.storage, state.metrics.storage_call)
    try:
        yield
    finally:
        stop()
