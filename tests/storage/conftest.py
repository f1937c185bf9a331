"""Fixtures for the storage conformance suite.

`storage` runs each test once per backend, on a `clock` (rules.FakeClock) the test moves
forward instead of sleeping. A new backend is one more entry in BACKENDS: a function of
the test's tmp_path and clock returning an unopened Storage.

The Redis runs (marked `redis`) use the Redis at REDIS_URL (default redis://127.0.0.1:6379/15),
each under a key prefix of its own that is deleted afterwards; no other key is touched.
Without a reachable Redis they skip, except under CI=true, where they fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.redis_support import redis_prefix_url
from worker_kit.storage import Storage
from worker_kit.storage.redis import RedisStorage
from worker_kit.storage.rules import FakeClock
from worker_kit.storage.sqlite.backend import SQLiteStorage


def _sqlite_file(tmp_path: Path, clock: FakeClock) -> Storage:
    return SQLiteStorage.from_url(f"sqlite:///{tmp_path / 'jobs.db'}", clock=clock)


def _sqlite_memory(tmp_path: Path, clock: FakeClock) -> Storage:
    return SQLiteStorage.from_url("sqlite://:memory:", clock=clock)


BACKENDS: dict[str, Callable[[Path, FakeClock], Storage]] = {
    "sqlite-file": _sqlite_file,
    "sqlite-memory": _sqlite_memory,
    "redis": lambda tmp_path, clock: RedisStorage.from_url("redis://unused", clock=clock),
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=[pytest.param(name, marks=[pytest.mark.redis] if name == "redis" else [])
                        for name in BACKENDS])  # fmt: skip
async def storage(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Storage]:
    if request.param == "redis":
        async with redis_prefix_url() as url:
            backend: Storage = RedisStorage.from_url(url, clock=clock)
            await backend.open()
            try:
                yield backend
            finally:
                await backend.close()
        return
    backend = BACKENDS[request.param](tmp_path, clock)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
