"""What the dashboard shows, built on the service side: one snapshot of an endpoint per push.

A snapshot holds the endpoint's load (as /scaling), its live workers and the jobs they hold, its
recent requests (filterable by state) and per-minute charts of the last minutes: completed and
failed jobs, and delay and execution time percentiles.

The load, workers and requests come from storage, so every replica shows the same. The per-minute
charts come from the job endings this process handled (activity.MinuteStats, bounded in memory):
exact for one service, each replica's share behind a balancer.
"""

from __future__ import annotations

import time
from typing import Any

from ..job import JobRecord, JobState
from ..protocol.answers import RequestsPage
from .config import EndpointConfig
from .scaling import read_load, scaling_document
from .state import ServiceState

#: Requests listed in one snapshot at most (newest first, from storage's index).
LIST_LIMIT = 50
#: Running jobs read to show which worker holds which.
RUNNING_LIMIT = 500
#: In-progress jobs shown per worker at most.
JOBS_PER_WORKER = 20


def _ms(t: float | None) -> int | None:
    return None if t is None else int(t * 1000)


def job_summary(job: JobRecord) -> dict[str, Any]:
    """A job as the request list shows it: /requests' entry without input or output, with
    `error` always present (null when none) for the page's table."""
    return {**RequestsPage.entry(job, set()), "error": job.error}


async def snapshot(
    state: ServiceState, endpoint: str, cfg: EndpointConfig, states: set[str] | None
) -> dict[str, Any]:
    """Everything the endpoint view draws, as one JSON-ready object."""
    counts, workers = await read_load(state, endpoint)
    wanted = None if states is None else [JobState(s) for s in states]
    listed = await state.storage.list_jobs(endpoint, limit=LIST_LIMIT, states=wanted)
    running = await state.storage.list_jobs(endpoint, limit=RUNNING_LIMIT, states=[JobState.IN_PROGRESS])
    held: dict[str, list[str]] = {}
    for job in running.jobs:
        if job.worker_id is not None:
            held.setdefault(job.worker_id, []).append(job.id)
    now = time.time()
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
        "requests": [job_summary(j) for j in listed.jobs],
        "requestsTotal": listed.total,
        "series": state.minute_stats.series(endpoint),
    }
