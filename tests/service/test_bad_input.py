"""Bad input of every kind: a 4xx with {"error": reason}, never a 500, never a change of state."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import Api
from worker_kit.protocol import MSGPACK, pack

from .conftest import MiniWorker

JSON_HEADERS = {"Content-Type": "application/json"}

# (method, path, json body or raw bytes, expected status); "{job}" is a real queued job's id.
CLIENT_CASES: list[tuple[str, str, Any, int]] = [
    ("POST", "/run", b"{bad", 400),
    ("POST", "/run", b"[1, 2]", 400),
    ("POST", "/run", b"", 400),
    ("POST", "/run", b"\xff\xfe", 400),
    # JSON that parses but that msgpack (the storage and wire format) cannot carry, or that
    # the parser itself cannot handle: still a 400, never a 500.
    ("POST", "/run", b'{"input": 123456789012345678901234567890}', 400),
    ("POST", "/run", b'{"input": -9223372036854775809}', 400),
    ("POST", "/run", b'{"input": ' + b"9" * 5000 + b"}", 400),
    ("POST", "/run", b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
    ("POST", "/run", {}, 400),
    ("POST", "/run", {"inputs": 1}, 400),
    ("POST", "/run", {"input": 1, "policy": "fast"}, 400),
    ("POST", "/run", {"input": 1, "policy": {"executionTimeout": -5}}, 400),
    ("POST", "/run", {"input": 1, "policy": {"executionTimeout": 0}}, 400),
    ("POST", "/run", {"input": 1, "policy": {"executionTimeout": 1.5}}, 400),
    ("POST", "/run", {"input": 1, "policy": {"executionTimeout": "1000"}}, 400),
    ("POST", "/run", {"input": 1, "policy": {"executionTimeout": True}}, 400),
    ("POST", "/run", {"input": 1, "policy": {"ttl": 10**12}}, 400),
    ("POST", "/run", {"input": 1, "policy": {"priority": 1}}, 400),
    ("POST", "/run", {"input": 1, "webhook": 5}, 400),
    ("POST", "/run", {"input": 1, "webhook": "ftp://example.org/x"}, 400),
    ("POST", "/run", {"input": 1, "webhook": "not a url"}, 400),
    ("POST", "/runsync?wait=-1", {"input": 1}, 400),
    ("POST", "/runsync?wait=abc", {"input": 1}, 400),
    ("POST", "/runsync?wait=1.5", {"input": 1}, 400),
    ("POST", "/runsync?wait=300001", {"input": 1}, 400),
    ("POST", "/runsync", b"{bad", 400),
    ("GET", "/status/{job}?ttl=-1", None, 400),
    ("GET", "/status/{job}?ttl=ten", None, 400),
    ("GET", "/status/{job}?ttl=1000&ttl=ten", None, 400),  # given twice: which one was meant?
    ("POST", "/runsync?wait=10&wait=20", {"input": 1}, 400),
    ("POST", "/status/{job}", b"{bad", 400),
    ("GET", "/stream/{job}?cursor=-1", None, 400),
    ("GET", "/stream/{job}?cursor=x", None, 400),
    ("GET", "/stream/{job}?wait=-3", None, 400),
    ("GET", "/status/unknown-job", None, 404),
    ("GET", "/status/" + "x" * 200, None, 404),
    ("GET", "/stream/unknown-job", None, 404),
    ("POST", "/cancel/unknown-job", None, 404),
    ("POST", "/retry/unknown-job", None, 404),
    ("POST", "/retry/{job}", None, 409),
    ("GET", "/nothing-here", None, 404),
    ("GET", "/run", None, 405),
    ("PUT", "/status/{job}", None, 405),
    ("DELETE", "/cancel/{job}", None, 405),
    ("GET", "/purge-queue", None, 405),
]

WORKER_CASES: list[tuple[str, Any, int]] = [
    ("/worker/claim", {}, 400),
    ("/worker/claim", {"worker_id": ""}, 400),
    ("/worker/claim", {"worker_id": 5}, 400),
    ("/worker/claim", {"worker_id": "w", "max": 0}, 400),
    ("/worker/claim", {"worker_id": "w", "max": 101}, 400),
    ("/worker/claim", {"worker_id": "w", "max": "2"}, 400),
    ("/worker/claim", {"worker_id": "w", "wait_ms": -1}, 400),
    ("/worker/claim", [1], 400),
    ("/worker/heartbeat", {"worker_id": "w", "jobs": [1]}, 400),
    ("/worker/heartbeat", {"worker_id": "w", "jobs": {"a": 5}}, 400),
    ("/worker/heartbeat", {"jobs": {}}, 400),
    ("/worker/jobs/{job}/output", {"items": []}, 400),
    ("/worker/jobs/{job}/output", {"token": "t", "items": "x"}, 400),
    ("/worker/jobs/{job}/output", {"token": "t", "items": [{"seq": -1, "kind": "chunk"}]}, 400),
    ("/worker/jobs/{job}/output", {"token": "t", "items": [{"seq": 0, "kind": "other"}]}, 400),
    ("/worker/jobs/{job}/output", {"token": "t", "items": [5]}, 400),
    ("/worker/jobs/{job}/output", {"token": "stale", "items": []}, 409),
    ("/worker/jobs/{job}/finish", {"token": "t", "state": "CANCELLED"}, 400),
    ("/worker/jobs/{job}/finish", {"token": "t", "state": "BOGUS"}, 400),
    ("/worker/jobs/{job}/finish", {"token": "t", "state": "FAILED", "error": {"a": 1}}, 400),
    ("/worker/jobs/{job}/finish", {"token": "t", "state": "FAILED", "error_detail": "x"}, 400),
    ("/worker/jobs/{job}/finish", {"state": "COMPLETED"}, 400),
    ("/worker/jobs/{job}/finish", {"token": "stale", "state": "COMPLETED"}, 409),
    ("/worker/jobs/{job}/finish", {"token": "t", "state": "COMPLETED", "output": 2**70}, 400),
    ("/worker/jobs/{job}/release", {}, 400),
    ("/worker/jobs/{job}/release", {"token": "stale"}, 409),
    ("/worker/jobs/unknown/finish", {"token": "t", "state": "COMPLETED"}, 409),
]


@pytest.fixture
async def queued(api: Api) -> str:
    return await api.run({"keep": "me"})


async def assert_unchanged(api: Api, job_id: str) -> None:
    body = await api.status(job_id)
    assert body["status"] == "IN_QUEUE" and "output" not in body
    _, health = await api.get("/health")
    assert health["jobs"]["inQueue"] == 1 and sum(health["jobs"].values()) == 1


async def test_bad_client_requests(api: Api, queued: str) -> None:
    for method, path, body, expected in CLIENT_CASES:
        path = path.replace("{job}", queued)
        if isinstance(body, bytes):
            status, answer = await api.call(method, path, raw=body, headers=JSON_HEADERS)
        else:
            status, answer = await api.call(method, path, body)
        assert status == expected, (method, path, body, answer)
        assert isinstance(answer, dict) and isinstance(answer.get("error"), str) and answer["error"], answer
    await assert_unchanged(api, queued)


async def test_bad_worker_requests(api: Api, queued: str) -> None:
    for path, body, expected in WORKER_CASES:
        path = path.replace("{job}", queued)
        status, answer = await api.post(path, body)
        assert status == expected, (path, body, answer)
        assert isinstance(answer.get("error"), str) and answer["error"], answer
    status, answer = await api.post("/worker/claim", raw=b"\xc1", headers={"Content-Type": MSGPACK})
    assert status == 400 and "msgpack" in answer["error"]
    await assert_unchanged(api, queued)


async def test_bad_reports_on_a_running_job_change_nothing(api: Api, worker: MiniWorker) -> None:
    job_id = await api.run("x")
    job = await worker.claim_one()
    await worker.output(job, [{"seq": 0, "kind": "chunk", "data": "a"}])
    for body in ({"token": job["token"], "state": "DONE"}, {"token": job["token"], "items": [{"seq": 9}]}):
        status, _ = await worker._post(f"/worker/jobs/{job_id}/finish", body)
        assert status == 400
    status, _ = await api.post(
        f"/worker/jobs/{job_id}/output",
        raw=pack({"token": job["token"], "items": 3}),
        headers={"Content-Type": MSGPACK},
    )
    assert status == 400
    assert (await api.status(job_id))["status"] == "IN_PROGRESS"
    _, body = await api.get(f"/stream/{job_id}?cursor=0")
    assert body["stream"] == [{"output": "a"}]


async def test_bad_endpoint_ids_and_service_routes(service: Any, session: Any) -> None:
    for path in ("/v2/bad$id/health", "/v2/" + "e" * 200 + "/health", "/v3/ep/health", "/nope"):
        async with session.get(service.url + path) as resp:
            assert resp.status == 404, path
            assert "error" in await resp.json()
    async with session.post(service.url + "/metrics") as resp:
        assert resp.status == 405 and "error" in await resp.json()


async def test_strict_endpoints_refuse_unlisted_ids(service_factory: Any, session: Any) -> None:
    from worker_kit.service.config import EndpointConfig

    svc = await service_factory(strict_endpoints=True, endpoints={"known": EndpointConfig()})
    assert (await Api(session, svc.endpoint_url("known")).post("/run", {"input": 1}))[0] == 200
    status, body = await Api(session, svc.endpoint_url("unknown")).post("/run", {"input": 1})
    assert status == 404 and "unknown endpoint" in body["error"]
