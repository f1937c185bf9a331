"""Process isolation: the handler runs in a supervised child process. Crashes end the job
FAILED with their cause at once, stuck handlers are killed, children over the memory cap are
replaced, and the worker (same PID throughout) serves the next job."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import until


def setups(tmp_path: Path) -> list[int]:
    path = tmp_path / "setup.log"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@pytest.mark.parametrize(
    ("do", "cause"),
    [
        ("segv", "killed by signal 11 (SIGSEGV)"),
        ("exit", "exited with code 7"),
        ("oom", "killed by signal 9 (SIGKILL), probably out of memory"),
    ],
)
async def test_a_dying_child_fails_its_job_at_once_and_the_next_job_is_served(
    service: Any, spawn_worker: Any, api: Any, tmp_path: Path, do: str, cause: str
) -> None:
    url = service.endpoint_url(f"iso-{do}")
    worker = await spawn_worker("isolated.py", url)
    first = await api.wait(url, await api.run(url, {"do": "pid"}))
    child = first["output"]["pid"]
    assert child != worker.pid
    began = time.monotonic()
    status = await api.wait(url, await api.run(url, {"do": do}))
    assert time.monotonic() - began < 3  # not a lease expiry away
    assert status["status"] == "FAILED", status
    assert status["error"] == f"the handler's process (pid {child}) {cause}"
    nxt = await api.wait(url, await api.run(url, {"do": "pid"}), timeout=10)
    assert nxt["status"] == "COMPLETED" and nxt["output"]["pid"] not in (child, worker.pid)
    assert worker.proc.returncode is None


@pytest.mark.parametrize("do", ["sleep", "regex"])
async def test_a_stuck_child_is_killed_and_replaced(
    service: Any, spawn_worker: Any, api: Any, do: str
) -> None:
    url = service.endpoint_url(f"iso-stuck-{do}")
    worker = await spawn_worker("isolated.py", url, stuck_grace=0.3)
    began = time.monotonic()
    status = await api.wait(url, await api.run(url, {"do": do}))
    assert status["status"] == "TIMED_OUT", status
    assert time.monotonic() - began < 1 + 3
    nxt = await api.wait(url, await api.run(url, {"do": "pid"}), timeout=10)
    assert nxt["status"] == "COMPLETED", nxt
    await worker.wait_log("killing its handler process")
    assert worker.proc.returncode is None and "replacing this worker process" not in worker.logs()


async def test_setup_runs_once_per_child(service: Any, spawn_worker: Any, api: Any, tmp_path: Path) -> None:
    url = service.endpoint_url("iso-setup")
    worker = await spawn_worker("isolated.py", url, concurrency=2)
    await until(lambda: len(setups(tmp_path)) == 3)  # the worker itself, and its two children
    pids = set()
    for _ in range(4):
        status = await api.wait(url, await api.run(url, {"do": "pid"}))
        pids.add(status["output"]["pid"])
    assert pids <= set(setups(tmp_path)) and worker.pid not in pids
    assert sorted(setups(tmp_path)) == sorted({worker.pid, *setups(tmp_path)})  # no process set up twice
    await api.wait(url, await api.run(url, {"do": "exit"}))
    await until(lambda: len(setups(tmp_path)) == 4)  # the replacement child
    assert len(set(setups(tmp_path))) == 4


async def test_streaming_and_cancel_work_in_a_child(service: Any, spawn_worker: Any, api: Any) -> None:
    url = service.endpoint_url("iso-stream")
    await spawn_worker("isolated.py", url)
    job = await api.run(url, {"do": "stream", "n": 50})
    status = await api.wait(url, job)
    assert status["status"] == "COMPLETED", status
    chunks = await api.chunks(url, job)
    assert [c["i"] for c in chunks] == list(range(50))
    # A cancel stops a handler stuck in C: its child is killed after the stuck grace.
    stuck = await api.run(url, {"do": "sleep"}, policy={"executionTimeout": 30_000})
    await api.wait(url, stuck, states={"IN_PROGRESS"})
    await api.cancel(url, stuck)
    assert (await api.wait(url, stuck))["status"] == "CANCELLED"
    assert (await api.wait(url, await api.run(url, {"do": "pid"}), timeout=15))["status"] == "COMPLETED"


async def test_kill_rss_fails_a_growing_job_at_once(service: Any, spawn_worker: Any, api: Any) -> None:
    url = service.endpoint_url("iso-grow")
    worker = await spawn_worker("isolated.py", url, kill_rss_mb=200)
    status = await api.wait(url, await api.run(url, {"do": "grow"}, policy={"executionTimeout": 30_000}))
    assert status["status"] == "FAILED", status
    assert "over WORKER_KIT_KILL_RSS_MB=200: killed" in status["error"]
    assert (await api.wait(url, await api.run(url, {"do": "pid"}), timeout=10))["status"] == "COMPLETED"
    assert worker.proc.returncode is None
