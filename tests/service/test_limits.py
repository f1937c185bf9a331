"""Body limits, rate and concurrency limits, queue backpressure and API keys."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from tests.support.api import Api
from worker_kit.service.config import DEFAULT_RATE_LIMITS, EndpointConfig, RateLimit

from .conftest import MiniWorker

MB = 1024 * 1024


async def raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """Send a hand-written request (headers may promise more body than is sent) and read the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        await writer.drain()
        async with asyncio.timeout(10):
            headers = (await reader.readuntil(b"\r\n\r\n")).decode()
            length = int(
                next(
                    line.split(":")[1]
                    for line in headers.split("\r\n")
                    if line.lower().startswith("content-length")
                )
            )
            payload = await reader.readexactly(length)
        return int(headers.split()[1]), json.loads(payload)
    finally:
        writer.close()


async def test_oversized_body_refused_from_content_length_before_reading(service: Any) -> None:
    # Only the headers are sent: the answer can only come before the body was read.
    head = (
        f"POST /v2/ep/run HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json\n"
        f"Content-Length: {10 * MB + 1}\n"
    )
    status, body = await raw_request(service.port, head)
    assert status == 413 and "10485760" in body["error"]
    head = head.replace("/run", "/runsync").replace(str(10 * MB + 1), str(20 * MB + 1))
    status, body = await raw_request(service.port, head)
    assert status == 413 and "20971520" in body["error"]


async def test_runsync_accepts_bodies_over_the_run_limit(service: Any, session: Any) -> None:
    api = Api(session, service.endpoint_url("ep"))
    big = {"input": "x" * (10 * MB + 10)}
    assert (await api.post("/run", big))[0] == 413
    status, body = await api.post("/runsync?wait=0", big)
    assert status == 200 and body["status"] == "IN_QUEUE"


async def test_body_limit_exact_and_chunked(service_factory: Any, session: Any) -> None:
    svc = await service_factory(default=EndpointConfig(run_body_limit=1000))
    api = Api(session, svc.endpoint_url("ep"))
    exact = b'{"input": "' + b"x" * (1000 - 13) + b'"}'
    assert len(exact) == 1000
    status, _ = await api.post("/run", raw=exact, headers={"Content-Type": "application/json"})
    assert status == 200

    async def chunked() -> AsyncIterator[bytes]:
        yield b'{"input": "'
        for _ in range(20):
            yield b"y" * 100
        yield b'"}'

    status, body = await api.post("/run", raw=chunked(), headers={"Content-Type": "application/json"})
    assert status == 413 and "1000" in body["error"]
    assert (await api.get("/health"))[1]["jobs"]["inQueue"] == 1


async def test_compressed_bodies_are_read_whole_and_limited_when_inflated(
    service_factory: Any, session: Any
) -> None:
    import gzip

    svc = await service_factory(default=EndpointConfig(run_body_limit=1000))
    api = Api(session, svc.endpoint_url("ep"))
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    # Content-Length counts compressed bytes: the whole inflated body must still be read.
    small = gzip.compress(json.dumps({"input": {"text": "x" * 900}}).encode())
    assert len(small) < 100
    status, body = await api.post("/run", raw=small, headers=headers)
    assert status == 200, body
    claimed = await MiniWorker(api).claim_one()
    assert claimed["input"] == {"text": "x" * 900}
    # A small compressed body that inflates past the limit is refused like any other.
    bomb = gzip.compress(b'{"input": "' + b"y" * 100_000 + b'"}')
    assert len(bomb) < 1000
    status, body = await api.post("/run", raw=bomb, headers=headers)
    assert status == 413 and "1000" in body["error"], body


