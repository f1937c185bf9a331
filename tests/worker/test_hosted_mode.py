"""The worker_kit runtime speaking the hosted service's worker protocol (job-take, job-stream,
job-done, job-stop, ping), as it does when that service's environment is set: real worker
processes against this service's own hosted-protocol routes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import HANDLERS, WorkerProcess, until

ERRORING = '''
import worker_kit

@worker_kit.handler
async def boom(job):
    raise ValueError("no such model: " + job.input["model"])

if __name__ == "__main__":
    worker_kit.start()
'''


def hosted_env(endpoint_url: str, pod_id: str = "pod-1") -> dict[str, str]:
    """The variables the hosted service sets on its workers, pointed at this service's routes."""
    return {
        "RUNPOD_WEBHOOK_GET_JOB": f"{endpoint_url}/job-take/$ID?gpu=test",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{endpoint_url}/job-done/$RUNPOD_POD_ID/$ID?gpu=test",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{endpoint_url}/job-stream/$RUNPOD_POD_ID/$ID?gpu=test",
        "RUNPOD_WEBHOOK_PING": f"{endpoint_url}/ping/$RUNPOD_POD_ID?gpu=test",
        "RUNPOD_AI_API_KEY": "unused-here",
        "RUNPOD_POD_ID": pod_id,
        "RUNPOD_PING_INTERVAL": "500",
    }


@pytest.fixture
async def spawn_hosted(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """`await spawn_hosted(handler_path, endpoint_url, **extra_env)`: `python handler.py` with the
    hosted environment and no WORKER_KIT_URL; killed at teardown."""
    procs: list[WorkerProcess] = []

    async def spawn(handler: Path, endpoint_url: str, **extra: str) -> WorkerProcess:
        log_path = tmp_path / f"hosted-{len(procs)}.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_KIT_", "RUNPOD_"))}
        environ.update(hosted_env(endpoint_url), WORKER_KIT_LOG_LEVEL="DEBUG", PYTHONUNBUFFERED="1", **extra)
        with open(log_path, "wb") as log:  # noqa: ASYNC230 - a local file, opened once per worker
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(handler), stdout=log, stderr=log, env=environ, cwd=str(tmp_path)
            )
        worker = WorkerProcess(proc, log_path)
        procs.append(worker)
        await worker.wait_log("started: handler")
        return worker

    yield spawn
    for worker in procs:
        if worker.proc.returncode is None:
            worker.proc.send_signal(signal.SIGKILL)
            await worker.proc.wait()


async def test_a_handler_file_runs_unchanged_on_the_hosted_protocol(
    service: Any, api_at: Any, spawn_hosted: Any
) -> None:
    url = service.endpoint_url("hosted")
    api = api_at(url)
    worker = await spawn_hosted(HANDLERS / "echo.py", url)
    job_id = await api.run({"x": 1})
    status = await api.wait(job_id)
    assert status["status"] == "COMPLETED", status
    assert status["output"] == {"echo": {"x": 1}, "id": job_id}
    assert status["workerId"] == "pod-1"
    logs = worker.logs()
    assert "speaking its worker protocol" in logs
    assert "/job-take/pod-1" in logs or "job-take" in logs


async def test_chunks_stream_in_order_and_the_job_ends_completed(
    service: Any, api_at: Any, spawn_hosted: Any
) -> None:
    url = service.endpoint_url("hosted")
    api = api_at(url)
    await spawn_hosted(HANDLERS / "ticker.py", url)
    job_id = await api.run({"n": 5, "every": 0.01})
    status = await api.wait(job_id)
    assert status["status"] == "COMPLETED", status
    assert await api.chunks(job_id) == [0, 1, 2, 3, 4]


async def test_a_raising_handler_ends_failed_with_its_message(
    service: Any, api_at: Any, spawn_hosted: Any, tmp_path: Path
) -> None:
    handler = tmp_path / "boom.py"
    handler.write_text(ERRORING)
    url = service.endpoint_url("hosted")
    api = api_at(url)
    await spawn_hosted(handler, url)
    job_id = await api.run({"model": "nope"})
    status = await api.wait(job_id)
    assert status["status"] == "FAILED"
    assert "no such model: nope" in status["error"]


async def test_a_cancel_reaches_the_running_handler_and_the_worker_goes_on(
    service: Any, api_at: Any, spawn_hosted: Any
) -> None:
    url = service.endpoint_url("hosted")
    api = api_at(url)
    await spawn_hosted(HANDLERS / "slow.py", url)
    job_id = await api.run({"sleep": 60})
    await api.wait(job_id, states={"IN_PROGRESS"})
    await api.cancel(job_id)
    # The stop arrives on job-stop and interrupts the handler: the next job runs at once,
    # not after the cancelled one's 60 s.
    next_id = await api.run({"sleep": 0})
    status = await api.wait(next_id, timeout=20)
    assert status["status"] == "COMPLETED", status
    assert (await api.status(job_id))["status"] == "CANCELLED"


