"""The per-replica state of the hosted worker protocol (hosted_api.py) and its bookkeeping of
leases and stops: which jobs a worker holds (recorded in storage, so any replica renews them), and
how often a stop is repeated to a worker that may have missed it.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..job import JobState
from ..portable import problem
from ..protocol import MAX_FIELD_CHARS, MAX_POLL_MS, STOP_LOST, StopSignal, dumps_json
from ..protocol.hosted import WAIT_MS
from .config import EndpointConfig
from .http import ApiError, query_int
from .state import ServiceState, authorized

#: job-take and job-stop hold this long by default; SDK workers cut requests at 90 s.
#: A template may carry `?wait_ms=N` to change it.
DEFAULT_HOLD_MS = 30_000
#: The most jobs one job-take-batch hands out.
MAX_BATCH = 100
#: A stop is sent again while the worker still lists its job, for at most this long after the job
#: ended: the hosted SDK drops a stop that arrives between a take and the start of the job's task.
STOP_REPEAT_S = 60.0
#: The SDK polls job-stop again at once after a 200: repeats of the same stop are this far apart.
STOP_REPEAT_GAP_S = 1.0
#: A ping that no longer lists a stopped job ends its repeats only this long after the job ended.
STOP_UNLISTED_GRACE_S = 5.0
#: A ping lists the jobs its worker runs; at most this many are looked up.
_MAX_LISTED = 256


@dataclass(slots=True)
class HostedState:
    #: Per-job locks ordering one replica's reports of a job (the held leases live in storage).
    locks: weakref.WeakValueDictionary[str, asyncio.Lock] = field(default_factory=weakref.WeakValueDictionary)
    #: (worker id, job id) -> when this replica last sent that stop: only paces the repeats, so
    #: per replica is enough (another replica may repeat a stop a little sooner).
    stops_sent: dict[tuple[str, str], float] = field(default_factory=dict)

    def lock(self, job_id: str) -> asyncio.Lock:
        lock = self.locks.get(job_id)
        if lock is None:
            lock = self.locks[job_id] = asyncio.Lock()
        return lock


HOSTED = web.AppKey("worker_kit_hosted", HostedState)

Handler = Callable[[web.Request, ServiceState, str, EndpointConfig, str], Awaitable[web.StreamResponse]]


def path_part(raw: str) -> str:
    # Templates without '?' make the SDK append "&isStream=false" or "&job_in_progress=0" to the path.
    return raw.split("&", 1)[0]


def hosted_op(fn: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        state, endpoint, cfg = authorized(request, "worker")
        worker_id = path_part(request.match_info["worker_id"])
        if not worker_id or len(worker_id) > MAX_FIELD_CHARS or problem(worker_id) is not None:
            raise ApiError(
                400, f"the worker id in the path must be 1 to {MAX_FIELD_CHARS} characters of valid text"
            )
        return await fn(request, state, endpoint, cfg, worker_id)

    handle.__name__ = fn.__name__
    return handle


def no_content() -> web.Response:
    return web.Response(status=204)


def json_response(body: Any) -> web.Response:
    # Strict JSON: NaN and Infinity a worker reported become null (protocol.dumps_json).
    return web.json_response(body, dumps=dumps_json)


def hold_s(request: web.Request) -> float:
    wait_ms = query_int(request, WAIT_MS, default=DEFAULT_HOLD_MS, minimum=0, maximum=MAX_POLL_MS)
    assert wait_ms is not None
    return wait_ms / 1000


async def held_leases(
    state: ServiceState, endpoint: str, worker_id: str, listed: list[str]
) -> dict[str, str]:
    """The worker's jobs with their tokens: those recorded as held, plus listed ones storage says
    it runs (taken before the record existed, e.g. by an older version of the service)."""
    leases = await state.storage.held_leases(endpoint, worker_id)
    found: dict[str, str] = {}
    for job_id in listed[:_MAX_LISTED]:
        if job_id and job_id not in leases:
            job = await state.storage.get(endpoint, job_id)
            if (
                job is not None
                and job.worker_id == worker_id
                and job.state is JobState.IN_PROGRESS
                and job.token
            ):
                found[job_id] = job.token
    if found:
        await state.storage.hold_leases(endpoint, worker_id, found)
    return {**leases, **found}


async def past_repeat(state: ServiceState, endpoint: str, stops: list[StopSignal]) -> list[str]:
    """The stopped jobs whose stop is no longer repeated: ended over STOP_REPEAT_S ago, or gone."""
    now, past = time.time(), []
    for stop in stops:
        if stop.reason == STOP_LOST:
            continue
        job = await state.storage.get(endpoint, stop.job_id)
        if job is None or (job.finished_at is not None and now - job.finished_at > STOP_REPEAT_S):
            past.append(stop.job_id)
    return past


def forget_stops(hosted: HostedState, worker_id: str, job_ids: list[str]) -> None:
    for job_id in job_ids:
        hosted.stops_sent.pop((worker_id, job_id), None)