async def test_worker_chunk_and_result_limits(service_factory: Any, session: Any) -> None:
    svc = await service_factory(default=EndpointConfig(result_limit=2 * MB))
    api = Api(session, svc.endpoint_url("ep"))
    worker = MiniWorker(api)
    job_id = await api.run("big")
    job = await worker.claim_one()
    status, body = await worker.output(job, [{"seq": 0, "kind": "chunk", "data": b"z" * (MB + 1)}])
    assert status == 413 and "split" in body["error"]
    assert (await worker.output(job, [{"seq": 0, "kind": "chunk", "data": b"z" * (MB - 16)}]))[0] == 200
    status, body = await worker.finish(job, output="r" * (2 * MB + 1))
    assert status == 413 and "result limit" in body["error"]
    assert (await api.status(job_id))["status"] == "IN_PROGRESS"  # refused, nothing changed
    assert (await worker.finish(job, state="FAILED", error="result too large"))[0] == 200


def limits(**ops: RateLimit) -> dict[str, RateLimit]:
    return {**DEFAULT_RATE_LIMITS, **ops}


async def test_rate_limit_answers_429_with_retry_after(service_factory: Any, session: Any) -> None:
    svc = await service_factory(default=EndpointConfig(rate_limits=limits(run=RateLimit(3, 10.0, None))))
    api = Api(session, svc.endpoint_url("ep"))
    for i in range(3):
        await api.run(i)
    async with session.post(api.base + "/run", json={"input": 4}) as resp:
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        body = await resp.json()
    assert "rate limit" in body["error"] and body["retry_after"] >= 1
    # Other operations and other endpoints have their own budgets.
    assert (await api.get("/health"))[0] == 200
    assert (await Api(session, svc.endpoint_url("other")).post("/run", {"input": 1}))[0] == 200
    assert (await api.get("/health"))[1]["jobs"]["inQueue"] == 3


async def test_concurrency_limit(service_factory: Any, session: Any) -> None:
    svc = await service_factory(default=EndpointConfig(rate_limits=limits(runsync=RateLimit(None, 10.0, 1))))
    api = Api(session, svc.endpoint_url("ep"))
    held = asyncio.create_task(api.post("/runsync?wait=10000", {"input": 1}))
    worker = MiniWorker(api)
    job = await worker.claim_one()  # the held runsync's job is in
    status, body = await api.post("/runsync?wait=0", {"input": 2})
    assert status == 429 and "concurrent" in body["error"]
    await worker.finish(job, output=1)
    assert (await held)[1]["status"] == "COMPLETED"
    assert (await api.post("/runsync?wait=0", {"input": 3}))[0] == 200


async def test_open_sse_streams_hold_their_own_slots_not_status_ones(
    service_factory: Any, session: Any
) -> None:
    cfg = EndpointConfig(
        rate_limits=limits(status=RateLimit(None, 10.0, 1), sse=RateLimit(None, 10.0, 2))
    )
    svc = await service_factory(default=cfg)
    api = Api(session, svc.endpoint_url("ep"))
    job_id = await api.run("long")
    sse = {"Accept": "text/event-stream"}
    streams = [await session.get(f"{api.base}/stream/{job_id}", headers=sse) for _ in range(2)]
    try:
        assert [r.status for r in streams] == [200, 200]
        await streams[0].content.readline()  # the streams are open and held
        # Two clients waiting by push leave the single status slot free for polling...
        assert (await api.get(f"/status/{job_id}"))[0] == 200
        assert (await api.get(f"/stream/{job_id}?cursor=0"))[0] == 200
        # ...and the sse limit bounds how many streams may be open at once.
        async with session.get(f"{api.base}/stream/{job_id}", headers=sse) as third:
            assert third.status == 429
            assert "concurrent sse" in (await third.json())["error"]
    finally:
        for resp in streams:
            resp.close()
    assert DEFAULT_RATE_LIMITS["sse"].concurrent == 1000


async def test_rate_limits_can_be_disabled(service_factory: Any, session: Any) -> None:
    cfg = EndpointConfig(rate_limits=limits(purge=RateLimit(1, 10.0, None)), rate_limits_enabled=False)
    svc = await service_factory(default=cfg)
    api = Api(session, svc.endpoint_url("ep"))
    for _ in range(4):
        assert (await api.post("/purge-queue"))[0] == 200


