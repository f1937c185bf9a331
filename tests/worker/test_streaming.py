"""Streamed output: order, the 1 MB split, batching, and delivery while the job runs."""

from __future__ import annotations

import asyncio
import base64
import threading
from typing import Any

import pytest

from worker_kit.job import MAX_CHUNK_BYTES
from worker_kit.protocol import pack
from worker_kit.worker.execution import Job
from worker_kit.worker.reporting import PIECE_BYTES, pack_text, split_chunk
from worker_kit.worker.transport import MAX_BATCH_ITEMS, NativeTransport

from .conftest import until

MB = 1024 * 1024


class CountingTransport(NativeTransport):
    """The real transport, counting the requests it makes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.output_requests: list[int] = []
        self.finish_items: list[int] = []

    async def output(self, job_id: str, token: str, items: list[bytes]) -> int:
        self.output_requests.append(len(items))
        return await super().output(job_id, token, items)

    async def finish(self, job_id: str, token: str, final: Any, items: list[bytes]) -> None:
        self.finish_items.append(len(items))
        await super().finish(job_id, token, final, items)


def test_split_ascii_string() -> None:
    text = "a" * int(2.5 * MB)
    pieces = split_chunk(text)
    assert len(pieces) == 3 and "".join(pieces) == text
    assert all(len(pack(p)) <= MAX_CHUNK_BYTES for p in pieces)


def test_split_multibyte_string_on_character_boundaries() -> None:
    text = "aé€😀" * 300_000  # 10 UTF-8 bytes per round: 3 MB
    pieces = split_chunk(text)
    assert "".join(pieces) == text
    assert all(len(p.encode()) <= PIECE_BYTES for p in pieces)
    assert len(pieces) == 3


def test_split_bytes_and_small_items() -> None:
    data = bytes(range(256)) * 10_000  # 2.5 MB
    pieces = split_chunk(data)
    assert b"".join(pieces) == data and all(len(p) <= PIECE_BYTES for p in pieces)
    assert split_chunk("small") == ["small"]
    assert split_chunk({"k": "v"}) == [{"k": "v"}]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_big_string_arrives_as_three_chunks(
    kind: str, service: Any, start_worker: Any, api_at: Any
) -> None:
    text = "€" * int(2.5 * MB / 3) + "tail"  # about 2.5 MB of UTF-8, 3 bytes per char

    def sync_gen(job: Job) -> Any:
        yield text

    async def async_gen(job: Job) -> Any:
        yield text

    url = service.endpoint_url("stream")
    api = api_at(url)
    await start_worker(sync_gen if kind == "sync" else async_gen, url)
    job_id = await api.run(None)
    status = await api.wait(job_id)
    assert status["status"] == "COMPLETED", status
    chunks = await api.chunks(job_id)
    assert len(chunks) == 3
    assert "".join(chunks) == text
    assert all(len(c.encode()) <= MB for c in chunks)


async def test_big_bytes_arrive_split(service: Any, start_worker: Any, api_at: Any) -> None:
    data = b"\xff\x00" * int(1.25 * MB)

    def gen(job: Job) -> Any:
        yield data

    url = service.endpoint_url("stream")
    api = api_at(url)
    await start_worker(gen, url)
    job_id = await api.run(None)
    assert (await api.wait(job_id))["status"] == "COMPLETED"
    chunks = await api.chunks(job_id)
    assert len(chunks) == 3
    assert b"".join(base64.b64decode(c) for c in chunks) == data


async def test_oversized_non_string_chunk_fails(service: Any, start_worker: Any, api_at: Any) -> None:
    def gen(job: Job) -> Any:
        yield {"blob": "z" * (2 * MB)}

    url = service.endpoint_url("stream")
    api = api_at(url)
    await start_worker(gen, url)
    status = await api.wait(await api.run(None))
    assert status["status"] == "FAILED"
    assert "over the 1 MB chunk limit" in status["error"]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_many_tiny_chunks_batched_in_order(
    kind: str, service: Any, start_worker: Any, api_at: Any
) -> None:
    n = 3000

    def sync_gen(job: Job) -> Any:
        yield from range(n)

    async def async_gen(job: Job) -> Any:
        for i in range(n):
            yield i
            if i % 100 == 0:
                await asyncio.sleep(0)  # let the sender run now and then, as real work would

    url = service.endpoint_url("stream")
    api = api_at(url)
    worker_id = "counting-worker"
    transport = CountingTransport(url, worker_id=worker_id)
    handler = sync_gen if kind == "sync" else async_gen
    await start_worker(handler, url, transport=transport, worker_id=worker_id)
    job_id = await api.run(None)
    assert (await api.wait(job_id))["status"] == "COMPLETED"
    assert await api.chunks(job_id) == list(range(n))
    requests = len(transport.output_requests) + len(transport.finish_items)
    assert requests <= n // 10, (transport.output_requests, transport.finish_items)
    assert sum(transport.output_requests) + sum(transport.finish_items) >= n


async def test_chunks_delivered_while_job_runs(service: Any, start_worker: Any, api_at: Any) -> None:
    # The handler holds after its first chunk until the client has seen it: chunks are
    # sent as they come, not kept for the end.
    seen = threading.Event()

    def gen(job: Job) -> Any:
        yield "first"
        assert seen.wait(10), "the first chunk never reached the client"
        yield "second"

    url = service.endpoint_url("stream")
    api = api_at(url)
    await start_worker(gen, url)
    job_id = await api.run(None)
    async def first_seen() -> bool:
        return await api.chunks(job_id) == ["first"]

    await until(first_seen)
    assert (await api.status(job_id))["status"] == "IN_PROGRESS"
    seen.set()
    assert (await api.wait(job_id))["status"] == "COMPLETED"
    assert await api.chunks(job_id) == ["first", "second"]


class AckedTransport(NativeTransport):
    """The real transport, noting each output request the service has answered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acked: list[int] = []

    async def output(self, job_id: str, token: str, items: list[bytes]) -> int:
        next_seq = await super().output(job_id, token, items)
        self.acked.append(next_seq)
        return next_seq


