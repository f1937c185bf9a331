"""The service's route lookup under /v2/{endpoint_id}/ (service/routing.py) answers exactly as
aiohttp's own index would, for every route, method and near miss."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from worker_kit.service.app import create_app
from worker_kit.service.config import ServiceConfig
from worker_kit.service.routing import EndpointRoutes

METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD")


def _paths(app: web.Application) -> list[str]:
    """Every route's path with its variables filled in, and near misses around each."""
    paths = ["/v2/ep", "/v2/ep/", "/v2//run", "/v2/ep/nothing", "/v2/ep/worker", "/v2/ep/worker/",
             "/v2/ep/worker/jobs", "/v2/ep/worker/jobs/", "/v2/ep/worker/jobs/j1", "/v2/ep%2Fx/run",
             "/v2/ep/openai/v1/chat/completions", "/v2/ep/status/j%2F1", "/health",
             "/dashboard/app.js"]  # fmt: skip
    for resource in app.router.resources():
        filled = resource.canonical.replace("{endpoint_id}", "ep").replace("{path}", "v1/models")
        for name in ("job_id", "worker_id", "asset"):
            filled = filled.replace("{" + name + "}", "x1")
        paths += [filled, filled + "/", filled + "/more", filled.rstrip("/") + "x"]
    return paths


async def _answer(router: web.UrlDispatcher, method: str, path: str) -> tuple[Any, ...]:
    info = await router.resolve(make_mocked_request(method, path))
    error = info.http_exception
    if error is not None:
        return ("error", error.status, sorted(getattr(error, "allowed_methods", ()) or ()))
    return ("route", info.route.resource, info.route.method, dict(info))


async def test_every_route_resolves_as_aiohttp_would() -> None:
    app = create_app(ServiceConfig())
    # The stand-in is in use for the worker routes...
    assert any(isinstance(r, EndpointRoutes) for found in app.router._resource_index.values() for r in found)
    # ...and aiohttp's own index of the same resources, in the same order, is the reference.
    reference = web.UrlDispatcher()
    for resource in app.router.resources():
        reference.register_resource(resource)
    compared = 0
    for path in _paths(app):
        for method in METHODS:
            assert await _answer(app.router, method, path) == await _answer(reference, method, path), (
                method, path)  # fmt: skip
            compared += 1
    assert compared > 500


async def test_routes_listing_is_unchanged() -> None:
    app = create_app(ServiceConfig())
    canonicals = [r.canonical for r in app.router.resources()]
    assert "/v2/{endpoint_id}/worker/exchange" in canonicals
    assert not any(isinstance(r, EndpointRoutes) for r in app.router.resources())
    assert len(canonicals) == len(set(canonicals))


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("POST", "/worker/exchange", 401), ("GET", "/worker/exchange", 405), ("POST", "/worker/nothing", 404),
     ("GET", "/worker/jobs/j1/finish", 405), ("GET", "/health", 200)],
)  # fmt: skip
async def test_answers_over_http(
    service_factory: Any, session: Any, method: str, path: str, status: int
) -> None:
    """Through the real service: a worker route found (401 without the key it asks for), a path
    that exists for other methods (405 naming them), and one that does not exist (404)."""
    from worker_kit.service.config import EndpointConfig

    svc = await service_factory(default=EndpointConfig(worker_keys=("secret-worker-key",)))
    async with session.request(method, svc.endpoint_url("ep") + path) as resp:
        assert resp.status == status, await resp.text()
        body = await resp.json()
        if status == 405:
            assert "POST" in body["error"] and resp.headers["Allow"] == "POST"
        elif status == 404:
            assert body["error"] == f"no such route: {method} /v2/ep{path}"
