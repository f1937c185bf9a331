"""How the SQLite engine commits small writes on the event loop: while writes come one per loop
iteration, each commits as it is made; writes that come together still share one commit; and a
lone submit (one statement) runs without BEGIN and COMMIT around it, failing cleanly and waiting
for another writer like any write."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from worker_kit.errors import StorageError
from worker_kit.job import Policy
from worker_kit.storage import open_storage
from worker_kit.storage.sqlite import connections, engine
from worker_kit.storage.sqlite.backend import SQLiteStorage

from .test_sqlite import WriteLock

EP = "ep"


async def opened(path: Path) -> SQLiteStorage:
    storage = open_storage(f"sqlite:///{path}")
    assert isinstance(storage, SQLiteStorage)
    await storage.open()
    return storage


def submit(storage: SQLiteStorage, value: Any) -> Coroutine[Any, Any, Any]:
    return storage.submit(EP, value, policy=Policy(), retention_ms=60_000)


async def quiet(storage: SQLiteStorage) -> None:
    """Writes one per loop iteration, until the loop is quiet (engine.QUIET_AFTER)."""
    for n in range(engine.QUIET_AFTER):
        await submit(storage, f"one of {n}")
        await asyncio.sleep(0)  # the iteration ends with one write


def finished_at_once(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """(whether the coroutine ended on its first step, what it returned)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return True, done.value
    coro.close()
    return False, None


async def test_a_write_alone_in_its_loop_iteration_commits_at_once(tmp_path: Path) -> None:
    storage = await opened(tmp_path / "jobs.db")
    try:
        for n in range(engine.QUIET_AFTER):  # each waits for its iteration's end: not quiet yet
            ended, _ = finished_at_once(submit(storage, n))
            assert not ended
            await asyncio.sleep(0.01)
        for n in range(1, 4):
            ended, job = finished_at_once(submit(storage, n))
            assert ended, "a write alone waited for the loop"
            assert (await storage.get(EP, job.id)).input == n  # committed: a reader sees it
            await asyncio.sleep(0)
        assert (await storage.counts(EP))["IN_QUEUE"] == engine.QUIET_AFTER + 3  # the first ones too
    finally:
        await storage.close()


async def test_writes_made_together_share_one_commit(tmp_path: Path) -> None:
    storage = await opened(tmp_path / "jobs.db")
    try:
        await quiet(storage)
        before = storage.stats()["transactions"]
        # Quiet: the first of these commits at once, the other nine wait for the iteration's end.
        jobs = await asyncio.gather(*(submit(storage, n) for n in range(10)))
        assert storage.stats()["transactions"] - before == 2
        before = storage.stats()["transactions"]
        # No longer quiet (the last iteration wrote ten times): all ten share one commit.
        jobs += await asyncio.gather(*(submit(storage, n) for n in range(10)))
        assert storage.stats()["transactions"] - before == 1
        # Writes alone wait for their iteration's end until there were QUIET_AFTER of them.
        for n in range(engine.QUIET_AFTER):
            ended, _ = finished_at_once(submit(storage, f"alone {n}"))
            assert not ended
            await asyncio.sleep(0.01)
        assert finished_at_once(submit(storage, "quiet again"))[0]
        assert len({job.id for job in jobs}) == 20
        assert (await storage.counts(EP))["IN_QUEUE"] == 24 + engine.QUIET_AFTER
    finally:
        await storage.close()


