"""The live dashboard (docs/operations.md): its static page, its push feed and a job's details.

- `GET /dashboard` and `/dashboard/{asset}`: the page, shipped in the package (dashboard_static/),
  plain HTML, CSS and JS with no build step and nothing loaded from elsewhere. It holds no data.
- `GET /v2/{endpoint_id}/dashboard/feed`: Server-Sent Events, one `snapshot` event (dashboard_data.py)
  each time something of the endpoint changes, at most every MIN_INTERVAL_S, and at least every
  RECHECK_S. Changes are noticed from storage notifications (a job queued, on any replica) and from
  requests this process served; the recheck covers changes made through other replicas.
- `GET /v2/{endpoint_id}/dashboard/jobs/{job_id}`: one job with its input, attempts and times.

The feed and job routes need the endpoint's client key, as /status does.
"""

from __future__ import annotations

import asyncio
import logging
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web

from ..job import JobRecord, JobState
from ..protocol import API_PREFIX, dumps_json
from ..storage.base import queue_channel
from .activity import activity_channel
from .config import EndpointConfig
from .dashboard_data import job_summary, snapshot
from .http import ApiError, client_gone, job_id_of, respond
from .state import ServiceState, authorized, state_of

log = logging.getLogger("worker_kit.service.dashboard")
routes = web.RouteTableDef()

STATIC = Path(__file__).with_name("dashboard_static")
_ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css", "favicon.svg": "image/svg+xml"}
#: The page loads only its own files and talks only to this service.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_FEED_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: Snapshots are sent at most this often (changes in between are folded into the next one) ...
MIN_INTERVAL_S = 0.5
#: ... and at least this often, so changes made through other replicas show too.
RECHECK_S = 2.0
#: Bodies larger than this (input, output, progress) are shown cut, as text.
PREVIEW_CHARS = 64 * 1024


@cache
def _static(name: str) -> bytes:
    return (STATIC / name).read_bytes()


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    return web.Response(
        text=(
            "<!doctype html><meta charset=utf-8><title>worker_kit</title>"
            "<h1>worker_kit service</h1><ul>"
            '<li><a href="/dashboard">Dashboard</a></li>'
            '<li><a href="/openapi.json">OpenAPI document</a></li>'
            '<li><a href="/metrics">Prometheus metrics</a></li>'
            '<li><a href="/health">Liveness</a></li></ul>'
        ),
        content_type="text/html",
        headers=_PAGE_HEADERS,
    )


@routes.get("/dashboard")
async def page(request: web.Request) -> web.Response:
    return web.Response(body=_static("index.html"), content_type="text/html", headers=_PAGE_HEADERS)


@routes.get("/dashboard/endpoints")
async def endpoints(request: web.Request) -> web.Response:
    """Endpoint ids to suggest in the page: configured ones, then those this process served (as
    /metrics labels them; open like /metrics, which shows the same ids)."""
    state = state_of(request)
    return respond(request, {"endpoints": state.metrics.endpoint.tracked()})


@routes.get("/dashboard/{asset}")
async def asset(request: web.Request) -> web.Response:
    name = request.match_info["asset"]
    if name not in _ASSETS:
        raise ApiError(404, f"no dashboard file {name!r}")
    return web.Response(body=_static(name), content_type=_ASSETS[name], headers=_PAGE_HEADERS)


def _states(request: web.Request) -> set[str] | None:
    raw = request.query.get("state", "").strip()
    if not raw:
        return None
    wanted = {part.strip() for part in raw.split(",") if part.strip()}
    unknown = wanted - {s.value for s in JobState}
    if unknown:
        raise ApiError(
            400,
            f"unknown state(s) {', '.join(sorted(unknown))}; use {', '.join(s.value for s in JobState)}",
        )
    return wanted


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {dumps_json(data)}\n\n".encode()


async def _changed(state: ServiceState, endpoint: str) -> None:
    """Return when something of `endpoint` may have changed, or after RECHECK_S."""
    waits = [
        asyncio.ensure_future(state.storage.wait(queue_channel(endpoint), RECHECK_S)),
        asyncio.ensure_future(state.storage.notifier.wait(activity_channel(endpoint), RECHECK_S)),
        asyncio.ensure_future(state.shutdown.event.wait()),
    ]
    try:
        await asyncio.wait(waits, timeout=RECHECK_S, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()


@routes.get(API_PREFIX + "/dashboard/feed")
async def feed(request: web.Request) -> web.StreamResponse:
    state, endpoint, cfg = authorized(request, "client")
    states = _states(request)
    # Lives as long as the page: it holds an "sse" slot, as a job's event stream does.
    with state.limiter.slot(endpoint, "sse", cfg.rate_limit("sse")):
        resp = web.StreamResponse(headers=_FEED_HEADERS)
        await resp.prepare(request)
        try:
            await _push(request, resp, state, endpoint, cfg, states)
        except ConnectionError:
            pass  # the page went away
        return resp


async def _push(
    request: web.Request,
    resp: web.StreamResponse,
    state: ServiceState,
    endpoint: str,
    cfg: EndpointConfig,
    states: set[str] | None,
) -> None:
    while not state.shutdown.event.is_set() and not client_gone(request):
        try:
            message = _event("snapshot", await snapshot(state, endpoint, cfg, states))
        except Exception as exc:  # the store is unreachable: say so, keep the page, try again
            log.warning("dashboard feed of %s could not read storage: %s", endpoint, exc)
            message = _event("error", {"error": f"cannot read the store: {exc}"})
        await resp.write(message)
        await _changed(state, endpoint)
        if not state.shutdown.event.is_set():
            await asyncio.sleep(MIN_INTERVAL_S)


def _shown(detail: dict[str, Any], name: str, value: Any) -> None:
    """Put `value` under `name`, or a cut text preview under `<name>Preview` when it is large."""
    encoded = dumps_json(value)
    if len(encoded) <= PREVIEW_CHARS:
        detail[name] = value
    else:
        detail[name + "Preview"] = encoded[:PREVIEW_CHARS]


def job_detail(job: JobRecord, show_input: bool) -> dict[str, Any]:
    detail = job_summary(job)
    detail.update(
        {
            "policy": {"executionTimeout": job.policy.execution_timeout_ms, "ttl": job.policy.ttl_ms},
            "streamLength": job.stream_len,
            "webhook": job.webhook is not None,
            "errorDetail": job.error_detail,
        }
    )
    if show_input:
        _shown(detail, "input", job.input)
    else:
        detail["inputHidden"] = True
    if job.progress is not None:
        _shown(detail, "progress", job.progress)
    if job.state.is_terminal and job.output is not None:
        _shown(detail, "output", job.output)
    return detail


@routes.get(API_PREFIX + "/dashboard/jobs/{job_id}")
async def job(request: web.Request) -> web.Response:
    state, endpoint, cfg = authorized(request, "client")
    job_id = job_id_of(request)
    with state.limiter.slot(endpoint, "status", cfg.rate_limit("status")):
        record = await state.storage.get(endpoint, job_id)
    if record is None:
        raise ApiError(
            404, f"job {job_id[:128]} not found (unknown, of another endpoint, or past its retention)"
        )
    return respond(request, job_detail(record, cfg.dashboard_inputs))
