"""The aiohttp application: routes (each guarded, guard.py) and the lifecycles of storage, webhooks, sweeper.

`create_app(config)` builds it; `runner.run_service` serves it. Handlers live in client_api.py
(the public API) and worker_api.py (the native worker protocol).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from .. import __version__
from ..protocol.answers import LivenessAnswer
from ..storage import Storage, open_storage
from . import client_api, dashboard, hosted_api, openai_api, query_api, scaling, worker_api
from .config import ServiceConfig
from .guard import guarded_routes, index_unmatched
from .http import BODY_TIMEOUT_S, respond
from .metrics_store import read_store, store_metrics_ctx
from .openapi import openapi_spec
from .routing import index_endpoint_routes
from .state import STATE, ServiceState, state_of
from .sweeper import sweeper_ctx
from .worker_finish import exchange  # noqa: F401 - registers /finish and /exchange on worker_api.routes

service_routes = web.RouteTableDef()

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


async def _index_unmatched(app: web.Application) -> None:
    # At startup, once every route is in (tests add some after create_app): it must be last.
    index_unmatched(app.router, app[STATE])


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
    app = web.Application(client_max_size=biggest + worker_api._OUTPUT_OVERHEAD)
    app[STATE] = state
    app[BODY_TIMEOUT_S] = config.body_timeout_s
    app[hosted_api.HOSTED] = hosted_api.HostedState()
    for table in (service_routes, client_api.routes, openai_api.routes, query_api.routes, worker_api.routes,
                  hosted_api.routes, scaling.routes, dashboard.routes):  # fmt: skip
        app.add_routes(guarded_routes(table, state))  # each handler's failures answered as JSON
    index_endpoint_routes(app.router)  # a dict lookup instead of ~30 patterns tried in turn
    app.on_startup.append(_index_unmatched)
    app.cleanup_ctx.append(_storage_ctx(owned))
    app.cleanup_ctx.append(_webhooks_ctx)
    app.cleanup_ctx.append(store_metrics_ctx)
    app.cleanup_ctx.append(sweeper_ctx)
    app.on_shutdown.append(_on_shutdown)
    return app
