"""Storage conformance: time limits (sweep), retention, notifications and concurrency.

Time is the backend's clock, a FakeClock the tests move past each limit (no sleeps);
they assert what the sweep did, never how fast.
"""

from __future__ import annotations

import asyncio

import pytest

from worker_kit.errors import StaleLease
from worker_kit.job import JobRecord, JobState, Policy
from worker_kit.protocol import STOP_LOST, STOP_TIMED_OUT, OutputItem
from worker_kit.storage import Storage
from worker_kit.storage.base import job_channel, queue_channel, worker_channel
from worker_kit.storage.rules import PURGED_ERROR, FakeClock

EP = "ep"
LEASE_MS = 30_000
SHORT_S = 0.06  # the short limits below, in seconds
PAST_S = 0.15  # a step of the clock safely past them


async def submit(storage: Storage, input: object = None, **kw: object) -> JobRecord:
    kw.setdefault("policy", Policy())
    kw.setdefault("retention_ms", 60_000)
    return await storage.submit(EP, input, **kw)  # type: ignore[arg-type]


# -- sweep -------------------------------------------------------------------------------------
async def test_sweep_times_out_past_execution_deadline(storage: Storage, clock: FakeClock) -> None:
    job = await submit(storage, 1, policy=Policy(execution_timeout_ms=int(SHORT_S * 1000)))
    claimed = (await storage.claim(EP, "w1", 1, LEASE_MS))[0]
    assert (await storage.sweep(3, 60_000)).ended == []  # still within the grace
    clock.advance(PAST_S)
    result = await storage.sweep(3, 0)
    assert [r.id for r in result.ended] == [job.id]
    ended = result.ended[0]
    assert ended.state is JobState.TIMED_OUT and ended.error and "timeout" in ended.error
    assert ended.expires_at is not None
    stops = await storage.heartbeat(EP, "w1", {job.id: claimed.token or ""}, LEASE_MS)
    assert [(s.job_id, s.reason) for s in stops] == [(job.id, STOP_TIMED_OUT)]
    with pytest.raises(StaleLease):
        await storage.finish(EP, job.id, claimed.token or "", JobState.COMPLETED, output="late")
    assert (await storage.sweep(3, 0)).ended == []  # ended once only


async def test_sweep_times_out_queued_job_past_ttl(storage: Storage, clock: FakeClock) -> None:
    job = await submit(storage, 1, policy=Policy(ttl_ms=int(SHORT_S * 1000)))
    fresh = await submit(storage, 2)
    clock.advance(PAST_S)
    # Past its TTL the job is never handed out, even before a sweep.
    assert [j.id for j in await storage.claim(EP, "w1", 5, LEASE_MS)] == [fresh.id]
    result = await storage.sweep(3, 0)
    assert [r.id for r in result.ended] == [job.id]
    assert result.ended[0].state is JobState.TIMED_OUT
    assert "ttl" in (result.ended[0].error or "")
    got = await storage.get(EP, job.id)
    assert got is not None and got.state is JobState.TIMED_OUT


async def test_sweep_times_out_running_job_past_ttl(storage: Storage, clock: FakeClock) -> None:
    job = await submit(storage, 1, policy=Policy(ttl_ms=int(SHORT_S * 1000)))
    await storage.claim(EP, "w1", 1, LEASE_MS)
    clock.advance(PAST_S)
    result = await storage.sweep(3, 0)
    assert [(r.id, r.state) for r in result.ended] == [(job.id, JobState.TIMED_OUT)]
    assert "ttl" in (result.ended[0].error or "")


async def test_sweep_requeues_lost_lease_then_fails_after_max_attempts(
    storage: Storage, clock: FakeClock
) -> None:
    job = await submit(storage, 1)
    lease_ms = int(SHORT_S * 1000)
    tokens = []
    for attempt in (1, 2):
        claimed = (await storage.claim(EP, f"w{attempt}", 1, lease_ms))[0]
        assert claimed.attempt == attempt
        tokens.append(claimed.token)
        await storage.append_output(EP, job.id, claimed.token or "", [OutputItem(0, "chunk", attempt)])
        clock.advance(PAST_S)
        result = await storage.sweep(3, 0)
        assert result.requeued == [job.id] and result.ended == []
        back = await storage.get(EP, job.id)
        assert back is not None and back.state is JobState.IN_QUEUE and back.attempt == attempt
        assert back.token is None and back.stream_len == 0
    assert (await storage.counts(EP))["retried"] == 2
    # The revived first worker is refused and told it lost the job.
    stops = await storage.heartbeat(EP, "w1", {job.id: tokens[0] or ""}, lease_ms)
    assert [s.reason for s in stops] == [STOP_LOST]
    with pytest.raises(StaleLease):
        await storage.finish(EP, job.id, tokens[0] or "", JobState.COMPLETED, output="zombie")
    last = (await storage.claim(EP, "w3", 1, lease_ms))[0]
    assert last.attempt == 3
    clock.advance(PAST_S)
    result = await storage.sweep(3, 0)
    assert result.requeued == [] and [r.id for r in result.ended] == [job.id]
    failed = result.ended[0]
    assert failed.state is JobState.FAILED
    assert "worker" in (failed.error or "") and "lost" in (failed.error or "")
    stops = await storage.heartbeat(EP, "w3", {job.id: last.token or ""}, lease_ms)
    assert [s.reason for s in stops] == [STOP_LOST]


