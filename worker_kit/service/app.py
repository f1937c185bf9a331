"""The aiohttp application: routes, error middleware, and the lifecycles of storage, webhooks and sweeper.

`create_app(config)` builds it; `runner.run_service` serves it. Handlers live in client_api.py
(the public API) and worker_api.py (the native worker protocol).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from .. import __version__
from ..errors import StorageError, StoreUnavailable
from ..protocol.answers import LivenessAnswer
from ..storage import Storage, open_storage
from . import client_api, dashboard, hosted_api, openai_api, query_api, scaling, worker_api
from .activity import activity_channel
from .config import ServiceConfig
from .http import BODY_TIMEOUT_S, ApiError, respond
from .metrics_store import read_store, store_metrics_ctx
from .openapi import openapi_spec
from .routing import index_endpoint_routes
from .state import STATE, ServiceState, state_of
from .sweeper import sweeper_ctx
from .worker_finish import exchange  # noqa: F401 - registers /finish and /exchange on worker_api.routes

log = logging.getLogger("worker_kit.service")
access_log = logging.getLogger("worker_kit.service.access")

service_routes = web.RouteTableDef()

#: Seconds a client is told to wait (Retry-After) while the job store is unreachable.
STORE_RETRY_AFTER_S = 2


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
    if exc.content_type == "application/json" and exc.text:
        try:
            body = json.loads(exc.text)
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return respond(request, body, status=exc.status, headers=headers)
    if exc.status == 404:
        message = f"no such route: {request.method} {request.path}"
    elif exc.status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        message = f"method {request.method} is not allowed on {request.path}" + (
            f"; use {allowed}" if allowed else ""
        )
    elif exc.status == 413:
        message = f"request body too large: {exc.text or exc.reason}"
    else:
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
    return respond(request, {"error": message}, status=exc.status, headers=headers)


def _store_failed(request: web.Request, exc: Exception) -> web.Response:
    """503 for a store that is down, restarting or failing (a write it could not commit).

    Nothing acknowledged is lost, and clients and workers retry 503s with backoff, so this is an
    answer with one log line, not a crash with a traceback."""
    reason = "unreachable" if isinstance(exc, StoreUnavailable) else "failing"
    if "disk is full" in str(exc) or "No space left" in str(exc):  # SQLITE_FULL, ENOSPC
        reason = "full (no space left on its disk)"
    log.warning("%s %s: the job store is %s: %s", request.method, request.path, reason, exc)
    return respond(
        request,
        {"error": f"the job store is {reason}, retry shortly: {exc}", "retry_after": STORE_RETRY_AFTER_S},
        status=503,
        headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
    )


def service_middleware(state: ServiceState) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The app's one middleware, bound to its state: every failure answers `{"error": ...}`
    (our ApiErrors, aiohttp's own 404/405/413, and crashes); paths with dot segments are
    refused; every answer is counted in the metrics.

    One middleware, not one per concern: each layer costs every request a coroutine."""
    metrics, publish = state.metrics, state.storage.notifier.publish
    monotonic = time.monotonic
    routes: dict[web.AbstractRoute, tuple[str, bool]] = {}  # _route_facts, once per route

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = monotonic()
        try:
            raw_path = request.raw_path
            if ("." in raw_path or "%" in raw_path) and _has_dot_segment(raw_path):
                raise ApiError(400, "path segments '.' and '..' are not allowed")
            response = await handler(request)
        except ApiError as exc:
            response = respond(request, exc.body(), status=exc.status, headers=exc.headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _http_error(request, exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if type(exc) in (StorageError, StoreUnavailable):  # not the job rules' answers (JobNotFound...)
                response = _store_failed(request, exc)
            else:
                log.exception("unexpected error in %s %s", request.method, request.path)
                response = respond(
                    request, {"error": "internal error in the service; it has been logged"}, status=500
                )
        match_info = request.match_info
        method, status = request.method, response.status
        route, changes = routes.get(match_info.route) or _route_facts(match_info.route, method, routes)
        if status < 300 and changes:
            endpoint = match_info.get("endpoint_id")
            if endpoint is not None:
                # Something of the endpoint changed: wake this process's dashboard feeds (cheap: a
                # dict lookup when none is open).
                publish(activity_channel(endpoint))
        metrics.request(route, method, status, monotonic() - started)
        if access_log.isEnabledFor(logging.DEBUG):
            access_log.debug(
                "%s %s %d %.1fms",
                method,
                request.path_qs,
                status,
                (monotonic() - started) * 1000,
                extra={"method": method, "path": request.path, "status": status},
            )
        return response

    return middleware


def _route_facts(
    matched: web.AbstractRoute, method: str, known: dict[web.AbstractRoute, tuple[str, bool]]
) -> tuple[str, bool]:
    """(metric label, whether a success may change jobs) of a request's route, remembered for a
    route of the app (not for aiohttp's made-per-request routes of a 404 or 405)."""
    resource = matched.resource
    if resource is None:
        return "(unmatched)", method == "POST"
    route = resource.canonical
    # Every POST may change jobs, and the hosted protocol's GET job-take does.
    facts = (route, method == "POST" or "/job-take" in route)
    if matched.method == method and len(known) < 1000:  # not a "*" route: one method, one answer
        known[matched] = facts
    return facts


_DOT_SEGMENTS = frozenset({".", "..", "%2e", "%2e%2e", ".%2e", "%2e."})


def _has_dot_segment(raw_path: str) -> bool:
    """Whether the path has a `.` or `..` segment (raw or percent-encoded): `/v2/../health`
    must not quietly be `/health`, nor `/v2/./status/x` an endpoint called `.`."""
    path = raw_path.split("?", 1)[0]
    if "." not in path and "%" not in path:
        return False  # nearly every path: no segment to look at
    return any(segment.lower() in _DOT_SEGMENTS for segment in path.split("/"))


# -- service-level routes -------------------------------------------------------------------------


@service_routes.get("/health")
async def liveness(request: web.Request) -> web.Response:
    state = state_of(request)
    return respond(request, LivenessAnswer.encode(__version__, time.time() - state.started_at))


@service_routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    state = state_of(request)
    await read_store(state)
    return web.Response(
        body=state.metrics.render(),
        headers={"Content-Type": CONTENT_TYPE_LATEST, "X-Content-Type-Options": "nosniff"},
    )


@service_routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return respond(request, openapi_spec())


# -- lifecycles ------------------------------------------------------------------------------------


def _storage_ctx(owned: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        storage = app[STATE].storage
        if owned:
            await storage.open()
        try:
            yield
        finally:
            if owned:
                await storage.close()

    return ctx


async def _webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    from .webhooks import WebhookSender

    state = app[STATE]
    sender = WebhookSender(state.storage, state.config)
    await sender.start()
    app[STATE].webhooks = sender
    try:
        yield
    finally:
        app[STATE].webhooks = None
        await sender.close()


async def _on_shutdown(app: web.Application) -> None:
    # Answer held long-polls now, so shutdown does not wait out their timeouts.
    app[STATE].shutdown.event.set()


def create_app(config: ServiceConfig, storage: Storage | None = None) -> web.Application:
    """The service as an aiohttp app.

    Without `storage`, the app opens `config.storage` at startup and closes it at cleanup.
    A storage passed in belongs to the caller, who opens it before and closes it after.
    """
    owned = storage is None
    store = open_storage(config.storage) if storage is None else storage
    # Bodies are read by hand against per-route limits (http.read_body); this only caps what
    # aiohttp would buffer itself if something called request.read().
    biggest = max(
        max(c.runsync_body_limit, c.run_body_limit, c.result_limit) for _, c in config.all_endpoint_configs()
    )
    state = ServiceState(config=config, storage=store)
    app = web.Application(
        middlewares=[service_middleware(state)],
        client_max_size=biggest + worker_api._OUTPUT_OVERHEAD,
    )
    app[STATE] = state
    app[BODY_TIMEOUT_S] = config.body_timeout_s
    app.add_routes(service_routes)
    app.add_routes(client_api.routes)
    app.add_routes(openai_api.routes)
    app.add_routes(query_api.routes)
    app.add_routes(worker_api.routes)
    app[hosted_api.HOSTED] = hosted_api.HostedState()
    app.add_routes(hosted_api.routes)
    app.add_routes(scaling.routes)
    app.add_routes(dashboard.routes)
    index_endpoint_routes(app.router)  # a dict lookup instead of ~30 patterns tried in turn
    app.cleanup_ctx.append(_storage_ctx(owned))
    app.cleanup_ctx.append(_webhooks_ctx)
    app.cleanup_ctx.append(store_metrics_ctx)
    app.cleanup_ctx.append(sweeper_ctx)
    app.on_shutdown.append(_on_shutdown)
    return app
