"""GET /requests: an endpoint's jobs newest first, paged by an opaque cursor, filtered by status."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.api import Api
from worker_kit.job import Policy
from worker_kit.service.config import EndpointConfig, RateLimit

from .conftest import MiniWorker


async def _page_all(api: Api, query: str, between: Any = None) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        status, body = await api.get(f"/requests?{query}" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, body
        seen += body["requests"]
        if not body["hasMore"]:
            assert body["cursor"] is None
            return seen
        cursor = body["cursor"]
        if between is not None:
            await between()


async def test_paging_10000_jobs_while_new_ones_arrive(service: Any, api: Api) -> None:
    storage = service.storage
    old: list[str] = []
    for _ in range(20):  # stored directly: fast, and the service reads the same store
        batch = [storage.submit("ep", i, policy=Policy(), retention_ms=600_000) for i in range(500)]
        old += [job.id for job in await asyncio.gather(*batch)]
    new: list[str] = []

    async def arrive() -> None:
        batch = [storage.submit("ep", "new", policy=Policy(), retention_ms=600_000) for _ in range(25)]
        new.extend(job.id for job in await asyncio.gather(*batch))

    seen = await _page_all(api, "limit=1000", between=arrive)
    ids = [entry["id"] for entry in seen]
    assert len(ids) == len(set(ids)), "a job was listed twice"
    assert set(old) <= set(ids), "a job was skipped"
    # Jobs arriving while paging sort before the cursor, so later pages never show them.
    assert new and not set(ids) & set(new), "a job submitted after paging began showed up on a later page"
    created = [e["createdAt"] for e in seen]
    assert created == sorted(created, reverse=True)
    assert all("input" not in e and "output" not in e for e in seen)


async def test_fields_filters_and_payloads(api: Api, worker: MiniWorker) -> None:
    queued = await api.run({"q": 1})
    failed_id = await api.run({"f": 1})
    status, body = await api.get("/requests")
    assert body["total"] == 2 and [e["id"] for e in body["requests"]] == [failed_id, queued]
    first = await worker.claim_one()
    assert first["id"] == queued
    await worker.finish(first, output={"ok": True})
    second = await worker.claim_one()
    await worker.finish(second, state="FAILED", error="boom")

    status, body = await api.get("/requests?status=FAILED")
    assert status == 200 and body["total"] == 1 and not body["hasMore"]
    (entry,) = body["requests"]
    assert entry["id"] == failed_id and entry["status"] == "FAILED" and entry["error"] == "boom"
    assert entry["workerId"] == "mini-worker" and entry["attempt"] == 1 and entry["retries"] == 0
    assert entry["createdAt"] <= entry["startedAt"] <= entry["completedAt"]
    assert {"delayTime", "executionTime"} <= entry.keys()

    status, body = await api.get("/requests?status=completed,failed&include=input,output&limit=1")
    assert body["total"] == 2 and body["hasMore"] and body["cursor"]
    assert body["requests"][0]["input"] == {"f": 1}
    query = f"status=COMPLETED&status=FAILED&include=output&cursor={body['cursor']}"
    status, body = await api.get(f"/requests?{query}")
    assert [e.get("output") for e in body["requests"]] == [{"ok": True}] and not body["hasMore"]
    assert "input" not in body["requests"][0]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0", "limit=1001", "limit=ten", "cursor=not-a-cursor", "cursor=W10", "status=DONE",
        "include=keys",
    ],
)
async def test_bad_parameters_are_400(api: Api, query: str) -> None:
    status, body = await api.get(f"/requests?{query}")
    assert status == 400 and isinstance(body["error"], str)


async def test_requests_has_its_own_tight_rate_limit(service_factory: Any, session: Any) -> None:
    limits = {**EndpointConfig().rate_limits, "requests": RateLimit(2, 10.0, 2)}
    svc = await service_factory(default=EndpointConfig(rate_limits=limits))
    api = Api(session, svc.endpoint_url("ep"))
    assert [(await api.get("/requests"))[0] for _ in range(3)] == [200, 200, 429]
    assert (await api.post("/run", {"input": 1}))[0] == 200
