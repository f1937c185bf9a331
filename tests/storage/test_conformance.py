"""Storage conformance: every backend must pass this suite (client side and worker side).

Time limits, notifications and concurrency are in test_conformance_sweep.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from worker_kit.errors import JobConflict, JobNotFound, SequenceGap, StaleLease
from worker_kit.job import JobRecord, JobState, Policy
from worker_kit.packed import Packed
from worker_kit.protocol import STOP_CANCELLED, STOP_LOST, OutputItem, pack
from worker_kit.storage import Storage
from worker_kit.storage.rules import PURGED_ERROR

EP = "ep"
LEASE_MS = 30_000


async def submit(storage: Storage, input: object = None, endpoint: str = EP, **kw: object) -> JobRecord:
    kw.setdefault("policy", Policy())
    kw.setdefault("retention_ms", 60_000)
    return await storage.submit(endpoint, input, **kw)  # type: ignore[arg-type]


async def claim_one(storage: Storage, worker: str = "w1", endpoint: str = EP) -> JobRecord:
    jobs = await storage.claim(endpoint, worker, 1, LEASE_MS)
    assert len(jobs) == 1
    return jobs[0]


def chunk(seq: int, data: object) -> OutputItem:
    return OutputItem(seq=seq, kind="chunk", data=data)


def progress(seq: int, data: object) -> OutputItem:
    return OutputItem(seq=seq, kind="progress", data=data)


# -- submit / get --------------------------------------------------------------------------------
async def test_submit_then_get_round_trips_input_including_bytes(storage: Storage) -> None:
    payload = {"prompt": "hi", "blob": b"\x00\xff", "n": [1, 2.5, None, True]}
    policy = Policy(execution_timeout_ms=1234, ttl_ms=5678, execution_timeout_explicit=False)
    job = await submit(storage, payload, webhook="http://127.0.0.1:1/hook", policy=policy)
    assert job.state is JobState.IN_QUEUE and job.endpoint == EP and job.id
    got = await storage.get(EP, job.id)
    assert got is not None
    assert got.input == payload
    assert got.state is JobState.IN_QUEUE
    assert got.policy == policy
    assert got.policy.execution_timeout_explicit is False
    assert got.webhook == "http://127.0.0.1:1/hook"
    assert got.retention_ms == 60_000
    assert got.created_at == pytest.approx(job.created_at)
    assert got.attempt == 0 and got.token is None and got.worker_id is None


@pytest.mark.parametrize("explicit", [True, False])
async def test_explicit_execution_timeout_round_trips(storage: Storage, explicit: bool) -> None:
    policy = Policy(execution_timeout_ms=600_000, ttl_ms=5678, execution_timeout_explicit=explicit)
    job = await submit(storage, 1, policy=policy)
    got = await storage.get(EP, job.id)
    assert got is not None and got.policy == policy
    (claimed,) = await storage.claim(EP, "w1", 1, LEASE_MS)
    assert claimed.policy == policy
    # A retried job keeps the client's choice.
    assert claimed.token is not None
    await storage.finish(EP, job.id, claimed.token, JobState.FAILED, error="boom")
    assert (await storage.retry(EP, job.id)).policy == policy


async def test_get_unknown_or_other_endpoint_is_none(storage: Storage) -> None:
    job = await submit(storage, 1)
    assert await storage.get(EP, "no-such-job") is None
    assert await storage.get("other", job.id) is None


async def test_submitted_ids_are_distinct(storage: Storage) -> None:
    ids = {(await submit(storage, i)).id for i in range(20)}
    assert len(ids) == 20


# -- claim -------------------------------------------------------------------------------------
async def test_claim_takes_oldest_first_up_to_max(storage: Storage) -> None:
    jobs = [await submit(storage, i) for i in range(5)]
    first = await storage.claim(EP, "w1", 2, LEASE_MS)
    assert [j.id for j in first] == [jobs[0].id, jobs[1].id]
    rest = await storage.claim(EP, "w2", 10, LEASE_MS)
    assert [j.id for j in rest] == [j.id for j in jobs[2:]]
    assert await storage.claim(EP, "w3", 10, LEASE_MS) == []


async def test_claim_sets_lease_token_attempt_and_worker(storage: Storage) -> None:
    job = await submit(storage, {"x": 1})
    before = time.time()
    claimed = await claim_one(storage)
    assert claimed.id == job.id and claimed.input == {"x": 1}
    assert claimed.state is JobState.IN_PROGRESS
    assert claimed.attempt == 1 and claimed.worker_id == "w1"
    assert claimed.token and len(claimed.token) == 32
    assert claimed.started_at is not None and claimed.started_at >= before - 1
    assert claimed.lease_until is not None and claimed.lease_until >= before + LEASE_MS / 1000 - 1
    stored = await storage.get(EP, job.id)
    assert stored is not None and stored.token == claimed.token and stored.state is JobState.IN_PROGRESS


async def test_claim_only_from_own_endpoint(storage: Storage) -> None:
    await submit(storage, 1, endpoint="a")
    assert await storage.claim("b", "w1", 5, LEASE_MS) == []
    assert len(await storage.claim("a", "w1", 5, LEASE_MS)) == 1


async def test_tokens_differ_per_claim(storage: Storage) -> None:
    await submit(storage, 1)
    first = await claim_one(storage)
    assert await storage.release(EP, first.id, first.token or "")
    second = await claim_one(storage, "w2")
    assert second.id == first.id and second.token != first.token
    other = [await submit(storage, i) for i in range(10)]
    tokens = {j.token for j in await storage.claim(EP, "w3", 10, LEASE_MS)}
    assert len(tokens) == len(other)
    assert all(t is not None and len(t) == 32 and int(t, 16) >= 0 and t == t.lower() for t in tokens)


# -- heartbeat ---------------------------------------------------------------------------------
async def test_heartbeat_renews_lease(storage: Storage) -> None:
    await submit(storage, 1)
    job = await storage.claim(EP, "w1", 1, 1000)
    assert await storage.heartbeat(EP, "w1", {job[0].id: job[0].token or ""}, 60_000) == []
    renewed = await storage.get(EP, job[0].id)
    assert renewed is not None and renewed.lease_until is not None
    assert renewed.lease_until > (job[0].lease_until or 0) + 30


async def test_heartbeat_stop_reasons(storage: Storage) -> None:
    a, b = await submit(storage, "a"), await submit(storage, "b")
    ca, cb = await storage.claim(EP, "w1", 2, LEASE_MS)
    await storage.cancel(EP, a.id)
    stops = await storage.heartbeat(
        EP, "w1", {ca.id: ca.token or "", cb.id: "wrong-token", "ghost": "t"}, 1000
    )
    assert {(s.job_id, s.reason) for s in stops} == {
        (a.id, STOP_CANCELLED),
        (b.id, STOP_LOST),
        ("ghost", STOP_LOST),
    }
    # The current token of b still renews without a stop.
    assert await storage.heartbeat(EP, "w1", {cb.id: cb.token or ""}, 1000) == []


async def test_heartbeat_after_release_is_lost(storage: Storage) -> None:
    await submit(storage, 1)
    job = await claim_one(storage)
    assert await storage.release(EP, job.id, job.token or "")
    stops = await storage.heartbeat(EP, "w1", {job.id: job.token or ""}, 1000)
    assert [(s.job_id, s.reason) for s in stops] == [(job.id, STOP_LOST)]


async def test_heartbeat_of_a_job_its_own_token_finished_stops_nothing(storage: Storage) -> None:
    """A heartbeat sent before the finish and answered after it must not report a false LOST
    (docs/protocol.md); another token's heartbeat for that job still gets LOST."""
    for state in (JobState.COMPLETED, JobState.FAILED, JobState.TIMED_OUT):
        await submit(storage, state.value)
        job = await claim_one(storage)
        error = None if state is JobState.COMPLETED else "x"
        await storage.finish(EP, job.id, job.token or "", state, error=error)
        assert await storage.heartbeat(EP, "w1", {job.id: job.token or ""}, 1000) == []
        stops = await storage.heartbeat(EP, "w1", {job.id: "an-older-token"}, 1000)
        assert [(s.job_id, s.reason) for s in stops] == [(job.id, STOP_LOST)]


