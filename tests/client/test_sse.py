"""Push streaming: the service's SSE wire format, resumption by cursor, and the client's
reconnect after a dropped connection (through a TCP proxy the test can cut)."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import worker_kit.service.sse as sse_module
from worker_kit.client import AsyncEndpoint
from worker_kit.client.events import SSEEvent, iter_sse
from worker_kit.protocol import dumps_json

from ..support.servers import loopback_app
from .conftest import CuttableProxy, ScriptedWorker

SSE = {"Accept": "text/event-stream"}


async def _events(url: str, headers: dict[str, str] | None = None, **params: str) -> list[SSEEvent]:
    async with aiohttp.ClientSession() as session, session.get(
        url, headers={**SSE, **(headers or {})}, params=params, timeout=aiohttp.ClientTimeout(total=15)
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/event-stream"
        return [event async for event in iter_sse(resp.content)]


async def test_wire_format_and_resume_after_the_job_ended(endpoint_url: str, worker: ScriptedWorker) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:
        handle = await ep.run({"chunks": ["a", "b\nc", {"n": 3}], "output": "done"})
        await handle.output(timeout=10)
    url = f"{endpoint_url}/stream/{handle.id}"

    events = await _events(url)
    chunks = [e for e in events if e.event == "message"]
    assert [json.loads(e.data) for e in chunks] == [{"output": "a"}, {"output": "b\nc"}, {"output": {"n": 3}}]
    assert [e.id for e in chunks] == ["1", "2", "3"]  # the cursor after each chunk
    assert events[-1].event == "status"
    final = json.loads(events[-1].data)
    assert final["status"] == "COMPLETED" and final["output"] == "done" and final["id"] == handle.id

    # Reconnecting with Last-Event-ID (or ?cursor=) gets exactly what was missed, even now.
    resumed = await _events(url, headers={"Last-Event-ID": "1"})
    assert [json.loads(e.data)["output"] for e in resumed if e.event == "message"] == ["b\nc", {"n": 3}]
    by_query = await _events(url, cursor="3")
    assert [e.event for e in by_query] == ["status"]

    # A chunk is an unnamed event (EventSource's onmessage): its id and data lines, nothing else.
    async with aiohttp.ClientSession() as session, session.get(url, headers=SSE) as resp:
        wire = (await resp.read()).decode()
    assert '\n\nid: 1\ndata: {"output":"a"}\n\nid: 2\ndata: {"output":"b\\nc"}\n\n' in wire
    assert "event: chunk" not in wire


async def test_the_client_reads_an_older_services_named_chunk_events() -> None:
    # Services before chunks became unnamed events sent `event: chunk`; the client reads those
    # too, and resumes from their ids after a dropped connection.
    seen_ids: list[str | None] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        seen_ids.append(request.headers.get("Last-Event-ID"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if len(seen_ids) == 1:  # the first connection drops after two chunks, with no status
            await response.write(b'id: 1\nevent: chunk\ndata: {"output":"a"}\n\n'
                                 b'id: 2\nevent: chunk\ndata:  { "output" : "b" } \n\n')  # JSON with spaces
            return response
        await response.write(b'id: 3\nevent: chunk\ndata: {"output":"c"}\n\n'
                             b'id: 3\nevent: status\ndata: {"id":"j","status":"COMPLETED","output":"ok"}\n\n')
        return response

    app = web.Application()
    app.router.add_get("/v2/old/stream/{job_id}", stream)
    async with loopback_app(app) as base, AsyncEndpoint(f"{base}/v2/old") as ep:
        got = [chunk async for chunk in ep.job("j").stream()]
    assert got == ["a", "b", "c"]
    assert seen_ids == ["0", "2"]


async def test_text_chunks_arrive_as_json_writes_them(endpoint_url: str, worker: ScriptedWorker) -> None:
    # Text chunks take a fast path to their event (the C string escaper, no dict per chunk):
    # quotes, backslashes, line breaks, control and non-ASCII characters arrive intact, each
    # event's data being what the service's JSON writer makes of {"output": chunk}.
    texts = ['say "hi"', "back\\slash", "two\nlines\r\n", "\x00\x1f\x7f", "é€😀", "\u2028\u2029", "", " "]
    async with AsyncEndpoint(endpoint_url) as ep:
        handle = await ep.run({"chunks": [*texts, 7, None], "output": None})
        await handle.output(timeout=10)
    events = await _events(f"{endpoint_url}/stream/{handle.id}")
    chunks = [e for e in events if e.event == "message"]
    assert [json.loads(e.data)["output"] for e in chunks] == [*texts, 7, None]
    assert [e.data for e in chunks] == [dumps_json({"output": c}) for c in [*texts, 7, None]]
    assert [e.id for e in chunks] == [str(i) for i in range(1, len(texts) + 3)]


@pytest.mark.parametrize("cursor", [0, 9_990, 19_999, 123_456_780, 2**62 - 25_000])
def test_chunk_event_ids_are_written_in_full_across_every_range(cursor: int) -> None:
    # The service writes ids from tables of their last digits: every id must still come out
    # whole, across the tables' edges too (here up to 25 000 events in one buffer).
    chunks: list[Any] = [f"t{i}" for i in range(25_000)]
    chunks[3] = {"n": 1}  # one chunk that is not text takes the other path
    events = sse_module.chunk_events(chunks, cursor).decode().split("\n\n")
    assert events[-1] == "" and len(events) == len(chunks) + 1
    for i in (0, 1, 3, 9, 10, 99, 100, 9_999, 10_000, 10_009, 10_010, 24_999):
        assert events[i] == f"id: {cursor + i + 1}\ndata: {dumps_json({'output': chunks[i]})}", i
    assert [int(e.split("\n", 1)[0][4:]) for e in events[:-1]] == list(range(cursor + 1, cursor + 25_001))


async def test_a_backlog_over_many_read_pieces_arrives(endpoint_url: str, worker: ScriptedWorker) -> None:
    # 300 KB of chunks, more than one read piece (sse.READ_BYTES) many times over: while the
    # job runs and after it ended, every chunk arrives once, in order, then one status event.
    before = [f"{i:04d}" + "b" * 996 for i in range(150)]
    after = [f"{i:04d}" + "a" * 996 for i in range(150, 300)]
    assert sum(map(len, before)) > 2 * sse_module.READ_BYTES
    async with AsyncEndpoint(endpoint_url) as ep:
        script = {"chunks": before, "gate": "backlog", "chunks_after": after, "output": "x" * 100_000}
        handle = await ep.run(script)
        url = f"{endpoint_url}/stream/{handle.id}"
        live = asyncio.create_task(_events(url))
        await asyncio.sleep(0.3)
        worker.gate("backlog").set()
        await handle.output(timeout=10)
        events = [await live, await _events(url)]
    for got in events:
        chunks = [e for e in got if e.event == "message"]
        assert [json.loads(e.data)["output"] for e in chunks] == before + after
        assert [e.id for e in chunks] == [str(i) for i in range(1, 301)]
        assert [e.event for e in got if e.event != "message"][-1:] == ["status"]
        assert [e.event for e in got].count("status") == 1 and got[-1].event == "status"


async def test_live_updates_then_chunks_in_order(endpoint_url: str, worker: ScriptedWorker) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:
        handle = await ep.run({"gate": "live", "chunks_after": list(range(20)), "output": None})
        url = f"{endpoint_url}/stream/{handle.id}"
        reader = asyncio.create_task(_events(url))
        await asyncio.sleep(0.2)
        assert not reader.done()  # held open while the job runs
        worker.gate("live").set()
        events = await reader
    kinds = [e.event for e in events]
    assert kinds[0] == "update" and kinds[-1] == "status"
    assert [json.loads(e.data)["output"] for e in events if e.event == "message"] == list(range(20))
    updates = [json.loads(e.data)["status"] for e in events if e.event == "update"]
    assert updates[-1] == "IN_PROGRESS"


async def test_status_only_stream_and_keepalive(
    endpoint_url: str, worker: ScriptedWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse_module, "KEEPALIVE_S", 0.1)
    async with AsyncEndpoint(endpoint_url) as ep:
        handle = await ep.run({"chunks": ["hidden"], "gate": "ka", "output": "done"})
        async with aiohttp.ClientSession() as session, session.get(
            f"{endpoint_url}/stream/{handle.id}", headers=SSE, params={"chunks": "0"}
        ) as resp:
            raw = b""
            while raw.count(b": keep-alive") < 2:
                raw += await asyncio.wait_for(resp.content.readany(), 5)
            worker.gate("ka").set()
            raw += await asyncio.wait_for(resp.content.read(), 5)
    text = raw.decode()
    assert "data: {\"output\"" not in text and "hidden" not in text
    assert "event: update" in text and "\nevent: status\n" in text.rstrip().split("\n\n")[-1]


async def test_bad_cursor_and_unknown_job(endpoint_url: str) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:
        handle = await ep.run({})
    async with aiohttp.ClientSession() as session:
        stream_url = f"{endpoint_url}/stream/{handle.id}"
        async with session.get(stream_url, headers=SSE, params={"cursor": "-2"}) as r:
            assert r.status == 400 and "cursor" in (await r.json())["error"]
        async with session.get(f"{endpoint_url}/stream/{'0' * 32}", headers=SSE) as r:
            assert r.status == 404 and "error" in await r.json()


async def test_client_resumes_after_dropped_connection(service: Any, worker: ScriptedWorker,
                                                      endpoint_url: str) -> None:
    total = 200
    async with CuttableProxy(service.port) as proxy:
        proxied = f"http://127.0.0.1:{proxy.port}/v2/client-tests"
        async with AsyncEndpoint(endpoint_url) as direct, AsyncEndpoint(proxied) as ep:
            handle = await direct.run({"chunks": list(range(100)), "gate": "cut",
                                       "chunks_after": list(range(100, total)), "output": "ok"})
            got: list[int] = []
            cuts = 0
            async for chunk in ep.job(handle.id).stream():
                got.append(chunk)
                if len(got) in (5, 60, 99):
                    proxy.cut()  # sever the connection while the job (gated) is still running
                    cuts += 1
                if len(got) == 100:
                    worker.gate("cut").set()
            assert cuts == 3
            assert got == list(range(total))  # nothing lost, nothing repeated
            # It reconnected (a cut landing while the client still reads data buffered before an
            # earlier cut finds no live connection to sever, so not every cut adds one).
            assert proxy.connections >= 2
            assert await ep.job(handle.id).output(timeout=5) == "ok"


async def test_polling_fallback_without_push(service: Any, worker: ScriptedWorker, endpoint_url: str) -> None:
    # A client that found no SSE (a path-compatible service without push) polls with cursors.
    async with AsyncEndpoint(endpoint_url) as ep:
        ep.push = False
        script = {"progress": [1], "chunks": ["p", "q"], "chunk_delay": 0.05, "output": "polled"}
        handle = await ep.run(script)
        assert [c async for c in handle.stream()] == ["p", "q"]
        assert await handle.output(timeout=10) == "polled"
        failing = await ep.run({"chunks": ["z"], "fail": "poll-fail"})
        with pytest.raises(Exception, match="poll-fail"):
            async for _ in failing.stream():
                pass


@pytest.mark.timeout(30)
async def test_held_stream_ends_when_the_service_stops(tmp_path: Any) -> None:
    from worker_kit.service.config import ServiceConfig
    from worker_kit.service.runner import run_service

    # A shutdown timeout far beyond the test's own: a stream holding shutdown fails the test.
    config = ServiceConfig(port=0, storage=f"sqlite:///{tmp_path}/stop.db", shutdown_timeout_s=120)
    async with run_service(config) as svc:
        url = svc.endpoint_url("stopping")
        async with AsyncEndpoint(url) as ep:
            handle = await ep.run({})  # no worker: stays queued
        reader = asyncio.create_task(_events(f"{url}/stream/{handle.id}"))
        await asyncio.sleep(0.2)
        assert not reader.done()
    events = await asyncio.wait_for(reader, 10)
    assert [e.event for e in events] == ["update"]  # ended without a final status: clients reconnect


async def test_a_stream_whose_client_left_frees_its_slot(
    service_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker_kit.service.config import EndpointConfig, RateLimit

    # Nothing would be written for a minute, so only noticing the closed connection ends the stream.
    monkeypatch.setattr(sse_module, "KEEPALIVE_S", 60.0)
    svc = await service_factory(default=EndpointConfig(rate_limits={"sse": RateLimit(None, 10.0, 1)}))
    url = svc.endpoint_url("one-slot")
    async with AsyncEndpoint(url) as ep:
        handle = await ep.run({})  # no worker: stays queued, so the stream would be held
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/stream/{handle.id}", headers=SSE) as resp:
            events = iter_sse(resp.content)
            assert (await anext(events)).event == "update"
            async with session.get(f"{url}/stream/{handle.id}", headers=SSE) as busy:
                assert busy.status == 429  # the held stream has the endpoint's only sse slot
        # The client left: the service must notice and give the slot back.
        for _ in range(100):
            async with session.get(f"{url}/stream/{handle.id}", headers=SSE) as after:
                if after.status == 200:
                    break
            await asyncio.sleep(0.05)
        assert after.status == 200


async def test_watch_after_a_reconnect_repeats_no_status(
    service: Any, worker: ScriptedWorker, endpoint_url: str
) -> None:
    async with CuttableProxy(service.port) as proxy:
        proxied = f"http://127.0.0.1:{proxy.port}/v2/client-tests"
        async with AsyncEndpoint(endpoint_url) as direct, AsyncEndpoint(proxied) as ep:
            handle = await direct.run({"progress": [{"pct": 50}], "gate": "rewatch", "output": "done"})
            seen: list[dict[str, Any]] = []

            async def open_gate_later() -> None:
                for _ in range(1000):
                    if proxy.connections >= 2:
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.5)  # time for the state re-sent on the new connection
                worker.gate("rewatch").set()

            opener = None
            async for status in ep.job(handle.id).watch(timeout=20):
                seen.append(status)
                if status.get("output") == {"pct": 50} and opener is None:
                    proxy.cut()  # the service re-sends the current state on the new connection
                    opener = asyncio.create_task(open_gate_later())
            assert opener is not None
            await opener
    keys = [(s["status"], json.dumps(s.get("output"))) for s in seen]
    assert all(a != b for a, b in itertools.pairwise(keys)), keys  # no status twice in a row
    assert keys[-1] == ("COMPLETED", '"done"')


async def test_a_job_purged_while_followed_ends_the_wait_cancelled(endpoint_url: str) -> None:
    from worker_kit.errors import JobCancelled

    async with AsyncEndpoint(endpoint_url) as ep:  # no worker here: the job stays queued
        handle = await ep.run({})
        waiter = asyncio.create_task(handle.output(timeout=20))
        reader = asyncio.create_task(_events(f"{endpoint_url}/stream/{handle.id}"))
        await asyncio.sleep(0.3)
        assert not waiter.done() and not reader.done()
        assert (await ep.purge_queue())["removed"] == 1
        with pytest.raises(JobCancelled, match="purged"):
            await waiter
    events = await reader
    assert [e.event for e in events] == ["update", "status"]
    final = json.loads(events[-1].data)
    assert final["status"] == "CANCELLED" and "purged" in final["error"]


class _Blocks:
    """Bytes arriving in the given blocks, as aiohttp's StreamReader.iter_any() hands them over."""

    def __init__(self, blocks: list[bytes]) -> None:
        self.blocks = blocks

    async def iter_any(self) -> Any:
        for block in self.blocks:
            yield block


async def test_the_parser_gives_the_same_events_however_the_bytes_are_cut() -> None:
    wire = (
        "retry: 1000\r\n\r\n: keep-alive\n\nid: 1\nevent: chunk\ndata: {\"output\":\"é€😀\"}\n\n"
        "event: update\ndata: line one\ndata: line two\r\n\r\n"
        "data: " + "x" * 300_000 + "\n\nid: 2\nevent: chunk\ndata: cut off"
    ).encode()
    expected = [
        SSEEvent("chunk", '{"output":"é€😀"}', "1"),
        SSEEvent("update", "line one\nline two", None),
        SSEEvent("message", "x" * 300_000, None),
    ]  # the last event has no blank line after it: a dropped connection, so it is not given
    for size in (1, 2, 3, 7, 64, 4096, 65536, len(wire)):
        blocks = [wire[i : i + size] for i in range(0, len(wire), size)]
        assert [e async for e in iter_sse(_Blocks(blocks))] == expected, size  # type: ignore[arg-type]
