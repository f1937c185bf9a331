"""A handler's run settles (frees its slot) however early it is stopped."""

from __future__ import annotations

import asyncio
from typing import Any

from worker_kit.worker.execution import Run
from worker_kit.worker.handler_job import Job
from worker_kit.worker.registry import Handler


class _Sink:
    """Where the run's output would go; this run yields none."""

    buffered = 0

    def add(self, kind: str, packed_data: bytes) -> None:
        raise AssertionError("nothing is emitted")

    async def wait_room(self) -> None:
        return None


async def test_a_run_stopped_before_its_first_step_still_settles() -> None:
    ran: list[Any] = []

    async def handler(job: Job) -> Any:
        ran.append(job.id)
        return "never"

    run = Run(Handler(handler, "h"), Job("j1", None), _Sink())
    run.start()
    run.interrupt()  # before the loop ever ran the run's task
    await asyncio.wait_for(run.settled, 2)
    assert ran == []
    assert run.result.done() and run.result.result().state is None
