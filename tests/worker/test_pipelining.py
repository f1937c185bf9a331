"""Two claims in flight at concurrency above 1 (worker_kit/worker/claims.py): the service works on
one while the worker runs the jobs of the other. Never more jobs asked for than free slots, never
two long-polls at once, nothing lost or run twice when the worker stops or is killed meanwhile."""

from __future__ import annotations

import asyncio
import collections
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.api import Api
from worker_kit.worker.execution import Job
from worker_kit.worker.transport import NativeTransport

from .conftest import until


class WatchedTransport(NativeTransport):
    """The real transport, watching its claims: how many are in flight at once, and whether any
    asks for a slot that a running job or another claim in flight already holds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.running: Callable[[], int] = lambda: 0  # the worker's busy slots, set once it exists
        self.inflight: list[tuple[int, int]] = []  # (asked, wait_ms) of each claim in flight
        self.claims: list[tuple[int, int]] = []  # (asked, wait_ms) of every claim sent
        self.most = 0
        self.faults: list[str] = []

    async def claim(self, max_jobs: int, wait_ms: int, *, concurrency: int, running: int) -> Any:
        entry = (max_jobs, wait_ms)
        self.inflight.append(entry)
        self.claims.append(entry)
        self.most = max(self.most, len(self.inflight))
        promised = sum(asked for asked, _ in self.inflight)
        if self.running() + promised > concurrency:
            self.faults.append(f"{self.running()} running + {promised} asked > {concurrency} slots")
        if sum(1 for _, wait in self.inflight if wait > 0) > 1:
            self.faults.append(f"two claims may hold at once: {self.inflight}")
        try:
            return await super().claim(max_jobs, wait_ms, concurrency=concurrency, running=running)
        finally:
            self.inflight.remove(entry)


async def submit(api: Api, inputs: list[Any]) -> list[str]:
    ids: list[str] = []
    for at in range(0, len(inputs), 50):
        ids += await asyncio.gather(*(api.run(value) for value in inputs[at:at + 50]))
    return ids


async def completed(api: Api) -> int:
    health = await api.ok("GET", "/health")
    return int(health["jobs"]["completed"])


async def test_at_concurrency_16_two_claims_overlap_and_ask_only_for_free_slots(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    url = service.endpoint_url("pipe")
    api = api_at(url)
    ids = await submit(api, list(range(400)))
    runs: collections.Counter[str] = collections.Counter()

    async def handler(job: Job) -> Any:
        runs[job.id] += 1
        await asyncio.sleep(0)
        return job.input

    transport = WatchedTransport(url, worker_id="pipe-16")
    worker = await start_worker(handler, url, transport=transport, worker_id="pipe-16", concurrency=16)
    transport.running = lambda: worker.running
    await until(lambda: _all_done(api, len(ids)), timeout=60)
    for i, job_id in enumerate(ids):
        status = await api.status(job_id)
        assert status["status"] == "COMPLETED" and status["output"] == i
    assert all(runs[job_id] == 1 for job_id in ids), [n for n in runs.values() if n != 1]
    assert transport.faults == []
    assert transport.most == 2  # pipelined: a second claim went while the first was in flight
    assert max(asked for asked, _ in transport.claims) <= 16


async def _all_done(api: Api, n: int) -> bool:
    return await completed(api) >= n


async def test_an_idle_worker_holds_one_long_poll_and_sends_nothing_else(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    url = service.endpoint_url("pipe")
    api = api_at(url)
    ids = await submit(api, list(range(60)))
    transport = WatchedTransport(url, worker_id="pipe-idle")
    worker = await start_worker(lambda job: job.input, url, transport=transport, worker_id="pipe-idle",
                                concurrency=16, claim_wait_s=20)
    transport.running = lambda: worker.running
    await until(lambda: _all_done(api, len(ids)), timeout=30)
    await until(lambda: len(transport.inflight) == 1 and transport.inflight[0][1] > 0)
    sent = len(transport.claims)
    await asyncio.sleep(1.0)
    assert len(transport.claims) == sent, transport.claims[sent:]  # no claim spins on an empty queue
    assert len(transport.inflight) == 1 and transport.inflight[0][1] > 0
    assert transport.faults == []
    # Work that comes now is taken by that long-poll and the claims that follow it.
    late = await submit(api, list(range(20)))
    for job_id in late:
        assert (await api.wait(job_id))["status"] == "COMPLETED"


async def test_stop_while_claims_are_in_flight_hands_their_jobs_back(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    url = service.endpoint_url("pipe")
    api = api_at(url)
    ids = await submit(api, [{"sleep": 0.005}] * 300)
    runs: collections.Counter[str] = collections.Counter()

    async def handler(job: Job) -> Any:
        runs[job.id] += 1
        await asyncio.sleep(job.input["sleep"])
        return "done"

    transport = WatchedTransport(url, worker_id="pipe-stop")
    worker = await start_worker(handler, url, transport=transport, worker_id="pipe-stop", concurrency=16)
    transport.running = lambda: worker.running
    await until(lambda: _all_done(api, 60), timeout=30)
    await worker.stop(grace_s=10)
    states = collections.Counter([(await api.status(job_id))["status"] for job_id in ids])
    assert set(states) <= {"COMPLETED", "IN_QUEUE", "IN_PROGRESS"}, states
    # Every job the worker ran was reported, every job it had not started was handed back, except
    # those of a long-poll cut short (at most one claim's, half the slots): they come back by lease.
    assert states["IN_PROGRESS"] <= 8, states
    await start_worker(handler, url, concurrency=16)
    for job_id in ids:
        assert (await api.wait(job_id))["status"] == "COMPLETED"
    assert all(runs[job_id] == 1 for job_id in ids), [n for n in runs.values() if n != 1]
    assert transport.faults == []


def _tally(path: Path) -> collections.Counter[str]:
    return collections.Counter(line.split()[0] for line in path.read_text().splitlines())


async def test_many_short_jobs_in_a_worker_process_each_run_once(
    service: Any, spawn_worker: Any, api_at: Any, tmp_path: Path
) -> None:
    url = service.endpoint_url("pipe")
    api = api_at(url)
    ids = await submit(api, list(range(500)))
    await spawn_worker("tally.py", url, concurrency=16, log_level="INFO")
    await until(lambda: _all_done(api, len(ids)), timeout=60)
    for i, job_id in enumerate(ids):
        status = await api.status(job_id)
        assert status["status"] == "COMPLETED" and status["output"] == i
    tally = _tally(tmp_path / "tally.txt")
    assert sorted(tally) == sorted(ids) and set(tally.values()) == {1}


async def test_sigterm_during_pipelined_claims_loses_nothing(
    service: Any, spawn_worker: Any, api_at: Any, tmp_path: Path
) -> None:
    url = service.endpoint_url("pipe")
    api = api_at(url)
    ids = await submit(api, [{"sleep": 0.005}] * 500)
    first = await spawn_worker("tally.py", url, concurrency=16, grace=10, log_level="INFO")
    await until(lambda: _all_done(api, 80), timeout=30)
    first.signal(signal.SIGTERM)
    assert await first.wait(20) == 0
    await spawn_worker("tally.py", url, concurrency=16, log_level="INFO")
    for job_id in ids:
        assert (await api.wait(job_id, timeout=30))["status"] == "COMPLETED"
    tally = _tally(tmp_path / "tally.txt")
    # Drained: each job ran once, in one worker or the other (none ran half and again).
    assert sorted(tally) == sorted(ids) and set(tally.values()) == {1}


async def test_a_worker_killed_mid_pipeline_its_jobs_come_back_by_lease(
    service: Any, spawn_worker: Any, api_at: Any, tmp_path: Path
) -> None:
    url = service.endpoint_url("pipe")
    api = api_at(url)
    ids = await submit(api, [{"sleep": 0.01}] * 400)
    first = await spawn_worker("tally.py", url, concurrency=16, log_level="INFO")
    await until(lambda: _all_done(api, 80), timeout=30)
    first.signal(signal.SIGKILL)
    await first.wait()
    await spawn_worker("tally.py", url, concurrency=16, log_level="INFO")  # after the 2 s lease
    for job_id in ids:
        assert (await api.wait(job_id, timeout=30))["status"] == "COMPLETED"
    tally = _tally(tmp_path / "tally.txt")
    assert sorted(tally) == sorted(ids)  # every job ran
    # Only jobs the killed worker held ran twice: its 16 slots (running or asked for by its
    # claims) and the finishes it had not delivered yet.
    assert sum(1 for n in tally.values() if n > 1) <= 32, tally.most_common(5)


async def test_process_isolation_at_concurrency_4_serves_every_job(
    service: Any, spawn_worker: Any, api_at: Any
) -> None:
    # A second claim asks only for handler processes that are idle and not promised to the
    # claim in flight: every job runs in a child, each once.
    url = service.endpoint_url("pipe-iso")
    api = api_at(url)
    ids = await submit(api, [{"do": "pid"}] * 60)
    worker = await spawn_worker("isolated.py", url, concurrency=4)
    pids = set()
    for job_id in ids:
        status = await api.wait(job_id, timeout=30)
        assert status["status"] == "COMPLETED", status
        pids.add(status["output"]["pid"])
    assert worker.pid not in pids and len(pids) <= 4
    assert "claimed again" not in worker.logs()


async def test_the_service_counts_a_pipelining_worker_once(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    # Two exchanges of one worker at once: still one live worker of 16 slots, busy, and the
    # demand it is scaled by is the jobs', not its requests'.
    url = service.endpoint_url("pipe-count")
    api = api_at(url)
    ids = await submit(api, [{"sleep": 0.05}] * 200)

    async def handler(job: Job) -> Any:
        await asyncio.sleep(job.input["sleep"])

    transport = WatchedTransport(url, worker_id="pipe-count")
    worker = await start_worker(handler, url, transport=transport, worker_id="pipe-count", concurrency=16)
    transport.running = lambda: worker.running

    async def counted() -> bool:  # the worker's first claim has reached the service
        return (await api.ok("GET", "/scaling"))["workersLive"] > 0

    await until(counted, timeout=30)
    seen = []
    while not await _all_done(api, len(ids)):
        doc = await api.ok("GET", "/scaling")
        health = await api.ok("GET", "/health")
        seen.append((doc["workersLive"], doc["slots"], health["workers"]))
        await asyncio.sleep(0.05)
    assert transport.most == 2 and transport.faults == []
    assert {live for live, _, _ in seen} == {1} and {slots for _, slots, _ in seen} == {16}
    assert all(sum(workers.values()) == 1 for _, _, workers in seen), seen
    assert (await api.ok("GET", "/scaling"))["desiredWorkers"] == 0
