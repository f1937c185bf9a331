"""Wake-ups: a new job wakes as many waiting claims as it can fill, a job's change wakes all its
waiters, and a targeted wake that reaches a wait ending without acting on it is handed on."""

from __future__ import annotations

import asyncio
from pathlib import Path

from worker_kit.job import Policy
from worker_kit.service.http import wait_until
from worker_kit.storage import Notifier, open_storage
from worker_kit.storage.base import job_channel, queue_channel

Q = queue_channel("ep")


async def _waiters(notifier: Notifier, channel: str, n: int) -> list[asyncio.Task[bool]]:
    tasks = [asyncio.create_task(notifier.wait(channel, 5)) for _ in range(n)]
    await asyncio.sleep(0.01)
    assert notifier.waiting(channel) == n
    return tasks


async def test_a_queue_publish_wakes_as_many_waiters_as_it_names_longest_first() -> None:
    notifier = Notifier()
    tasks = await _waiters(notifier, Q, 4)
    notifier.publish(Q)
    await asyncio.sleep(0.01)
    assert [t.done() for t in tasks] == [True, False, False, False]
    notifier.publish(Q, 2)
    await asyncio.sleep(0.01)
    assert [t.done() for t in tasks] == [True, True, True, False]
    notifier.publish(Q, 5)  # more than are waiting
    await asyncio.sleep(0.01)
    assert all(t.done() and t.result() for t in tasks) and notifier.waiting(Q) == 0


async def test_a_job_publish_wakes_every_waiter() -> None:
    notifier = Notifier()
    tasks = await _waiters(notifier, job_channel("j1"), 3)
    notifier.publish(job_channel("j1"))
    await asyncio.sleep(0.01)
    assert all(t.done() and t.result() for t in tasks)


async def test_a_submit_wakes_one_waiting_claim(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'n.db'}")
    await storage.open()
    try:
        tasks = [asyncio.create_task(storage.wait(Q, 5)) for _ in range(3)]
        await asyncio.sleep(0.01)
        await storage.submit("ep", {}, policy=Policy(), retention_ms=1000)
        await asyncio.sleep(0.05)
        assert sum(t.done() for t in tasks) == 1
        for _ in range(2):
            await storage.submit("ep", {}, policy=Policy(), retention_ms=1000)
        await asyncio.sleep(0.05)
        assert all(t.done() for t in tasks)
    finally:
        await storage.close()


async def test_a_wake_reaching_a_claim_whose_client_left_is_handed_on(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'n.db'}")
    await storage.open()
    try:
        left = asyncio.Event()
        checks: list[str] = []

        async def check_for(name: str) -> object:
            checks.append(name)
            return None

        async def leaving() -> object:
            return await wait_until(storage, Q, 5, lambda: check_for("leaving"), gone=left.is_set)

        first = asyncio.create_task(leaving())
        await asyncio.sleep(0.05)
        second = asyncio.create_task(wait_until(storage, Q, 5, lambda: check_for("staying")))
        await asyncio.sleep(0.05)
        assert checks == ["leaving", "staying"]
        left.set()  # the first claim's client is gone, but the wait has not noticed yet...
        storage.publish(Q)  # ...when the one wake a new job sends goes to it, the longest waiter
        assert await asyncio.wait_for(first, 2) is None
        await asyncio.sleep(0.1)
        assert checks == ["leaving", "staying", "staying"]  # handed on: the other claim looked
        second.cancel()
    finally:
        await storage.close()
