"""Storage conformance for list_jobs (/requests): newest first, paged by key, filtered by state."""

from __future__ import annotations

import pytest

from worker_kit.job import JobRecord, JobState, Policy
from worker_kit.storage import Storage

EP = "ep"
LEASE_MS = 30_000


async def _submit(storage: Storage, input: object, endpoint: str = EP) -> JobRecord:
    return await storage.submit(endpoint, input, policy=Policy(), retention_ms=60_000)


async def _all_pages(storage: Storage, limit: int, **kw: object) -> list[JobRecord]:
    seen: list[JobRecord] = []
    after = None
    while True:
        page = await storage.list_jobs(EP, limit=limit, after=after, **kw)  # type: ignore[arg-type]
        assert len(page.jobs) <= limit
        seen += page.jobs
        if not page.has_more:
            return seen
        assert page.jobs
        after = (page.jobs[-1].created_at, page.jobs[-1].id)


async def test_newest_first_paged_without_duplicates_or_gaps(storage: Storage) -> None:
    jobs = [await _submit(storage, i) for i in range(23)]
    await _submit(storage, "elsewhere", endpoint="other")
    listed = await _all_pages(storage, 5)
    newest_first = sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)
    assert [j.id for j in listed] == [j.id for j in newest_first]
    first = await storage.list_jobs(EP, limit=5)
    assert first.total == 23 and first.has_more
    # Payloads are not read unless asked.
    assert all(j.input is None for j in first.jobs)
    with_io = await storage.list_jobs(EP, limit=30, include_io=True)
    assert sorted(j.input for j in with_io.jobs) == list(range(23))
    assert not with_io.has_more and with_io.total == 23


async def test_jobs_arriving_while_paging_are_not_in_later_pages(storage: Storage) -> None:
    old = {(await _submit(storage, i)).id for i in range(12)}
    page = await storage.list_jobs(EP, limit=4)
    seen = [j.id for j in page.jobs]
    while page.has_more:
        for i in range(3):
            await _submit(storage, f"new-{i}")
        after = (page.jobs[-1].created_at, page.jobs[-1].id)
        page = await storage.list_jobs(EP, limit=4, after=after)
        seen += [j.id for j in page.jobs]
    assert len(seen) == len(set(seen)) and set(seen) == old


async def test_filter_by_states_and_record_fields(storage: Storage) -> None:
    queued = [await _submit(storage, i) for i in range(3)]
    done = await _submit(storage, "done")
    failed = await _submit(storage, "fail")
    claimed = {j.id: j for j in await storage.claim(EP, "w1", 10, LEASE_MS)}
    for job in queued:
        assert await storage.release(EP, job.id, claimed[job.id].token or "")
    await storage.finish(EP, done.id, claimed[done.id].token or "", JobState.COMPLETED, output={"big": "x"})
    await storage.finish(EP, failed.id, claimed[failed.id].token or "", JobState.FAILED, error="boom")

    page = await storage.list_jobs(EP, limit=10, states={JobState.FAILED})
    assert [j.id for j in page.jobs] == [failed.id] and page.total == 1 and not page.has_more
    (f,) = page.jobs
    assert f.state is JobState.FAILED and f.error == "boom" and f.worker_id == "w1" and f.attempt == 1
    assert f.started_at is not None and f.finished_at is not None

    both = await storage.list_jobs(EP, limit=10, states={JobState.FAILED, JobState.COMPLETED})
    assert [j.id for j in both.jobs] == [failed.id, done.id] and both.total == 2
    assert both.jobs[1].output is None
    (completed,) = (await storage.list_jobs(EP, limit=10, states={JobState.COMPLETED}, include_io=True)).jobs
    assert completed.output == {"big": "x"}

    mixed = await storage.list_jobs(EP, limit=2, states={JobState.IN_QUEUE, JobState.COMPLETED})
    assert [j.id for j in mixed.jobs] == [done.id, queued[2].id] and mixed.has_more and mixed.total == 4
    rest = await storage.list_jobs(
        EP, limit=5, states={JobState.IN_QUEUE, JobState.COMPLETED},
        after=(mixed.jobs[-1].created_at, mixed.jobs[-1].id),
    )  # fmt: skip
    assert [j.id for j in rest.jobs] == [queued[1].id, queued[0].id] and not rest.has_more

    assert (await storage.list_jobs(EP, limit=5, states=set())).jobs == []


async def test_empty_endpoint_and_bad_limit(storage: Storage) -> None:
    page = await storage.list_jobs("nobody", limit=10)
    assert page.jobs == [] and page.total == 0 and not page.has_more
    with pytest.raises(ValueError):
        await storage.list_jobs(EP, limit=0)
