"""/openapi.json covers every registered route; /health answers what it promises."""

from __future__ import annotations

from typing import Any

from worker_kit.service.app import create_app
from worker_kit.service.config import ServiceConfig


def registered_routes() -> set[tuple[str, str]]:
    app = create_app(ServiceConfig(storage="sqlite://:memory:"))
    found = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        found.add((route.resource.canonical, route.method.lower()))
    return found


async def test_openapi_describes_every_route(service: Any, session: Any) -> None:
    async with session.get(service.url + "/openapi.json") as resp:
        assert resp.status == 200
        spec = await resp.json()
    assert spec["openapi"].startswith("3.")
    routes = registered_routes()
    assert len(routes) >= 18
    described = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert routes - described == set(), "routes missing from /openapi.json"
    assert described - routes == set(), "/openapi.json describes routes that do not exist"
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op["summary"] and "200" in op["responses"], (path, method)
            if method == "post" and "/worker/" in path:
                assert "requestBody" in op, path
    refs = {name for name in spec["components"]["schemas"]}
    assert {"SubmitRequest", "Status", "Stream", "Health", "Error", "FinishRequest"} <= refs


async def test_liveness(service: Any, session: Any) -> None:
    async with session.get(service.url + "/health") as resp:
        body = await resp.json()
    assert resp.status == 200 and body["status"] == "ok" and body["version"]
