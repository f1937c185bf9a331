"""Storage conformance: the byte bounds on claim() and read_stream() answers.

Sizes are the backend's stored sizes, which for a msgpack blob is a few bytes over the
payload; the payloads here are 1000 bytes so a bound of 2500 fits exactly two.
"""

from __future__ import annotations

from worker_kit.job import JobState
from worker_kit.storage import Storage

from .test_conformance import EP, LEASE_MS, chunk, claim_one, submit

KB = b"x" * 1000


async def test_claim_max_bytes_takes_oldest_jobs_that_fit(storage: Storage) -> None:
    jobs = [await submit(storage, KB) for _ in range(5)]
    first = await storage.claim(EP, "w1", 10, LEASE_MS, max_bytes=2500)
    assert [j.id for j in first] == [jobs[0].id, jobs[1].id]
    assert all(j.state is JobState.IN_PROGRESS and j.input == KB for j in first)
    # max still caps the count when the bytes would allow more.
    second = await storage.claim(EP, "w1", 1, LEASE_MS, max_bytes=10_000)
    assert [j.id for j in second] == [jobs[2].id]
    rest = await storage.claim(EP, "w1", 10, LEASE_MS, max_bytes=None)
    assert [j.id for j in rest] == [j.id for j in jobs[3:]]


async def test_claim_max_bytes_always_takes_one_job(storage: Storage) -> None:
    big = await submit(storage, KB * 5)
    small = await submit(storage, b"s")
    got = await storage.claim(EP, "w1", 10, LEASE_MS, max_bytes=100)
    assert [j.id for j in got] == [big.id]  # oldest first, even over the bound; nothing after it
    got = await storage.claim(EP, "w1", 10, LEASE_MS, max_bytes=100)
    assert [j.id for j in got] == [small.id]
    assert await storage.claim(EP, "w1", 10, LEASE_MS, max_bytes=100) == []


async def _job_with_chunks(storage: Storage, n: int) -> tuple[str, str]:
    await submit(storage, 1)
    job = await claim_one(storage)
    token = job.token or ""
    await storage.append_output(EP, job.id, token, [chunk(i, KB + bytes([i])) for i in range(n)])
    return job.id, token


async def test_read_stream_max_bytes_with_cursor_pages_through(storage: Storage) -> None:
    job_id, _ = await _job_with_chunks(storage, 5)
    seen: list[bytes] = []
    cursor = 0
    pages = []
    while True:
        record, chunks, cursor = await storage.read_stream(EP, job_id, cursor, max_bytes=2500)
        if not chunks:
            break
        pages.append(len(chunks))
        seen += chunks
    assert pages == [2, 2, 1]
    assert seen == [KB + bytes([i]) for i in range(5)] and cursor == 5 == record.stream_len
    # A cursor read consumes nothing.
    assert (await storage.read_stream(EP, job_id))[2] == 5


async def test_read_stream_max_bytes_consumes_only_what_it_returns(storage: Storage) -> None:
    job_id, token = await _job_with_chunks(storage, 5)
    record, chunks, cursor = await storage.read_stream(EP, job_id, max_bytes=2500)
    assert chunks == [KB + b"\x00", KB + b"\x01"] and cursor == 2 and record.read_cursor == 2
    assert record.stream_len == 5  # the reader can tell more is waiting
    # At least one chunk, even one larger than the bound.
    _, chunks, cursor = await storage.read_stream(EP, job_id, max_bytes=1)
    assert chunks == [KB + b"\x02"] and cursor == 3
    await storage.finish(EP, job_id, token, JobState.COMPLETED, output="done")
    record, chunks, cursor = await storage.read_stream(EP, job_id, max_bytes=2500)
    assert chunks == [KB + b"\x03", KB + b"\x04"] and cursor == 5
    assert record.state is JobState.COMPLETED and record.stream_len == cursor
    record, chunks, cursor = await storage.read_stream(EP, job_id, max_bytes=2500)
    assert chunks == [] and cursor == 5


async def test_read_stream_max_bytes_larger_than_the_stream_returns_it_all(storage: Storage) -> None:
    job_id, _ = await _job_with_chunks(storage, 3)
    _, chunks, cursor = await storage.read_stream(EP, job_id, 1, max_bytes=10**9)
    assert len(chunks) == 2 and cursor == 3
    _, chunks, cursor = await storage.read_stream(EP, job_id, max_bytes=10**9)
    assert len(chunks) == 3 and cursor == 3