async def test_payloads_given_packed_are_stored_as_their_values(storage: Storage) -> None:
    """The service hands results and chunks over already packed (protocol.Packed, encoded once);
    a backend that encodes with protocol.pack stores those bytes as they are."""
    await submit(storage, 1)
    job = await claim_one(storage)
    items = [OutputItem(seq=0, kind="chunk", data=Packed(pack("tok"))),
             OutputItem(seq=1, kind="progress", data=Packed(pack({"pct": 5})))]
    assert await storage.append_output(EP, job.id, job.token or "", items) == 2
    running = await storage.get(EP, job.id)
    assert running is not None and running.progress == {"pct": 5}
    result = Packed(pack({"a": [1, b"x"]}))
    await storage.finish(EP, job.id, job.token or "", JobState.COMPLETED, output=result)
    done, chunks, _ = await storage.read_stream(EP, job.id, 0)
    assert done.output == {"a": [1, b"x"]} and chunks == ["tok"]


# -- output ------------------------------------------------------------------------------------
async def test_append_output_orders_dedups_and_tracks_progress(storage: Storage) -> None:
    await submit(storage, 1)
    job = await claim_one(storage)
    token = job.token or ""
    # Out of order within one request is fine: items are applied in seq order.
    assert (
        await storage.append_output(EP, job.id, token, [chunk(1, "b"), chunk(0, b"a"), progress(2, 50)]) == 3
    )
    # A retried request: every item is a duplicate and is skipped.
    assert (
        await storage.append_output(EP, job.id, token, [chunk(0, b"a"), chunk(1, "b"), progress(2, 50)]) == 3
    )
    # Overlap: duplicates skipped, the new one applied.
    assert await storage.append_output(EP, job.id, token, [progress(2, 50), chunk(3, {"c": 3})]) == 4
    record, chunks, cursor = await storage.read_stream(EP, job.id, 0)
    assert chunks == [b"a", "b", {"c": 3}] and cursor == 3
    assert record.progress == 50 and record.next_seq == 4 and record.stream_len == 3
    assert await storage.append_output(EP, job.id, token, [progress(4, {"pct": 90})]) == 5
    running = await storage.get(EP, job.id)
    assert running is not None and running.progress == {"pct": 90}
    assert running.to_status()["output"] == {"pct": 90}


