"""job.progress(): visible while the job runs, ordered with chunks, never after the result."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import msgpack
import pytest

from worker_kit.worker.execution import Job
from worker_kit.worker.reporting import JobReporter
from worker_kit.worker.transport import NativeTransport

from .conftest import until


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_progress_visible_while_running(
    kind: str, service: Any, start_worker: Any, api_at: Any
) -> None:
    go_on = threading.Event()

    def sync_handler(job: Job) -> Any:
        job.progress({"pct": 50})
        assert go_on.wait(10)
        return {"done": True}

    async def async_handler(job: Job) -> Any:
        job.progress({"pct": 50})
        await until(go_on.is_set)
        return {"done": True}

    url = service.endpoint_url("progress")
    api = api_at(url)
    await start_worker(sync_handler if kind == "sync" else async_handler, url)
    job_id = await api.run(None)
    async def shows_progress() -> bool:
        status = await api.status(job_id)
        return status["status"] == "IN_PROGRESS" and status.get("output") == {"pct": 50}

    await until(shows_progress)
    go_on.set()
    final = await api.wait(job_id)
    assert final["status"] == "COMPLETED" and final["output"] == {"done": True}


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_progress_never_lands_after_the_result(
    kind: str, service: Any, start_worker: Any, api_at: Any
) -> None:
    # The hosted SDK's bug: a last progress update arriving after the result left the job
    # IN_PROGRESS showing the progress value. Here the last update rides in the finish request.
    def sync_handler(job: Job) -> Any:
        for i in range(50):
            job.progress(i)
        return "result"

    async def async_handler(job: Job) -> Any:
        for i in range(50):
            job.progress(i)
        return "result"

    url = service.endpoint_url("progress")
    api = api_at(url)
    await start_worker(sync_handler if kind == "sync" else async_handler, url, concurrency=4)
    ids = [await api.run(None) for _ in range(12)]
    for job_id in ids:
        status = await api.wait(job_id)
        assert status["status"] == "COMPLETED" and status["output"] == "result", status
    await asyncio.sleep(0.3)  # nothing late may change a finished job
    for job_id in ids:
        status = await api.status(job_id)
        assert status["status"] == "COMPLETED" and status["output"] == "result", status


async def test_progress_and_chunks_share_one_sequence(service: Any, start_worker: Any, api_at: Any) -> None:
    def handler(job: Job) -> Any:
        job.progress("p0")
        yield "c0"
        job.progress("p1")
        yield "c1"
        job.progress("p2")

    url = service.endpoint_url("progress")
    api = api_at(url)
    await start_worker(handler, url)
    job_id = await api.run(None)
    assert (await api.wait(job_id))["status"] == "COMPLETED"
    assert await api.chunks(job_id) == ["c0", "c1"]
    record = await service.storage.get("progress", job_id)
    assert record.next_seq == 5  # 3 progress updates + 2 chunks, numbered together


async def test_progress_rejects_unserialisable_values(service: Any, start_worker: Any, api_at: Any) -> None:
    def handler(job: Job) -> Any:
        job.progress(object())
        return "unreachable"

    url = service.endpoint_url("progress")
    api = api_at(url)
    await start_worker(handler, url)
    status = await api.wait(await api.run(None))
    assert status["status"] == "FAILED" and status["error"].startswith("TypeError")


class ItemRecordingTransport(NativeTransport):
    """The real transport, keeping every output item it sends (decoded), in send order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.items: list[dict[str, Any]] = []

    def _keep(self, items: list[bytes]) -> None:
        self.items.extend(msgpack.unpackb(item, raw=False) for item in items)

    async def output(self, job_id: str, token: str, items: list[bytes]) -> int:
        self._keep(items)
        return await super().output(job_id, token, items)

    async def finish(self, job_id: str, token: str, final: Any, items: list[bytes]) -> None:
        self._keep(items)
        await super().finish(job_id, token, final, items)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_tight_progress_loop_is_coalesced(
    kind: str, service: Any, start_worker: Any, api_at: Any
) -> None:
    n = 10_000
    go_on = threading.Event()

    def sync_handler(job: Job) -> Any:
        for i in range(n):
            job.progress(i)
        assert go_on.wait(10)
        return "done"

    async def async_handler(job: Job) -> Any:
        for i in range(n):
            job.progress(i)
        await until(go_on.is_set)
        return "done"

    url = service.endpoint_url("progress")
    api = api_at(url)
    transport = ItemRecordingTransport(url, worker_id="coalesce")
    await start_worker(sync_handler if kind == "sync" else async_handler, url, transport=transport,
                       worker_id="coalesce")
    job_id = await api.run(None)

    async def shows_last() -> bool:
        status = await api.status(job_id)
        assert status["status"] in ("IN_QUEUE", "IN_PROGRESS"), status
        return status["status"] == "IN_PROGRESS" and status.get("output") == n - 1

    await until(shows_last)  # the latest value reaches /status while the job still runs
    sent = [item["data"] for item in transport.items]
    assert len(sent) < n // 10, len(sent)  # far fewer than one request item per call
    assert sent == sorted(sent) and sent[-1] == n - 1
    go_on.set()
    final = await api.wait(job_id)
    assert final["status"] == "COMPLETED" and final["output"] == "done"
    record = await service.storage.get("progress", job_id)
    assert record.next_seq == len(transport.items)  # coalesced items kept one seq, no gaps


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_coalesced_progress_keeps_its_place_among_chunks(
    kind: str, service: Any, start_worker: Any, api_at: Any
) -> None:
    rounds, per_round = 30, 300

    def sync_handler(job: Job) -> Any:
        for r in range(rounds):
            for k in range(per_round):
                job.progress(r * 1000 + k)
            yield f"c{r}"

    async def async_handler(job: Job) -> Any:
        for r in range(rounds):
            for k in range(per_round):
                job.progress(r * 1000 + k)
            yield f"c{r}"

    url = service.endpoint_url("progress")
    api = api_at(url)
    transport = ItemRecordingTransport(url, worker_id="order")
    await start_worker(sync_handler if kind == "sync" else async_handler, url, transport=transport,
                       worker_id="order")
    job_id = await api.run(None)
    assert (await api.wait(job_id))["status"] == "COMPLETED"
    assert await api.chunks(job_id) == [f"c{r}" for r in range(rounds)]
    items = transport.items
    assert [item["seq"] for item in items] == list(range(len(items)))
    assert len(items) < rounds * (per_round + 1) // 10
    # Between chunk r-1 and chunk r: at least one progress update, all from round r, rising,
    # the last being that round's last value; never one from another round.
    group: list[int] = []
    r = 0
    for item in items:
        if item["kind"] == "progress":
            group.append(item["data"])
            continue
        assert item["data"] == f"c{r}"
        assert group and group == sorted(group), (r, group)
        assert all(v // 1000 == r for v in group) and group[-1] == r * 1000 + per_round - 1, (r, group)
        group, r = [], r + 1
    assert r == rounds and not group


async def test_progress_only_requests_are_throttled(service: Any, start_worker: Any, api_at: Any) -> None:
    # A handler publishing progress continuously (yielding to the loop between calls, so the
    # sender could go again after every reply) sends at most one progress-only request per
    # PROGRESS_INTERVAL_S, however fast the service answers.
    ran: list[float] = []

    async def handler(job: Job) -> Any:
        loop = asyncio.get_running_loop()
        began = loop.time()
        i = 0
        while loop.time() - began < 0.5:
            job.progress(i)
            i += 1
            await asyncio.sleep(0)
        ran.append(loop.time() - began)
        return i - 1

    url = service.endpoint_url("progress")
    api = api_at(url)
    transport = ItemRecordingTransport(url, worker_id="throttle")
    await start_worker(handler, url, transport=transport, worker_id="throttle")
    job_id = await api.run(None)
    status = await api.wait(job_id)
    assert status["status"] == "COMPLETED", status
    sent = [item["data"] for item in transport.items]
    assert sent[-1] == status["output"]  # the last update still rides in the finish request
    assert 2 <= len(sent) <= ran[0] / JobReporter.PROGRESS_INTERVAL_S + 2, (len(sent), ran)
