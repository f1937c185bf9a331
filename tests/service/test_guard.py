"""Every answer goes through service/guard.py, with no aiohttp middleware: handlers' failures and
the router's own 404 and 405 answer as JSON, dot segments are refused on any path, and each
answer is counted in the metrics."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from worker_kit.service.app import create_app
from worker_kit.service.config import ServiceConfig
from worker_kit.service.runner import run_service
from worker_kit.storage import open_storage

from ..conftest import TEST_DEFAULTS


def _count(metrics: str, route: str, method: str, status: int) -> float:
    labels = {f'route="{route}"', f'method="{method}"', f'status="{status}"'}
    for line in metrics.splitlines():
        name, _, rest = line.partition("{")
        if name == "worker_kit_http_requests_total" and set(rest.rpartition("}")[0].split(",")) == labels:
            return float(line.split()[-1])
    return 0.0


async def test_paths_no_route_matches_answer_json_and_are_counted(service: Any, session: Any) -> None:
    async with session.get(service.url + "/metrics") as resp:
        before = await resp.text()
    async with session.get(service.url + "/nothing/here") as resp:
        assert resp.status == 404
        assert (await resp.json()) == {"error": "no such route: GET /nothing/here"}
    async with session.put(service.endpoint_url("ep") + "/run") as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "POST"
        assert (await resp.json())["error"] == "method PUT is not allowed on /v2/ep/run; use POST"
    async with session.delete(service.url + "/health") as resp:
        assert resp.status == 405 and "GET" in resp.headers["Allow"]
    async with session.get(service.url + "/metrics") as resp:
        after = await resp.text()
    assert _count(after, "(unmatched)", "GET", 404) == _count(before, "(unmatched)", "GET", 404) + 1
    assert _count(after, "(unmatched)", "PUT", 405) == _count(before, "(unmatched)", "PUT", 405) + 1
    assert _count(after, "/metrics", "GET", 200) >= 1  # a route's own label: its canonical path


@pytest.mark.parametrize(
    "path", ["/v2/ep/../health", "/v2/./status/x", "/nothing/%2e%2e/health", "/v2/ep/run/.."]
)
async def test_dot_segments_are_refused_on_every_path(service: Any, session: Any, path: str) -> None:
    async with session.post(URL(service.url + path, encoded=True), json={"input": 1}) as resp:
        assert resp.status == 400, path
        assert (await resp.json())["error"] == "path segments '.' and '..' are not allowed"


async def test_a_handler_that_crashes_answers_500_and_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'jobs.db'}")
    await storage.open()
    config = ServiceConfig(**{**TEST_DEFAULTS, "storage": "sqlite://:memory:"})
    try:
        async with run_service(config, storage) as svc, aiohttp.ClientSession() as session:

            async def crash(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("a bug in the store")

            storage.status = crash  # type: ignore[method-assign]
            with caplog.at_level(logging.ERROR, logger="worker_kit.service"):
                async with session.get(svc.endpoint_url("ep") + "/status/some-job") as resp:
                    assert resp.status == 500
                    body = await resp.json()
                    assert body == {"error": "internal error in the service; it has been logged"}
            [record] = [r for r in caplog.records if "unexpected error" in r.getMessage()]
            assert record.getMessage() == "unexpected error in GET /v2/ep/status/some-job"
            assert record.exc_info is not None and "a bug in the store" in str(record.exc_info[1])
    finally:
        await storage.close()


async def test_a_route_added_before_start_is_not_shadowed(tmp_path: Path) -> None:
    # What no route matches is found by a last entry of the router's index, put there at
    # startup: a route added after create_app (as an embedding program may) still answers.
    config = ServiceConfig(**{**TEST_DEFAULTS, "storage": f"sqlite:///{tmp_path / 'jobs.db'}"})
    app = create_app(config)

    async def extra(request: web.Request) -> web.Response:
        return web.json_response({"extra": request.match_info["name"]})

    app.router.add_get("/{name}", extra)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/added") as resp:
                assert resp.status == 200 and (await resp.json()) == {"extra": "added"}
            async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                assert resp.status == 200
            async with session.get(f"http://127.0.0.1:{port}/a/b") as resp:
                assert resp.status == 404 and (await resp.json())["error"] == "no such route: GET /a/b"
    finally:
        await runner.cleanup()