async def test_append_output_gap_is_refused_whole(storage: Storage) -> None:
    await submit(storage, 1)
    job = await claim_one(storage)
    await storage.append_output(EP, job.id, job.token or "", [chunk(0, "a")])
    with pytest.raises(SequenceGap) as info:
        await storage.append_output(EP, job.id, job.token or "", [chunk(1, "b"), chunk(3, "d")])
    assert info.value.expected == 1
    record, chunks, _ = await storage.read_stream(EP, job.id, 0)
    assert chunks == ["a"] and record.next_seq == 1  # nothing of the refused request was applied
    assert await storage.append_output(EP, job.id, job.token or "", [chunk(1, "b"), chunk(2, "c")]) == 3


async def test_append_output_stale_or_unknown(storage: Storage) -> None:
    await submit(storage, 1)
    job = await claim_one(storage)
    with pytest.raises(StaleLease) as info:
        await storage.append_output(EP, job.id, "not-the-token", [chunk(0, "x")])
    assert info.value.state == "IN_PROGRESS"
    with pytest.raises(JobNotFound):
        await storage.append_output(EP, "ghost", "t", [chunk(0, "x")])
    with pytest.raises(JobNotFound):
        await storage.append_output("other", job.id, job.token or "", [chunk(0, "x")])


# -- finish ------------------------------------------------------------------------------------
async def test_finish_applies_trailing_items_then_ends(storage: Storage) -> None:
    job = await submit(storage, 1, retention_ms=5000)
    claimed = await claim_one(storage)
    token = claimed.token or ""
    await storage.append_output(EP, job.id, token, [chunk(0, "a")])
    done = await storage.finish(EP, job.id, token, JobState.COMPLETED, output={"r": b"\x01"},
                                items=[chunk(1, "b"), progress(2, 100)])  # fmt: skip
    assert done.state is JobState.COMPLETED and done.output == {"r": b"\x01"}
    assert done.finished_at is not None and done.expires_at == pytest.approx(done.finished_at + 5.0)
    assert done.next_seq == 3 and done.stream_len == 2
    got = await storage.get(EP, job.id)
    assert got is not None and got.state is JobState.COMPLETED and got.output == {"r": b"\x01"}
    _, chunks, _ = await storage.read_stream(EP, job.id, 0)
    assert chunks == ["a", "b"]


