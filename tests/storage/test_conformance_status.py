"""Storage conformance: `status()` is `get().to_status()` in every state, for payloads small and
large, and None wherever `get` is None (a backend may read less of the job for it)."""

from __future__ import annotations

from worker_kit.job import JobState
from worker_kit.storage import Storage
from worker_kit.storage.rules import FakeClock

from .test_conformance import EP, claim_one, progress, submit

LARGE = b"x" * (100 * 1024)  # over what the SQLite backend reads on the event loop (64 KB)


async def _same(storage: Storage, job_id: str) -> dict[str, object]:
    job = await storage.get(EP, job_id)
    assert job is not None
    expected = job.to_status()
    answer = await storage.status(EP, job_id)
    assert answer is not None
    if expected["status"] == "IN_QUEUE":
        # A queued job's delay runs on the wall clock until it starts: read a moment apart.
        assert 0 <= answer.pop("delayTime") - expected.pop("delayTime") < 5_000
    assert answer == expected
    return answer


async def test_status_is_the_record_s_status_in_every_state(storage: Storage, clock: FakeClock) -> None:
    for payload in ({"small": "s"}, {"large": LARGE}):
        queued = await submit(storage, payload)
        assert (await _same(storage, queued.id))["status"] == "IN_QUEUE"
        clock.advance(1.5)
        job = await claim_one(storage)
        await storage.append_output(EP, job.id, job.token or "", [progress(0, payload)])
        running = await _same(storage, job.id)
        assert running["status"] == "IN_PROGRESS" and running["output"] == payload
        assert running["workerId"] == "w1" and running["delayTime"] == 1500
        clock.advance(0.25)
        await storage.finish(EP, job.id, job.token or "", JobState.COMPLETED, output=payload)
        done = await _same(storage, job.id)
        assert done["output"] == payload and done["executionTime"] == 250
        failed_job = await submit(storage, 1)
        claimed = await claim_one(storage)
        assert claimed.id == failed_job.id
        await storage.finish(EP, claimed.id, claimed.token or "", JobState.FAILED, error="boom",
                             error_detail={"trace": payload})  # fmt: skip
        failed = await _same(storage, claimed.id)
        assert failed["error"] == "boom" and failed["errorDetail"] == {"trace": payload}
        await storage.retry(EP, claimed.id)
        again = await _same(storage, claimed.id)
        assert again["status"] == "IN_QUEUE" and again["retries"] == 1 and "error" not in again
        cancelled = await storage.cancel(EP, claimed.id)
        assert cancelled is not None and (await _same(storage, claimed.id))["status"] == "CANCELLED"


async def test_status_is_none_where_get_is(storage: Storage, clock: FakeClock) -> None:
    job = await submit(storage, 1, retention_ms=1000)
    assert await storage.status("other-endpoint", job.id) is None
    assert await storage.status(EP, "no-such-job") is None
    claimed = await claim_one(storage)
    await storage.finish(EP, claimed.id, claimed.token or "", JobState.COMPLETED, output=2)
    assert await storage.status(EP, job.id) is not None
    clock.advance(2)  # past its retention, before any sweep deletes it
    assert await storage.get(EP, job.id) is None and await storage.status(EP, job.id) is None
