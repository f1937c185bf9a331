"""Bounded answers: a claim reply's inputs and a /stream answer's chunks are capped in bytes
(always at least one job or chunk), and a held heartbeat stops when its worker leaves."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from tests.support.api import Api
from worker_kit.client import AsyncEndpoint
from worker_kit.storage.base import worker_channel

from .conftest import MiniWorker

#: 1000-character strings are stored as 1003 msgpack bytes: a bound of 2500 fits two.
TEXT = "x" * 1000
BOUND = 2500


async def _bounded(service_factory: Any, session: aiohttp.ClientSession, **overrides: Any) -> tuple[Any, Api]:
    svc = await service_factory(**overrides)
    return svc, Api(session, svc.endpoint_url("ep"))


# -- claim -----------------------------------------------------------------------------------------


async def test_claim_reply_is_bounded_in_bytes(service_factory: Any, session: aiohttp.ClientSession) -> None:
    _, api = await _bounded(service_factory, session, claim_max_bytes=BOUND)
    ids = [await api.run(f"{i}{TEXT}") for i in range(5)]
    worker = MiniWorker(api)
    pages = [await worker.claim(max_jobs=10, wait_ms=0) for _ in range(3)]
    assert [len(page) for page in pages] == [2, 2, 1]  # fewer than max although more were queued
    assert [job["id"] for page in pages for job in page] == ids  # oldest first, none lost
    assert [job["input"] for page in pages for job in page] == [f"{i}{TEXT}" for i in range(5)]
    assert await worker.claim(max_jobs=10, wait_ms=0) == []


async def test_claim_always_hands_out_a_job_larger_than_the_bound(
    service_factory: Any, session: aiohttp.ClientSession
) -> None:
    _, api = await _bounded(service_factory, session, claim_max_bytes=100)
    big = await api.run(TEXT * 3)
    small = await api.run("s")
    worker = MiniWorker(api)
    assert [job["id"] for job in await worker.claim(max_jobs=10, wait_ms=0)] == [big]
    assert [job["id"] for job in await worker.claim(max_jobs=10, wait_ms=0)] == [small]


# -- /stream ---------------------------------------------------------------------------------------


async def _finished_with_chunks(api: Api, n: int, state: str = "COMPLETED") -> str:
    job_id = await api.run("s")
    worker = MiniWorker(api)
    job = await worker.claim_one()
    items = [{"seq": i, "kind": "chunk", "data": f"{i}{TEXT}"} for i in range(n)]
    status, body = await worker.finish(job, state, output="done", items=items, error=None)
    assert status == 200, body
    return job_id


async def test_stream_answers_are_bounded_and_consume_only_what_they_return(
    service_factory: Any, session: aiohttp.ClientSession
) -> None:
    _, api = await _bounded(service_factory, session, stream_max_bytes=BOUND)
    job_id = await _finished_with_chunks(api, 5)
    answers = [(await api.get(f"/stream/{job_id}"))[1] for _ in range(4)]
    assert [len(a["stream"]) for a in answers] == [2, 2, 1, 0]
    assert [a["cursor"] for a in answers] == [2, 4, 5, 5]
    assert [a["status"] for a in answers] == ["COMPLETED"] * 4  # the true state, every time
    got = [item["output"] for a in answers for item in a["stream"]]
    assert got == [f"{i}{TEXT}" for i in range(5)]


async def test_stream_with_cursor_pages_through_bounded_answers(
    service_factory: Any, session: aiohttp.ClientSession
) -> None:
    _, api = await _bounded(service_factory, session, stream_max_bytes=BOUND)
    job_id = await _finished_with_chunks(api, 5)
    cursor, got, sizes = 0, [], []
    while True:
        _, answer = await api.get(f"/stream/{job_id}?cursor={cursor}")
        if not answer["stream"]:
            break
        sizes.append(len(answer["stream"]))
        got += [item["output"] for item in answer["stream"]]
        cursor = answer["cursor"]
    assert sizes == [2, 2, 1] and cursor == 5
    assert got == [f"{i}{TEXT}" for i in range(5)]
    # A cursor read consumes nothing: a consuming read still starts at the first chunk.
    _, answer = await api.get(f"/stream/{job_id}")
    assert answer["stream"][0]["output"] == f"0{TEXT}"


async def test_hosted_style_stream_loop_gets_every_chunk(
    service_factory: Any, session: aiohttp.ClientSession
) -> None:
    """The hosted SDK's Job.stream(): poll /stream, yield every item, stop once the status is
    final and `stream` is empty. A final status on a partial answer must not lose the rest."""
    _, api = await _bounded(service_factory, session, stream_max_bytes=BOUND)
    job_id = await _finished_with_chunks(api, 7, state="FAILED")
    got = []
    for _ in range(20):
        _, answer = await api.get(f"/stream/{job_id}")
        got += [item["output"] for item in answer["stream"]]
        if answer["status"] in ("COMPLETED", "FAILED", "TIMED_OUT") and not answer["stream"]:
            break
    assert got == [f"{i}{TEXT}" for i in range(7)]


async def test_client_stream_gets_every_chunk_by_push_and_by_polling(
    service_factory: Any, session: aiohttp.ClientSession
) -> None:
    svc, api = await _bounded(service_factory, session, stream_max_bytes=BOUND)
    job_id = await _finished_with_chunks(api, 5)
    for push in (None, False):
        async with AsyncEndpoint(svc.url, "ep") as endpoint:
            endpoint.push = push
            got = [chunk async for chunk in endpoint.job(job_id).stream()]
        assert got == [f"{i}{TEXT}" for i in range(5)], push


def _record_stream_reads(svc: Any) -> list[int]:
    """Wrap the service's own storage so each read_stream answer's chunk count is recorded."""
    storage = svc.storage
    real = storage.read_stream
    counts: list[int] = []

    async def read_stream(*args: Any, **kwargs: Any) -> Any:
        answer = await real(*args, **kwargs)
        counts.append(len(answer[1]))
        return answer

    storage.read_stream = read_stream
    return counts


def _sse_events(text: str) -> list[tuple[str | None, str, str]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":")
        if "data" in fields:  # an unnamed event is a chunk (the SSE spec's "message")
            events.append((fields.get("id"), fields.get("event", "chunk"), fields["data"]))
    return events


async def test_sse_reads_storage_in_bounded_pieces(
    service_factory: Any, session: aiohttp.ClientSession
) -> None:
    svc, api = await _bounded(service_factory, session, stream_max_bytes=BOUND)
    job_id = await _finished_with_chunks(api, 5)
    reads = _record_stream_reads(svc)
    sse = {"Accept": "text/event-stream"}
    async with session.get(f"{api.base}/stream/{job_id}", headers=sse) as resp:
        events = _sse_events((await resp.read()).decode())
    assert max(reads) <= 2 and sum(reads) == 5
    chunks = [e for e in events if e[1] == "chunk"]
    assert [e[0] for e in chunks] == ["1", "2", "3", "4", "5"]
    assert all(f"{i}{TEXT}" in e[2] for i, e in enumerate(chunks))
    assert [e[1] for e in events if e[1] != "chunk"] == ["status"] and events[-1][0] == "5"


async def test_sse_of_a_running_job_sends_a_backlog_in_pieces_then_the_end(
    service_factory: Any, session: aiohttp.ClientSession
) -> None:
    svc, api = await _bounded(service_factory, session, stream_max_bytes=BOUND)
    job_id = await api.run("s")
    worker = MiniWorker(api)
    job = await worker.claim_one()
    await worker.output(job, [{"seq": i, "kind": "chunk", "data": f"{i}{TEXT}"} for i in range(5)])
    reads = _record_stream_reads(svc)

    async def finish_later() -> None:
        await asyncio.sleep(0.5)
        await worker.finish(job, output="done", items=[{"seq": 5, "kind": "chunk", "data": "last"}])

    finisher = asyncio.create_task(finish_later())
    async with session.get(f"{api.base}/stream/{job_id}", headers={"Accept": "text/event-stream"}) as resp:
        events = _sse_events((await resp.read()).decode())
    await finisher
    assert max(reads) <= 2
    chunks = [e for e in events if e[1] == "chunk"]
    assert [e[0] for e in chunks] == ["1", "2", "3", "4", "5", "6"] and '"last"' in chunks[-1][2]
    assert events[-1][1] == "status" and "COMPLETED" in events[-1][2]
    # The state changes are told while running; the end only once, after the last chunk.
    assert [e[1] for e in events].count("status") == 1
    assert all("COMPLETED" not in e[2] for e in events if e[1] == "update")


# -- heartbeat -------------------------------------------------------------------------------------


async def test_held_heartbeat_of_a_worker_that_left_renews_nothing(
    service_factory: Any, session: aiohttp.ClientSession
) -> None:
    svc, api = await _bounded(service_factory, session, lease_ms=10_000)
    await api.run("held")
    job = await MiniWorker(api, "leaver").claim_one()
    body = json.dumps({"worker_id": "leaver", "jobs": {job["id"]: job["token"]}, "wait_ms": 20000}).encode()
    _, writer = await asyncio.open_connection("127.0.0.1", svc.port)
    writer.write(
        b"POST /v2/ep/worker/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    await asyncio.sleep(0.3)  # the long-poll is held, having renewed the lease once
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.6)  # the service has seen the connection go
    before = (await svc.storage.get("ep", job["id"])).lease_until
    seen = {w.worker_id: w.seen_at for w in await svc.storage.workers("ep", 60)}["leaver"]
    await asyncio.sleep(0.05)
    # Wake the held heartbeat, were it still held: it would renew the lease and the worker row.
    svc.storage.publish(worker_channel("ep", "leaver"))
    await asyncio.sleep(0.3)
    after = (await svc.storage.get("ep", job["id"])).lease_until
    assert after == before, "a heartbeat whose worker left renewed its lease"
    assert {w.worker_id: w.seen_at for w in await svc.storage.workers("ep", 60)}["leaver"] == seen
    assert before is not None and before < time.time() + 10  # renewed once, at the start, only