async def test_finish_failed_keeps_error_and_detail(storage: Storage) -> None:
    await submit(storage, 1)
    job = await claim_one(storage)
    detail = {"type": "ValueError", "message": "bad", "traceback": "Traceback..."}
    done = await storage.finish(
        EP, job.id, job.token or "", JobState.FAILED, error="bad", error_detail=detail
    )
    assert done.state is JobState.FAILED and done.error == "bad" and done.error_detail == detail
    status = done.to_status()
    assert status["error"] == "bad" and status["status"] == "FAILED"


async def test_finish_is_idempotent_for_the_same_token(storage: Storage) -> None:
    await submit(storage, 1)
    job = await claim_one(storage)
    first = await storage.finish(EP, job.id, job.token or "", JobState.COMPLETED, output=1)
    again = await storage.finish(EP, job.id, job.token or "", JobState.COMPLETED, output=1)
    assert again.state is JobState.COMPLETED and again.output == 1
    assert again.finished_at == pytest.approx(first.finished_at or 0)


async def test_finish_with_stale_token_is_refused(storage: Storage) -> None:
    await submit(storage, 1)
    old = await claim_one(storage)
    await storage.release(EP, old.id, old.token or "")
    new = await claim_one(storage, "w2")
    with pytest.raises(StaleLease):
        await storage.finish(EP, old.id, old.token or "", JobState.COMPLETED, output="zombie")
    done = await storage.finish(EP, new.id, new.token or "", JobState.COMPLETED, output="real")
    assert done.output == "real"
    # The old token stays refused after the job ended, too.
    with pytest.raises(StaleLease) as info:
        await storage.finish(EP, old.id, old.token or "", JobState.FAILED, error="zombie")
    assert info.value.state == "COMPLETED"


async def test_finish_rejects_non_worker_states(storage: Storage) -> None:
    await submit(storage, 1)
    job = await claim_one(storage)
    for state in (JobState.CANCELLED, JobState.IN_QUEUE):
        with pytest.raises(ValueError):
            await storage.finish(EP, job.id, job.token or "", state)


async def test_terminal_state_is_final(storage: Storage) -> None:
    await submit(storage, 1)
    job = await claim_one(storage)
    token = job.token or ""
    await storage.append_output(EP, job.id, token, [progress(0, 10)])
    await storage.finish(EP, job.id, token, JobState.COMPLETED, output="done")
    with pytest.raises(StaleLease) as info:
        await storage.append_output(EP, job.id, token, [progress(1, 99), chunk(2, "late")])
    assert info.value.state == "COMPLETED"
    with pytest.raises(StaleLease):
        await storage.finish(EP, job.id, "another-token", JobState.FAILED, error="late")
    assert await storage.cancel(EP, job.id) is not None
    got = await storage.get(EP, job.id)
    assert got is not None and got.state is JobState.COMPLETED and got.output == "done" and got.progress == 10
    assert got.stream_len == 0


# -- cancel ------------------------------------------------------------------------------------
async def test_cancel_queued_job(storage: Storage) -> None:
    job = await submit(storage, 1)
    cancelled = await storage.cancel(EP, job.id)
    assert cancelled is not None and cancelled.state is JobState.CANCELLED
    assert cancelled.finished_at is not None and cancelled.expires_at is not None
    assert await storage.claim(EP, "w1", 5, LEASE_MS) == []


async def test_cancel_running_job_refuses_its_reports(storage: Storage) -> None:
    await submit(storage, 1)
    job = await claim_one(storage)
    cancelled = await storage.cancel(EP, job.id)
    assert cancelled is not None and cancelled.state is JobState.CANCELLED
    with pytest.raises(StaleLease) as info:
        await storage.finish(EP, job.id, job.token or "", JobState.COMPLETED, output="late")
    assert info.value.state == "CANCELLED"
    with pytest.raises(StaleLease):
        await storage.append_output(EP, job.id, job.token or "", [chunk(0, "late")])


