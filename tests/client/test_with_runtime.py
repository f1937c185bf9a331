"""The client end to end with the real worker runtime (worker_kit.worker.loop.Worker) in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from worker_kit import JobCancelled, JobFailed
from worker_kit.client import AsyncEndpoint
from worker_kit.worker.loop import Worker
from worker_kit.worker.registry import get_handler

started = asyncio.Event()
release = asyncio.Event()


async def tokens(job: Any) -> AsyncIterator[str]:
    job.progress({"stage": "warming up"})
    await release.wait()
    for word in job.input["text"].split():
        yield word + " "


async def slow(job: Any) -> str:
    started.set()
    await asyncio.sleep(60)
    return "never"


def broken(job: Any) -> None:
    raise ValueError(f"cannot handle {job.input!r}")


async def _worker(fn: Any, url: str) -> tuple[Worker, asyncio.Task[int]]:
    worker = Worker(get_handler(fn), url, concurrency=2, claim_wait_s=1.0, grace_s=1.0)
    return worker, asyncio.create_task(worker.run())


@pytest.fixture(autouse=True)
def _fresh_events() -> None:
    started.clear()
    release.clear()


async def test_streamed_tokens_progress_and_output(service: Any) -> None:
    url = service.endpoint_url("runtime-stream")
    worker, task = await _worker(tokens, url)
    try:
        async with AsyncEndpoint(url) as ep:
            handle = await ep.run({"text": "the quick brown fox"})
            async for status in handle.watch(timeout=15):
                if status.get("output") == {"stage": "warming up"}:
                    release.set()
                    break
            assert [t async for t in handle.stream()] == ["the ", "quick ", "brown ", "fox "]
            assert (await handle.wait(timeout=10))["status"] == "COMPLETED"
    finally:
        await worker.stop(0)
        await task


async def test_failure_and_cancel_of_a_running_handler(service: Any) -> None:
    url_broken, url_slow = service.endpoint_url("runtime-broken"), service.endpoint_url("runtime-slow")
    broken_worker, broken_task = await _worker(broken, url_broken)
    slow_worker, slow_task = await _worker(slow, url_slow)
    try:
        async with AsyncEndpoint(url_broken) as ep:
            with pytest.raises(JobFailed) as failed:
                await ep.run_sync({"n": 1}, timeout=15)
            assert "cannot handle" in failed.value.error
        async with AsyncEndpoint(url_slow) as ep:
            handle = await ep.run({})
            await asyncio.wait_for(started.wait(), 10)
            assert (await handle.cancel())["status"] == "CANCELLED"
            with pytest.raises(JobCancelled):
                await handle.output(timeout=10)
            for _ in range(500):  # the worker hears the cancel and stops the handler
                if slow_worker.stats["stopped"]:
                    break
                await asyncio.sleep(0.02)
            assert slow_worker.stats["stopped"] == 1
    finally:
        for worker, task in ((broken_worker, broken_task), (slow_worker, slow_task)):
            await worker.stop(0)
            await task
