"""/status-sync: /status held until the job ends (woken by storage notifications) or ?wait= passes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.api import Api
from worker_kit.service import http as service_http
from worker_kit.service.config import EndpointConfig, RateLimit

from .conftest import MiniWorker


async def test_a_long_wait_returns_as_soon_as_the_job_ends(
    api: Api, worker: MiniWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Waits on a job have no periodic re-read (and the claim/heartbeat one is pushed out of
    # reach), so only the job's change notification can answer this request before its 300 s
    # wait: it must come back as soon as the job ends.
    monkeypatch.setattr(service_http, "RECHECK_S", 3600.0)
    job_id = await api.run({"x": 1})
    held = asyncio.create_task(api.get(f"/status-sync/{job_id}?wait=300000"))
    job = await worker.claim_one()
    await asyncio.sleep(0.2)
    assert not held.done()  # still IN_PROGRESS: held
    status, body = await worker.finish(job, output={"y": 2})
    assert status == 200, body
    async with asyncio.timeout(30):
        status, body = await held
    assert status == 200
    assert body["status"] == "COMPLETED" and body["output"] == {"y": 2}
    assert body == await api.status(job_id)


async def test_answers_the_current_status_when_the_wait_runs_out(api: Api) -> None:
    job_id = await api.run(1)
    status, body = await api.get(f"/status-sync/{job_id}?wait=50")
    assert status == 200 and body == {**await api.status(job_id), "delayTime": body["delayTime"]}
    assert body["status"] == "IN_QUEUE"


async def test_post_ttl_and_an_ended_job_answer_at_once(api: Api, worker: MiniWorker) -> None:
    job_id = await api.run(1)
    job = await worker.claim_one()
    await worker.finish(job, state="FAILED", error="boom")
    status, body = await api.post(f"/status-sync/{job_id}?ttl=1")
    assert status == 200 and body["status"] == "FAILED" and body["error"] == "boom"
    await asyncio.sleep(0.3)  # the ttl of 1 ms ended its retention
    status, body = await api.get(f"/status/{job_id}")
    assert status == 404


@pytest.mark.parametrize("query", ["?wait=-1", "?wait=300001", "?wait=soon", "?ttl=x"])
async def test_bad_parameters_are_400(api: Api, query: str) -> None:
    job_id = await api.run(1)
    status, body = await api.get(f"/status-sync/{job_id}{query}")
    assert status == 400 and "error" in body


async def test_unknown_job_is_404(api: Api) -> None:
    status, body = await api.get("/status-sync/nope?wait=10")
    assert status == 404 and "nope" in body["error"]


async def test_shares_the_status_rate_limit(service_factory: Any, session: Any) -> None:
    limits = {**EndpointConfig().rate_limits, "status": RateLimit(1, 10.0, None)}
    svc = await service_factory(default=EndpointConfig(rate_limits=limits))
    api = Api(session, svc.endpoint_url("ep"))
    job_id = await api.run(1)
    assert (await api.get(f"/status/{job_id}"))[0] == 200
    status, body = await api.get(f"/status-sync/{job_id}?wait=0")
    assert status == 429 and "status" in body["error"]