async def test_heartbeat_keeps_a_lease_alive_through_sweeps(storage: Storage, clock: FakeClock) -> None:
    job = await submit(storage, 1)
    lease_ms = int(SHORT_S * 1000)
    claimed = (await storage.claim(EP, "w1", 1, lease_ms))[0]
    assert await storage.heartbeat(EP, "w1", {job.id: claimed.token or ""}, 60_000) == []
    clock.advance(PAST_S)
    result = await storage.sweep(3, 0)
    assert result.requeued == [] and result.ended == []


async def test_sweep_can_leave_expired_leases_alone(storage: Storage, clock: FakeClock) -> None:
    # The service's first lease period after a restart: other limits still apply.
    job = await submit(storage, 1)
    queued = await submit(storage, 2, policy=Policy(ttl_ms=int(SHORT_S * 1000)))
    claimed = (await storage.claim(EP, "w1", 1, int(SHORT_S * 1000)))[0]
    assert claimed.id == job.id
    clock.advance(PAST_S)
    result = await storage.sweep(3, 0, expire_leases=False)
    assert result.requeued == [] and [r.id for r in result.ended] == [queued.id]
    assert await storage.heartbeat(EP, "w1", {job.id: claimed.token or ""}, LEASE_MS) == []
    kept = await storage.get(EP, job.id)
    assert kept is not None and kept.state is JobState.IN_PROGRESS and kept.token == claimed.token
    clock.advance(PAST_S)
    assert (await storage.sweep(3, 0)).requeued == []  # renewed: kept by the ordinary rule too


async def test_sweep_deletes_records_past_retention(storage: Storage, clock: FakeClock) -> None:
    keep = await submit(storage, "keep")
    # Long enough that the record is surely still there right after finish, even on a loaded machine.
    job = await submit(storage, 1, retention_ms=400)
    claimed = next(j for j in await storage.claim(EP, "w1", 2, LEASE_MS) if j.id == job.id)
    await storage.append_output(EP, job.id, claimed.token or "", [OutputItem(0, "chunk", "c")])
    await storage.finish(EP, job.id, claimed.token or "", JobState.COMPLETED, output=1)
    assert await storage.get(EP, job.id) is not None
    clock.advance(0.5)
    assert await storage.get(EP, job.id) is None  # expired: hidden even before the sweep
    result = await storage.sweep(3, 0)
    assert result.deleted == 1
    assert await storage.get(EP, keep.id) is not None
    counts = await storage.counts(EP)
    assert counts["COMPLETED"] == 0 and counts["IN_PROGRESS"] == 1


# -- retention ---------------------------------------------------------------------------------
async def test_set_retention_on_finished_job(storage: Storage, clock: FakeClock) -> None:
    job = await submit(storage, 1, retention_ms=60_000)
    claimed = (await storage.claim(EP, "w1", 1, LEASE_MS))[0]
    await storage.finish(EP, job.id, claimed.token or "", JobState.COMPLETED)
    updated = await storage.set_retention(EP, job.id, int(SHORT_S * 1000))
    assert updated is not None and updated.expires_at is not None
    assert updated.expires_at < (updated.finished_at or 0) + 10
    clock.advance(PAST_S)
    assert await storage.get(EP, job.id) is None
    assert await storage.set_retention(EP, job.id, 60_000) is None  # too late: gone
    assert await storage.set_retention(EP, "ghost", 1000) is None


