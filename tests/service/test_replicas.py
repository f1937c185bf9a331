"""Several service replicas on one store: nothing a request needs lives in one replica's memory.

Two service apps in this process share one opened Storage, as two `worker-kit serve`
processes share one Redis: each has its own per-process state (hosted-protocol locks, webhook
sender, sweeper, replica id), so whatever passes here passes because it went through storage.
(Separate processes on Redis: tests/service/test_replica_processes.py.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.api import Api
from worker_kit.service.config import EndpointConfig, ServiceConfig
from worker_kit.service.runner import RunningService, run_service
from worker_kit.service.state import STATE
from worker_kit.storage import Storage, open_storage

from ..client.conftest import WebhookReceiver
from ..conftest import TEST_DEFAULTS
from .test_hosted import SdkWorker

EP = "replicated"


class Replicas:
    def __init__(self, storage: Storage, stack: AsyncExitStack) -> None:
        self.storage, self.stack = storage, stack

    async def start(self, **overrides: Any) -> RunningService:
        config = ServiceConfig(**{**TEST_DEFAULTS, "storage": "sqlite://:memory:", **overrides})
        return await self.stack.enter_async_context(run_service(config, self.storage))


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[Replicas]:
    storage = open_storage(f"sqlite:///{tmp_path / 'shared.db'}")
    await storage.open()
    try:
        async with AsyncExitStack() as stack:
            yield Replicas(storage, stack)
    finally:
        await storage.close()


async def test_hosted_leases_taken_on_one_replica_are_renewed_by_another(
    replicas: Replicas, session: aiohttp.ClientSession
) -> None:
    a, b = await replicas.start(lease_ms=600), await replicas.start(lease_ms=600)
    api_a = Api(session, a.endpoint_url(EP))
    via_a, via_b = SdkWorker(session, a.endpoint_url(EP)), SdkWorker(session, b.endpoint_url(EP))
    job_id = await api_a.run({"n": 1})
    status, job = await via_a.take()
    assert status == 200 and job["id"] == job_id
    # Only replica b hears from the worker from now on: five lease periods pass.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert await via_b.stop(wait_ms=0) == (204, None)
        await asyncio.sleep(0.1)
    body = await api_a.status(job_id)
    assert body["status"] == "IN_PROGRESS" and body["workerId"] == "worker1"
    # A cancel sent to replica a reaches the worker through replica b's job-stop.
    assert (await api_a.post(f"/cancel/{job_id}"))[0] == 200
    assert await via_b.stop(wait_ms=2000) == (200, {"jobsToStop": [job_id]})
    # ...and repeated through replica a too (the SDK may miss one), from the same shared record.
    assert await via_a.stop(wait_ms=2000) == (200, {"jobsToStop": [job_id]})


async def test_a_hosted_report_may_reach_any_replica(
    replicas: Replicas, session: aiohttp.ClientSession
) -> None:
    a, b = await replicas.start(), await replicas.start()
    api_b = Api(session, b.endpoint_url(EP))
    via_a, via_b = SdkWorker(session, a.endpoint_url(EP)), SdkWorker(session, b.endpoint_url(EP))
    job_id = await api_b.run({"n": 2})
    assert (await via_a.take())[0] == 200
    assert (await via_b.stream(job_id, "tok"))[0] == 200
    assert await via_a.done(job_id, {"output": "ok"}) == (200, {"status": "COMPLETED"})
    assert (await api_b.status(job_id))["output"] == "ok"
    assert await replicas.storage.held_leases(EP, "worker1") == {}


def sweeps(replica: RunningService) -> float:
    return replica.app[STATE].metrics.registry.get_sample_value("worker_kit_sweeps_total") or 0.0


async def test_one_replica_sweeps_at_a_time_and_another_takes_over(replicas: Replicas) -> None:
    a, b = await replicas.start(sweep_interval_s=0.05), await replicas.start(sweep_interval_s=0.05)
    await asyncio.sleep(1.0)
    leader, other = (a, b) if sweeps(a) else (b, a)
    assert sweeps(leader) >= 5 and sweeps(other) == 0
    await leader.runner.cleanup()  # shutting down hands the lease over at once
    before = sweeps(other)
    await asyncio.sleep(1.0)
    assert sweeps(other) > before


async def test_a_webhook_is_sent_once_whatever_replica_ended_the_job(
    replicas: Replicas, session: aiohttp.ClientSession
) -> None:
    hooks = EndpointConfig(webhook_attempts=3, webhook_interval_s=0.2)
    group = [await replicas.start(default=hooks) for _ in range(3)]
    async with WebhookReceiver(fail_first=1) as receiver:
        ids = []
        for n, replica in enumerate(group * 2):
            api = Api(session, replica.endpoint_url(EP))
            job_id = await api.run({"n": n}, webhook=receiver.url)
            assert (await api.post(f"/cancel/{job_id}"))[0] == 200
            ids.append(job_id)
        for _ in range(300):
            if not await replicas.storage.webhooks_pending():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # room for a duplicate to show up, were there one
    delivered = [headers["X-Worker-Kit-Job-Id"] for headers, _ in receiver.calls[1:]]
    assert sorted(delivered) == sorted(ids)  # each job once (the first call was refused and retried)
    stats = [await r.app[STATE].webhook_stats() for r in group]
    assert sum(s["delivered"] for s in stats) == len(ids) and all(s["pending"] == 0 for s in stats)
