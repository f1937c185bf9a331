"""When the SQLite backend checkpoints its WAL, and the ids it gives jobs (which decide where a
submit writes in the index on the id)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from worker_kit.job import Policy, new_job_id
from worker_kit.storage import open_storage
from worker_kit.storage.sqlite import engine
from worker_kit.storage.sqlite.backend import SQLiteStorage

EP = "ep"
#: A WAL frame: a page and its 24-byte header.
FRAME = 4096 + 24


async def opened(path: Path) -> SQLiteStorage:
    storage = open_storage(f"sqlite:///{path}")
    assert isinstance(storage, SQLiteStorage)
    await storage.open()
    return storage


async def submit(storage: SQLiteStorage, n: int, pad: int = 0) -> None:
    for i in range(n):
        await storage.submit(EP, {"n": i, "pad": "x" * pad}, policy=Policy(), retention_ms=60_000)


async def settled(storage: SQLiteStorage, every: int) -> int:
    """The checkpoint interval once the writer thread's checkpoint has changed it from `every`."""
    deadline = time.monotonic() + 10
    while storage._engine.checkpoint_every == every:
        assert time.monotonic() < deadline, "no checkpoint adjusted the interval"
        await asyncio.sleep(0.02)
    return storage._engine.checkpoint_every


async def test_small_commits_are_checkpointed_less_often_and_the_wal_stays_bounded(tmp_path: Path) -> None:
    # One small submit at a time: each is a commit of its own on the event loop, a few pages.
    path = tmp_path / "jobs.db"
    storage = await opened(path)
    try:
        await submit(storage, engine.CHECKPOINT_EVERY)
        every = await settled(storage, engine.CHECKPOINT_EVERY)
        assert engine.CHECKPOINT_EVERY < every <= engine.CHECKPOINT_EVERY_BOUNDS[1]
        await submit(storage, 3 * every)
        wal = path.with_name("jobs.db-wal").stat().st_size
        # Checkpointed on the way (the WAL is written again from its start), never far past its aim.
        assert wal <= 1.5 * engine.CHECKPOINT_PAGES * FRAME
        with sqlite3.connect(path) as conn:
            stored = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
        assert stored == engine.CHECKPOINT_EVERY + 3 * every
    finally:
        await storage.close()


async def test_large_commits_are_checkpointed_more_often(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "CHECKPOINT_PAGES", 400)
    path = tmp_path / "jobs.db"
    storage = await opened(path)
    try:
        await submit(storage, engine.CHECKPOINT_EVERY, pad=6000)  # 3 pages of a row each, and its indexes'
        every = await settled(storage, engine.CHECKPOINT_EVERY)
        assert engine.CHECKPOINT_EVERY_BOUNDS[0] <= every < engine.CHECKPOINT_EVERY
        await submit(storage, 10 * every, pad=6000)
        assert path.with_name("jobs.db-wal").stat().st_size <= 3 * engine.CHECKPOINT_PAGES * FRAME
    finally:
        await storage.close()


def test_job_ids_are_32_hex_digits_in_the_order_they_were_made() -> None:
    ids = []
    for _ in range(5):
        ids.append(new_job_id())
        time.sleep(0.002)
    assert all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # The first 12 digits are the time in milliseconds; the other 20 are random.
    assert abs(int(ids[-1][:12], 16) - time.time() * 1000) < 5_000
    assert len({new_job_id()[12:] for _ in range(10_000)}) == 10_000


async def test_submits_of_one_commit_share_the_last_page_of_the_id_index(tmp_path: Path) -> None:
    # Ids growing with time go to the end of the index on the id: 200 jobs fill a few pages
    # of it, densely, where random ids leave pages half full all over it.
    path = tmp_path / "jobs.db"
    storage = await opened(path)
    try:
        await asyncio.gather(*(submit(storage, 25) for _ in range(8)))
    finally:
        await storage.close()
    with sqlite3.connect(path) as conn:
        pages = conn.execute(
            "SELECT count(*) FROM dbstat WHERE name = 'sqlite_autoindex_jobs_1' AND pagetype = 'leaf'"
        ).fetchone()[0]
        unused = conn.execute(
            "SELECT sum(unused) * 1.0 / sum(pgsize) FROM dbstat WHERE name = 'sqlite_autoindex_jobs_1' "
            "AND pagetype = 'leaf'"
        ).fetchone()[0]
    assert pages <= 4 and unused < 0.3
