"""Real worker processes through faults: kill -9, SIGTERM drains, a second signal, and the
service going away and coming back."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path
from typing import Any

from worker_kit.service.config import ServiceConfig
from worker_kit.service.runner import run_service

from .conftest import until


async def test_kill_9_mid_job_another_worker_finishes(service: Any, spawn_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("faults")
    api = api_at(url)
    first = await spawn_worker("slow.py", url)
    job_id = await api.run({"sleep": 2})
    await api.wait(job_id, states={"IN_PROGRESS"})
    first.signal(signal.SIGKILL)
    await first.wait()
    await spawn_worker("slow.py", url)  # takes the job once the lease (2 s) expires
    status = await api.wait(job_id, timeout=30)
    assert status["status"] == "COMPLETED", status
    assert status["output"] == {"slept": 2, "attempt": 2}


async def test_sigterm_drains_then_releases(service: Any, spawn_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("faults")
    api = api_at(url)
    worker = await spawn_worker("slow.py", url, concurrency=2, grace=2)
    short = await api.run({"sleep": 0.8})
    long = await api.run({"sleep": 60})
    await api.wait(short, states={"IN_PROGRESS"})
    await api.wait(long, states={"IN_PROGRESS"})
    queued = await api.run({"sleep": 0})
    worker.signal(signal.SIGTERM)
    assert await worker.wait(15) == 0
    assert (await api.status(short))["status"] == "COMPLETED"  # finished within the grace
    assert (await api.status(long))["status"] == "IN_QUEUE"  # handed back, not lost
    assert (await api.status(queued))["status"] == "IN_QUEUE"  # never taken after SIGTERM
    logs = worker.logs()
    assert f"job {long} released back to the queue" in logs
    # The released job runs again elsewhere, its attempt not counted as a failure.
    await spawn_worker("slow.py", url, concurrency=2)
    await api.wait(queued)


async def test_sigterm_when_idle_exits_promptly(service: Any, spawn_worker: Any) -> None:
    # The claim long-poll (30 s) is abandoned at once; the worker does not wait it out.
    worker = await spawn_worker("slow.py", service.endpoint_url("faults"))
    await asyncio.sleep(0.3)
    worker.signal(signal.SIGTERM)
    assert await worker.wait(5) == 0


async def test_second_signal_exits_at_once(service: Any, spawn_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("faults")
    api = api_at(url)
    worker = await spawn_worker("slow.py", url, grace=60)
    job_id = await api.run({"sleep": 60})
    await api.wait(job_id, states={"IN_PROGRESS"})
    worker.signal(signal.SIGINT)
    await worker.wait_log("SIGINT received")
    worker.signal(signal.SIGTERM)
    assert await worker.wait(5) == 128 + signal.SIGTERM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_service_restart_during_a_job(tmp_path: Path, spawn_worker: Any, api_at: Any) -> None:
    config = ServiceConfig(
        host="127.0.0.1", port=free_port(), storage=f"sqlite:///{tmp_path / 'restart.db'}",
        lease_ms=10_000, sweep_interval_s=0.1, deadline_grace_ms=500,
    )
    async with run_service(config) as svc:
        url = svc.endpoint_url("faults")
        worker = await spawn_worker("slow.py", url)
        job_id = await api_at(url).run({"sleep": 1.5})
        await api_at(url).wait(job_id, states={"IN_PROGRESS"})
    await worker.wait_log("unreachable")
    await asyncio.sleep(1.5)  # the job ends while the service is down: its result must wait
    async with run_service(config):
        status = await api_at(url).wait(job_id, timeout=30)
        assert status["status"] == "COMPLETED", status
        assert status["output"] == {"slept": 1.5, "attempt": 1}
        await worker.wait_log("reachable again")
        # One line when the service went away and one when it came back, not one per attempt.
        assert worker.logs().count("unreachable") == 1
        second = await api_at(url).run({"sleep": 0})
        assert (await api_at(url).wait(second))["status"] == "COMPLETED"


async def test_worker_started_before_the_service(tmp_path: Path, spawn_worker: Any, api_at: Any) -> None:
    config = ServiceConfig(
        host="127.0.0.1", port=free_port(), storage=f"sqlite:///{tmp_path / 'late.db'}",
        lease_ms=2000, sweep_interval_s=0.1,
    )
    url = f"http://127.0.0.1:{config.port}/v2/faults"
    api = api_at(url)
    worker = await spawn_worker("slow.py", url)
    await worker.wait_log("unreachable")
    await asyncio.sleep(2.0)  # backing off, without a busy loop or a log line per attempt
    logs = worker.logs()
    assert logs.count("unreachable") == 1
    # Exponential backoff (0.1 s doubling): a handful of attempts in 2 s, not thousands.
    assert 2 <= logs.count("retrying claim in") <= 8
    async with run_service(config):
        job_id = await api.run({"sleep": 0})
        assert (await api.wait(job_id, timeout=30))["status"] == "COMPLETED"


async def test_revived_worker_cannot_overwrite_a_newer_attempt(
    service: Any, spawn_worker: Any, api_at: Any
) -> None:
    # A worker frozen past its lease (SIGSTOP) loses the job to another worker; once thawed,
    # its lease is gone: it stops the handler or its result is refused, never recorded.
    url = service.endpoint_url("faults")
    api = api_at(url)
    frozen = await spawn_worker("slow.py", url)
    job_id = await api.run({"sleep": 1.5})
    await api.wait(job_id, states={"IN_PROGRESS"})
    frozen.signal(signal.SIGSTOP)
    try:
        await spawn_worker("slow.py", url)

        async def second_attempt_running() -> bool:
            record = await service.storage.get("faults", job_id)
            return record.attempt == 2

        await until(second_attempt_running, 15)
    finally:
        frozen.signal(signal.SIGCONT)
    await frozen.wait_log(f"job {job_id}", timeout=5)
    status = await api.wait(job_id, timeout=20)
    assert status["status"] == "COMPLETED" and status["output"] == {"slept": 1.5, "attempt": 2}

    async def frozen_gave_up() -> bool:
        logs = frozen.logs()
        return "stopped by the service (LOST)" in logs or "not delivered" in logs

    await until(frozen_gave_up, 10)


async def test_job_claimed_as_the_worker_stops_is_released(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    # The hosted SDK ran nothing and reported nothing for a job its last poll brought in after
    # SIGTERM. Here a job that arrives once the worker is stopping is handed straight back.
    from worker_kit.worker.transport import NativeTransport

    ran: list[Any] = []

    class StopWhileClaiming(NativeTransport):
        worker: Any = None

        async def claim(self, *args: Any, **kwargs: Any) -> Any:
            jobs, lease = await super().claim(*args, **kwargs)
            if jobs:
                self.worker._request_stop(30.0)  # the stop lands while the claim answers
            return jobs, lease

    url = service.endpoint_url("faults")
    api = api_at(url)
    transport = StopWhileClaiming(url, worker_id="stopping")
    worker = await start_worker(ran.append, url, transport=transport, worker_id="stopping")
    transport.worker = worker
    job_id = await api.run("never run here")
    assert await asyncio.wait_for(worker.task, 10) == 0
    assert ran == [] and worker.stats["released"] == 1
    assert (await api.status(job_id))["status"] == "IN_QUEUE"


async def test_stream_survives_a_service_restart(tmp_path: Path, spawn_worker: Any, api_at: Any) -> None:
    # Chunks made while the service is down are delivered once it is back: in order, none
    # lost, none repeated (retried requests carry the same sequence numbers).
    config = ServiceConfig(
        host="127.0.0.1", port=free_port(), storage=f"sqlite:///{tmp_path / 'stream.db'}",
        lease_ms=10_000, sweep_interval_s=0.1, deadline_grace_ms=500,
    )
    n = 30
    async with run_service(config) as svc:
        url = svc.endpoint_url("faults")
        worker = await spawn_worker("ticker.py", url)
        job_id = await api_at(url).run({"n": n, "every": 0.08})

        async def some_chunks() -> bool:
            return len(await api_at(url).chunks(job_id)) >= 5

        await until(some_chunks)
    await worker.wait_log("unreachable")
    await asyncio.sleep(1.0)
    async with run_service(config):
        status = await api_at(url).wait(job_id, timeout=30)
        assert status["status"] == "COMPLETED", status
        assert await api_at(url).chunks(job_id) == list(range(n))
