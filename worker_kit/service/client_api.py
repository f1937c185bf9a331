"""The public client routes under /v2/{endpoint_id} (docs/service.md, DESIGN.md's table).

Each handler validates everything before it calls storage once, so a bad request never
changes state. Storage owns the transitions; this module only checks, calls and renders.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..errors import JobConflict, JobNotFound
from ..job import JobRecord, JobState, Policy
from ..protocol import API_PREFIX, MAX_POLL_MS
from ..protocol.answers import HealthAnswer, JobAnswer, PurgeAnswer, StreamAnswer
from ..protocol.submit import MAX_POLICY_MS, SubmitRequest, decode_policy
from ..storage import rules
from ..storage.base import job_channel
from .access import UNLIMITED, check_key
from .config import EndpointConfig
from .expect import expect_within
from .guard import TAKES_STATE
from .http import (
    ApiError,
    body_content_type,
    body_read,
    client_gone,
    decode_object,
    job_id_of,
    query_int,
    read_body,
    read_optional_object,
    respond,
    wait_until,
)
from .sse import MAX_CURSOR
from .state import STATE, ServiceState, job_log

routes = web.RouteTableDef()
log = logging.getLogger("worker_kit.service")

PREFIX = API_PREFIX
RUNSYNC_DEFAULT_WAIT_MS = 90_000
RUNSYNC_MAX_WAIT_MS = 300_000
#: Bodies of routes that take none (POST /status, /cancel...) are read up to this size.
_SMALL_BODY = 64 * 1024
#: A worker counts in /health while it was seen (claim or heartbeat) this recently.
WORKER_SEEN_WINDOW_S = MAX_POLL_MS / 1000 + 5

Handler = Callable[[web.Request, ServiceState, str, EndpointConfig], Awaitable[web.StreamResponse]]


def client_op(op: str | None) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """Resolve the endpoint, check the client key, then hold a rate-limit slot for `op`."""

    what = f"/{op}"

    def decorate(fn: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @functools.wraps(fn)
        async def handle(request: web.Request, state: ServiceState | None = None) -> web.StreamResponse:
            # authorized(request, "client"), written out: every client request passes here.
            if state is None:  # else the guard handed it over (TAKES_STATE)
                state = request.app[STATE]
            endpoint = request.match_info["endpoint_id"]
            cfg = state.endpoint_config(endpoint)
            if cfg.client_keys:  # else the endpoint is open to clients (check_key's first test)
                check_key(request, cfg, "client")
            if op is None:
                return await fn(request, state, endpoint, cfg)
            if request.method == "POST" and request.body_exists:
                # Read the body before taking a slot: a client trickling its body must not hold
                # one of the few concurrent slots while it does (read_body keeps the bytes).
                await read_body(request, _body_limit(op, cfg), what)
            slot = state.limiter.slot(endpoint, op, cfg.rate_limit(op))
            if slot is UNLIMITED:  # no limit on this operation: no context to enter and leave
                return await fn(request, state, endpoint, cfg)
            with slot:
                return await fn(request, state, endpoint, cfg)

        setattr(handle, TAKES_STATE, True)
        return handle

    return decorate


def _body_limit(op: str, cfg: EndpointConfig) -> int:
    if op == "run":
        return cfg.run_body_limit
    return cfg.runsync_body_limit if op == "runsync" else _SMALL_BODY


def not_found(job_id: str) -> ApiError:
    return ApiError(404, f"job {job_id} not found (unknown, of another endpoint, or past its retention)")


# -- submit ---------------------------------------------------------------------------------------


def parse_policy(raw: Any, cfg: EndpointConfig) -> Policy:
    """A submit's policy (worker_kit.protocol.submit holds the rules; None: the endpoint's)."""
    return decode_policy(raw, cfg.execution_timeout_ms, cfg.ttl_ms)


async def _submit(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig, *, sync: bool
) -> JobRecord:
    """What /run and /runsync store."""
    what = "/runsync" if sync else "/run"
    # The body client_op has read is decoded as is, without a second read_body.
    raw = body_read(request)
    if raw is None:
        raw = await read_body(request, cfg.runsync_body_limit if sync else cfg.run_body_limit, what)
    body = decode_object(raw, body_content_type(request), what)
    submitted = SubmitRequest.decode(body, cfg.execution_timeout_ms, cfg.ttl_ms)
    job = await state.submit(
        endpoint,
        cfg,
        submitted.input,
        policy=submitted.policy,
        webhook=submitted.webhook,
        retention_ms=cfg.runsync_retention_ms if sync else cfg.run_retention_ms,
    )
    state.metrics.job_submitted(endpoint)
    job_log(job, "job %s submitted to %s%s", job.id, endpoint, " (runsync)" if sync else "")
    return job


@routes.post(PREFIX + "/run", expect_handler=expect_within(lambda cfg: cfg.run_body_limit))
@client_op("run")
async def run(request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig) -> web.Response:
    job = await _submit(request, state, endpoint, cfg, sync=False)
    return respond(request, JobAnswer.encode(job.id, job.state))


@routes.post(PREFIX + "/runsync", expect_handler=expect_within(lambda cfg: cfg.runsync_body_limit))
@client_op("runsync")
async def runsync(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    wait_ms = query_int(
        request, "wait", default=RUNSYNC_DEFAULT_WAIT_MS, minimum=0, maximum=RUNSYNC_MAX_WAIT_MS
    )
    assert wait_ms is not None
    job = await _submit(request, state, endpoint, cfg, sync=True)
    latest = job

    async def ended() -> JobRecord | None:
        nonlocal latest
        if client_gone(request):
            return latest  # nobody is waiting any more; the job goes on
        current = await state.storage.get(endpoint, job.id)
        if current is None:
            raise ApiError(404, f"job {job.id} was removed while /runsync waited (purged or expired)")
        latest = current
        return current if current.state.is_terminal else None

    await wait_until(
        state.storage,
        job_channel(job.id),
        wait_ms / 1000,
        ended,
        state.shutdown,
        gone=lambda: client_gone(request),
    )
    return respond(request, latest.to_status())


# -- read ---------------------------------------------------------------------------------------------


@routes.route("GET", PREFIX + "/status/{job_id}")
@routes.route("POST", PREFIX + "/status/{job_id}")
@client_op("status")
async def status(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    job_id = job_id_of(request)
    ttl = query_int(request, "ttl", default=None, minimum=0, maximum=MAX_POLICY_MS)
    if request.method == "POST":
        await read_optional_object(request, _SMALL_BODY, "/status")
    if ttl is None:
        answer = await state.storage.status(endpoint, job_id)
    else:
        job = await state.storage.set_retention(endpoint, job_id, ttl)
        answer = None if job is None else job.to_status()
    if answer is None:
        raise not_found(job_id)
    return respond(request, answer)


@routes.route("GET", PREFIX + "/stream/{job_id}")
@routes.route("POST", PREFIX + "/stream/{job_id}")
@client_op(None)
async def stream(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.StreamResponse:
    job_id = job_id_of(request)
    if "text/event-stream" in request.headers.get("Accept", ""):
        with state.limiter.slot(endpoint, "status", cfg.rate_limit("status")):
            if await state.storage.get(endpoint, job_id) is None:
                raise not_found(job_id)
        from .sse import stream_sse

        # A push stream lives as long as the job: it holds an "sse" slot, not a "status" one.
        with state.limiter.slot(endpoint, "sse", cfg.rate_limit("sse")):
            return await stream_sse(request, state.storage, endpoint, job_id)
    with state.limiter.slot(endpoint, "status", cfg.rate_limit("status")):
        return await _read_stream(request, state, endpoint, job_id)


async def _read_stream(request: web.Request, state: ServiceState, endpoint: str, job_id: str) -> web.Response:
    cursor = query_int(request, "cursor", default=None, minimum=0, maximum=MAX_CURSOR)
    wait_ms = query_int(request, "wait", default=0, minimum=0, maximum=MAX_POLL_MS)
    assert wait_ms is not None
    if request.method == "POST":
        await read_optional_object(request, _SMALL_BODY, "/stream")

    latest: tuple[JobRecord, list[Any], int] | None = None

    async def chunks() -> tuple[JobRecord, list[Any], int] | None:
        nonlocal latest
        if latest is not None and client_gone(request):
            return latest  # stop holding, and consume nothing for a client that left
        try:
            # One answer carries at most stream_max_bytes of chunks (at least one); `cursor`
            # says where the next call goes on, and a consuming read consumes only these.
            latest = await state.storage.read_stream(
                endpoint, job_id, cursor, max_bytes=state.config.stream_max_bytes
            )
        except JobNotFound:
            raise not_found(job_id) from None
        job, items, _ = latest
        return latest if items or job.state.is_terminal or wait_ms == 0 else None

    await wait_until(
        state.storage,
        job_channel(job_id),
        wait_ms / 1000,
        chunks,
        state.shutdown,
        gone=lambda: client_gone(request),
    )
    assert latest is not None
    job, items, next_cursor = latest
    return respond(request, StreamAnswer.encode(job_id, job.state, items, next_cursor))


# -- change ------------------------------------------------------------------------------------------


@routes.post(PREFIX + "/cancel/{job_id}")
@client_op("cancel")
async def cancel(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    job_id = job_id_of(request)
    await read_optional_object(request, _SMALL_BODY, "/cancel")
    before = await state.storage.get(endpoint, job_id)
    if before is None:
        raise not_found(job_id)
    if before.state.is_terminal:  # nothing to cancel; say how it ended
        return respond(request, JobAnswer.encode(job_id, before.state))
    job = await state.storage.cancel(endpoint, job_id)
    if job is None:
        raise not_found(job_id)
    if job.state is JobState.CANCELLED:
        state.job_ended(job, f"cancelled by a client while {before.state.value}")
    return respond(request, JobAnswer.encode(job_id, job.state))


@routes.post(PREFIX + "/retry/{job_id}")
@client_op("retry")
async def retry(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    job_id = job_id_of(request)
    await read_optional_object(request, _SMALL_BODY, "/retry")
    try:
        job = await state.storage.retry(endpoint, job_id)
    except JobNotFound:
        raise not_found(job_id) from None
    except JobConflict as exc:
        current = exc.state or "in another state"
        raise ApiError(
            409, f"job {job_id} is {current}; only FAILED or TIMED_OUT jobs can be retried", status=exc.state
        ) from None
    job_log(job, "job %s requeued by /retry (retry %d)", job.id, job.retries)
    return respond(request, JobAnswer.encode(job.id, job.state))


#: Queued jobs one purge step ends (each step is one bounded storage write).
PURGE_BATCH = rules.BATCH


@routes.post(PREFIX + "/purge-queue")
@client_op("purge")
async def purge_queue(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    await read_optional_object(request, _SMALL_BODY, "/purge-queue")
    # Bounded steps, each one short write: requests go on between them. Jobs queued after the
    # purge began may be taken too; a step that finds fewer than a full batch is the last.
    removed = 0
    while True:
        purged = await state.storage.purge(endpoint, limit=PURGE_BATCH)
        removed += len(purged)
        for job in purged:
            state.job_ended(job, "purged by /purge-queue")
        if len(purged) < PURGE_BATCH:
            break
    if removed:
        log.info("purged %d queued job(s) of %s", removed, endpoint, extra={"endpoint": endpoint})
    return respond(request, PurgeAnswer.encode(removed))


# -- health ----------------------------------------------------------------------------------------


async def endpoint_health(state: ServiceState, endpoint: str) -> dict[str, Any]:
    counts = await state.storage.counts(endpoint)
    workers = await state.storage.workers(endpoint, WORKER_SEEN_WINDOW_S)
    running = sum(1 for w in workers if w.running > 0)
    return HealthAnswer.encode(counts, len(workers) - running, running, await state.webhook_stats())


@routes.get(PREFIX + "/health")
@client_op(None)
async def health(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.Response:
    return respond(request, await endpoint_health(state, endpoint))
