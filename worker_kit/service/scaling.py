"""GET /v2/{endpoint_id}/scaling: what an autoscaler needs, read from storage (docs/operations.md).

`desiredWorkers` is the demand (queued + in progress) divided by the job slots one worker
offers, rounded up and capped at the endpoint's `workers_max`; 0 when there is no demand, so
workers can scale to zero. Counting running jobs, not the queue alone, keeps the workers that
are busy from being scaled away while the queue is empty.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from ..job import JobState
from ..protocol import API_PREFIX
from ..storage.base import WorkerInfo
from .client_api import WORKER_SEEN_WINDOW_S
from .config import EndpointConfig
from .http import respond
from .state import ServiceState, authorized

routes = web.RouteTableDef()


def slots_per_worker(workers: list[WorkerInfo]) -> int:
    """The job slots one worker offers: the mean of what live workers declare (1 with none)."""
    if not workers:
        return 1
    return max(1, sum(max(1, w.concurrency) for w in workers) // len(workers))


def desired_workers(queued: int, in_progress: int, per_worker: int, workers_max: int) -> int:
    demand = queued + in_progress
    if demand <= 0:
        return 0
    return min(workers_max, math.ceil(demand / max(1, per_worker)))


async def read_load(state: ServiceState, endpoint: str) -> tuple[dict[str, int], list[WorkerInfo]]:
    """The endpoint's job counts and live workers, from storage."""
    counts = await state.storage.counts(endpoint)
    workers = await state.storage.workers(endpoint, WORKER_SEEN_WINDOW_S)
    return counts, workers


def scaling_document(
    endpoint: str, cfg: EndpointConfig, counts: dict[str, int], workers: list[WorkerInfo]
) -> dict[str, Any]:
    queued = counts.get(JobState.IN_QUEUE.value, 0)
    in_progress = counts.get(JobState.IN_PROGRESS.value, 0)
    per_worker = slots_per_worker(workers)
    busy = sum(1 for w in workers if w.running > 0)
    return {  # flat, so an autoscaler can point at one key (KEDA's valueLocation)
        "endpoint": endpoint,
        "inQueue": queued,
        "inProgress": in_progress,
        "workersLive": len(workers),
        "workersBusy": busy,
        "workersIdle": len(workers) - busy,
        "slots": sum(max(1, w.concurrency) for w in workers),
        "slotsPerWorker": per_worker,
        "workersMax": cfg.workers_max,
        "desiredWorkers": desired_workers(queued, in_progress, per_worker, cfg.workers_max),
    }


@routes.get(API_PREFIX + "/scaling")
async def scaling(request: web.Request) -> web.Response:
    state, endpoint, cfg = authorized(request, "client")
    counts, workers = await read_load(state, endpoint)
    return respond(request, scaling_document(endpoint, cfg, counts, workers))
