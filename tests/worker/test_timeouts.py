"""Execution timeouts: reported TIMED_OUT at the deadline, the handler stopped; a handler stuck
in native code makes the worker stop claiming and exit with code 3 once its other jobs end."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from tests.support.handlers import Sleeper
from worker_kit.worker.execution import Job
from worker_kit.worker.settings import EXIT_STUCK

from .conftest import make_handler


async def test_async_handler_timed_out_and_cancelled(service: Any, start_worker: Any, api_at: Any) -> None:
    slow = Sleeper(60)
    url = service.endpoint_url("timeouts")
    api = api_at(url)
    await start_worker(make_handler(slow, timeout=0.5), url)
    job_id = await api.run(None)
    status = await api.wait(job_id)
    assert status["status"] == "TIMED_OUT", status
    assert status["error"] == "execution timeout: the job ran longer than 0.5 s"
    await asyncio.wait_for(slow.cancelled.wait(), 5)


async def test_sync_handler_interrupted_at_timeout(service: Any, start_worker: Any, api_at: Any) -> None:
    ended = threading.Event()
    steps = []

    def busy(job: Job) -> Any:
        try:
            while True:  # pure Python: interruptible at the next bytecode
                steps.append(1)
                time.sleep(0.001)
        finally:
            ended.set()

    url = service.endpoint_url("timeouts")
    api = api_at(url)
    worker = await start_worker(make_handler(busy, timeout=0.4), url)
    job_id = await api.run(None)
    status = await api.wait(job_id)
    assert status["status"] == "TIMED_OUT", status
    assert await asyncio.to_thread(ended.wait, 5)
    # The thread really stopped, and its slot is free again: the next job runs.
    count = len(steps)
    await asyncio.sleep(0.1)
    assert len(steps) == count
    second = await api.run(None)
    assert (await api.wait(second))["status"] == "TIMED_OUT"
    assert worker.exit_code == 0 and not worker.task.done()


async def test_job_policy_timeout_wins_over_handler(service: Any, start_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("timeouts")
    api = api_at(url)
    await start_worker(make_handler(Sleeper(60), timeout=60), url)
    job_id = await api.run(None, policy={"executionTimeout": 600})
    status = await api.wait(job_id)
    assert status["status"] == "TIMED_OUT" and "0.6 s" in status["error"]


async def test_worker_timeout_applies_without_handler_or_job_timeout(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    url = service.endpoint_url("timeouts")
    api = api_at(url)
    await start_worker(Sleeper(60), url, timeout=0.3)
    status = await api.wait(await api.run(None))
    assert status["status"] == "TIMED_OUT" and "0.3 s" in status["error"]


async def test_handler_stuck_in_c_exits_with_code_3(service: Any, spawn_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("stuck")
    api = api_at(url)
    worker = await spawn_worker("stuck_in_c.py", url, concurrency=2, stuck_grace=0.5, on_stuck="exit")
    stuck = await api.run({"sleep": 60})
    # Runs beside it, with a longer timeout, and must still finish after the worker got stuck.
    other = await api.run({"sleep": 2.5}, policy={"executionTimeout": 10_000})
    status = await api.wait(stuck)
    assert status["status"] == "TIMED_OUT", status
    await worker.wait_log("stuck in native code")
    queued = await api.run({"sleep": 0})  # the worker takes no new job once stuck
    assert (await api.wait(other))["status"] == "COMPLETED"
    assert await worker.wait(15) == EXIT_STUCK
    assert (await api.status(queued))["status"] == "IN_QUEUE"


async def test_async_handler_swallowing_its_cancel_exits_with_code_3(
    service: Any, spawn_worker: Any, api_at: Any
) -> None:
    # The process must really end (not hang while the event loop closes) so it can be restarted.
    url = service.endpoint_url("stubborn")
    api = api_at(url)
    worker = await spawn_worker("swallows_cancel.py", url, stuck_grace=0.5, on_stuck="exit")
    job = await api.run(None)
    assert (await api.wait(job))["status"] == "TIMED_OUT"
    assert await worker.wait(15) == EXIT_STUCK
