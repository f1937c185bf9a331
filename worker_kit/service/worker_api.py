"""The native worker routes (docs/protocol.md): claim, heartbeat, output, finish, release.

Bodies are msgpack or JSON; answers are msgpack when the worker asks for it. Every report
carries the job's fencing token; storage refuses stale ones and this module turns that into
`409 {"error", "state", "stale": true}`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..errors import JobNotFound, SequenceGap, StaleLease
from ..job import MAX_CHUNK_BYTES, JobRecord, JobState, OutputItem
from ..protocol import (
    API_PREFIX,
    DEFAULT_CLAIM_WAIT_MS,
    JSON,
    MAX_POLL_MS,
    MSGPACK,
    WORKER_CLAIM,
    WORKER_HEARTBEAT,
    WORKER_OUTPUT,
    WORKER_RELEASE,
    encode,
    pack,
)
from ..storage.base import StopSignal, queue_channel, worker_channel
from .config import EndpointConfig
from .expect import expect_within
from .http import (
    RECHECK_S,
    ApiError,
    client_gone,
    field_int,
    field_str,
    job_id_of,
    read_object,
    respond,
    wait_until,
    wants_msgpack,
)
from .state import ServiceState, authorized, job_log
from .unsendable import sendable

routes = web.RouteTableDef()
log = logging.getLogger("worker_kit.service")

PREFIX = API_PREFIX
MAX_CLAIM = 100
#: Bounds a worker's stated concurrency and running counts (storage keeps them as 64-bit integers).
MAX_SLOTS = 1_000_000
#: Claim and heartbeat bodies are small; output and finish bodies are bounded by the result limit.
_CONTROL_BODY = 1024 * 1024
_OUTPUT_OVERHEAD = 4 * 1024 * 1024

Handler = Callable[[web.Request, ServiceState, str, EndpointConfig], Awaitable[web.Response]]


def worker_op(fn: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    @functools.wraps(fn)
    async def handle(request: web.Request) -> web.Response:
        state, endpoint, cfg = authorized(request, "worker")
        return await fn(request, state, endpoint, cfg)

    return handle


def stale(exc: StaleLease | JobNotFound, job_id: str) -> ApiError:
    if isinstance(exc, JobNotFound):
        return ApiError(
            409,
            f"job {job_id} no longer exists (purged or past its retention); drop it",
            state=None,
            stale=True,
        )
    return ApiError(
        409, str(exc) or f"the lease token of job {job_id} is not current", state=exc.state, stale=True
    )


def job_wire(job: JobRecord, now: float) -> dict[str, Any]:
    started = job.started_at or now
    deadline = min(
        started + job.policy.execution_timeout_ms / 1000, job.created_at + job.policy.ttl_ms / 1000
    )
    # deadline_ms caps the run whether or not the policy names an executionTimeout.
    policy = job.policy.to_wire()
    wire: dict[str, Any] = {
        "id": job.id,
        "input": job.input,
        "token": job.token,
        "attempt": job.attempt,
        "policy": policy,
        "deadline_ms": max(0, int((deadline - now) * 1000)),
    }
    if job.webhook:
        wire["webhook"] = job.webhook
    return wire


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
    if jobs and client_gone(request):
        # The worker left while storage claimed: hand the jobs straight back rather than wait for the lease.
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
    """`reply` with the claimed `jobs` as "jobs", encoded for the worker."""
    now = time.time()
    content_type = MSGPACK if wants_msgpack(request) else JSON
    reply["jobs"] = [job_wire(job, now) for job in jobs]
    try:
        payload = encode(reply, content_type)
    except Exception:  # a job stored before values were checked at the door: see unsendable.py
        reply["jobs"] = await sendable(
            state, endpoint, jobs, lambda job: job_wire(job, now), lambda form: encode(form, content_type)
        )
        payload = encode(reply, content_type)
    return web.Response(body=payload, content_type=content_type)


@routes.post(PREFIX + WORKER_CLAIM)
@worker_op
async def claim(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    body = await read_object(request, _CONTROL_BODY, "claim", finite=False)
    worker_id = field_str(body, "worker_id", required=True)
    assert worker_id is not None
    max_jobs = field_int(body, "max", default=1, minimum=1, maximum=MAX_CLAIM)
    wait_ms = field_int(body, "wait_ms", default=DEFAULT_CLAIM_WAIT_MS, minimum=0, cap=MAX_POLL_MS)
    concurrency = field_int(body, "concurrency", default=None, minimum=0, maximum=MAX_SLOTS)
    assert max_jobs is not None and wait_ms is not None
    jobs = await claim_jobs(request, state, endpoint, worker_id, max_jobs, wait_ms, concurrency)
    reply = {"lease_ms": state.config.lease_ms, "result_limit": cfg.result_limit}
    return await claim_reply(request, state, endpoint, jobs, reply)


@routes.post(PREFIX + WORKER_HEARTBEAT)
@worker_op
async def heartbeat(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    body = await read_object(request, _CONTROL_BODY, "heartbeat", finite=False)
    worker_id = field_str(body, "worker_id", required=True)
    assert worker_id is not None
    leases = body.get("jobs", {})
    if not isinstance(leases, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in leases.items()
    ):
        raise ApiError(400, "jobs must be an object mapping job id to lease token (both strings)")
    wait_ms = field_int(body, "wait_ms", default=0, minimum=0, cap=MAX_POLL_MS)
    concurrency = field_int(body, "concurrency", default=None, minimum=0, maximum=MAX_SLOTS)
    running = field_int(body, "running", default=None, minimum=0, maximum=MAX_SLOTS)
    assert wait_ms is not None
    lease_ms = state.config.lease_ms

    async def stops() -> list[StopSignal] | None:
        if client_gone(request):
            return []  # the worker left: renew nothing for it
        found = await state.storage.heartbeat(
            endpoint, worker_id, leases, lease_ms, concurrency=concurrency, running=running
        )
        return found or None

    found = (
        await wait_until(
            state.storage,
            worker_channel(endpoint, worker_id),
            wait_ms / 1000,
            stops,
            state.shutdown,
            gone=lambda: client_gone(request),
            recheck_s=RECHECK_S,
        )
        or []
    )
    # Each stop names the token it is about, so a worker that (briefly) runs two attempts of one
    # job knows which attempt must stop (docs/protocol.md).
    stops = [{"id": s.job_id, "reason": s.reason, "token": leases.get(s.job_id)} for s in found]
    return respond(request, {"stop": stops, "lease_ms": lease_ms})


def parse_items(raw: Any) -> list[OutputItem]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ApiError(400, "items must be a list of {seq, kind, data}")
    try:
        items = [OutputItem.from_wire(item) for item in raw]
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    for item in items:
        if item.kind == "chunk":
            size = len(pack(item.data))
            if size > MAX_CHUNK_BYTES:
                raise ApiError(
                    413,
                    f"stream chunk seq {item.seq} is {size} bytes, over the limit of "
                    f"{MAX_CHUNK_BYTES}; split it into smaller chunks",
                    limit=MAX_CHUNK_BYTES,
                )
    return items


def token_of(body: dict[str, Any]) -> str:
    token = field_str(body, "token", required=True)
    assert token is not None
    return token


@routes.post(
    PREFIX + WORKER_OUTPUT, expect_handler=expect_within(lambda cfg: cfg.result_limit + _OUTPUT_OVERHEAD)
)
@worker_op
async def output(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    job_id = job_id_of(request)
    body = await read_object(request, cfg.result_limit + _OUTPUT_OVERHEAD, "output", finite=False)
    token = token_of(body)
    items = parse_items(body.get("items"))
    try:
        next_seq = await state.storage.append_output(endpoint, job_id, token, items)
    except (StaleLease, JobNotFound) as exc:
        raise stale(exc, job_id) from None
    except SequenceGap as exc:
        raise ApiError(
            409, str(exc) or f"output items must continue from seq {exc.expected}", expected=exc.expected
        ) from None
    return respond(request, {"next_seq": next_seq})


@routes.post(PREFIX + WORKER_RELEASE)
@worker_op
async def release(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    job_id = job_id_of(request)
    body = await read_object(request, _CONTROL_BODY, "release", finite=False)
    token = token_of(body)
    try:
        released = await state.storage.release(endpoint, job_id, token)
    except JobNotFound as exc:
        raise stale(exc, job_id) from None
    if not released:
        job = await state.storage.get(endpoint, job_id)
        raise ApiError(
            409,
            f"the lease token of job {job_id} is not current; nothing to release",
            state=job.state.value if job else None,
            stale=True,
        )
    log.info("job %s released back to the queue", job_id, extra={"job_id": job_id, "endpoint": endpoint})
    return respond(request, {"id": job_id, "status": JobState.IN_QUEUE.value})
