"""The in-process Worker's life cycle: stop() before run(), run() twice, a result racing the
drain's deadline, and the worker's own loops failing."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from tests.support.handlers import Sleeper
from worker_kit.errors import ServiceUnavailable
from worker_kit.protocol import pack
from worker_kit.worker.execution import Job
from worker_kit.worker.loop import EXIT_INTERNAL, Worker
from worker_kit.worker.settings import EXIT_OK
from worker_kit.worker.transport import NativeTransport

from .conftest import make_handler, until


def echo(job: Job) -> Any:
    return job.input


async def test_stop_before_run_returns_at_once_and_run_then_does_nothing(service: Any, api_at: Any) -> None:
    url = service.endpoint_url("life")
    api = api_at(url)
    worker = Worker(make_handler(echo), url)
    await asyncio.wait_for(worker.stop(), 5)
    job_id = await api.run(1)
    assert await asyncio.wait_for(worker.run(), 5) == EXIT_OK
    await asyncio.sleep(0.2)
    assert (await api.status(job_id))["status"] == "IN_QUEUE"  # nothing was claimed


async def test_stop_racing_a_run_task_not_yet_begun(service: Any) -> None:
    # The pattern of testing.local_stack: create_task(run()) then, at once, stop().
    worker = Worker(make_handler(echo), service.endpoint_url("life"))
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.stop(grace_s=0), 5)
    assert await asyncio.wait_for(task, 5) == EXIT_OK


async def test_run_while_running_raises_and_run_after_the_end_returns(service: Any, api_at: Any) -> None:
    url = service.endpoint_url("life")
    api = api_at(url)
    worker = Worker(make_handler(echo), url, stuck_grace_s=2)
    task = asyncio.create_task(worker.run())
    assert (await api.wait(await api.run(7)))["output"] == 7
    with pytest.raises(RuntimeError, match="already running"):
        await worker.run()
    await asyncio.wait_for(worker.stop(grace_s=0), 10)
    assert await task == EXIT_OK
    assert await asyncio.wait_for(worker.run(), 5) == EXIT_OK


class FailingOpenTransport(NativeTransport):
    async def open(self) -> None:
        raise OSError("no network here")


async def test_stop_returns_when_run_failed_to_start(service: Any) -> None:
    url = service.endpoint_url("life")
    worker = Worker(make_handler(echo), url, transport=FailingOpenTransport(url, worker_id="w"))
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0)  # run() begins and fails in open()
    with pytest.raises(OSError, match="no network"):
        await asyncio.wait_for(asyncio.shield(task), 5)
    await asyncio.wait_for(worker.stop(), 5)


async def test_result_ready_as_the_drain_grace_runs_out_is_delivered(service: Any, api_at: Any) -> None:
    # The handler's sleep and the drain's deadline both fall inside one stall of the event loop,
    # so both fire in the same loop step: the job has a result AND is due to be handed back.
    # It must be delivered, not released (which would run it again although it ended).
    url = service.endpoint_url("life")
    api = api_at(url)
    handler = Sleeper(0.4, result="finished")
    worker = Worker(make_handler(handler), url, stuck_grace_s=2)
    task = asyncio.create_task(worker.run())
    job_id = await api.run(None)
    await asyncio.wait_for(handler.began.wait(), 10)
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, time.sleep, 0.6)  # stall from 0.2 s to 0.8 s: past both deadlines
    await asyncio.wait_for(worker.stop(grace_s=0.3), 15)
    assert await task == EXIT_OK
    status = await api.status(job_id)
    assert status["status"] == "COMPLETED" and status["output"] == "finished", status
    assert worker.stats["released"] == 0 and worker.stats["completed"] == 1, worker.stats


class BrokenHeartbeatTransport(NativeTransport):
    """A Transport subclass (a third-party protocol, say) whose heartbeat answers a shape
    the worker cannot read; only the heartbeat is broken."""

    async def heartbeat(self, leases: dict[str, str], wait_ms: int, *, concurrency: int,
                        running: int) -> Any:
        await asyncio.sleep(0.01)
        return None, None


class OddLeaseTransport(NativeTransport):
    """A service stating its lease as something other than a number of ms."""

    async def claim(self, *args: Any, **kwargs: Any) -> Any:
        jobs, _ = await super().claim(*args, **kwargs)
        return jobs, "soon"

    async def heartbeat(self, *args: Any, **kwargs: Any) -> Any:
        stops, _ = await super().heartbeat(*args, **kwargs)
        return stops, -5


async def test_an_odd_lease_value_is_ignored(service: Any, api_at: Any, start_worker: Any) -> None:
    url = service.endpoint_url("life")
    api = api_at(url)
    handler = Sleeper(0.6, result="ok")  # long enough for heartbeats
    worker = await start_worker(handler, url, transport=OddLeaseTransport(url, worker_id="w"))
    status = await api.wait(await api.run(None))
    assert status["status"] == "COMPLETED" and status["output"] == "ok", status
    assert not worker.task.done()


async def test_a_dead_heartbeat_loop_stops_the_worker_loudly(
    service: Any, api_at: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Without its heartbeat loop the worker would keep jobs whose leases nobody renews.
    url = service.endpoint_url("life")
    api = api_at(url)
    worker = Worker(make_handler(Sleeper(30)), url, stuck_grace_s=2,
                    transport=BrokenHeartbeatTransport(url, worker_id="w"))
    task = asyncio.create_task(worker.run())
    job_id = await api.run(None)
    with caplog.at_level(logging.CRITICAL, logger="worker_kit.worker"):
        assert await asyncio.wait_for(task, 10) == EXIT_INTERNAL
    assert "the heartbeat loop ended unexpectedly" in caplog.text
    assert (await api.status(job_id))["status"] == "IN_QUEUE"  # handed back, not held


class FlakyFinishTransport(NativeTransport):
    """The service answers the first `failures` finish requests with 'unavailable'."""

    def __init__(self, *args: Any, failures: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures = failures
        self.failed = 0

    async def finish(self, *args: Any, **kwargs: Any) -> None:
        if self.failed < self.failures:
            self.failed += 1
            raise ServiceUnavailable("HTTP 503 from finish")
        await super().finish(*args, **kwargs)


async def test_a_result_being_delivered_when_the_grace_runs_out_is_not_dropped(
    service: Any, api_at: Any
) -> None:
    url = service.endpoint_url("life")
    api = api_at(url)
    transport = FlakyFinishTransport(url, worker_id="w", failures=3)
    worker = Worker(make_handler(echo), url, stuck_grace_s=2, transport=transport)
    task = asyncio.create_task(worker.run())
    job_id = await api.run("result")
    await until(lambda: transport.failed >= 1)  # the result exists; its delivery is retrying
    await asyncio.wait_for(worker.stop(grace_s=0.01), 15)
    assert await task == EXIT_OK
    status = await api.status(job_id)
    assert status["status"] == "COMPLETED" and status["output"] == "result", status
    assert worker.stats["released"] == 0


class BrokenFinishTransport(NativeTransport):
    """A Transport whose finish has a bug (raises something no one expects) for one job."""

    async def finish(self, job_id: str, token: str, final: Any, items: list[bytes]) -> None:
        if final.output == pack("boom"):
            raise KeyError("a bug in a custom transport")
        await super().finish(job_id, token, final, items)


async def test_a_failing_report_is_logged_and_the_worker_goes_on(
    service: Any, api_at: Any, start_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = service.endpoint_url("life")
    api = api_at(url)
    with caplog.at_level(logging.ERROR, logger="worker_kit.worker"):
        await start_worker(echo, url, transport=BrokenFinishTransport(url, worker_id="w"))
        bad = await api.run("boom")
        good = await api.run("fine")
        assert (await api.wait(good))["output"] == "fine"
        await until(lambda: f"job {bad}: reporting failed" in caplog.text)
    assert "KeyError: 'a bug in a custom transport'" in caplog.text


class HeartbeatOutageTransport(NativeTransport):
    """Heartbeats cannot get through while `down` is set; claims and reports can."""

    down = False

    async def heartbeat(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise ServiceUnavailable("heartbeats cut off")
        return await super().heartbeat(*args, **kwargs)


async def test_a_job_claimed_again_stops_its_earlier_attempt_here(
    service: Any, api_at: Any, start_worker: Any
) -> None:
    # Heartbeats fail past the lease (2 s): the service gives the job out again, to this same
    # worker. The earlier attempt has lost its lease: it is stopped at once (it used to run on,
    # holding a slot until its timeout, and its end unregistered the new attempt's lease).
    url = service.endpoint_url("life")
    api = api_at(url)
    interrupted = asyncio.Event()

    async def handler(job: Job) -> Any:
        if job.attempt > 1:
            return f"attempt {job.attempt}"
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    transport = HeartbeatOutageTransport(url, worker_id="w")
    transport.down = True
    worker = await start_worker(handler, url, transport=transport, concurrency=2, claim_wait_s=0.5)
    job_id = await api.run(None)
    status = await api.wait(job_id)
    assert status["status"] == "COMPLETED" and status["output"] == "attempt 2", status
    transport.down = False
    await asyncio.wait_for(interrupted.wait(), 10)
    await until(lambda: worker.running == 0)
    # The service shows COMPLETED as soon as it applied the finish; the worker counts it when the
    # answer arrives (after the claim that shared its request), so wait for that.
    await until(lambda: worker.stats["completed"] == 1)
    assert worker.stats["completed"] == 1 and worker.stats["stopped"] == 1, worker.stats
