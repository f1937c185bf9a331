"""Storage conformance, replica-shared state: held hosted leases, the webhook outbox, leader
leases and backpressure decided in the submit itself (worker_kit/storage/coordination.py)."""

from __future__ import annotations

import asyncio
import json

import pytest

from worker_kit.errors import QueueFull
from worker_kit.job import JobState, Policy
from worker_kit.storage import Storage
from worker_kit.storage.rules import FakeClock

from .test_conformance import EP, claim_one, submit

HOOK = "http://127.0.0.1:1/hook"


# -- held hosted leases ----------------------------------------------------------------------------
async def test_held_leases_are_recorded_replaced_and_dropped(storage: Storage) -> None:
    a, b = await submit(storage), await submit(storage)
    assert await storage.held_leases(EP, "w1") == {}
    await storage.hold_leases(EP, "w1", {a.id: "t1", b.id: "t2"})
    await storage.hold_leases(EP, "w1", {a.id: "t3"})
    assert await storage.held_leases(EP, "w1") == {a.id: "t3", b.id: "t2"}
    assert await storage.held_leases(EP, "w2") == {}
    assert await storage.held_leases("other", "w1") == {}
    await storage.drop_leases(EP, "w1", [a.id, "never-held"])
    assert await storage.held_leases(EP, "w1") == {b.id: "t2"}


async def test_held_leases_go_with_the_job_record(storage: Storage, clock: FakeClock) -> None:
    job = await submit(storage)
    await storage.hold_leases(EP, "w1", {job.id: "t"})
    assert [j.id for j in await storage.purge(EP)] == [job.id]  # ended CANCELLED, kept for its retention
    clock.advance(3600)
    assert (await storage.sweep(3, 0)).deleted == 1
    assert await storage.held_leases(EP, "w1") == {}


# -- webhook outbox ----------------------------------------------------------------------------------
async def test_a_job_ending_with_a_webhook_writes_one_outbox_entry(storage: Storage) -> None:
    job = await submit(storage, {"x": 1}, webhook=HOOK)
    plain = await submit(storage)
    assert await storage.webhooks_pending() == 0  # nothing until a job ends
    for queued in (job, plain):
        claimed = await claim_one(storage)
        assert claimed.id == queued.id
        assert claimed.token is not None
        await storage.finish(EP, claimed.id, claimed.token, JobState.COMPLETED, output=1)
        await storage.finish(EP, claimed.id, claimed.token, JobState.COMPLETED, output=1)  # idempotent
    assert await storage.webhooks_pending() == 1
    [delivery] = await storage.take_webhooks(10, 30_000)
    assert (delivery.endpoint, delivery.job_id, delivery.url) == (EP, job.id, HOOK)
    assert delivery.attempts == 0 and delivery.body is None and delivery.retries == 0
    assert delivery.id and delivery.created_at >= job.created_at


@pytest.mark.parametrize("how", ["cancel_queued", "cancel_running", "sweep"])
async def test_every_path_that_ends_a_job_writes_its_outbox_entry(
    storage: Storage, clock: FakeClock, how: str
) -> None:
    job = await submit(storage, webhook=HOOK, policy=Policy(execution_timeout_ms=1))
    if how == "cancel_queued":
        await storage.cancel(EP, job.id)
    elif how == "cancel_running":
        await claim_one(storage)
        await storage.cancel(EP, job.id)
    else:
        await claim_one(storage)
        clock.advance(0.05)
        result = await storage.sweep(3, 0)
        assert [j.id for j in result.ended] == [job.id]
    await storage.cancel(EP, job.id)  # already terminal: no second entry
    [delivery] = await storage.take_webhooks(10, 30_000)
    assert delivery.job_id == job.id


async def test_a_retried_job_ending_again_writes_a_second_entry(storage: Storage) -> None:
    job = await submit(storage, webhook=HOOK)
    claimed = await claim_one(storage)
    assert claimed.token is not None
    await storage.finish(EP, job.id, claimed.token, JobState.FAILED, error="boom")
    await storage.retry(EP, job.id)
    await storage.cancel(EP, job.id)
    deliveries = await storage.take_webhooks(10, 30_000)
    assert sorted(d.retries for d in deliveries) == [0, 1]
    assert len({d.id for d in deliveries}) == 2


