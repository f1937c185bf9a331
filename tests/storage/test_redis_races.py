"""Two storage instances on one Redis race as two service replicas would: every contested job has
exactly one winner, and what one instance changes wakes the other's waiters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.redis_support import REDIS_URL, redis_prefix_url
from worker_kit.errors import StaleLease
from worker_kit.job import JobState, Policy
from worker_kit.storage.base import job_channel, queue_channel
from worker_kit.storage.redis import RedisStorage
from worker_kit.storage.rules import FakeClock

pytestmark = pytest.mark.redis

EP = "race"
LEASE_MS = 30_000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def pair(clock: FakeClock) -> AsyncIterator[tuple[RedisStorage, RedisStorage]]:
    async with redis_prefix_url() as url:
        a, b = RedisStorage.from_url(url, clock=clock), RedisStorage.from_url(url, clock=clock)
        await a.open()
        await b.open()
        try:
            yield a, b
        finally:
            await a.close()
            await b.close()


async def _submit(storage: RedisStorage, n: int, **policy: int) -> list[str]:
    return [(await storage.submit(EP, i, policy=Policy(**policy), retention_ms=60_000)).id for i in range(n)]


async def test_two_replicas_claiming_never_share_a_job(pair: tuple[RedisStorage, RedisStorage]) -> None:
    a, b = pair
    ids = await _submit(a, 40)
    batches = await asyncio.gather(*(s.claim(EP, f"w{n}", 3, LEASE_MS) for n in range(20) for s in (a, b)))
    claimed = [job.id for batch in batches for job in batch]
    assert sorted(claimed) == sorted(ids)


async def test_claim_against_cancel_has_one_outcome_per_job(pair: tuple[RedisStorage, RedisStorage]) -> None:
    a, b = pair
    ids = await _submit(a, 30)
    results = await asyncio.gather(b.claim(EP, "w1", 30, LEASE_MS), *(a.cancel(EP, i) for i in ids))
    claimed = {job.id for job in results[0]}
    for job_id in ids:
        final = await b.get(EP, job_id)
        assert final is not None
        if job_id in claimed:  # claimed first, then cancelled: the worker is told on its next heartbeat
            assert final.state is JobState.CANCELLED and final.attempt == 1
        else:
            assert final.state is JobState.CANCELLED and final.attempt == 0
    counts = await a.counts(EP)
    assert counts["CANCELLED"] == 30 and counts["IN_QUEUE"] == 0 and counts["IN_PROGRESS"] == 0
    assert [w.running for w in await a.workers(EP, 60)] == [0]  # w1 holds nothing any more


async def test_finish_against_sweep_has_one_winner(
    pair: tuple[RedisStorage, RedisStorage], clock: FakeClock
) -> None:
    a, b = pair
    ids = await _submit(a, 20, execution_timeout_ms=50)
    jobs = {j.id: j for j in await a.claim(EP, "w1", 20, LEASE_MS)}
    clock.advance(1.0)

    async def finish(job_id: str) -> str:
        try:
            done = await a.finish(EP, job_id, jobs[job_id].token or "", JobState.COMPLETED, output=1)
            return done.state.value
        except StaleLease:
            return "stale"

    swept, *finishes = await asyncio.gather(b.sweep(3, 0), *(finish(i) for i in ids))
    timed_out = {r.id for r in swept.ended}
    for job_id, outcome in zip(ids, finishes, strict=True):
        final = await a.get(EP, job_id)
        assert final is not None
        if job_id in timed_out:
            assert final.state is JobState.TIMED_OUT and outcome == "stale"
        else:
            assert final.state is JobState.COMPLETED and outcome == "COMPLETED"
    counts = await a.counts(EP)
    assert counts["TIMED_OUT"] + counts["COMPLETED"] == 20 and counts["IN_PROGRESS"] == 0


async def test_two_sweepers_end_each_job_once(
    pair: tuple[RedisStorage, RedisStorage], clock: FakeClock
) -> None:
    a, b = pair
    a.batch_size = b.batch_size = 7
    ids = await _submit(a, 30, ttl_ms=50)
    await a.claim(EP, "w1", 10, 50)  # some running: their leases and TTLs run out too
    clock.advance(5.0)
    results = await asyncio.gather(a.sweep(3, 0), b.sweep(3, 0), a.sweep(3, 0), b.sweep(3, 0))
    ended = [r.id for result in results for r in result.ended]
    requeued = [i for result in results for i in result.requeued]
    assert sorted(ended) == sorted(ids) and requeued == []  # past its TTL a job ends, never requeues
    counts = await a.counts(EP)
    assert counts["TIMED_OUT"] == 30 and counts["IN_QUEUE"] == 0 and counts["IN_PROGRESS"] == 0


async def test_a_change_on_one_replica_wakes_waiters_on_the_other(
    pair: tuple[RedisStorage, RedisStorage],
) -> None:
    a, b = pair
    claim_waiter = asyncio.create_task(b.wait(queue_channel(EP), 10.0))
    await asyncio.sleep(0.05)  # the waiter is registered
    (job_id,) = await _submit(a, 1)
    assert await claim_waiter
    job_waiter = asyncio.create_task(a.wait(job_channel(job_id), 10.0))
    await asyncio.sleep(0.05)
    await b.claim(EP, "w1", 1, LEASE_MS)
    assert await job_waiter


async def test_a_replica_whose_subscription_dropped_wakes_its_job_waiters(
    pair: tuple[RedisStorage, RedisStorage],
) -> None:
    """Pub/sub is at most once: what b publishes while a's subscription is down never reaches a.
    Once a has subscribed again, its job waiters look again instead of sleeping out their wait."""
    a, b = pair
    (job_id,) = await _submit(a, 1)
    waiter = asyncio.create_task(a.wait(job_channel(job_id), 30.0))
    await asyncio.sleep(0.05)
    admin = aioredis.from_url(REDIS_URL)
    try:
        subscribers = await admin.client_list(_type="pubsub")
        ours = [c["id"] for c in subscribers if c.get("name") == f"worker-kit:{a.url.prefix}"]
        assert len(ours) == 2  # a's and b's, named after their prefix
        for client_id in ours:
            await admin.execute_command("CLIENT", "KILL", "ID", client_id)
    finally:
        await admin.aclose()
    await b.cancel(EP, job_id)  # published while nobody listens
    assert await asyncio.wait_for(waiter, 10.0)


async def test_job_waiters_look_again_periodically_but_waiting_claims_do_not(clock: FakeClock) -> None:
    async with redis_prefix_url() as url:
        storage = RedisStorage.from_url(url, clock=clock)
        storage.safety_wake_s = 0.2
        await storage.open()
        try:
            job_waiter = asyncio.create_task(storage.wait(job_channel("some-job"), 30.0))
            claim_waiter = asyncio.create_task(storage.wait(queue_channel(EP), 1.0))
            assert await asyncio.wait_for(job_waiter, 10.0)  # woken with nothing published
            assert not await claim_waiter  # a claim re-reads on its own; its wait ran out
        finally:
            await storage.close()