async def test_a_generator_that_never_awaits_still_streams_while_it_runs(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    # An async generator in a tight loop (nothing awaited but its yields) would hold the event
    # loop: its output would leave only when the backlog filled (8 MB, some 400 000 small items)
    # or at the end. The runtime lets the loop run as it goes, so the service (in this very
    # loop) stores chunks while the generator still produces; it stops once it sees that.
    url = service.endpoint_url("stream")
    api = api_at(url)
    transport = AckedTransport(url, worker_id="acked")
    cap = 200_000

    async def tight(job: Job) -> Any:
        for i in range(cap):
            if transport.acked:
                yield "seen"
                return
            yield i

    await start_worker(tight, url, transport=transport, worker_id="acked")
    job_id = await api.run(None)
    assert (await api.wait(job_id, timeout=60))["status"] == "COMPLETED"
    chunks = await api.chunks(job_id)
    assert chunks[-1] == "seen" and len(chunks) < cap
    assert chunks[:-1] == list(range(len(chunks) - 1))


class GatedTransport(CountingTransport):
    """Holds its first output request until `gate` is set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()

    async def output(self, job_id: str, token: str, items: list[bytes]) -> int:
        if not self.output_requests:
            await self.gate.wait()
        return await super().output(job_id, token, items)


async def _held_backlog(
    service: Any, start_worker: Any, api_at: Any, worker_id: str, linger_s: float | None
) -> GatedTransport:
    """12 000 items pile up behind a held output request; the handler then lingers `linger_s`
    (None: ends at once). Every item arrives, in order, and no request (output or finish)
    carries more than MAX_BATCH_ITEMS of them."""
    url = service.endpoint_url("stream")
    api = api_at(url)
    transport = GatedTransport(url, worker_id=worker_id)
    n = 12_000

    async def burst(job: Job) -> Any:
        for i in range(n):
            yield i
        transport.gate.set()
        if linger_s is not None:
            await asyncio.sleep(linger_s)

    await start_worker(burst, url, transport=transport, worker_id=worker_id)
    job_id = await api.run(None)
    assert (await api.wait(job_id))["status"] == "COMPLETED"
    assert await api.chunks(job_id) == list(range(n))
    assert max(transport.output_requests + transport.finish_items) <= MAX_BATCH_ITEMS
    assert sum(transport.output_requests) + sum(transport.finish_items) >= n
    return transport


async def test_a_backlog_leaves_in_requests_of_at_most_max_batch_items(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    # The backlog leaves while the job still runs: the held request, then a full batch.
    transport = await _held_backlog(service, start_worker, api_at, "gated", linger_s=0.5)
    assert transport.output_requests[:2] == [1, MAX_BATCH_ITEMS]


async def test_a_backlog_left_at_the_finish_leaves_in_batches_too(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    # The handler ends as soon as the held request is let go: the backlog of small items
    # (well under the byte cap) is still pending at the finish, which must not carry more
    # than MAX_BATCH_ITEMS of them; the rest goes in output requests first.
    await _held_backlog(service, start_worker, api_at, "gated-end", linger_s=None)


def test_pack_text_is_msgpack() -> None:
    for size in (0, 1, 31, 32, 255, 256, 65535, 65536, 70000):
        for char in ("a", "é", "€", "😀"):
            text = char * size
            assert pack_text(text) == pack(text), (size, char)
    with pytest.raises(UnicodeEncodeError):
        pack_text("\ud800")


class SizeRecordingTransport(NativeTransport):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.largest = 0

    async def output(self, job_id: str, token: str, items: list[bytes]) -> int:
        self.largest = max(self.largest, sum(map(len, items)))
        return await super().output(job_id, token, items)

    async def finish(self, job_id: str, token: str, final: Any, items: list[bytes]) -> None:
        self.largest = max(self.largest, sum(map(len, items)))
        await super().finish(job_id, token, final, items)


async def test_fast_producer_of_large_chunks(service: Any, start_worker: Any, api_at: Any) -> None:
    # A generator far faster than the network: it is held back (bounded backlog), every
    # request stays within the service's body limit (result limit + 4 MB), nothing is lost.
    n = 48

    def gen(job: Job) -> Any:
        for i in range(n):
            yield f"{i:04d}" + "x" * 999_996

    url = service.endpoint_url("stream")
    api = api_at(url)
    transport = SizeRecordingTransport(url, worker_id="sizes")
    await start_worker(gen, url, transport=transport, worker_id="sizes")
    job_id = await api.run(None)
    status = await api.wait(job_id, timeout=60)
    assert status["status"] == "COMPLETED", status
    chunks = await api.chunks(job_id)
    assert [c[:4] for c in chunks] == [f"{i:04d}" for i in range(n)]
    assert 0 < transport.largest <= 4 * MB
