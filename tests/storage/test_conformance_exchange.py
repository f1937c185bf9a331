"""Storage conformance of `exchange`: finishes, each standing alone, then a claim, in one call
(what one /worker/exchange asks of the store)."""

from __future__ import annotations

import pytest

from worker_kit.errors import JobNotFound, SequenceGap, StaleLease
from worker_kit.job import JobRecord, JobState
from worker_kit.storage import Storage
from worker_kit.storage.base import Finish

from .test_conformance import EP, LEASE_MS, chunk, claim_one, submit


def done(job: JobRecord, output: object = "ok", **kw: object) -> Finish:
    assert job.token is not None
    return Finish(job.id, job.token, JobState.COMPLETED, output=output, **kw)  # type: ignore[arg-type]


async def test_exchange_finishes_each_job_then_claims_the_next(storage: Storage) -> None:
    a, b = await submit(storage, "a"), await submit(storage, "b")
    queued = [await submit(storage, n) for n in range(3)]
    ran_a, ran_b = await claim_one(storage), await claim_one(storage)
    ended, jobs = await storage.exchange(
        EP, [done(ran_a, "ra"), done(ran_b, "rb", items=[chunk(0, "c0")])], "w1", 2, LEASE_MS, concurrency=2
    )
    assert [(j.id, j.state) for j in ended] == [  # type: ignore[union-attr]
        (a.id, JobState.COMPLETED), (b.id, JobState.COMPLETED)
    ]
    assert [j.id for j in jobs] == [queued[0].id, queued[1].id]
    assert all(j.state is JobState.IN_PROGRESS and j.token and j.worker_id == "w1" for j in jobs)
    got = await storage.get(EP, b.id)
    assert got is not None and got.state is JobState.COMPLETED and got.output == "rb"
    _, chunks, _ = await storage.read_stream(EP, b.id, 0)
    assert chunks == ["c0"]
    assert (await storage.counts(EP))["IN_QUEUE"] == 1


async def test_exchange_refusals_are_entries_and_the_rest_goes_on(storage: Storage) -> None:
    a, b, c = await submit(storage, "a"), await submit(storage, "b"), await submit(storage, "c")
    nxt = await submit(storage, "next")
    ran_a, ran_b, ran_c = [await claim_one(storage) for _ in range(3)]
    stale = Finish(ran_a.id, "0" * 32, JobState.COMPLETED, output="x")
    gone = Finish("f" * 32, "0" * 32, JobState.COMPLETED)
    gap = done(ran_b, items=[chunk(5, "late")])  # the stream starts at seq 0
    ended, jobs = await storage.exchange(EP, [stale, gone, gap, done(ran_c, "rc")], "w1", 1, LEASE_MS)
    assert isinstance(ended[0], StaleLease)
    assert isinstance(ended[1], JobNotFound)
    assert isinstance(ended[2], SequenceGap)
    last = ended[3]
    assert isinstance(last, JobRecord) and last.id == c.id and last.state is JobState.COMPLETED
    assert [j.id for j in jobs] == [nxt.id]
    # What was refused changed nothing.
    for job in (a, b):
        got = await storage.get(EP, job.id)
        assert got is not None and got.state is JobState.IN_PROGRESS


async def test_exchange_without_a_claim_and_a_repeat(storage: Storage) -> None:
    job = await submit(storage, "a")
    left = await submit(storage, "left")
    ran = await claim_one(storage)
    first, none = await storage.exchange(EP, [done(ran, "r")], "w1", 0, LEASE_MS)
    assert none == [] and first[0].state is JobState.COMPLETED  # type: ignore[union-attr]
    # The same token finishing the same way again (a retried request) gets the job as it ended.
    again, _ = await storage.exchange(EP, [done(ran, "r")], "w1", 0, LEASE_MS)
    assert isinstance(again[0], JobRecord) and again[0].id == job.id
    assert again[0].state is JobState.COMPLETED and again[0].finished_at == first[0].finished_at  # type: ignore[union-attr]
    got = await storage.get(EP, left.id)
    assert got is not None and got.state is JobState.IN_QUEUE


async def test_exchange_with_an_invalid_finish_raises_and_claims_nothing(storage: Storage) -> None:
    await submit(storage, "a")
    queued = await submit(storage, "b")
    ran = await claim_one(storage)
    bad = Finish(ran.id, ran.token or "", JobState.CANCELLED)  # not a state a worker may report
    with pytest.raises(ValueError):
        await storage.exchange(EP, [bad], "w1", 1, LEASE_MS)
    got = await storage.get(EP, queued.id)
    assert got is not None and got.state is JobState.IN_QUEUE


async def test_exchange_of_a_job_with_a_large_input(storage: Storage) -> None:
    # The finish need not hand a large input back (on SQLite, neither off the event loop).
    big = "x" * (3 * 1024 * 1024)
    job = await submit(storage, {"big": big})
    nxt = await submit(storage, {"big": big + "!"})
    ran = await claim_one(storage)
    # The claim does hand its job's input back (on SQLite, off the event loop: it is large).
    ended, (got_next,) = await storage.exchange(EP, [done(ran, "r")], "w1", 1, LEASE_MS, concurrency=1)
    assert isinstance(ended[0], JobRecord) and ended[0].state is JobState.COMPLETED
    assert got_next.id == nxt.id and got_next.input == {"big": big + "!"}
    got = await storage.get(EP, job.id)
    assert got is not None and got.output == "r" and got.input == {"big": big}


async def test_exchange_of_many_finishes_with_a_repeat_among_them(storage: Storage) -> None:
    jobs = [await submit(storage, n) for n in range(4)]
    ran = [await claim_one(storage) for _ in range(4)]
    first, _ = await storage.exchange(EP, [done(ran[0], "r0")], "w1", 0, LEASE_MS)
    # A retried request's finish (already applied) among new ones: each is answered as alone.
    ended, _ = await storage.exchange(EP, [done(r, f"r{n}") for n, r in enumerate(ran)], "w1", 0, LEASE_MS)
    assert [(j.id, j.state) for j in ended] == [(j.id, JobState.COMPLETED) for j in jobs]  # type: ignore[union-attr]
    assert ended[0].finished_at == first[0].finished_at  # type: ignore[union-attr]
    for n, job in enumerate(jobs):
        got = await storage.get(EP, job.id)
        assert got is not None and got.output == f"r{n}" and got.state is JobState.COMPLETED
    assert (await storage.counts(EP))["COMPLETED"] == 4