async def test_purge_default_limit_is_two_per_ten_seconds(api: Api) -> None:
    assert (await api.post("/purge-queue"))[0] == 200
    assert (await api.post("/purge-queue"))[0] == 200
    status, body = await api.post("/purge-queue")
    assert status == 429 and "error" in body


async def test_backpressure_refuses_submits_over_the_queue_limit(service_factory: Any, session: Any) -> None:
    svc = await service_factory(default=EndpointConfig(queue_floor=5, workers_max=0))
    api = Api(session, svc.endpoint_url("ep"))
    for i in range(6):  # the queue may hold more than 5 ...
        await api.run(i)
    status, body = await api.post("/run", {"input": "over"})  # ... but not be submitted to once it does
    assert status == 429 and "queue" in body["error"]
    assert (await api.post("/runsync?wait=0", {"input": "over"}))[0] == 429
    assert (await api.get("/health"))[1]["jobs"]["inQueue"] == 6
    await MiniWorker(api).claim_one()
    assert (await api.post("/run", {"input": "room again"}))[0] == 200


async def test_backpressure_scales_with_workers_max(service_factory: Any, session: Any) -> None:
    svc = await service_factory(default=EndpointConfig(queue_floor=2, workers_max=2, queue_per_worker=3))
    api = Api(session, svc.endpoint_url("ep"))
    for i in range(7):  # limit is max(2, 2 x 3) = 6
        await api.run(i)
    assert (await api.post("/run", {"input": 8}))[0] == 429


KEYS = EndpointConfig(client_keys=("client-key-1",), worker_keys=("worker-key-1",))


async def test_api_keys(service_factory: Any, session: aiohttp.ClientSession) -> None:
    svc = await service_factory(default=KEYS)
    base = svc.endpoint_url("ep")
    anonymous, client, raw_client = Api(session, base), Api(session, base, "client-key-1"), Api(session, base)
    wrong, worker_key = Api(session, base, "nope-nope-nope"), Api(session, base, "worker-key-1")

    status, body = await anonymous.post("/run", {"input": 1})
    assert status == 401 and "API key" in body["error"]
    assert (await wrong.post("/run", {"input": 1}))[0] == 403
    status, body = await worker_key.post("/run", {"input": 1})
    assert status == 403 and "worker key" in body["error"]
    job_id = await client.run(1)
    status, _ = await raw_client.get(f"/status/{job_id}", headers={"Authorization": "client-key-1"})
    assert status == 200  # the raw key without "Bearer " works too
    assert (await anonymous.get("/health"))[0] == 401

    claim = {"worker_id": "w", "wait_ms": 0}
    assert (await anonymous.post("/worker/claim", claim))[0] == 401
    status, body = await client.post("/worker/claim", claim)
    assert status == 403 and "client key" in body["error"]
    status, body = await worker_key.post("/worker/claim", claim)
    assert status == 200 and body["jobs"][0]["id"] == job_id

    async with session.get(svc.url + "/health") as resp:
        assert resp.status == 200  # service liveness stays open


async def test_keys_per_endpoint(service_factory: Any, session: Any) -> None:
    svc = await service_factory(endpoints={"private": KEYS})
    assert (await Api(session, svc.endpoint_url("private")).post("/run", {"input": 1}))[0] == 401
    assert (await Api(session, svc.endpoint_url("public")).post("/run", {"input": 1}))[0] == 200


async def test_expect_100_continue_only_for_bodies_within_the_limit(service: Any) -> None:
    head = "POST /v2/ep/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    try:
        writer.write(f"{head}Content-Length: {10 * MB + 1}\r\n\r\n".encode())
        async with asyncio.timeout(10):
            assert (await reader.readline()).startswith(b"HTTP/1.1 413")  # no invitation to upload
    finally:
        writer.close()

    body = b'{"input": 1}'
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    try:
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode())
        async with asyncio.timeout(10):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 Continue")
            writer.write(body)
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
