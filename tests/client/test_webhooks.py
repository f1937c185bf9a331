"""Webhooks: signed deliveries of the final status, retried after failures, never blocking."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest

from worker_kit.client import AsyncEndpoint, sign_webhook, verify_webhook
from worker_kit.client.signing import ATTEMPT_HEADER, DELIVERY_HEADER, JOB_HEADER, SIGNATURE_HEADER
from worker_kit.service.config import EndpointConfig

from .conftest import ScriptedWorker, WebhookReceiver, free_port

SECRET = "s3cret-for-tests"


async def _stats_when(ep: AsyncEndpoint, predicate: Any, timeout: float = 30.0) -> dict[str, int]:
    """The webhook stats of /health once `predicate` holds for them."""
    deadline = time.monotonic() + timeout
    while True:
        stats = (await ep.health())["webhooks"]
        if predicate(stats) or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.02)


def test_sign_and_verify() -> None:
    body = b'{"id":"j","status":"COMPLETED"}'
    header = sign_webhook(SECRET, body, timestamp=1_700_000_000)
    headers = {SIGNATURE_HEADER: header}
    assert header.startswith("t=1700000000,v1=")
    assert verify_webhook(SECRET, headers, body, now=1_700_000_010)
    lowercase = {"x-worker-kit-signature": header}
    assert verify_webhook(SECRET.encode(), lowercase, body.decode(), now=1_700_000_000)
    assert verify_webhook(SECRET, {"HTTP_X_WORKER_KIT_SIGNATURE": header}, body, now=1_700_000_000)  # WSGI
    assert not verify_webhook(SECRET, headers, body + b" ", now=1_700_000_010)  # tampered body
    assert not verify_webhook("other", headers, body, now=1_700_000_010)  # wrong secret
    assert not verify_webhook(SECRET, headers, body, now=1_700_001_000)  # too old: a replay
    assert not verify_webhook(SECRET, {}, body)
    assert not verify_webhook(SECRET, {SIGNATURE_HEADER: "t=abc,v1=00"}, body)
    forged = header.replace("t=1700000000", "t=1700000500")  # a fresh timestamp on an old signature
    assert not verify_webhook(SECRET, {SIGNATURE_HEADER: forged}, body, now=1_700_000_500)


async def test_signed_delivery_of_the_final_status(service_factory: Any) -> None:
    svc = await service_factory(default=EndpointConfig(webhook_secret=SECRET, webhook_interval_s=0.1))
    url = svc.endpoint_url("hooks")
    async with WebhookReceiver() as receiver, ScriptedWorker(url) as _, AsyncEndpoint(url) as ep:
        handle = await ep.run({"output": {"result": "ok"}}, webhook=receiver.url)
        await handle.output(timeout=10)
        await asyncio.wait_for(receiver.delivered.wait(), 10)
        headers, body = receiver.calls[-1]
        status = json.loads(body)
        assert status["id"] == handle.id and status["status"] == "COMPLETED"
        assert status["output"] == {"result": "ok"}
        assert verify_webhook(SECRET, headers, body)
        assert headers[JOB_HEADER] == handle.id and headers[ATTEMPT_HEADER] == "1"
        assert headers["Content-Type"] == "application/json"
        stats = await _stats_when(ep, lambda st: st["pending"] == 0)
        assert stats == {"delivered": 1, "failed": 0, "pending": 0}


async def test_retried_after_500_until_delivered(service_factory: Any) -> None:
    svc = await service_factory(
        default=EndpointConfig(webhook_secret=SECRET, webhook_attempts=3, webhook_interval_s=0.1)
    )
    url = svc.endpoint_url("hooks")
    async with WebhookReceiver(fail_first=1) as receiver, AsyncEndpoint(url) as ep:
        handle = await ep.run({"never": "runs"}, webhook=receiver.url)
        await handle.cancel()  # a cancel ends the job too, and fires the webhook
        await asyncio.wait_for(receiver.delivered.wait(), 10)
        assert len(receiver.calls) == 2
        (h1, b1), (h2, b2) = receiver.calls
        assert b1 == b2 and json.loads(b2)["status"] == "CANCELLED"
        assert h1[DELIVERY_HEADER] == h2[DELIVERY_HEADER]  # same delivery id: receivers can dedupe
        assert [h1[ATTEMPT_HEADER], h2[ATTEMPT_HEADER]] == ["1", "2"]
        assert verify_webhook(SECRET, h2, b2)
        stats = await _stats_when(ep, lambda st: st["pending"] == 0)
        assert stats == {"delivered": 1, "failed": 0, "pending": 0}


async def test_failed_delivery_is_logged_and_counted(
    service_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    svc = await service_factory(default=EndpointConfig(webhook_attempts=2, webhook_interval_s=0.05))
    url = svc.endpoint_url("hooks")
    async with WebhookReceiver(fail_first=10) as receiver, AsyncEndpoint(url) as ep:
        with caplog.at_level(logging.WARNING, logger="worker_kit.service.webhooks"):
            handle = await ep.run({}, webhook=receiver.url)
            await handle.cancel()
            stats = await _stats_when(ep, lambda st: st["failed"] > 0)
        assert stats == {"delivered": 0, "failed": 1, "pending": 0}
        assert len(receiver.calls) == 2
        assert SIGNATURE_HEADER not in receiver.calls[0][0]  # no secret configured: unsigned
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(handle.id in r.getMessage() and "HTTP 500" in r.getMessage() for r in warnings)


async def test_a_pending_delivery_survives_a_restart(service_factory: Any, tmp_path: Any) -> None:
    # The outbox is in storage: a service stopped while a delivery waits for its retry leaves it
    # there, and the next service on the same store sends it (with the same delivery id).
    store = f"sqlite:///{tmp_path / 'hooks.db'}"
    cfg = EndpointConfig(webhook_attempts=3, webhook_interval_s=1.0)
    async with WebhookReceiver(fail_first=1) as receiver:
        first = await service_factory(storage=store, default=cfg)
        async with AsyncEndpoint(first.endpoint_url("hooks")) as ep:
            handle = await ep.run({}, webhook=receiver.url)
            await handle.cancel()
            await _stats_when(ep, lambda st: len(receiver.calls) > 0)
        assert len(receiver.calls) == 1  # refused with a 500; the retry is due 1 s later
        await first.runner.cleanup()  # stopped before that
        second = await service_factory(storage=store, default=cfg)
        async with AsyncEndpoint(second.endpoint_url("hooks")) as ep:
            await asyncio.wait_for(receiver.delivered.wait(), 10)
            stats = await _stats_when(ep, lambda st: st["pending"] == 0)
        assert stats == {"delivered": 1, "failed": 0, "pending": 0}
        (h1, b1), (h2, b2) = receiver.calls
        assert h1[DELIVERY_HEADER] == h2[DELIVERY_HEADER] and h2[ATTEMPT_HEADER] == "2"
        assert b1 == b2 and json.loads(b2)["id"] == handle.id


async def test_ending_a_job_never_waits_for_the_receiver(service_factory: Any) -> None:
    svc = await service_factory(default=EndpointConfig(webhook_attempts=5, webhook_interval_s=30))
    unreachable = f"http://127.0.0.1:{free_port()}/hook"
    async with AsyncEndpoint(svc.endpoint_url("hooks")) as ep:
        handle = await ep.run({}, webhook=unreachable)
        assert (await handle.cancel())["status"] == "CANCELLED"
        stats = await _stats_when(ep, lambda st: st["pending"] == 1)
        assert stats["pending"] == 1 and stats["delivered"] == 0  # waiting 30 s for its next attempt
        assert await svc.storage.webhooks_pending() == 1


async def test_purged_jobs_end_cancelled_and_fire_their_webhooks(
    service_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker_kit.service import client_api

    monkeypatch.setattr(client_api, "PURGE_BATCH", 2)  # 5 jobs take three purge steps
    svc = await service_factory(default=EndpointConfig(webhook_secret=SECRET))
    async with WebhookReceiver() as receiver, AsyncEndpoint(svc.endpoint_url("purged")) as ep:
        handles = [await ep.run({"n": i}, webhook=receiver.url) for i in range(5)]
        assert (await ep.purge_queue())["removed"] == 5
        for handle in handles:
            status = await handle.status()
            assert status["status"] == "CANCELLED" and "purge" in status["error"]
        stats = await _stats_when(ep, lambda st: st["delivered"] == 5)
        assert stats["delivered"] == 5
        delivered = sorted(json.loads(body)["id"] for _, body in receiver.calls)
        assert delivered == sorted(h.id for h in handles)
        assert all(json.loads(body)["status"] == "CANCELLED" for _, body in receiver.calls)
