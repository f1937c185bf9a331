"""Process isolation: the handler runs in a supervised child process. Crashes end the job
FAILED with their cause at once, stuck handlers are killed, children over the memory cap are
replaced, and the worker (same PID throughout) serves the next job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.api import Api
from worker_kit.worker.settings import EXIT_CONFIG

from .conftest import HANDLERS, until

#: Jobs that allocate: more than the handlers' 1 s timeout on a loaded machine.
LONG = {"executionTimeout": 20_000}


def setups(tmp_path: Path) -> list[int]:
    path = tmp_path / "setup.log"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


CRASHES = [
    ("segv", "killed by signal 11 (SIGSEGV)"),
    ("exit", "exited with code 7"),
    ("oom", "killed by signal 9 (SIGKILL), probably out of memory"),
]


async def test_a_dying_child_fails_its_job_at_once_and_the_next_job_is_served(
    service: Any, spawn_worker: Any, api_at: Any
) -> None:
    url = service.endpoint_url("iso-crash")
    api = api_at(url)
    worker = await spawn_worker("isolated.py", url)
    child = (await api.wait(await api.run({"do": "pid"})))["output"]["pid"]
    assert child != worker.pid
    for do, cause in CRASHES:  # one worker through all three: it goes on after each
        began = time.monotonic()
        status = await api.wait(await api.run({"do": do}))
        assert time.monotonic() - began < 3, do  # not a lease expiry away
        assert status["status"] == "FAILED", status
        assert status["error"] == f"the handler's process (pid {child}) {cause}"
        nxt = await api.wait(await api.run({"do": "pid"}), timeout=10)
        assert nxt["status"] == "COMPLETED" and nxt["output"]["pid"] not in (child, worker.pid)
        child = nxt["output"]["pid"]
    assert worker.proc.returncode is None


@pytest.mark.parametrize("do", ["sleep", "regex"])
async def test_a_stuck_child_is_killed_and_replaced(
    service: Any, spawn_worker: Any, api_at: Any, do: str
) -> None:
    url = service.endpoint_url(f"iso-stuck-{do}")
    api = api_at(url)
    worker = await spawn_worker("isolated.py", url, stuck_grace=0.3)
    began = time.monotonic()
    status = await api.wait(await api.run({"do": do}))
    assert status["status"] == "TIMED_OUT", status
    assert time.monotonic() - began < 1 + 3
    nxt = await api.wait(await api.run({"do": "pid"}), timeout=10)
    assert nxt["status"] == "COMPLETED", nxt
    await worker.wait_log("killing its handler process")
    assert worker.proc.returncode is None and "replacing this worker process" not in worker.logs()


async def test_setup_runs_once_per_child(
    service: Any, spawn_worker: Any, api_at: Any, tmp_path: Path
) -> None:
    url = service.endpoint_url("iso-setup")
    api = api_at(url)
    worker = await spawn_worker("isolated.py", url, concurrency=2)
    await until(lambda: len(setups(tmp_path)) == 3)  # the worker itself, and its two children
    pids = set()
    for _ in range(4):
        status = await api.wait(await api.run({"do": "pid"}))
        pids.add(status["output"]["pid"])
    assert pids <= set(setups(tmp_path)) and worker.pid not in pids
    assert sorted(setups(tmp_path)) == sorted({worker.pid, *setups(tmp_path)})  # no process set up twice
    await api.wait(await api.run({"do": "exit"}))
    await until(lambda: len(setups(tmp_path)) == 4)  # the replacement child
    assert len(set(setups(tmp_path))) == 4


async def test_streaming_and_cancel_work_in_a_child(service: Any, spawn_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("iso-stream")
    api = api_at(url)
    await spawn_worker("isolated.py", url, stuck_grace=0.3)
    job = await api.run({"do": "stream", "n": 50})
    status = await api.wait(job)
    assert status["status"] == "COMPLETED", status
    chunks = await api.chunks(job)
    assert [c["i"] for c in chunks] == list(range(50))
    # A cancel stops a handler stuck in C: its child is killed after the stuck grace.
    stuck = await api.run({"do": "sleep"}, policy={"executionTimeout": 30_000})
    await api.wait(stuck, states={"IN_PROGRESS"})
    await api.cancel(stuck)
    assert (await api.wait(stuck))["status"] == "CANCELLED"
    assert (await api.wait(await api.run({"do": "pid"}), timeout=15))["status"] == "COMPLETED"


async def test_kill_rss_fails_a_growing_job_at_once(service: Any, spawn_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("iso-grow")
    api = api_at(url)
    worker = await spawn_worker("isolated.py", url, kill_rss_mb=200)
    status = await api.wait(await api.run({"do": "grow"}, policy={"executionTimeout": 30_000}))
    assert status["status"] == "FAILED", status
    assert "over WORKER_KIT_KILL_RSS_MB=200: killed" in status["error"]
    assert (await api.wait(await api.run({"do": "pid"}), timeout=10))["status"] == "COMPLETED"
    assert worker.proc.returncode is None


async def test_max_rss_retires_a_child_after_its_job(service: Any, spawn_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("iso-hold")
    api = api_at(url)
    worker = await spawn_worker("isolated.py", url, max_rss_mb=150)
    big = await api.wait(await api.run({"do": "hold", "mb": 160}, policy=LONG))
    assert big["status"] == "COMPLETED" and big["output"]["held_mb"] == 160  # the job itself finishes
    await worker.wait_log(f"memory guard: handler process {big['output']['pid']} uses")
    nxt = await api.wait(await api.run({"do": "pid"}), timeout=10)
    assert nxt["output"]["held_mb"] == 0 and nxt["output"]["pid"] != big["output"]["pid"]


async def test_isolation_setting_applies_to_any_handler(service: Any, spawn_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("iso-env")
    api = api_at(url)
    worker = await spawn_worker("stuck.py", url, isolation="process", stuck_grace=0.3)
    assert "each job in a handler process" in worker.logs()
    first = await api.wait(await api.run({"do": "pid"}))
    assert first["output"]["pid"] != worker.pid
    assert (await api.wait(await api.run({"do": "pbkdf2"})))["status"] == "TIMED_OUT"
    nxt = await api.wait(await api.run({"do": "pid"}), timeout=10)
    assert nxt["output"]["pid"] not in (first["output"]["pid"], worker.pid)  # a fresh child, same worker


def test_a_handler_that_cannot_load_in_a_child_stops_the_worker_with_code_2(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "WORKER_KIT_URL": "http://127.0.0.1:9/v2/ep"}
    proc = subprocess.run([sys.executable, str(HANDLERS / "child_fails.py")], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert "could not load the handler: RuntimeError: no GPU in this process" in proc.stderr


async def test_a_file_that_calls_start_unguarded_loads_in_a_child(
    service: Any, spawn_worker: Any, api_at: Any
) -> None:
    url = service.endpoint_url("iso-top")
    api = api_at(url)
    worker = await spawn_worker("start_at_top.py", url, isolation="process")
    status = await api.wait(await api.run({"x": 1}))
    assert status["status"] == "COMPLETED", status
    assert status["output"]["echo"] == {"x": 1} and status["output"]["pid"] != worker.pid


async def test_an_idle_child_that_dies_is_replaced_at_once(
    service: Any, spawn_worker: Any, api_at: Any
) -> None:
    url = service.endpoint_url("iso-idle")
    api = api_at(url)
    worker = await spawn_worker("isolated.py", url)
    child = (await api.wait(await api.run({"do": "pid"})))["output"]["pid"]
    os.kill(child, signal.SIGKILL)
    await worker.wait_log(f"handler process {child} ended while idle (killed by signal 9 (SIGKILL)")
    await until(lambda: worker.logs().count(" ready") == 2)  # replaced before any job asks for it
    nxt = await api.wait(await api.run({"do": "pid"}))
    assert nxt["status"] == "COMPLETED" and nxt["output"]["pid"] != child


async def test_progress_and_cancel_keep_a_polite_child(service: Any, spawn_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("iso-progress")
    api = api_at(url)
    await spawn_worker("isolated.py", url)
    child = (await api.wait(await api.run({"do": "pid"})))["output"]["pid"]
    job = await api.run({"do": "progress"}, policy={"executionTimeout": 30_000})
    await until(lambda: _output_is(api, job, {"step": 1}))  # progress shows while it runs
    await api.cancel(job)
    assert (await api.wait(job))["status"] == "CANCELLED"
    # The handler stopped at its next Python step (JobInterrupted): its process is kept.
    nxt = await api.wait(await api.run({"do": "pid"}))
    assert nxt["output"]["pid"] == child


async def _output_is(api: Api, job_id: str, value: Any) -> bool:
    status = await api.status(job_id)
    return status["status"] == "IN_PROGRESS" and status.get("output") == value


async def test_isolation_under_worker_kit_work(
    service: Any, spawn_worker: Any, api_at: Any, tmp_path: Path
) -> None:
    # The file ran through runpy in the worker: the child finds it by its path.
    url = service.endpoint_url("iso-cli")
    api = api_at(url)
    worker = await spawn_worker("isolated.py", url, via_cli=True)
    status = await api.wait(await api.run({"do": "pid"}))
    assert status["status"] == "COMPLETED", status
    assert status["output"]["pid"] != worker.pid and status["output"]["pid"] in setups(tmp_path)