@pytest.mark.parametrize("size", [10, connections.LOOP_BYTES * 2], ids=["on the loop", "on the thread"])
async def test_a_lone_submit_that_fails_changes_nothing(tmp_path: Path, size: int) -> None:
    path = tmp_path / "jobs.db"
    storage = await opened(path)
    try:
        await quiet(storage)
        with sqlite3.connect(path) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON jobs WHEN length(NEW.input) > 5 "
                "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
            )
        await asyncio.sleep(0)
        with pytest.raises(StorageError, match="refused by a test trigger"):
            await submit(storage, "x" * size)
        counts = await storage.counts(EP)
        assert counts["IN_QUEUE"] == engine.QUIET_AFTER  # the counts moved only for what committed
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == engine.QUIET_AFTER
            conn.execute("DROP TRIGGER refuse")
        job = await submit(storage, "x" * size)
        assert (await storage.get(EP, job.id)).input == "x" * size
        assert (await storage.counts(EP))["IN_QUEUE"] == engine.QUIET_AFTER + 1
    finally:
        await storage.close()


async def test_a_lone_submit_waits_for_another_writer(tmp_path: Path) -> None:
    # The loop's connection never waits for a lock: a submit it cannot write goes to the writer
    # thread, which waits for the other writer to end, then commits it.
    path = tmp_path / "jobs.db"
    storage = await opened(path)
    try:
        await quiet(storage)
        lock = WriteLock(path)
        try:
            task = asyncio.ensure_future(submit(storage, 1))
            await asyncio.sleep(0.3)
            assert not task.done()
        finally:
            lock.release()
        job = await task
        assert (await storage.get(EP, job.id)).input == 1
        assert (await storage.counts(EP))["IN_QUEUE"] == engine.QUIET_AFTER + 1
    finally:
        await storage.close()


async def busy(storage: SQLiteStorage) -> None:
    """An iteration of several writes: the loop is not quiet (its writes wait for the hand-over)."""
    await asyncio.gather(submit(storage, "busy 1"), submit(storage, "busy 2"))


async def _one_turn_later(storage: SQLiteStorage, value: Any) -> Any:
    await asyncio.sleep(0)  # a turn of the loop later than the task's first step
    return await submit(storage, value)


@pytest.mark.parametrize("wait", [True, False], ids=["waiting a turn", "not waiting"])
async def test_a_busy_loop_gathers_the_next_turns_writes_into_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wait: bool
) -> None:
    monkeypatch.setattr(engine, "WAIT_A_TURN", wait)
    storage = await opened(tmp_path / "jobs.db")
    try:
        await busy(storage)
        before = storage.stats()["transactions"]
        first = asyncio.ensure_future(submit(storage, "first"))
        second = asyncio.ensure_future(_one_turn_later(storage, "second"))
        jobs = await asyncio.gather(first, second)
        assert storage.stats()["transactions"] - before == (1 if wait else 2)
        for job, value in zip(jobs, ("first", "second"), strict=True):
            assert (await storage.get(EP, job.id)).input == value
    finally:
        await storage.close()


async def test_writes_in_every_turn_still_commit_after_one_turn_more(tmp_path: Path) -> None:
    # The outbox waits once: a loop that writes in every turn does not hold a commit back.
    storage = await opened(tmp_path / "jobs.db")
    try:
        await busy(storage)
        first = asyncio.ensure_future(submit(storage, "first"))
        others = []
        turns = 0
        while not first.done() and turns < 20:
            await asyncio.sleep(0)
            turns += 1
            others.append(asyncio.ensure_future(submit(storage, turns)))
        await asyncio.gather(*others)
        # written in turn 1, waited in turn 2, committed in turn 3, its caller resumed in turn 4
        assert first.done() and turns <= 4
        assert (await storage.get(EP, first.result().id)).input == "first"
        assert (await storage.counts(EP))["IN_QUEUE"] == 3 + len(others)
    finally:
        await storage.close()


async def test_a_quiet_loop_does_not_wait_a_turn(tmp_path: Path) -> None:
    storage = await opened(tmp_path / "jobs.db")
    try:
        await quiet(storage)
        before = storage.stats()["transactions"]
        first = asyncio.ensure_future(submit(storage, "first"))
        second = asyncio.ensure_future(_one_turn_later(storage, "second"))
        await asyncio.gather(first, second)
        assert storage.stats()["transactions"] - before == 2  # each committed in its own turn
    finally:
        await storage.close()
