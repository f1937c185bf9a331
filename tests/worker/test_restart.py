"""A worker survives a stuck handler or a memory leak by replacing itself in place
(os.execv of its own command line): same PID, the module loaded afresh, next job served."""

from __future__ import annotations

import time
from typing import Any

import pytest

from worker_kit.worker.restart import FREE_RESTARTS, backoff_delay, recent_restarts
from worker_kit.worker.settings import EXIT_MEMORY, EXIT_STUCK

#: Jobs that allocate: more than the handlers' 1 s timeout on a loaded machine.
LONG = {"executionTimeout": 20_000}


@pytest.mark.parametrize("do", ["sleep", "pbkdf2"])
async def test_stuck_handler_replaces_the_process_in_place(
    service: Any, spawn_worker: Any, api_at: Any, do: str
) -> None:
    url = service.endpoint_url(f"stuck-{do}")
    api = api_at(url)
    worker = await spawn_worker("stuck.py", url, stuck_grace=0.3, grace=1)
    began = time.monotonic()
    job = await api.run({"do": do})
    status = await api.wait(job)
    assert status["status"] == "TIMED_OUT", status
    assert time.monotonic() - began < 1 + 3  # the deadline plus the service's grace, with room
    nxt = await api.run({"do": "pid"})
    served = await api.wait(nxt, timeout=10)
    assert served["status"] == "COMPLETED", served
    assert served["output"]["pid"] == worker.pid  # the same process, its handler loaded afresh
    assert worker.proc.returncode is None
    logs = worker.logs()
    assert "stuck in native code" in logs
    assert "replacing this worker process in place (a handler was stuck" in logs
    assert "replaced itself in place (a handler was stuck" in logs


async def test_same_command_line_under_worker_kit_work(service: Any, spawn_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("stuck-cli")
    api = api_at(url)
    worker = await spawn_worker("stuck.py", url, "--stuck-grace", "0.3", via_cli=True)
    assert (await api.wait(await api.run({"do": "sleep"})))["status"] == "TIMED_OUT"
    served = await api.wait(await api.run({"do": "pid"}), timeout=10)
    assert served["output"]["pid"] == worker.pid
    assert "-m worker_kit work" in worker.logs()  # the exec'd command line, as it was started


async def test_restart_loop_guard_backs_off_and_says_so(service: Any, spawn_worker: Any, api_at: Any) -> None:
    # As if it had been replaced FREE_RESTARTS times in the last seconds already.
    now = time.monotonic()
    history = ",".join(f"{now - i:.3f}" for i in range(FREE_RESTARTS))
    url = service.endpoint_url("stuck-loop")
    api = api_at(url)
    worker = await spawn_worker("stuck.py", url, stuck_grace=0.3, grace=1, restarts=history)
    await api.wait(await api.run({"do": "sleep"}))
    await worker.wait_log(f"restart loop guard: {FREE_RESTARTS} restarts in the last")
    assert "waiting 1 s before restarting" in worker.logs()
    served = await api.wait(await api.run({"do": "pid"}), timeout=15)
    assert served["output"]["pid"] == worker.pid


def test_loop_guard_policy() -> None:
    assert [backoff_delay(n) for n in range(FREE_RESTARTS + 8)] == [0.0] * FREE_RESTARTS + [
        1, 2, 4, 8, 16, 32, 60, 60]
    env = {"WORKER_KIT_RESTARTS": "100.0,bad,590.5,,700"}
    assert recent_restarts(env, 700.5) == [590.5, 700.0]  # 100.0 is out of the window


async def test_on_stuck_exit_keeps_exit_code_3(service: Any, spawn_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("stuck-exit")
    api = api_at(url)
    worker = await spawn_worker("stuck.py", url, stuck_grace=0.3, on_stuck="exit")
    assert (await api.wait(await api.run({"do": "sleep"})))["status"] == "TIMED_OUT"
    assert await worker.wait(15) == EXIT_STUCK
    assert "replacing this worker process" not in worker.logs()


async def test_memory_guard_replaces_the_process_after_its_job(
    service: Any, spawn_worker: Any, api_at: Any
) -> None:
    url = service.endpoint_url("leak")
    api = api_at(url)
    worker = await spawn_worker("stuck.py", url, max_rss_mb=150)
    grown = await api.wait(await api.run({"do": "grow", "mb": 160}, policy=LONG))
    assert grown["status"] == "COMPLETED" and grown["output"]["held_mb"] == 160  # the job finishes
    await worker.wait_log("memory guard: this worker uses")
    served = await api.wait(await api.run({"do": "pid"}), timeout=10)
    assert served["output"] == {"pid": worker.pid, "held_mb": 0}  # fresh: the leak is gone
    assert "replacing this worker process in place (over the memory cap" in worker.logs()


async def test_memory_guard_with_on_stuck_exit_exits_5(service: Any, spawn_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("leak-exit")
    api = api_at(url)
    worker = await spawn_worker("stuck.py", url, max_rss_mb=150, on_stuck="exit")
    await api.wait(await api.run({"do": "grow", "mb": 160}, policy=LONG))
    assert await worker.wait(15) == EXIT_MEMORY
