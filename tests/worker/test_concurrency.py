"""Concurrency: N jobs overlap, several jobs come in one claim, a dynamic limit changes
without draining, and sync handlers do not block the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from worker_kit.worker.execution import Job
from worker_kit.worker.transport import NativeTransport


class ClaimCountingTransport(NativeTransport):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.claims: list[tuple[int, int]] = []  # (max asked, jobs received)

    async def claim(self, max_jobs: int, wait_ms: int, **kw: Any) -> Any:
        jobs, lease = await super().claim(max_jobs, wait_ms, **kw)
        self.claims.append((max_jobs, len(jobs)))
        return jobs, lease


async def test_sync_jobs_overlap(service: Any, start_worker: Any, api_at: Any) -> None:
    # Four sync handlers meet at a barrier: only possible if all four run at once.
    barrier = threading.Barrier(4, timeout=10)

    def meet(job: Job) -> Any:
        return barrier.wait()

    url = service.endpoint_url("conc")
    api = api_at(url)
    await start_worker(meet, url, concurrency=4)
    ids = [await api.run(i) for i in range(4)]
    results = [await api.wait(job_id) for job_id in ids]
    assert [r["status"] for r in results] == ["COMPLETED"] * 4
    assert sorted(r["output"] for r in results) == [0, 1, 2, 3]


async def test_concurrency_is_a_limit(service: Any, start_worker: Any, api_at: Any) -> None:
    active, peak = 0, 0
    lock = threading.Lock()

    def work(job: Job) -> Any:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1

    url = service.endpoint_url("conc")
    api = api_at(url)
    await start_worker(work, url, concurrency=3)
    ids = [await api.run(i) for i in range(12)]
    for job_id in ids:
        assert (await api.wait(job_id))["status"] == "COMPLETED"
    assert peak == 3


async def test_several_jobs_in_one_claim(service: Any, start_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("conc")
    api = api_at(url)
    ids = [await api.run(i) for i in range(5)]
    transport = ClaimCountingTransport(url, worker_id="counting")
    await start_worker(lambda job: job.input, url, concurrency=8, transport=transport, worker_id="counting")
    for job_id in ids:
        assert (await api.wait(job_id))["status"] == "COMPLETED"
    assert transport.claims[0] == (8, 5)


async def test_async_handlers_overlap_on_one_loop(service: Any, start_worker: Any, api_at: Any) -> None:
    barrier = asyncio.Barrier(5)

    async def meet(job: Job) -> Any:
        async with asyncio.timeout(10):
            return await barrier.wait()

    url = service.endpoint_url("conc")
    api = api_at(url)
    await start_worker(meet, url, concurrency=5)
    ids = [await api.run(i) for i in range(5)]
    assert [(await api.wait(j))["status"] for j in ids] == ["COMPLETED"] * 5


async def test_dynamic_concurrency_changes_without_draining(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    limit = {"value": 1}
    release_first = threading.Event()
    started: list[Any] = []

    def work(job: Job) -> Any:
        started.append(job.input)
        if job.input == "first":
            assert release_first.wait(15)
        return job.input

    url = service.endpoint_url("conc")
    api = api_at(url)
    await start_worker(work, url, concurrency=lambda current: limit["value"])
    first = await api.run("first")
    await api.wait(first, states={"IN_PROGRESS"})
    others = [await api.run(f"other{i}") for i in range(2)]
    await asyncio.sleep(0.3)
    assert started == ["first"]  # the limit of 1 holds
    limit["value"] = 3  # raised while "first" still runs
    for job_id in others:
        assert (await api.wait(job_id))["status"] == "COMPLETED"
    assert (await api.status(first))["status"] == "IN_PROGRESS"  # no drain was needed
    release_first.set()
    assert (await api.wait(first))["status"] == "COMPLETED"


async def test_sync_handler_does_not_block_heartbeats(
    service_factory: Any, start_worker: Any, api_at: Any
) -> None:
    # A CPU-bound sync job longer than the lease: heartbeats go on from the loop, so the
    # lease never expires and the job completes on its first attempt.
    service = await service_factory(lease_ms=600)

    def crunch(job: Job) -> Any:
        end = time.monotonic() + 2.0
        n = 0
        while time.monotonic() < end:
            n += sum(range(100))
        return "done"

    url = service.endpoint_url("conc")
    api = api_at(url)
    await start_worker(crunch, url)
    job_id = await api.run(None)
    status = await api.wait(job_id)
    assert status["status"] == "COMPLETED" and status["output"] == "done"
    record = await service.storage.get("conc", job_id)
    assert record.attempt == 1
