"""A worker's start stays light: no aiohttp (or other heavy HTTP library) in the worker, nor in
the handler's process with process isolation (worker_kit/worker/http_client.py says why)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def mapped_libraries(pid: int) -> str:
    """The files a process has mapped: its loaded extension modules among them."""
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize("isolation", ["thread", "process"])
async def test_a_started_worker_has_not_imported_aiohttp(
    service: Any, spawn_worker: Any, api_at: Any, isolation: str
) -> None:
    url = service.endpoint_url("cold")
    api = api_at(url)
    worker = await spawn_worker("modules.py", url, isolation=isolation)
    job_id = await api.run(1)
    status = await api.wait(job_id)
    assert status["status"] == "COMPLETED", status
    # In the process that ran the handler (the worker itself, or its child)...
    assert status["output"]["heavy"] == []
    # ...and in the worker process, which has opened its transport and claimed by now: its
    # HTTP parser's extension is mapped, aiohttp's and its dependencies' are not.
    maps = mapped_libraries(worker.pid)
    assert "httptools" in maps
    for name in ("aiohttp", "multidict", "yarl", "pycares"):
        assert f"/{name}/" not in maps, name
    assert status["output"]["httptools"] is (isolation == "thread")