async def test_set_retention_on_running_job_applies_when_it_ends(storage: Storage) -> None:
    job = await submit(storage, 1, retention_ms=1000)
    claimed = (await storage.claim(EP, "w1", 1, LEASE_MS))[0]
    updated = await storage.set_retention(EP, job.id, 3_600_000)
    assert updated is not None and updated.retention_ms == 3_600_000 and updated.expires_at is None
    done = await storage.finish(EP, job.id, claimed.token or "", JobState.COMPLETED)
    assert done.expires_at == pytest.approx((done.finished_at or 0) + 3600)


# -- notifications -----------------------------------------------------------------------------
async def _woken(storage: Storage, channel: str, action: object) -> bool:
    waiter = asyncio.create_task(storage.wait(channel, 5.0))
    await asyncio.sleep(0)  # let the waiter register before the change
    await action  # type: ignore[misc]
    return await waiter


async def test_queue_channel_wakes_on_submit_retry_and_release(storage: Storage) -> None:
    assert await _woken(storage, queue_channel(EP), submit(storage, 1))
    job = (await storage.claim(EP, "w1", 1, LEASE_MS))[0]
    assert await _woken(storage, queue_channel(EP), storage.release(EP, job.id, job.token or ""))
    job = (await storage.claim(EP, "w1", 1, LEASE_MS))[0]
    await storage.finish(EP, job.id, job.token or "", JobState.FAILED, error="x")
    assert await _woken(storage, queue_channel(EP), storage.retry(EP, job.id))
    assert not await storage.wait(queue_channel("other"), 0.05)


async def test_job_channel_wakes_on_output_and_finish(storage: Storage) -> None:
    job = await submit(storage, 1)
    claimed = (await storage.claim(EP, "w1", 1, LEASE_MS))[0]
    token = claimed.token or ""
    assert await _woken(storage, job_channel(job.id),
                        storage.append_output(EP, job.id, token, [OutputItem(0, "progress", 1)]))  # fmt: skip
    assert await _woken(storage, job_channel(job.id), storage.finish(EP, job.id, token, JobState.COMPLETED))
    assert await _woken(storage, job_channel(job.id), storage.set_retention(EP, job.id, 1000))


async def test_worker_channel_wakes_on_cancel_and_timeout(storage: Storage, clock: FakeClock) -> None:
    job = await submit(storage, 1)
    await storage.claim(EP, "w1", 1, LEASE_MS)
    assert await _woken(storage, worker_channel(EP, "w1"), storage.cancel(EP, job.id))
    await submit(storage, 2, policy=Policy(execution_timeout_ms=int(SHORT_S * 1000)))
    await storage.claim(EP, "w2", 1, LEASE_MS)
    clock.advance(PAST_S)
    assert await _woken(storage, worker_channel(EP, "w2"), storage.sweep(3, 0))


async def test_wait_times_out_without_a_change(storage: Storage) -> None:
    assert await storage.wait(queue_channel(EP), 0.05) is False


# -- concurrency -------------------------------------------------------------------------------
async def test_concurrent_submits_are_all_stored_and_distinct(storage: Storage) -> None:
    jobs = await asyncio.gather(*(submit(storage, {"i": i}) for i in range(100)))
    assert len({j.id for j in jobs}) == 100
    stored = await asyncio.gather(*(storage.get(EP, j.id) for j in jobs))
    assert [s.input["i"] for s in stored if s is not None] == list(range(100))
    assert (await storage.counts(EP))["IN_QUEUE"] == 100


async def test_concurrent_claims_never_share_a_job(storage: Storage) -> None:
    await asyncio.gather(*(submit(storage, i) for i in range(60)))
    batches = await asyncio.gather(*(storage.claim(EP, f"w{n}", 3, LEASE_MS) for n in range(30)))
    claimed = [job.id for batch in batches for job in batch]
    assert len(claimed) == 60 and len(set(claimed)) == 60
    assert await storage.claim(EP, "late", 5, LEASE_MS) == []


async def test_concurrent_finish_and_cancel_have_one_winner(storage: Storage) -> None:
    jobs = await asyncio.gather(*(submit(storage, i) for i in range(20)))
    claimed = {j.id: j for j in await storage.claim(EP, "w1", 20, LEASE_MS)}

    async def finish(job_id: str) -> str:
        try:
            return (
                await storage.finish(EP, job_id, claimed[job_id].token or "", JobState.COMPLETED)
            ).state.value
        except StaleLease as exc:
            return f"stale:{exc.state}"

    results = await asyncio.gather(*(op for j in jobs for op in (finish(j.id), storage.cancel(EP, j.id))))
    for job in jobs:
        final = await storage.get(EP, job.id)
        assert final is not None and final.state in (JobState.COMPLETED, JobState.CANCELLED)
    finishes = results[0::2]
    for job, outcome in zip(jobs, finishes, strict=True):
        final = await storage.get(EP, job.id)
        assert final is not None
        if final.state is JobState.COMPLETED:
            assert outcome == "COMPLETED"
        else:
            assert outcome == "stale:CANCELLED"