async def test_cancel_terminal_returns_unchanged_and_unknown_is_none(storage: Storage) -> None:
    await submit(storage, 1)
    job = await claim_one(storage)
    await storage.finish(EP, job.id, job.token or "", JobState.FAILED, error="boom")
    again = await storage.cancel(EP, job.id)
    assert again is not None and again.state is JobState.FAILED and again.error == "boom"
    assert await storage.cancel(EP, "ghost") is None
    assert await storage.cancel("other", job.id) is None


# -- retry -------------------------------------------------------------------------------------
async def test_retry_requeues_same_id_and_input_and_clears_output(storage: Storage) -> None:
    job = await submit(storage, {"in": b"put"})
    claimed = await claim_one(storage)
    await storage.append_output(EP, job.id, claimed.token or "", [chunk(0, "a"), progress(1, 5)])
    await storage.finish(EP, job.id, claimed.token or "", JobState.FAILED, output="partial", error="boom",
                         error_detail={"type": "E"})  # fmt: skip
    retried = await storage.retry(EP, job.id)
    assert retried.id == job.id and retried.state is JobState.IN_QUEUE and retried.input == {"in": b"put"}
    assert retried.output is None and retried.error is None and retried.error_detail is None
    assert retried.progress is None and retried.stream_len == 0 and retried.next_seq == 0
    assert retried.retries == 1 and retried.attempt == 0 and retried.token is None
    assert retried.finished_at is None and retried.expires_at is None
    _, chunks, _ = await storage.read_stream(EP, job.id, 0)
    assert chunks == []
    again = await claim_one(storage)
    assert again.id == job.id and again.attempt == 1 and again.token != claimed.token
    assert (await storage.counts(EP))["retried"] == 1


async def test_retry_timed_out_job(storage: Storage) -> None:
    await submit(storage, 1)
    job = await claim_one(storage)
    await storage.finish(EP, job.id, job.token or "", JobState.TIMED_OUT, error="too slow")
    assert (await storage.retry(EP, job.id)).state is JobState.IN_QUEUE


@pytest.mark.parametrize("end", ["queued", "running", "completed", "cancelled"])
async def test_retry_other_states_conflict(storage: Storage, end: str) -> None:
    job = await submit(storage, 1)
    if end != "queued":
        claimed = await claim_one(storage)
        if end == "completed":
            await storage.finish(EP, job.id, claimed.token or "", JobState.COMPLETED)
        elif end == "cancelled":
            await storage.cancel(EP, job.id)
    with pytest.raises(JobConflict) as info:
        await storage.retry(EP, job.id)
    expected = {
        "queued": "IN_QUEUE",
        "running": "IN_PROGRESS",
        "completed": "COMPLETED",
        "cancelled": "CANCELLED",
    }
    assert info.value.state == expected[end]
    got = await storage.get(EP, job.id)
    assert got is not None and got.retries == 0


async def test_retry_unknown_job(storage: Storage) -> None:
    with pytest.raises(JobNotFound):
        await storage.retry(EP, "ghost")


# -- purge -------------------------------------------------------------------------------------
async def test_purge_cancels_only_queued_jobs_of_the_endpoint(storage: Storage) -> None:
    running = await submit(storage, "run")
    await claim_one(storage)
    hook = "http://127.0.0.1:1/hook"
    queued = [await submit(storage, i, webhook=hook, retention_ms=45_000) for i in range(3)]
    other = await submit(storage, "x", endpoint="other")
    purged = await storage.purge(EP)
    assert [j.id for j in purged] == [j.id for j in queued]  # oldest first
    for job in purged:
        assert job.state is JobState.CANCELLED and job.error == PURGED_ERROR
        assert job.webhook == "http://127.0.0.1:1/hook" and job.input is None
        assert job.expires_at == pytest.approx((job.finished_at or 0) + 45)
    for job in queued:
        kept = await storage.get(EP, job.id)  # kept for the usual retention, saying why it ended
        assert kept is not None and kept.state is JobState.CANCELLED and kept.error == PURGED_ERROR
    assert (await storage.get(EP, running.id)).state is JobState.IN_PROGRESS  # type: ignore[union-attr]
    assert (await storage.get("other", other.id)).state is JobState.IN_QUEUE  # type: ignore[union-attr]
    assert await storage.purge(EP) == []
    counts = await storage.counts(EP)
    assert counts["IN_QUEUE"] == 0 and counts["IN_PROGRESS"] == 1 and counts["CANCELLED"] == 3
    assert await storage.claim(EP, "w2", 5, LEASE_MS) == []


