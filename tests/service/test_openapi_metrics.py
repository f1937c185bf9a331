"""/openapi.json covers every registered route; /metrics and /health answer what they promise."""

from __future__ import annotations

from typing import Any

from worker_kit.service.app import create_app
from worker_kit.service.config import ServiceConfig

from .conftest import Api, MiniWorker


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


async def test_metrics_report_jobs_requests_and_webhooks(service: Any, api: Api, worker: MiniWorker) -> None:
    await api.run(1)
    await worker.finish(await worker.claim_one(), output=1)
    await api.run(2)
    async with api.session.get(service.url + "/metrics") as resp:
        assert resp.status == 200 and resp.content_type == "text/plain"
        text = await resp.text()
    lines = text.splitlines()
    assert 'worker_kit_jobs{endpoint="ep",state="COMPLETED"} 1' in lines
    assert 'worker_kit_jobs{endpoint="ep",state="IN_QUEUE"} 1' in lines
    assert 'worker_kit_jobs_submitted_total{endpoint="ep"} 2' in lines
    assert 'worker_kit_jobs_ended_total{endpoint="ep",state="COMPLETED"} 1' in lines
    assert (
        'worker_kit_http_requests_total{route="/v2/{endpoint_id}/run",method="POST",status="200"} 2' in lines
    )
    assert any(line.startswith('worker_kit_webhooks{outcome="delivered"}') for line in lines)
    for line in lines:  # every sample line is "name{labels} number"
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])
