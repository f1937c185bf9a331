"""Held readers of a job (SSE streams, /stream?wait=, /status-sync) are woken by that job's own
events only: no periodic re-read of storage, and another job's events do not wake them.

Storage reads are counted by wrapping the real storage's read methods (the calls still go
through); keep-alives prove time passed while nothing was read."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp
import pytest

from tests.support.api import Api
from worker_kit.service import sse as sse_module

from .conftest import MiniWorker


def count_reads(storage: Any, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    reads: Counter[str] = Counter()
    for name in ("read_stream", "get"):
        real = getattr(storage, name)

        async def counted(endpoint: str, job_id: str, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            reads[job_id] += 1
            return await _real(endpoint, job_id, *args, **kwargs)

        monkeypatch.setattr(storage, name, counted)
    return reads


async def long_lease(service_factory: Any, session: aiohttp.ClientSession) -> tuple[Any, Api, MiniWorker]:
    # A lease that cannot expire during the test: its expiry would be an event of the job.
    svc = await service_factory(lease_ms=60_000)
    api = Api(session, svc.endpoint_url("ep"))
    return svc, api, MiniWorker(api)


async def test_an_idle_sse_stream_reads_nothing_until_its_job_changes(
    service_factory: Any, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse_module, "KEEPALIVE_S", 0.1)
    service, api, worker = await long_lease(service_factory, session)
    reads = count_reads(service.storage, monkeypatch)
    watched = await api.run("watched")
    other = await api.run("other")
    async with aiohttp.ClientSession() as session, session.get(
        f"{api.base}/stream/{watched}", headers={"Accept": "text/event-stream"}
    ) as resp:
        raw = b""
        while raw.count(b": keep-alive") < 1:
            raw += await asyncio.wait_for(resp.content.readany(), 5)
        first = reads[watched]  # the route's and the stream's first reads
        while raw.count(b": keep-alive") < 6:  # half a second and more of silence
            raw += await asyncio.wait_for(resp.content.readany(), 5)
        assert reads[watched] == first  # no periodic re-read

        # Another job's events do not wake it.
        job = await worker.claim_one()
        assert job["id"] == watched  # oldest first
        other_job = await worker.claim_one()
        await worker.output(other_job, [{"seq": 0, "kind": "chunk", "data": "x"}])
        await worker.finish(other_job, output="done")
        assert other == other_job["id"]
        before = reads[watched]
        # The claim of the watched job is its own event: one read, one update.
        while b"IN_PROGRESS" not in raw:
            raw += await asyncio.wait_for(resp.content.readany(), 5)
        await asyncio.sleep(0.3)
        assert reads[watched] == before  # nothing since, although keep-alives went on

        await worker.output(job, [{"seq": 0, "kind": "chunk", "data": "tok"}])
        await worker.finish(job, output="end")
        raw += await asyncio.wait_for(resp.content.read(), 5)
    assert b'"output":"tok"' in raw and b"event: status" in raw


async def test_a_held_stream_wait_is_woken_by_its_own_job_only(
    service_factory: Any, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, api, worker = await long_lease(service_factory, session)
    reads = count_reads(service.storage, monkeypatch)
    watched = await api.run("watched")
    job = await worker.claim_one()
    held = asyncio.create_task(api.get(f"/stream/{watched}?cursor=0&wait=20000"))
    held_status = asyncio.create_task(api.get(f"/status-sync/{watched}?wait=20000"))
    await asyncio.sleep(0.3)
    first = reads[watched]
    for i in range(3):  # other jobs come and go
        await api.run(i)
    await asyncio.sleep(2.5)  # past the 2 s re-read that claims and heartbeats keep
    assert reads[watched] == first and not held.done() and not held_status.done()
    await worker.output(job, [{"seq": 0, "kind": "chunk", "data": "now"}])
    status, body = await asyncio.wait_for(held, 5)
    assert status == 200 and [c["output"] for c in body["stream"]] == ["now"]
    await worker.finish(job, output="ok")
    status, body = await asyncio.wait_for(held_status, 5)
    assert status == 200 and body["status"] == "COMPLETED"
