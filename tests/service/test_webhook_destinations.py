"""Issue #13 point 9: webhooks are not sent to loopback, link-local or private addresses unless
allowed by name or network, checked on the resolved address at delivery time."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import web

from tests.support.api import Api
from tests.support.servers import loopback_app
from worker_kit.errors import ConfigError
from worker_kit.service.config import EndpointConfig, ServiceConfig
from worker_kit.service.webhook_guard import WebhookGuard

from .conftest import MiniWorker


@pytest.fixture
async def receiver() -> Any:
    """A webhook receiver on loopback: (bodies it got, its port, an event set on each POST)."""
    hits: list[bytes] = []
    got = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        hits.append(await request.read())
        got.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with loopback_app(app) as base:
        yield hits, int(base.rsplit(":", 1)[1]), got


async def _run_and_finish(svc: Any, session: Any, webhook: str) -> str:
    api = Api(session, svc.endpoint_url("ep"))
    job_id = await api.run("x", webhook=webhook)
    worker = MiniWorker(api)
    assert (await worker.finish(await worker.claim_one(), output=1))[0] == 200
    return job_id


async def _wait_failed(svc: Any, session: Any, count: int = 1) -> dict[str, int]:
    api = Api(session, svc.endpoint_url("ep"))
    async with asyncio.timeout(10):
        while True:
            _, health = await api.get("/health")
            if health["webhooks"]["failed"] >= count:
                return health["webhooks"]
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "169.254.169.254", "10.1.2.3"])
async def test_internal_destinations_are_refused_by_default(
    service_factory: Any, session: Any, receiver: Any, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    hits, port, _ = receiver
    svc = await service_factory(webhook_allow=(), default=EndpointConfig(webhook_interval_s=0.05))
    with caplog.at_level(logging.WARNING, logger="worker_kit.service.webhooks"):
        await _run_and_finish(svc, session, f"http://{host}:{port}/hook")
        webhooks = await _wait_failed(svc, session)
    assert webhooks["delivered"] == 0 and hits == []
    assert any("refused" in r.getMessage() and "webhook_allow" in r.getMessage() for r in caplog.records)


async def test_allowed_networks_and_names_are_delivered(
    service_factory: Any, session: Any, receiver: Any
) -> None:
    hits, port, got = receiver
    for allow, host in ((("127.0.0.0/8",), "127.0.0.1"), (("localhost",), "localhost")):
        svc = await service_factory(webhook_allow=allow)
        await _run_and_finish(svc, session, f"http://{host}:{port}/hook")
        async with asyncio.timeout(10):
            await got.wait()
        assert len(hits) == 1
        hits.clear()
        got.clear()


async def test_the_resolved_address_is_checked_not_the_name() -> None:
    guard = WebhookGuard()
    # "localhost" is a name: what it resolves to decides, here loopback.
    assert "non-public" in (await guard.refusal("localhost", 80) or "")
    assert guard.address_refusal("example.org", "::ffff:127.0.0.1") is not None  # IPv4 mapped
    assert guard.address_refusal("example.org", "100.64.0.1") is not None  # shared address space
    assert guard.address_refusal("example.org", "93.184.216.34") is None
    allowed = WebhookGuard(["10.0.0.0/8", "hooks.internal"])
    assert allowed.address_refusal("x", "10.9.9.9") is None
    assert allowed.address_refusal("hooks.internal", "192.168.1.1") is None
    assert allowed.address_refusal("x", "192.168.1.1") is not None


def test_config_checks_webhook_allow() -> None:
    cfg = ServiceConfig.from_dict({"webhook_allow": ["127.0.0.1/32", "hooks.internal"]})
    assert cfg.webhook_allow == ("127.0.0.1/32", "hooks.internal")
    for bad in (["a b"], [""], "x/y/z", [5]):
        with pytest.raises(ConfigError, match="webhook_allow"):
            ServiceConfig.from_dict({"webhook_allow": bad})
