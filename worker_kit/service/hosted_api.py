"""The hosted serverless service's worker protocol, so workers built with its SDK run unchanged.

Routes (relative to /v2/{endpoint_id}, see /work/shared/reference/runpod-worker-protocol.md §1):
job-take, job-take-batch, job-stop, job-done, job-stream and ping. That protocol has no fencing
tokens or sequence numbers, so this module records in storage which jobs each worker id holds
(with their tokens: `Storage.hold_leases`, shared by every replica, so job-stop and ping renew
leases whatever replica handed the job out; no sticky routing) and fills both in from storage:
a report counts only while the job is IN_PROGRESS under that worker id, and chunks and progress
get the job's next sequence number (under a per-job lock in one replica, re-read on a gap
across replicas).

Its known defects are handled here rather than passed on: long-polls (never an immediate 204, which
makes SDK workers spin), no job handed to a request whose client has gone, bodies parsed as JSON
whatever their Content-Type says, progress arriving after the result ignored, `?`-less URL
templates tolerated, and cancels and timeouts sent on job-stop.

This module holds the six routes; the per-replica state and the bookkeeping of leases and stops
are in hosted_state.py, the reading and applying of reports in hosted_reports.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from ..errors import JobNotFound, StaleLease
from ..job import JobRecord
from ..portable import problem
from ..protocol import (
    API_PREFIX,
    STOP_LOST,
    HostedJob,
    HostedReport,
    StopList,
    StopSignal,
    check_chunk,
    dumps_json,
    pack,
)
from ..protocol import hosted as hosted_wire
from ..storage.base import queue_channel, worker_channel
from .config import EndpointConfig
from .hosted_reports import append, current, fail_stream, not_held, outcome, report_body
from .hosted_state import (
    HOSTED,
    MAX_BATCH,
    STOP_REPEAT_GAP_S,
    STOP_UNLISTED_GRACE_S,
    HostedState,
    forget_stops,
    held_leases,
    hold_s,
    hosted_op,
    json_response,
    no_content,
    past_repeat,
    path_part,
)
from .http import RECHECK_S, ApiError, job_id_of, query_int, wait_until
from .state import ServiceState, job_log
from .unsendable import sendable

__all__ = ["HOSTED", "MAX_BATCH", "HostedState", "routes"]

routes = web.RouteTableDef()
log = logging.getLogger("worker_kit.service.hosted")

PREFIX = API_PREFIX


# -- taking jobs ------------------------------------------------------------------------------------


async def _take(
    request: web.Request, state: ServiceState, endpoint: str, worker_id: str, max_jobs: int
) -> list[JobRecord]:
    lease_ms = state.config.lease_ms

    async def take() -> list[JobRecord] | None:
        if request.transport is None or request.transport.is_closing():
            return []  # the SDK gave up on this request; a job handed to it would be lost
        return await state.storage.claim(
            endpoint, worker_id, max_jobs, lease_ms, max_bytes=state.config.claim_max_bytes
        ) or None

    jobs = (
        await wait_until(
            state.storage, queue_channel(endpoint), hold_s(request), take, state.shutdown, recheck_s=RECHECK_S
        )
        or []
    )
    if jobs:
        await state.storage.hold_leases(endpoint, worker_id, {job.id: job.token or "" for job in jobs})
    for job in jobs:
        job_log(job, "job %s taken by hosted-protocol worker %s (attempt %d)", job.id, worker_id, job.attempt)
    return jobs


@routes.get(PREFIX + "/job-take/{worker_id}")
@hosted_op
async def job_take(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig, worker_id: str
) -> web.Response:
    jobs = await _take(request, state, endpoint, worker_id, 1)
    forms = await _sendable(request, state, endpoint, worker_id, jobs)
    return json_response(forms[0]) if forms else no_content()


@routes.get(PREFIX + "/job-take-batch/{worker_id}")
@hosted_op
async def job_take_batch(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig, worker_id: str
) -> web.Response:
    batch = query_int(request, hosted_wire.BATCH_SIZE, default=1, minimum=1, maximum=MAX_BATCH)
    assert batch is not None
    jobs = await _take(request, state, endpoint, worker_id, batch)
    forms = await _sendable(request, state, endpoint, worker_id, jobs)
    return json_response(forms) if forms else no_content()


async def _sendable(
    request: web.Request, state: ServiceState, endpoint: str, worker_id: str, jobs: list[JobRecord]
) -> list[dict[str, Any]]:
    """The jobs' wire forms; one that cannot be encoded ends FAILED instead of failing the reply
    (see unsendable.py)."""
    forms = [HostedJob.encode_record(job) for job in jobs]
    try:
        dumps_json(forms)
    except Exception:
        forms = await sendable(
            state, endpoint, jobs, HostedJob.encode_record, lambda form: dumps_json(form).encode()
        )
        kept = {form["id"] for form in forms}
        await state.storage.drop_leases(endpoint, worker_id, [job.id for job in jobs if job.id not in kept])
    return forms


# -- liveness and stops ----------------------------------------------------------------------------


@routes.get(PREFIX + "/ping/{worker_id}")
@hosted_op
async def ping(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig, worker_id: str
) -> web.Response:
    listed = hosted_wire.listed_jobs(request.query.get(hosted_wire.JOB_IDS, ""))
    leases = await held_leases(state, endpoint, worker_id, listed)
    stops = await state.storage.heartbeat(endpoint, worker_id, leases, state.config.lease_ms)
    # A stopped job the worker no longer lists has left it: its stop need not be repeated. Not at
    # once, though: the SDK's ping process reads its job list with a lag, so a job taken just now
    # may be missing from a ping while the worker is about to start it.
    gone = [s.job_id for s in stops if s.reason == STOP_LOST]
    for stop in stops:
        if stop.reason != STOP_LOST and stop.job_id not in listed:
            job = await state.storage.get(endpoint, stop.job_id)
            ended_at = None if job is None else job.finished_at
            if ended_at is None or time.time() - ended_at > STOP_UNLISTED_GRACE_S:
                gone.append(stop.job_id)
    await state.storage.drop_leases(endpoint, worker_id, gone)
    forget_stops(request.app[HOSTED], worker_id, gone)
    return json_response({"status": "ok"})


@routes.get(PREFIX + "/job-stop/{worker_id}")
@hosted_op
async def job_stop(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig, worker_id: str
) -> web.Response:
    """Renews the worker's leases (SDK workers poll this continuously) and long-polls for stops.

    A cancelled or timed-out job's stop is repeated, STOP_REPEAT_GAP_S apart, until the worker's
    pings stop listing the job or STOP_REPEAT_S after it ended (docs/service.md); a stop for a
    lease the worker lost is sent once."""
    hosted = request.app[HOSTED]
    loop = asyncio.get_running_loop()

    async def stops() -> list[StopSignal] | None:
        leases = await held_leases(state, endpoint, worker_id, [])
        found = await state.storage.heartbeat(endpoint, worker_id, leases, state.config.lease_ms)
        expired = await past_repeat(state, endpoint, found)
        if expired:
            await state.storage.drop_leases(endpoint, worker_id, expired)
            forget_stops(hosted, worker_id, expired)
        found = [s for s in found if s.job_id not in expired]
        due = [s for s in found if loop.time() - hosted.stops_sent.get((worker_id, s.job_id), -1e9)
               >= STOP_REPEAT_GAP_S]
        if found and not due:  # only repeats, sent just now: pace them instead of holding a full poll
            await asyncio.sleep(STOP_REPEAT_GAP_S)
            return found
        return due or None

    found = await wait_until(
        state.storage, worker_channel(endpoint, worker_id), hold_s(request), stops, state.shutdown,
        recheck_s=RECHECK_S,  # each look renews the worker's leases
    )
    if not found:
        return no_content()
    lost = [s.job_id for s in found if s.reason == STOP_LOST]
    await state.storage.drop_leases(endpoint, worker_id, lost)
    forget_stops(hosted, worker_id, lost)
    for s in found:
        if s.reason != STOP_LOST:
            hosted.stops_sent[(worker_id, s.job_id)] = loop.time()
    return json_response(StopList.encode([s.job_id for s in found]))


# -- reports ----------------------------------------------------------------------------------------


@routes.post(PREFIX + "/job-done/{worker_id}/{job_id}")
@hosted_op
async def job_done(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig, worker_id: str
) -> web.Response:
    hosted = request.app[HOSTED]
    job_id = job_id_of(request, path_part(request.match_info["job_id"]))
    body = await report_body(request, cfg, "job-done")
    report = HostedReport.decode(body)
    async with hosted.lock(job_id):
        job, token = await current(state, endpoint, worker_id, job_id)
        unstorable = problem(body, finite=False)
        if report.is_progress:
            if token is None:
                return json_response({"ignored": f"job is {job.state.value}"})  # late progress is expected
            if unstorable is not None:  # progress is transient: refuse it, the job goes on
                raise ApiError(400, f"job-done: progress refused: {unstorable}")
            try:
                await append(state, endpoint, job, token, "progress", report.output)
            except (StaleLease, JobNotFound):
                return json_response({"ignored": "job ended"})
            return json_response({"status": "ok"})
        if token is None:
            raise not_held(job, worker_id)
        final, error, detail, output = outcome(report, cfg, unstorable)
        try:
            ended = await state.storage.finish(
                endpoint, job_id, token, final, output=output, error=error, error_detail=detail
            )
        except (StaleLease, JobNotFound):
            raise not_held(job, worker_id) from None
    await state.storage.drop_leases(endpoint, worker_id, [job_id])
    state.job_ended(ended, f"reported by hosted-protocol worker {worker_id}")
    return json_response({"status": ended.state.value})


@routes.post(PREFIX + "/job-stream/{worker_id}/{job_id}")
@hosted_op
async def job_stream(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig, worker_id: str
) -> web.Response:
    hosted = request.app[HOSTED]
    job_id = job_id_of(request, path_part(request.match_info["job_id"]))
    body = await report_body(request, cfg, "job-stream")
    chunk = HostedReport.decode(body).output
    unstorable = problem(body, finite=False)
    if unstorable is not None:
        await fail_stream(request, state, endpoint, worker_id, job_id, f"job-stream: {unstorable}")
    check_chunk(len(pack(chunk)))
    async with hosted.lock(job_id):
        job, token = await current(state, endpoint, worker_id, job_id)
        if token is None:
            raise not_held(job, worker_id)
        try:
            await append(state, endpoint, job, token, "chunk", chunk)
        except (StaleLease, JobNotFound):
            raise not_held(job, worker_id) from None
    return json_response({"status": "ok"})
