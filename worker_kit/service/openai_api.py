"""OpenAI-compatible passthrough: /v2/{endpoint_id}/openai/{path} (docs/service.md).

The HTTP request becomes an ordinary job whose input is
`{"openai_route": "/<path>", "openai_input": <the JSON body>}` (a GET carries no
`openai_input`). With `"stream": true` the job's stream is relayed as Server-Sent Events
(openai_relay.py); otherwise the request is held like /runsync and the job's output is the
response body. Errors are OpenAI error objects (`{"error": {"message", "type", "code"}}`),
whose statuses the `openai` client maps to its exception classes. The job's id is in the
`X-Worker-Kit-Job-Id` header. A client that leaves before the answer cancels its job:
nobody else is waiting for it.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ..job import JobRecord, JobState
from ..openai_compat import ERROR_STATUS, error_status
from ..protocol import API_PREFIX
from ..storage.base import job_channel
from .client_api import RUNSYNC_MAX_WAIT_MS, parse_policy
from .config import EndpointConfig
from .http import ApiError, client_gone, query_int, read_body, read_object, respond, wait_until
from .openai_relay import Disconnected, handler_error, job_error, relay_stream
from .state import ServiceState, authorized, job_log

routes = web.RouteTableDef()
log = logging.getLogger("worker_kit.service.openai")

JOB_HEADER = "X-Worker-Kit-Job-Id"
#: Longest OpenAI path accepted (the worker decides what a path means).
MAX_PATH = 512
_TYPE_OF_STATUS = {status: kind for kind, status in ERROR_STATUS.items() if kind != "api_error"}


def openai_error(request: web.Request, status: int, message: str, *, code: str | None = None,
                 headers: dict[str, str] | None = None) -> web.Response:  # fmt: skip
    kind = _TYPE_OF_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return respond(request, body, status=status, headers=headers)


@routes.route("GET", API_PREFIX + "/openai/{path:.*}")
@routes.route("POST", API_PREFIX + "/openai/{path:.*}")
async def openai_passthrough(request: web.Request) -> web.StreamResponse:
    try:
        state, endpoint, cfg = authorized(request, "client")
        if request.method == "POST":  # the body first, then a slot (see client_api.client_op)
            await read_body(request, cfg.run_body_limit, "/openai")
        with state.limiter.slot(endpoint, "openai", cfg.rate_limit("openai")):
            return await _serve(request, state, endpoint, cfg)
    except ApiError as exc:
        # The same failures as the other routes, in the shape an OpenAI client reads.
        return openai_error(request, exc.status, exc.message, headers=exc.headers)


async def _serve(
    request: web.Request, state: ServiceState, endpoint: str, cfg: EndpointConfig
) -> web.StreamResponse:
    route = "/" + request.match_info["path"]
    if len(route) > MAX_PATH:
        raise ApiError(400, f"the OpenAI path is longer than {MAX_PATH} characters")
    wait_ms = query_int(request, "wait", default=RUNSYNC_MAX_WAIT_MS, minimum=1, maximum=RUNSYNC_MAX_WAIT_MS)
    assert wait_ms is not None
    job_input: dict[str, Any] = {"openai_route": route}
    streaming = False
    if request.method == "POST":
        body = await read_object(request, cfg.run_body_limit, f"/openai{route}")
        job_input["openai_input"] = body
        streaming = body.get("stream") is True
    job = await state.submit(
        endpoint, cfg, job_input, policy=parse_policy(None, cfg), webhook=None,
        retention_ms=cfg.runsync_retention_ms,
    )  # fmt: skip
    state.metrics.job_submitted(endpoint)
    job_log(
        job,
        "job %s submitted to %s via /openai%s%s",
        job.id,
        endpoint,
        route,
        " (stream)" if streaming else "",
    )
    if streaming:
        return await _stream(request, state, endpoint, job)
    return await _wait_and_answer(request, state, endpoint, job, wait_ms)


async def _abandon(state: ServiceState, endpoint: str, job_id: str, why: str) -> None:
    """Cancel a job whose answer nobody will read."""
    job = await state.storage.cancel(endpoint, job_id)
    if job is not None and job.state is JobState.CANCELLED:
        state.job_ended(job, why)


async def _stream(
    request: web.Request, state: ServiceState, endpoint: str, job: JobRecord
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            JOB_HEADER: job.id,
        }
    )
    ended = False
    try:
        await response.prepare(request)
        ended = await relay_stream(request, response, state, endpoint, job.id)
    except (Disconnected, ConnectionError):
        log.info("OpenAI stream client of job %s went away; cancelling the job", job.id)
        await _abandon(state, endpoint, job.id, "its /openai stream client disconnected")
    if not ended and not client_gone(request):
        await _abandon(state, endpoint, job.id, "the service shut down during its /openai stream")
    return response


async def _wait_and_answer(
    request: web.Request, state: ServiceState, endpoint: str, job: JobRecord, wait_ms: int
) -> web.StreamResponse:
    latest = job

    async def ended() -> JobRecord | None:
        nonlocal latest
        current = await state.storage.get(endpoint, job.id)
        if current is None:
            raise ApiError(500, f"job {job.id} was removed while the request waited (purged or expired)")
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
    headers = {JOB_HEADER: job.id}
    if not latest.state.is_terminal:
        if client_gone(request):
            await _abandon(state, endpoint, job.id, "its /openai client disconnected")
            return web.Response(status=499)  # nobody reads it
        if state.shutdown.event.is_set():
            await _abandon(state, endpoint, job.id, "the service shut down while its /openai client waited")
            return openai_error(
                request, 503, "the service is shutting down; retry", code="shutdown", headers=headers
            )
        await _abandon(state, endpoint, job.id, f"no answer within the /openai wait of {wait_ms} ms")
        return openai_error(
            request,
            504,
            f"no answer within {wait_ms} ms; the job was cancelled",
            code="timeout",
            headers=headers,
        )
    returned = handler_error(latest)
    if returned is not None:
        body = {"error": returned}
        return respond(request, body, status=error_status(body) or 400, headers=headers)
    if latest.state is not JobState.COMPLETED:
        message, _, code = job_error(latest)
        status = 504 if latest.state is JobState.TIMED_OUT else 500
        return openai_error(request, status, message, code=code, headers=headers)
    answer = latest.output
    if answer is None and latest.stream_len:
        answer = await _streamed_answer(state, endpoint, job.id)
    if isinstance(answer, list) and len(answer) == 1:
        answer = answer[0]  # what an aggregated stream of one answer gives
    status = error_status(answer) or 200
    return respond(request, answer, status=status, headers=headers)


async def _streamed_answer(state: ServiceState, endpoint: str, job_id: str) -> list[Any]:
    """The chunks of a generator handler that yielded its answer (no aggregated output)."""
    items: list[Any] = []
    cursor = 0
    while True:
        job, chunk, cursor = await state.storage.read_stream(
            endpoint, job_id, cursor, max_bytes=state.config.stream_max_bytes
        )
        items += chunk
        if not chunk or cursor >= job.stream_len:
            return items
