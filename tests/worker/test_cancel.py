"""Cancelling a running job stops its handler; the worker sends nothing more for it."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from tests.support.api import Api
from tests.support.handlers import Sleeper
from worker_kit.worker.execution import Job, JobInterrupted

from .conftest import until


async def running(api: Api, job_id: str) -> None:
    await api.wait(job_id, states={"IN_PROGRESS"})


async def test_cancel_running_async_job(service: Any, start_worker: Any, api_at: Any) -> None:
    slow = Sleeper(60)
    url = service.endpoint_url("cancel")
    api = api_at(url)
    worker = await start_worker(slow, url)
    job_id = await api.run(None)
    await running(api, job_id)
    assert (await api.cancel(job_id))["status"] == "CANCELLED"
    await asyncio.wait_for(slow.cancelled.wait(), 5)
    await asyncio.sleep(0.3)
    assert (await api.status(job_id))["status"] == "CANCELLED"
    assert worker.stats["stopped"] == 1 and worker.running == 0


async def test_cancel_sync_job_sets_flag_and_sends_nothing(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    # A handler that swallows the interruption and returns normally: the flag is set, and
    # its result must not be sent.
    saw_flag = threading.Event()

    def polite(job: Job) -> Any:
        job.progress("working")
        try:
            while not job.cancelled:
                time.sleep(0.01)
        except JobInterrupted:
            pass
        if job.cancelled:
            saw_flag.set()
        return "finished anyway"

    url = service.endpoint_url("cancel")
    api = api_at(url)
    worker = await start_worker(polite, url)
    job_id = await api.run(None)
    await running(api, job_id)
    await api.cancel(job_id)
    assert await asyncio.to_thread(saw_flag.wait, 5)
    await asyncio.sleep(0.3)
    status = await api.status(job_id)
    assert status["status"] == "CANCELLED" and "output" not in status
    assert worker.stats["completed"] == 0


async def test_cancel_interrupts_a_sync_loop(service: Any, start_worker: Any, api_at: Any) -> None:
    # A handler that never checks: it gets JobInterrupted at its next Python step.
    raised = threading.Event()

    def stubborn(job: Job) -> Any:
        try:
            while True:
                sum(range(1000))
        except JobInterrupted:
            raised.set()
            raise

    url = service.endpoint_url("cancel")
    api = api_at(url)
    worker = await start_worker(stubborn, url)
    job_id = await api.run(None)
    await running(api, job_id)
    await api.cancel(job_id)
    assert await asyncio.to_thread(raised.wait, 5)
    await until(lambda: worker.running == 0, 5)
    assert (await api.status(job_id))["status"] == "CANCELLED"
    # The freed slot takes the next job.
    following = await api.run(None)
    await running(api, following)


async def test_cancel_stops_a_stream(service: Any, start_worker: Any, api_at: Any) -> None:
    async def endless(job: Job) -> Any:
        i = 0
        while True:
            yield i
            i += 1
            await asyncio.sleep(0.01)

    url = service.endpoint_url("cancel")
    api = api_at(url)
    await start_worker(endless, url)
    job_id = await api.run(None)
    async def five_chunks() -> bool:
        return len(await api.chunks(job_id)) >= 5

    await until(five_chunks)
    await api.cancel(job_id)
    await asyncio.sleep(0.6)
    count = len(await api.chunks(job_id))
    await asyncio.sleep(0.3)
    assert len(await api.chunks(job_id)) == count
    assert (await api.status(job_id))["status"] == "CANCELLED"


async def test_cancel_reaches_a_job_claimed_after_another_runs(
    service_factory: Any, start_worker: Any, api_at: Any
) -> None:
    # One timer checks which held jobs are due for a heartbeat: the second job, claimed before the
    # first was due, is not due when the timer fires for the first, and must be listed in its turn
    # (a long lease: the heartbeat in flight for the first job would not end for 20 s).
    service = await service_factory(lease_ms=60_000)
    slow = Sleeper(60)
    url = service.endpoint_url("cancel")
    api = api_at(url)
    worker = await start_worker(slow, url, concurrency=2)
    first = await api.run(None)
    await asyncio.sleep(0.02)  # claimed apart, a few ms (not 250) from each other
    second = await api.run(None)
    await running(api, first)
    await running(api, second)
    await api.cancel(second)
    # Counted as stopped first, then its slot frees once the cancelled handler has ended.
    await until(lambda: worker.stats["stopped"] == 1 and worker.running == 1, 5)
    assert (await api.status(first))["status"] == "IN_PROGRESS"
    await api.cancel(first)
    await until(lambda: worker.stats["stopped"] == 2 and worker.running == 0, 5)