STARTS_THEN_SLEEPS = """
import pathlib
import time
import worker_kit


@worker_kit.handler
def slow(job):
    pathlib.Path(job.input["started"]).touch()
    time.sleep(job.input["sleep"])
    return {"slept": job.input["sleep"]}


if __name__ == "__main__":
    worker_kit.start()
"""


async def test_sigterm_drains_a_running_job_then_exits_0(
    service: Any, api_at: Any, spawn_hosted: Any, tmp_path: Path
) -> None:
    handler, started = tmp_path / "starts.py", tmp_path / "started"
    handler.write_text(STARTS_THEN_SLEEPS)
    url = service.endpoint_url("hosted")
    api = api_at(url)
    worker = await spawn_hosted(handler, url, WORKER_KIT_GRACE="20")
    job_id = await api.run({"sleep": 1, "started": str(started)})
    # The handler runs (IN_PROGRESS alone is not enough: a stop while the job-take's answer is
    # still on its way cuts that request, and the job would come back only by lease).
    await until(started.exists, timeout=30)
    worker.signal(signal.SIGTERM)
    assert await worker.wait(30) == 0
    status = await api.status(job_id)
    assert status["status"] == "COMPLETED" and status["output"]["slept"] == 1


PROGRESS = '''
import time
import worker_kit

@worker_kit.handler
def steps(job):
    job.progress({"step": 1})
    time.sleep(job.input["hold"])
    return "done"

if __name__ == "__main__":
    worker_kit.start()
'''


async def test_progress_is_shown_while_the_job_runs(
    service: Any, api_at: Any, spawn_hosted: Any, tmp_path: Path
) -> None:
    handler = tmp_path / "steps.py"
    handler.write_text(PROGRESS)
    url = service.endpoint_url("hosted")
    api = api_at(url)
    await spawn_hosted(handler, url)
    job_id = await api.run({"hold": 3})
    async with asyncio.timeout(20):
        while (status := await api.status(job_id)).get("output") != {"step": 1}:
            assert status["status"] in ("IN_QUEUE", "IN_PROGRESS"), status
            await asyncio.sleep(0.05)
    final = await api.wait(job_id)
    assert final["status"] == "COMPLETED" and final["output"] == "done"


async def test_the_execution_timeout_is_enforced_and_the_next_job_served(
    service: Any, api_at: Any, spawn_hosted: Any
) -> None:
    url = service.endpoint_url("hosted")
    api = api_at(url)
    await spawn_hosted(HANDLERS / "slow.py", url)
    job_id = await api.run({"sleep": 60}, policy={"executionTimeout": 1000})
    status = await api.wait(job_id, timeout=20)
    # The hosted wire has no TIMED_OUT report: the worker reports an error, unless the service's
    # own deadline fired first; either way the job ends, saying why.
    assert status["status"] in ("FAILED", "TIMED_OUT"), status
    assert "timeout" in status["error"]
    next_id = await api.run({"sleep": 0})
    assert (await api.wait(next_id, timeout=20))["status"] == "COMPLETED"


async def test_free_slots_are_filled_with_batch_takes(service: Any, api_at: Any, spawn_hosted: Any) -> None:
    url = service.endpoint_url("hosted")
    api = api_at(url)
    ids = [await api.run({"sleep": 3}) for _ in range(3)]
    await spawn_hosted(HANDLERS / "slow.py", url, WORKER_KIT_CONCURRENCY="3")

    async def all_running() -> bool:
        return [(await api.status(i))["status"] for i in ids] == ["IN_PROGRESS"] * 3

    await until(all_running, timeout=20)
    for job_id in ids:
        assert (await api.wait(job_id))["status"] == "COMPLETED"


def test_the_hosted_environment_is_read_only_without_worker_kit_url() -> None:
    from worker_kit.errors import ConfigError
    from worker_kit.worker.settings import load_settings

    env = hosted_env("http://127.0.0.1:9/v2/ep")
    assert load_settings([], env).hosted is not None
    native = load_settings([], {**env, "WORKER_KIT_URL": "http://127.0.0.1:9/v2/ep"})
    assert native.hosted is None  # an explicit WORKER_KIT_URL wins
    incomplete = {k: v for k, v in env.items() if k != "RUNPOD_WEBHOOK_POST_STREAM"}
    with pytest.raises(ConfigError, match="RUNPOD_WEBHOOK_POST_STREAM"):
        load_settings([], incomplete)
