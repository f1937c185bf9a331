"""What a claim tells the worker about a job's execution timeout: the client's choice only,
while `deadline_ms` always carries the service's own deadline (the endpoint's default included)."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.support.api import Api
from worker_kit.job import Policy
from worker_kit.service.config import EndpointConfig

from .conftest import MiniWorker


async def claim_for(api: Api, policy: dict[str, Any] | None) -> dict[str, Any]:
    job_id = await api.run(1, **({"policy": policy} if policy is not None else {}))
    job = await MiniWorker(api).claim_one()
    assert job["id"] == job_id
    return job


async def test_endpoint_default_is_not_sent_as_the_jobs_own(service_factory: Any) -> None:
    svc = await service_factory(default=EndpointConfig(execution_timeout_ms=120_000))
    async with aiohttp.ClientSession() as session:
        api = Api(session, svc.endpoint_url("ep"))
        job = await claim_for(api, None)
        assert "executionTimeout" not in job["policy"]
        assert 60_000 < job["deadline_ms"] <= 120_000  # the service still enforces its default
        job = await claim_for(api, {"ttl": 90_000})
        assert job["policy"] == {"ttl": 90_000} and job["deadline_ms"] <= 90_000


async def test_a_client_timeout_is_sent_even_when_it_equals_the_default(api: Api) -> None:
    job = await claim_for(api, {"executionTimeout": 600_000})
    assert job["policy"] == {"executionTimeout": 600_000, "ttl": 86_400_000}
    job = await claim_for(api, {"executionTimeout": 1500, "ttl": 60_000})
    assert job["policy"] == {"executionTimeout": 1500, "ttl": 60_000} and job["deadline_ms"] <= 1500


async def test_a_retried_job_keeps_the_clients_timeout(api: Api, worker: MiniWorker) -> None:
    job = await claim_for(api, {"executionTimeout": 600_000})
    assert (await worker.finish(job, state="FAILED", error="boom"))[0] == 200
    status, body = await api.post(f"/retry/{job['id']}")
    assert status == 200, body
    again = await worker.claim_one()
    assert again["id"] == job["id"] and again["policy"]["executionTimeout"] == 600_000


async def test_worker_counts_are_bounded(api: Api) -> None:
    # Refused, not an internal error: past the bound (yet within 64 bits), and past what
    # msgpack and storage can hold at all (refused as the body is decoded).
    for huge, reason in ((2**62, "must be between"), (10**30, "64 bits")):
        for path, body in (
            ("/worker/claim", {"max": 1, "wait_ms": 0, "concurrency": huge}),
            ("/worker/heartbeat", {"jobs": {}, "concurrency": huge}),
            ("/worker/heartbeat", {"jobs": {}, "running": huge}),
        ):
            status, reply = await api.post(path, {"worker_id": "w", **body})
            assert status == 400 and reason in reply["error"], reply


def test_a_client_policy_object_sends_only_a_chosen_timeout() -> None:
    assert Policy(ttl_ms=5000).to_wire() == {"ttl": 5000}
    assert Policy(execution_timeout_ms=30_000).to_wire() == {"executionTimeout": 30_000, "ttl": 86_400_000}
    explicit = Policy(execution_timeout_ms=600_000, execution_timeout_explicit=True)
    assert explicit.to_wire() == {"executionTimeout": 600_000, "ttl": 86_400_000}
