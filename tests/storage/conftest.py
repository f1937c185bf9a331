"""Fixtures for the storage conformance suite.

`storage` runs each test once per backend, on a `clock` (rules.FakeClock) the test moves
forward instead of sleeping. A new backend is one more entry in BACKENDS: a function of
the test's tmp_path and clock returning an unopened Storage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from worker_kit.storage import Storage
from worker_kit.storage.rules import FakeClock
from worker_kit.storage.sqlite.backend import SQLiteStorage


def _sqlite_file(tmp_path: Path, clock: FakeClock) -> Storage:
    return SQLiteStorage.from_url(f"sqlite:///{tmp_path / 'jobs.db'}", clock=clock)


def _sqlite_memory(tmp_path: Path, clock: FakeClock) -> Storage:
    return SQLiteStorage.from_url("sqlite://:memory:", clock=clock)


BACKENDS: dict[str, Callable[[Path, FakeClock], Storage]] = {
    "sqlite-file": _sqlite_file,
    "sqlite-memory": _sqlite_memory,
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=list(BACKENDS))
async def storage(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Storage]:
    backend = BACKENDS[request.param](tmp_path, clock)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
