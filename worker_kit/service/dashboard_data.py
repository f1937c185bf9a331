"""What the dashboard shows, built on the service side: one snapshot of an endpoint per push.

A snapshot holds the endpoint's load (as /scaling), its live workers and the jobs they hold, its
recent requests (filterable by state) and per-minute charts of the last minutes: completed and
failed jobs, and delay and execution time percentiles.

Recent requests and the per-minute charts come from what this process saw (activity.py): the ids
it accepted and the endings it handled, each bounded in memory. With several replicas behind a
balancer, each one's page shows the requests and endings it served.
"""

from __future__ import annotations

import time
from typing import Any

from ..job import JobRecord, JobState
from .config import EndpointConfig
from .scaling import read_load, scaling_document
from .state import ServiceState

#: Requests listed in one snapshot at most, and stored records read to fill the list.
LIST_LIMIT = 50
_SCAN = 100
#: In-progress jobs shown per worker at most.
JOBS_PER_WORKER = 20


def _ms(t: float | None) -> int | None:
    return None if t is None else int(t * 1000)


def job_summary(job: JobRecord) -> dict[str, Any]:
    """A job as the request list shows it: no input or output."""
    return {
        "id": job.id,
        "status": job.state.value,
        "createdAt": _ms(job.created_at),
        "startedAt": _ms(job.started_at),
        "completedAt": _ms(job.finished_at),
        "delayTime": job.delay_ms,
        "executionTime": job.execution_ms,
        "workerId": job.worker_id,
        "attempt": job.attempt,
        "retries": job.retries,
        "error": job.error,
    }


async def recent_jobs(state: ServiceState, endpoint: str) -> list[JobRecord]:
    """The endpoint's newest jobs this process accepted and storage still holds, newest first."""
    found = []
    for job_id in state.recent.newest(endpoint, _SCAN):
        job = await state.storage.get(endpoint, job_id)
        if job is not None:
            found.append(job)
    return found


async def snapshot(
    state: ServiceState, endpoint: str, cfg: EndpointConfig, states: set[str] | None
) -> dict[str, Any]:
    """Everything the endpoint view draws, as one JSON-ready object."""
    counts, workers = await read_load(state, endpoint)
    jobs = await recent_jobs(state, endpoint)
    held: dict[str, list[str]] = {}
    for job in jobs:
        if job.state is JobState.IN_PROGRESS and job.worker_id is not None:
            held.setdefault(job.worker_id, []).append(job.id)
    now = time.time()
    listed = [job_summary(j) for j in jobs if states is None or j.state.value in states][:LIST_LIMIT]
    return {
        "endpoint": endpoint,
        "now": _ms(now),
        "load": scaling_document(endpoint, cfg, counts, workers),
        "counts": counts,
        "workers": [
            {
                "id": w.worker_id,
                "state": "busy" if w.running > 0 else "idle",
                "running": w.running,
                "slots": w.concurrency,
                "lastSeenMs": max(0, int((now - w.seen_at) * 1000)),
                "jobs": held.get(w.worker_id, [])[:JOBS_PER_WORKER],
            }
            for w in workers
        ],
        "requests": listed,
        "series": state.minute_stats.series(endpoint),
    }
