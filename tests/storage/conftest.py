"""Fixtures for the storage conformance suite.

`storage` runs each test once per backend. A new backend is one more entry in BACKENDS:
a function of the test's tmp_path returning an unopened Storage (or None to skip, e.g.
when its server is not reachable).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from worker_kit.storage import Storage, open_storage


def _sqlite_file(tmp_path: Path) -> Storage | None:
    return open_storage(f"sqlite:///{tmp_path / 'jobs.db'}")


def _sqlite_memory(tmp_path: Path) -> Storage | None:
    return open_storage("sqlite://:memory:")


BACKENDS: dict[str, Callable[[Path], Storage | None]] = {
    "sqlite-file": _sqlite_file,
    "sqlite-memory": _sqlite_memory,
}


@pytest.fixture(params=list(BACKENDS))
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    backend = BACKENDS[request.param](tmp_path)
    if backend is None:
        pytest.skip(f"storage backend {request.param} is not available")
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
