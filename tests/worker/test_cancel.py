"""Cancelling a running job stops its handler; the worker sends nothing more for it."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from worker_kit.worker.execution import Job, JobInterrupted

from .conftest import until


async def running(api: Any, url: str, job_id: str) -> None:
    await api.wait(url, job_id, states={"IN_PROGRESS"})


async def test_cancel_running_async_job(service: Any, start_worker: Any, api: Any) -> None:
    cancelled = asyncio.Event()

    async def slow(job: Job) -> Any:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    url = service.endpoint_url("cancel")
    worker = await start_worker(slow, url)
    job_id = await api.run(url, None)
    await running(api, url, job_id)
    assert (await api.cancel(url, job_id))["status"] == "CANCELLED"
    await asyncio.wait_for(cancelled.wait(), 5)
    await asyncio.sleep(0.3)
    assert (await api.status(url, job_id))["status"] == "CANCELLED"
    assert worker.stats["stopped"] == 1 and worker.running == 0


async def test_cancel_sync_job_sets_flag_and_sends_nothing(service: Any, start_worker: Any, api: Any) -> None:
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
    worker = await start_worker(polite, url)
    job_id = await api.run(url, None)
    await running(api, url, job_id)
    await api.cancel(url, job_id)
    assert await asyncio.to_thread(saw_flag.wait, 5)
    await asyncio.sleep(0.3)
    status = await api.status(url, job_id)
    assert status["status"] == "CANCELLED" and "output" not in status
    assert worker.stats["completed"] == 0


async def test_cancel_interrupts_a_sync_loop(service: Any, start_worker: Any, api: Any) -> None:
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
    worker = await start_worker(stubborn, url)
    job_id = await api.run(url, None)
    await running(api, url, job_id)
    await api.cancel(url, job_id)
    assert await asyncio.to_thread(raised.wait, 5)
    await until(lambda: worker.running == 0, 5)
    assert (await api.status(url, job_id))["status"] == "CANCELLED"
    # The freed slot takes the next job.
    following = await api.run(url, None)
    await running(api, url, following)


async def test_cancel_stops_a_stream(service: Any, start_worker: Any, api: Any) -> None:
    async def endless(job: Job) -> Any:
        i = 0
        while True:
            yield i
            i += 1
            await asyncio.sleep(0.01)

    url = service.endpoint_url("cancel")
    await start_worker(endless, url)
    job_id = await api.run(url, None)
    async def five_chunks() -> bool:
        return len(await api.chunks(url, job_id)) >= 5

    await until(five_chunks)
    await api.cancel(url, job_id)
    await asyncio.sleep(0.6)
    count = len(await api.chunks(url, job_id))
    await asyncio.sleep(0.3)
    assert len(await api.chunks(url, job_id)) == count
    assert (await api.status(url, job_id))["status"] == "CANCELLED"
