"""What the background sweep enforces: leases, execution timeouts, TTLs, retention; and webhooks."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.api import Api
from tests.support.servers import loopback_app
from worker_kit.service import sweeper
from worker_kit.service.config import EndpointConfig, ServiceConfig
from worker_kit.service.runner import run_service

from ..conftest import TEST_DEFAULTS
from .conftest import MiniWorker
from .test_jobs import wait_for_gone, wait_for_status
from .test_metrics import scrape, value


async def make_api(service_factory: Any, session: aiohttp.ClientSession, **overrides: Any) -> Api:
    svc = await service_factory(**overrides)
    return Api(session, svc.endpoint_url("ep"))


async def test_vanished_worker_lease_expires_requeued_then_failed(service_factory: Any, session: Any) -> None:
    api = await make_api(service_factory, session, lease_ms=300, max_attempts=2)
    worker = MiniWorker(api, "w1")
    job_id = await api.run("lost")
    first = await worker.claim_one()
    assert first["attempt"] == 1
    # The worker vanishes: no heartbeat. The lease expires and the job is queued again.
    await wait_for_status(api, job_id, "IN_QUEUE")
    second = await MiniWorker(api, "w2").claim_one()
    assert second["id"] == job_id and second["attempt"] == 2 and second["token"] != first["token"]

    # The revived first worker's reports carry a stale token: refused, and its heartbeat says LOST.
    status, body = await worker.finish(first, output="stale result")
    assert status == 409 and body["stale"] is True and body["state"] == "IN_PROGRESS"
    status, body = await worker.output(first, [{"seq": 0, "kind": "chunk", "data": "x"}])
    assert status == 409 and body["stale"] is True
    status, body = await worker.heartbeat({job_id: first["token"]})
    assert body["stop"] == [{"id": job_id, "reason": "LOST", "token": first["token"]}]

    # The second worker vanishes too: attempts are spent, the job FAILS with a clear error.
    failed = await wait_for_status(api, job_id, "FAILED")
    assert "lost" in failed["error"].lower() or "lease" in failed["error"].lower()
    assert (await api.get("/health"))[1]["jobs"]["failed"] == 1


async def test_heartbeats_keep_a_lease_alive(service_factory: Any, session: Any) -> None:
    api = await make_api(service_factory, session, lease_ms=400)
    worker = MiniWorker(api)
    job_id = await api.run("kept")
    job = await worker.claim_one()
    for _ in range(8):  # well past one lease period in total
        status, body = await worker.heartbeat({job_id: job["token"]}, wait_ms=100)
        assert status == 200 and body["stop"] == []
    assert (await api.status(job_id))["status"] == "IN_PROGRESS"
    assert (await worker.finish(job, output="ok"))[0] == 200


async def test_a_lease_that_ran_out_while_the_service_was_down_survives_its_restart(
    tmp_path: Any, session: aiohttp.ClientSession
) -> None:
    # The service is down longer than the lease: workers could not renew. After the restart a live
    # worker's heartbeat keeps its job; a worker that never comes back loses its job a lease later.
    config = ServiceConfig(**{**TEST_DEFAULTS, "storage": f"sqlite:///{tmp_path / 'restart.db'}",
                              "lease_ms": 300})  # fmt: skip
    async with run_service(config) as svc:
        api = Api(session, svc.endpoint_url("ep"))
        kept_id, lost_id = await api.run("kept"), await api.run("lost")
        kept = await MiniWorker(api, "alive").claim_one()
        lost = await MiniWorker(api, "dead").claim_one()
        assert (kept["id"], lost["id"]) == (kept_id, lost_id)
    await asyncio.sleep(0.6)  # down for two lease periods
    async with run_service(dataclasses.replace(config, lease_ms=1500)) as svc:
        api = Api(session, svc.endpoint_url("ep"))
        alive = MiniWorker(api, "alive")
        await asyncio.sleep(0.5)  # several sweeps, still within the first lease period
        status, body = await alive.heartbeat({kept_id: kept["token"]})
        assert status == 200 and body["stop"] == [], body
        assert (await api.status(lost_id))["status"] == "IN_PROGRESS"
        assert (await alive.finish(kept, output="done"))[0] == 200
        assert (await api.status(kept_id))["output"] == "done"
        await wait_for_status(api, lost_id, "IN_QUEUE")  # its worker never came back


async def test_execution_timeout_enforced_by_the_service(service_factory: Any, session: Any) -> None:
    api = await make_api(service_factory, session, deadline_grace_ms=100)
    worker = MiniWorker(api)
    job_id = await api.run("slow", policy={"executionTimeout": 200})
    job = await worker.claim_one()
    assert job["policy"]["executionTimeout"] == 200 and job["deadline_ms"] <= 200
    _, body = await worker.heartbeat({job_id: job["token"]}, wait_ms=10_000)
    assert body["stop"] == [{"id": job_id, "reason": "TIMED_OUT", "token": job["token"]}]
    timed_out = await api.status(job_id)
    assert timed_out["status"] == "TIMED_OUT" and timed_out["error"]
    assert (await worker.finish(job, output="late"))[0] == 409


async def test_ttl_expires_a_queued_job(api: Api) -> None:
    job_id = await api.run("never claimed", policy={"ttl": 200})
    body = await wait_for_status(api, job_id, "TIMED_OUT")
    assert "ttl" in body["error"].lower()


async def test_result_retention_then_gone(service_factory: Any, session: Any) -> None:
    api = await make_api(service_factory, session, default=EndpointConfig(run_retention_ms=300))
    worker = MiniWorker(api)
    job_id = await api.run("r")
    await worker.finish(await worker.claim_one(), output=1)
    assert (await api.status(job_id))["status"] == "COMPLETED"
    await wait_for_gone(api, job_id)
    status, body = await api.get(f"/status/{job_id}")
    assert status == 404 and "not found" in body["error"]


async def test_runsync_jobs_use_the_runsync_retention(service_factory: Any, session: Any) -> None:
    api = await make_api(service_factory, session, default=EndpointConfig(runsync_retention_ms=300))
    worker = MiniWorker(api)
    waiting = asyncio.create_task(api.post("/runsync?wait=10000", {"input": 1}))
    await worker.finish(await worker.claim_one(), output=2)
    _, body = await waiting
    assert body["status"] == "COMPLETED"
    await wait_for_gone(api, body["id"])
    # A /run job of the same endpoint keeps the long default.
    job_id = await api.run(3)
    await worker.finish(await worker.claim_one(), output=4)
    await asyncio.sleep(0.6)
    assert (await api.status(job_id))["status"] == "COMPLETED"


async def test_status_ttl_shortens_the_retention(api: Api, worker: MiniWorker) -> None:
    job_id = await api.run("t")
    await worker.finish(await worker.claim_one(), output=1)
    status, body = await api.get(f"/status/{job_id}?ttl=200")
    assert status == 200 and body["status"] == "COMPLETED"
    await wait_for_gone(api, job_id)


async def test_status_ttl_on_a_running_job_counts_from_its_end(api: Api, worker: MiniWorker) -> None:
    job_id = await api.run("t")
    job = await worker.claim_one()
    assert (await api.post(f"/status/{job_id}?ttl=200"))[0] == 200
    await asyncio.sleep(0.5)
    assert (await api.status(job_id))["status"] == "IN_PROGRESS"  # kept while it runs
    await worker.finish(job, output=1)
    await wait_for_gone(api, job_id)


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every POST body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        self.arrived.set()
        return web.Response(text="ok")

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(10):
            while not self.bodies:
                self.arrived.clear()
                await self.arrived.wait()
        return self.bodies.pop(0)


async def test_webhooks_fire_on_finish_cancel_and_sweep(service_factory: Any, session: Any) -> None:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    async with loopback_app(app) as base:
        hook = f"{base}/hook"
        api = await make_api(service_factory, session, default=EndpointConfig(webhook_interval_s=0.1))
        worker = MiniWorker(api)

        finished = await api.run(1, webhook=hook)
        await worker.finish(await worker.claim_one(), output="done")
        body = await receiver.next()
        assert body["id"] == finished and body["status"] == "COMPLETED" and body["output"] == "done"

        cancelled = await api.run(2, webhook=hook)
        await api.post(f"/cancel/{cancelled}")
        body = await receiver.next()
        assert body["id"] == cancelled and body["status"] == "CANCELLED"

        expired = await api.run(3, webhook=hook, policy={"ttl": 100})
        body = await receiver.next()
        assert body["id"] == expired and body["status"] == "TIMED_OUT"

        await asyncio.sleep(0.3)
        assert receiver.bodies == []  # one delivery per ending, never a duplicate
        _, health = await api.get("/health")
        assert health["webhooks"]["delivered"] == 3


async def test_a_mass_expiry_is_swept_in_batches_and_each_job_reported_once(
    service_factory: Any, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # More overdue jobs than one sweep() call ends, reported in slices with requests served in
    # between: every job ends TIMED_OUT once, is counted once and gets one webhook delivery.
    monkeypatch.setattr(sweeper, "REPORT_SLICE", 7)
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    async with loopback_app(app) as base:
        hook = f"{base}/hook"
        svc = await service_factory(default=EndpointConfig(webhook_interval_s=0.1))
        svc.storage.batch_size, svc.storage.sweep_batches = 10, 2  # 20 jobs per sweep() call
        api = Api(session, svc.endpoint_url("ep"))
        ids = set(await asyncio.gather(*(api.run(i, webhook=hook, policy={"ttl": 300}) for i in range(55))))
        async with asyncio.timeout(30):
            while (await api.get("/health"))[1]["jobs"]["timedOut"] < len(ids):
                assert (await api.get("/health"))[0] == 200  # answered while the sweep goes on
                await asyncio.sleep(0.05)
        families = await scrape(session, svc.url)
        ended = value(families, "worker_kit_jobs_ended", "worker_kit_jobs_ended_total", endpoint="ep",
                      state="TIMED_OUT")
        assert ended == len(ids)
        bodies = [await receiver.next() for _ in ids]
        assert {b["id"] for b in bodies} == ids and {b["status"] for b in bodies} == {"TIMED_OUT"}
        await asyncio.sleep(0.3)
        assert receiver.bodies == []  # one delivery per ending


def test_endpoint_config_is_replaceable() -> None:
    cfg = dataclasses.replace(EndpointConfig(), workers_max=3)
    assert cfg.queue_limit == 1500