async def test_purge_works_in_bounded_steps(storage: Storage) -> None:
    jobs = [await submit(storage, i) for i in range(7)]
    steps = [await storage.purge(EP, limit=3) for _ in range(4)]
    assert [len(step) for step in steps] == [3, 3, 1, 0]
    assert [j.id for step in steps for j in step] == [j.id for j in jobs]


# -- read_stream -------------------------------------------------------------------------------
async def test_read_stream_consumes_without_cursor_and_not_with_one(storage: Storage) -> None:
    await submit(storage, 1)
    job = await claim_one(storage)
    token = job.token or ""
    await storage.append_output(EP, job.id, token, [chunk(0, "a"), chunk(1, "b")])
    _, chunks, cursor = await storage.read_stream(EP, job.id)
    assert chunks == ["a", "b"] and cursor == 2
    _, chunks, cursor = await storage.read_stream(EP, job.id)
    assert chunks == [] and cursor == 2
    await storage.append_output(EP, job.id, token, [progress(2, 1), chunk(3, "c")])
    record, chunks, cursor = await storage.read_stream(EP, job.id)
    assert chunks == ["c"] and cursor == 3 and record.read_cursor == 3
    # A cursor read consumes nothing and can start anywhere.
    assert (await storage.read_stream(EP, job.id, 0))[1:] == (["a", "b", "c"], 3)
    assert (await storage.read_stream(EP, job.id, 2))[1:] == (["c"], 3)
    assert (await storage.read_stream(EP, job.id, 7))[1] == []
    await storage.append_output(EP, job.id, token, [chunk(4, "d")])
    assert (await storage.read_stream(EP, job.id))[1] == ["d"]


async def test_read_stream_from_every_cursor_across_batches(storage: Storage) -> None:
    # Chunks arrive in batches of several sizes, with progress between them and a retried
    # (partly duplicate) batch; a read from any cursor, bounded or not, gets exactly the chunks
    # from there on, in order, and a bounded read pages through without a gap or a repeat.
    await submit(storage, 1)
    job = await claim_one(storage)
    token = job.token or ""
    values: list[Any] = []
    seq = 0
    for size in (1, 3, 1, 5, 2):
        batch = []
        for _ in range(size):
            values.append({"n": len(values)} if len(values) % 4 == 3 else f"c{len(values)}")
            batch.append(chunk(seq, values[-1]))
            seq += 1
        await storage.append_output(EP, job.id, token, batch)
        # A retry of the batch's tail, then a progress update.
        await storage.append_output(EP, job.id, token, [*batch[-2:], progress(seq, seq)])
        seq += 1
    for cursor in range(len(values) + 2):
        record, chunks, next_cursor = await storage.read_stream(EP, job.id, cursor)
        assert chunks == values[cursor:] and next_cursor == max(cursor, len(values))
        assert record.stream_len == len(values) == 12
        paged, at = [], cursor
        while True:
            _, chunks, at = await storage.read_stream(EP, job.id, at, max_bytes=8)
            if not chunks:
                break
            assert len(chunks) <= 2  # each packed chunk is 3..5 bytes: at most two fit in 8
            paged += chunks
        assert paged == values[cursor:]


async def test_read_stream_unknown_job(storage: Storage) -> None:
    with pytest.raises(JobNotFound):
        await storage.read_stream(EP, "ghost")
    with pytest.raises(JobNotFound):
        await storage.read_stream(EP, "ghost", 0)


# -- release, counts, workers --------------------------------------------------------------------
async def test_release_requeues_without_counting_the_attempt(storage: Storage) -> None:
    job = await submit(storage, 1)
    claimed = await claim_one(storage)
    await storage.append_output(EP, job.id, claimed.token or "", [chunk(0, "partial")])
    assert await storage.release(EP, job.id, "wrong") is False
    assert await storage.release(EP, job.id, claimed.token or "") is True
    back = await storage.get(EP, job.id)
    assert back is not None and back.state is JobState.IN_QUEUE and back.attempt == 0 and back.token is None
    assert back.stream_len == 0  # the next attempt streams from its own seq 0
    assert await storage.release(EP, job.id, claimed.token or "") is False
    again = await claim_one(storage)
    assert again.attempt == 1
    assert (await storage.counts(EP))["retried"] == 0