async def test_a_taken_delivery_is_leased_to_one_taker(storage: Storage) -> None:
    await storage.cancel(EP, (await submit(storage, webhook=HOOK)).id)
    first, second = await asyncio.gather(storage.take_webhooks(10, 30_000), storage.take_webhooks(10, 30_000))
    assert sorted([len(first), len(second)]) == [0, 1]  # two replicas never both send it
    assert await storage.webhooks_pending() == 1


async def test_an_expired_delivery_lease_lets_another_taker_send_it(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.cancel(EP, (await submit(storage, webhook=HOOK)).id)
    [taken] = await storage.take_webhooks(10, 50)  # this replica dies while sending
    assert await storage.take_webhooks(10, 30_000) == []
    clock.advance(0.15)
    [again] = await storage.take_webhooks(10, 30_000)
    assert again.id == taken.id and again.attempts == 0


async def test_a_failed_attempt_is_due_again_later_with_its_body(storage: Storage, clock: FakeClock) -> None:
    await storage.cancel(EP, (await submit(storage, webhook=HOOK)).id)
    [taken] = await storage.take_webhooks(10, 30_000)
    body = json.dumps({"status": "CANCELLED"}).encode()
    await storage.webhook_later(taken.id, attempts=1, delay_ms=150, body=body)
    assert await storage.take_webhooks(10, 30_000) == []  # not due yet
    clock.advance(0.3)
    [again] = await storage.take_webhooks(10, 30_000)
    assert (again.id, again.attempts, again.body) == (taken.id, 1, body)
    await storage.webhook_done(again.id)
    assert await storage.webhooks_pending() == 0
    assert await storage.take_webhooks(10, 30_000) == []


async def test_take_webhooks_honours_its_limit_oldest_first(storage: Storage) -> None:
    ids = []
    for _ in range(3):
        job = await submit(storage, webhook=HOOK)
        await storage.cancel(EP, job.id)
        ids.append(job.id)
    first = await storage.take_webhooks(2, 30_000)
    rest = await storage.take_webhooks(2, 30_000)
    assert [d.job_id for d in first + rest] == ids


# -- leader leases -------------------------------------------------------------------------------------
async def test_a_leader_lease_has_one_holder_until_it_expires_or_resigns(storage: Storage) -> None:
    assert await storage.lead("sweeper", "a", 30_000)
    assert await storage.lead("sweeper", "a", 30_000)  # renewed
    assert not await storage.lead("sweeper", "b", 30_000)
    assert await storage.lead("other", "b", 30_000)  # names are independent
    await storage.resign("sweeper", "b")  # not b's: no effect
    assert not await storage.lead("sweeper", "b", 30_000)
    await storage.resign("sweeper", "a")
    assert await storage.lead("sweeper", "b", 50)
    await asyncio.sleep(0.15)
    assert await storage.lead("sweeper", "a", 30_000)  # b's lease ran out


async def test_racing_leaders_get_one_winner(storage: Storage) -> None:
    wins = await asyncio.gather(*(storage.lead("race", f"r{i}", 30_000) for i in range(8)))
    assert wins.count(True) == 1


# -- backpressure in the submit itself ------------------------------------------------------------------
async def test_submit_with_a_queue_limit_refuses_beyond_it(storage: Storage) -> None:
    for _ in range(3):
        await submit(storage, queue_limit=2)  # 0, 1, 2 queued before each: not over 2
    with pytest.raises(QueueFull) as info:
        await submit(storage, queue_limit=2)
    assert info.value.depth == 3
    assert (await storage.counts(EP))[JobState.IN_QUEUE.value] == 3
    await submit(storage, endpoint="other", queue_limit=2)  # per endpoint
    await claim_one(storage)
    await submit(storage, queue_limit=2)  # room again once a job left the queue


async def test_concurrent_submits_never_overfill_the_queue(storage: Storage) -> None:
    submits = (submit(storage, queue_limit=4) for _ in range(12))
    results = await asyncio.gather(*submits, return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 5
    assert all(isinstance(r, QueueFull) for r in results if isinstance(r, BaseException))

