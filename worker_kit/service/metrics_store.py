"""The store's side of /metrics: read storage before a scrape renders, and time storage calls."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator

from aiohttp import web

from .metrics import OTHER_ENDPOINT, EndpointSnapshot, StoreSnapshot
from .scaling import read_load, scaling_document
from .state import STATE, ServiceState
from .storage_timing import time_storage


async def read_store(state: ServiceState) -> None:
    """Fill the store collector's snapshot: one /scaling read per endpoint with its own label."""
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
    hooks = state.webhook_stats()
    if inspect.isawaitable(hooks):  # a durable outbox answers from storage (the replicas work)
        hooks = await hooks
    state.metrics.store.snapshot = StoreSnapshot(endpoints=endpoints, webhooks=hooks)


async def store_metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """Time the app's storage calls for as long as the app runs."""
    state = app[STATE]
    stop = time_storage(state.storage, state.metrics.storage_call)
    try:
        yield
    finally:
        stop()