async def test_counts_per_state(storage: Storage) -> None:
    for i in range(4):
        await submit(storage, i)
    await submit(storage, "x", endpoint="other")
    a, b, _ = await storage.claim(EP, "w1", 3, LEASE_MS)
    await storage.finish(EP, a.id, a.token or "", JobState.COMPLETED)
    await storage.finish(EP, b.id, b.token or "", JobState.FAILED, error="e")
    counts = await storage.counts(EP)
    assert counts["IN_QUEUE"] == 1 and counts["IN_PROGRESS"] == 1
    assert counts["COMPLETED"] == 1 and counts["FAILED"] == 1
    assert counts.get("CANCELLED", 0) == 0 and counts.get("TIMED_OUT", 0) == 0
    assert counts["retried"] == 0
    assert (await storage.counts("other"))["IN_QUEUE"] == 1
    empty = await storage.counts("nobody")
    assert all(v == 0 for v in empty.values()) and "retried" in empty


async def test_workers_seen_on_claim_and_heartbeat(storage: Storage) -> None:
    for i in range(3):
        await submit(storage, i)
    jobs = await storage.claim(EP, "w1", 2, LEASE_MS)
    await storage.claim(EP, "w2", 4, LEASE_MS)
    await storage.heartbeat(EP, "w3", {}, LEASE_MS)
    workers = {w.worker_id: w for w in await storage.workers(EP, 60)}
    assert set(workers) == {"w1", "w2", "w3"}
    assert workers["w1"].running == 2 and workers["w2"].running == 1 and workers["w3"].running == 0
    assert workers["w1"].seen_at == pytest.approx(time.time(), abs=30)
    # running counts the jobs a worker holds, not the leases its last heartbeat listed...
    await storage.heartbeat(EP, "w1", {j.id: j.token or "" for j in jobs[:1]}, LEASE_MS, running=1)
    workers = {w.worker_id: w for w in await storage.workers(EP, 60)}
    assert workers["w1"].running == 2
    # ...so it drops as soon as one of them ends, with no request from the worker.
    await storage.finish(EP, jobs[0].id, jobs[0].token or "", JobState.COMPLETED)
    workers = {w.worker_id: w for w in await storage.workers(EP, 60)}
    assert workers["w1"].running == 1
    assert jobs[1].token is not None and await storage.release(EP, jobs[1].id, jobs[1].token)
    workers = {w.worker_id: w for w in await storage.workers(EP, 60)}
    assert workers["w1"].running == 0
    assert await storage.workers("other", 60) == []


async def test_workers_concurrency_as_stated_else_guessed(storage: Storage) -> None:
    await submit(storage, 1)
    await storage.claim(EP, "guessed", 3, LEASE_MS)  # 1 busy + 2 free slots asked for
    await storage.claim(EP, "stated", 1, LEASE_MS, concurrency=4)
    await storage.heartbeat(EP, "beating", {}, LEASE_MS, concurrency=2, running=0)
    workers = {w.worker_id: w for w in await storage.workers(EP, 60)}
    assert workers["guessed"].concurrency == 3
    assert workers["stated"].concurrency == 4 and workers["stated"].running == 0
    assert workers["beating"].concurrency == 2
    # A later request without a stated concurrency keeps the stated one.
    await storage.heartbeat(EP, "beating", {}, LEASE_MS)
    await storage.claim(EP, "stated", 1, LEASE_MS)
    workers = {w.worker_id: w for w in await storage.workers(EP, 60)}
    assert workers["beating"].concurrency == 2 and workers["stated"].concurrency == 4


async def test_workers_running_drops_when_a_job_is_cancelled(storage: Storage) -> None:
    job = await submit(storage, 1)
    await claim_one(storage, "w1")
    assert [w.running for w in await storage.workers(EP, 60)] == [1]
    await storage.cancel(EP, job.id)
    assert [w.running for w in await storage.workers(EP, 60)] == [0]