# -- bounded batches ---------------------------------------------------------------------------
async def test_sweep_works_in_bounded_batches_and_says_when_work_is_left(
    storage: Storage, clock: FakeClock
) -> None:
    storage.batch_size, storage.sweep_batches = 3, 2  # six jobs per sweep() call at most
    running = [await submit(storage, i, policy=Policy(execution_timeout_ms=int(SHORT_S * 1000)))
               for i in range(4)]  # fmt: skip
    assert len(await storage.claim(EP, "w1", 10, LEASE_MS)) == 4
    queued = [await submit(storage, i, policy=Policy(ttl_ms=int(SHORT_S * 1000))) for i in range(5)]
    clock.advance(PAST_S)
    first = await storage.sweep(3, 0)
    assert len(first.ended) == 6 and first.more
    second = await storage.sweep(3, 0)
    assert len(second.ended) == 3 and not second.more
    ended = {r.id: r for r in first.ended + second.ended}
    assert set(ended) == {j.id for j in queued + running}  # each ended once
    assert all(r.state is JobState.TIMED_OUT for r in ended.values())
    counts = await storage.counts(EP)
    assert counts["TIMED_OUT"] == 9 and counts["IN_QUEUE"] == 0 and counts["IN_PROGRESS"] == 0
    # Retention past: deletions are batched the same way.
    clock.advance(60 * 60)
    sweeps = [await storage.sweep(3, 0) for _ in range(2)]
    assert [(r.deleted, r.more) for r in sweeps] == [(6, True), (3, False)]
    assert (await storage.sweep(3, 0)).deleted == 0


async def test_sweep_passes_over_running_jobs_within_the_grace(storage: Storage, clock: FakeClock) -> None:
    # Many running jobs past their TTL but within the grace must not fill every batch (no busy loop).
    storage.batch_size, storage.sweep_batches = 2, 1
    for i in range(4):
        await submit(storage, i, policy=Policy(ttl_ms=int(SHORT_S * 1000)))
    await storage.claim(EP, "w1", 4, LEASE_MS)
    clock.advance(PAST_S)
    result = await storage.sweep(3, 60_000)
    assert result.ended == [] and not result.more
    clock.advance(60)
    assert len((await storage.sweep(3, 0)).ended) == 2


async def test_swept_and_purged_records_carry_what_the_service_reports(
    storage: Storage, clock: FakeClock
) -> None:
    # The sweep and the purge answer a whole batch of records at once (on Redis, packed into one
    # reply): each record must still hold what the service logs, counts and sends a webhook for.
    running = await submit(storage, b"\xff\x00 bytes", webhook="http://hooks.example/r",
                           policy=Policy(execution_timeout_ms=int(SHORT_S * 1000)))
    assert [j.id for j in await storage.claim(EP, "wörker-1", 1, LEASE_MS)] == [running.id]
    queued = await submit(storage, {"text": "naïve ü"}, webhook="http://hooks.example/q",
                          policy=Policy(ttl_ms=int(SHORT_S * 1000)))
    clock.advance(PAST_S)
    by_id = {r.id: r for r in (await storage.sweep(3, 0)).ended}
    assert set(by_id) == {running.id, queued.id}
    ran, waited = by_id[running.id], by_id[queued.id]
    assert ran.state is JobState.TIMED_OUT and ran.error and "timeout" in ran.error
    assert waited.state is JobState.TIMED_OUT and waited.error and "ttl" in waited.error
    assert (ran.webhook, waited.webhook) == ("http://hooks.example/r", "http://hooks.example/q")
    assert ran.worker_id == "wörker-1" and ran.started_at is not None and waited.started_at is None
    assert ran.endpoint == waited.endpoint == EP and ran.retries == waited.retries == 0
    assert all(r.finished_at is not None and r.expires_at is not None for r in (ran, waited))

    purgeable = await submit(storage, "p", webhook="http://hooks.example/p")
    [purged] = await storage.purge(EP)
    assert purged.id == purgeable.id and purged.state is JobState.CANCELLED
    assert purged.webhook == "http://hooks.example/p" and purged.error == PURGED_ERROR
    assert purged.finished_at is not None and purged.expires_at is not None
