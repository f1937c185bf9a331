"""The native worker routes (docs/protocol.md): claim, heartbeat, output and release; finish and
exchange are in worker_finish.py. Bodies are read and checked by the message types of
worker_kit.protocol, the same ones the worker runtime builds them with.

Bodies are msgpack or JSON; answers are msgpack when the worker asks for it. Every report
carries the job's fencing token; storage refuses stale ones and this module turns that into
`409 {"error", "state", "stale": true}` (protocol.stale).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..errors import JobNotFound, SequenceGap, StaleLease
from ..job import JobRecord, JobState
from ..portable import problem
from ..protocol import (
    API_PREFIX,
    JSON,
    MAX_CLAIM,
    MAX_SLOTS,
    MSGPACK,
    REPORT_OVERHEAD,
    WORKER_CLAIM,
    WORKER_HEARTBEAT,
    WORKER_OUTPUT,
    WORKER_RELEASE,
    ClaimAnswer,
    ClaimedJob,
    ClaimRequest,
    HeartbeatAnswer,
    HeartbeatRequest,
    OutputAnswer,
    OutputRequest,
    ReleaseRequest,
    StopSignal,
    decode_report,
    encode,
    stale,
)
from ..protocol.answers import JobAnswer
from ..storage.base import queue_channel, worker_channel
from .config import EndpointConfig
from .expect import expect_within
from .guard import TAKES_STATE
from .http import (
    RECHECK_S,
    ApiError,
    body_content_type,
    client_gone,
    job_id_of,
    read_body,
    read_object,
    respond,
    wait_until,
    wants_msgpack,
)
from .state import ServiceState, authorized, job_log
from .unsendable import sendable

__all__ = ["MAX_CLAIM", "MAX_SLOTS", "claim_jobs", "claim_reply", "handed_out", "report_limit", "routes",
           "worker_op"]  # fmt: skip

routes = web.RouteTableDef()
log = logging.getLogger("worker_kit.service")

PREFIX = API_PREFIX
#: Claim and heartbeat bodies are small; output and finish bodies are bounded by the result limit.
_CONTROL_BODY = 1024 * 1024
_OUTPUT_OVERHEAD = REPORT_OVERHEAD  # app.py sizes aiohttp's client_max_size with it

Handler = Callable[[web.Request, ServiceState, str, EndpointConfig], Awaitable[web.Response]]


def report_limit(cfg: EndpointConfig) -> int:
    """The most bytes an output, finish or exchange body may have."""
    return cfg.result_limit + REPORT_OVERHEAD


def worker_op(fn: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    @functools.wraps(fn)
    async def handle(request: web.Request, state: ServiceState | None = None) -> web.Response:
        state, endpoint, cfg = authorized(request, "worker", state)
        return await fn(request, state, endpoint, cfg)

    setattr(handle, TAKES_STATE, True)
    return handle


async def claim_jobs(
    request: web.Request,
    state: ServiceState,
    endpoint: str,
    worker_id: str,
    max_jobs: int,
    wait_ms: int,
    concurrency: int | None,
) -> list[JobRecord]:
    """Claim up to `max_jobs`, holding up to `wait_ms` for the first (0: look once).

    Shared by /worker/claim and /worker/exchange; `claim_reply` renders the answer."""
    lease_ms = state.config.lease_ms

    async def take() -> list[JobRecord] | None:
        if client_gone(request):
            return []  # nobody to hand jobs to: claim nothing
        # The reply's size is bounded: a claim of 100 jobs with large inputs would otherwise be
        # built whole in memory here and in the worker; the worker claims again for the rest.
        jobs = await state.storage.claim(
            endpoint,
            worker_id,
            max_jobs,
            lease_ms,
            concurrency=concurrency,
            max_bytes=state.config.claim_max_bytes,
        )
        return jobs or None

    if wait_ms <= 0:
        jobs = await take() or []  # no wait: no subscription to set up and tear down
    else:
        jobs = (
            await wait_until(
                state.storage, queue_channel(endpoint), wait_ms / 1000, take, state.shutdown,
                gone=lambda: client_gone(request), recheck_s=RECHECK_S,
            )
            or []
        )  # fmt: skip
    return await handed_out(request, state, endpoint, worker_id, jobs)


async def handed_out(
    request: web.Request, state: ServiceState, endpoint: str, worker_id: str, jobs: list[JobRecord]
) -> list[JobRecord]:
    """The claimed `jobs` to answer with: none, and each handed straight back to the queue, when
    the worker left while storage claimed them (rather than wait for their leases to run out)."""
    if jobs and client_gone(request):
        for job in jobs:
            if job.token is not None:
                await state.storage.release(endpoint, job.id, job.token)
        return []
    for job in jobs:
        job_log(job, "job %s claimed by worker %s (attempt %d)", job.id, worker_id, job.attempt)
    return jobs


async def claim_reply(
    request: web.Request, state: ServiceState, endpoint: str, jobs: list[JobRecord], reply: dict[str, Any]
) -> web.Response:
    """`reply` (ClaimAnswer.encode) with the claimed `jobs` as "jobs", encoded for the worker."""
    now = time.time()
    content_type = MSGPACK if wants_msgpack(request) else JSON
    wire = ClaimedJob.encode_record
    reply["jobs"] = [wire(job, now) for job in jobs]
    try:
        payload = encode(reply, content_type)
    except Exception:  # a job stored before values were checked at the door: see unsendable.py
        reply["jobs"] = await sendable(
            state, endpoint, jobs, lambda job: wire(job, now), lambda form: encode(form, content_type)
        )
        payload = encode(reply, content_type)
    return web.Response(body=payload, content_type=content_type)


@routes.post(PREFIX + WORKER_CLAIM)
@worker_op
async def claim(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    ask = ClaimRequest.decode(await read_object(request, _CONTROL_BODY, "claim", finite=False))
    jobs = await claim_jobs(request, state, endpoint, ask.worker_id, ask.max, ask.wait_ms, ask.concurrency)
    return await claim_reply(request, state, endpoint, jobs, ClaimAnswer.encode(state.config.lease_ms,
                                                                               cfg.result_limit))


@routes.post(PREFIX + WORKER_HEARTBEAT)
@worker_op
async def heartbeat(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    beat = HeartbeatRequest.decode(await read_object(request, _CONTROL_BODY, "heartbeat", finite=False))
    lease_ms = state.config.lease_ms

    async def stops() -> list[StopSignal] | None:
        if client_gone(request):
            return []  # the worker left: renew nothing for it
        found = await state.storage.heartbeat(
            endpoint, beat.worker_id, beat.jobs, lease_ms, concurrency=beat.concurrency, running=beat.running
        )
        return found or None

    found = (
        await wait_until(
            state.storage,
            worker_channel(endpoint, beat.worker_id),
            beat.wait_ms / 1000,
            stops,
            state.shutdown,
            gone=lambda: client_gone(request),
            recheck_s=RECHECK_S,
        )
        or []
    )
    return respond(request, HeartbeatAnswer.encode(found, beat.jobs, lease_ms))


@routes.post(PREFIX + WORKER_OUTPUT, expect_handler=expect_within(report_limit))
@worker_op
async def output(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    job_id = job_id_of(request)
    raw = await read_body(request, report_limit(cfg), "output")
    body, payloads = decode_report(raw, body_content_type(request), "output")
    bad = problem(body, finite=False)
    if bad is not None:
        raise ApiError(400, f"output: {bad}")
    report = OutputRequest.decode(body, payloads)
    try:
        next_seq = await state.storage.append_output(endpoint, job_id, report.token, report.items)
    except (StaleLease, JobNotFound) as exc:
        raise stale(job_id, exc) from None
    except SequenceGap as exc:
        raise ApiError(
            409, str(exc) or f"output items must continue from seq {exc.expected}", expected=exc.expected
        ) from None
    return respond(request, OutputAnswer.encode(next_seq))


@routes.post(PREFIX + WORKER_RELEASE)
@worker_op
async def release(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    job_id = job_id_of(request)
    token = ReleaseRequest.decode(await read_object(request, _CONTROL_BODY, "release", finite=False)).token
    try:
        released = await state.storage.release(endpoint, job_id, token)
    except JobNotFound as exc:
        raise stale(job_id, exc) from None
    if not released:
        job = await state.storage.get(endpoint, job_id)
        raise stale(job_id, f"the lease token of job {job_id} is not current; nothing to release",
                    job.state.value if job else None)  # fmt: skip
    log.info("job %s released back to the queue", job_id, extra={"job_id": job_id, "endpoint": endpoint})
    return respond(request, JobAnswer.encode(job_id, JobState.IN_QUEUE))
