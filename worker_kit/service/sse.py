"""Push delivery of a job's stream as Server-Sent Events (GET/POST /stream/{id} with
`Accept: text/event-stream`).

Events, in order:
    event: update   data: <status JSON>           when the state or the progress value changes
    id: <cursor>    data: {"output": <chunk>}     one per stream chunk, unnamed (a `message`)
    id: <cursor>    event: status  data: <final status JSON>   then the response ends
    event: error    data: {"error": ...}          the job vanished mid-stream (result expired)
plus `: keep-alive` comments when nothing else was sent for a while.

Chunks are the stream's default `message` events, as most SSE APIs send their main payload
(EventSource's `onmessage`). Earlier builds named them `event: chunk`, which our client still
reads. The line fewer matters: an SSE reader's cost is per line, and a token stream sends one
event per token.

A chunk's `id` is the cursor after it, so a client that reconnects with `Last-Event-ID`
(or `?cursor=N`) gets exactly the chunks it has not seen. Reads pass the cursor and so
consume nothing: the same chunks stay readable until the result expires. `?chunks=0`
sends only update and status events, for clients that just wait for the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
from json.encoder import encode_basestring as _json_str  # the C escaper when available
from typing import Any

from aiohttp import web

from ..errors import JobNotFound
from ..job import JobRecord
from ..protocol import dumps_json
from ..storage.base import Storage, job_channel
from .departures import watch_request

log = logging.getLogger("worker_kit.service.sse")

#: A comment line is sent after this much silence, so proxies and clients see a live connection.
KEEPALIVE_S = 15.0
#: Reconnection delay suggested to EventSource clients (ms).
RETRY_MS = 1000
#: Chunk bytes read from storage at a time when the service config does not say
#: (ServiceConfig.stream_max_bytes): a long stream is sent in pieces, never loaded whole.
DEFAULT_PIECE_BYTES = 8 * 1024 * 1024
#: ...and at most this much per read while the job runs: a stream kept up with reads what each
#: output request brought (a token batch, a few kilobytes), which a storage may read on the
#: event loop's own thread.
READ_BYTES = 64 * 1024


#: The largest cursor accepted (as for ?cursor= on plain /stream reads); storage keeps 64-bit integers.
MAX_CURSOR = 2**62


class _Disconnected(Exception):
    pass


def _cursor_from(request: web.Request) -> int:
    """The cursor to resume from, checked before the response starts: 400 once it has, would be too late."""
    raw = request.headers.get("Last-Event-ID") or request.query.get("cursor") or "0"
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19 and int(raw) <= MAX_CURSOR):
        reason = f"cursor (Last-Event-ID or ?cursor=) must be a whole number from 0 to {MAX_CURSOR}"
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{reason}, not {raw[:40]!r}"}), content_type="application/json"
        )
    return int(raw)


def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def _event(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {dumps_json(data)}\n\n".encode()


#: The fixed pieces of a chunk event around its id and its JSON text: id: <id>\ndata: {"output":<json>}\n\n
_DATA, _END = '\ndata: {"output":', "}\n\n"
#: An id's last four digits as written, alone (ids below 10 000) and after higher digits: a table
#: lookup costs a fraction of an int's str(), which alone costs as much as the rest of an event.
_IDS_BELOW = tuple(map(str, range(10_000)))
_IDS_AFTER = tuple(f"{i:04d}" for i in range(10_000))


def chunk_events(chunks: list[Any], cursor: int) -> bytes:
    """The chunk events of `chunks`, the first one's id being cursor + 1, as one buffer.

    A token stream sends one event per token, so this is the service's per-token cost; every
    step of it runs in C, with no Python code per chunk: the JSON escaper for text chunks (the
    common case: escaped as dumps_json writes them, ensure_ascii off, with no dict per chunk),
    the ids from a table, and one join of the pieces (five per event)."""
    count = len(chunks)
    parts: list[str] = [""] * (5 * count)
    parts[2::5] = [_DATA] * count
    parts[3::5] = _json_texts(chunks)
    parts[4::5] = [_END] * count
    done, first = 0, cursor + 1
    while done < count:  # once per 10 000 ids
        high, low = divmod(first + done, 10_000)
        take = min(count - done, 10_000 - low)
        span = slice(5 * done, 5 * (done + take), 5)
        parts[span] = [f"id: {high}" if high else "id: "] * take
        parts[span.start + 1 : span.stop : 5] = (_IDS_AFTER if high else _IDS_BELOW)[low : low + take]
        done += take
    return "".join(parts).encode()


def _json_texts(chunks: list[Any]) -> list[str]:
    try:
        return list(map(_json_str, chunks))  # all text: the escaper refuses anything else
    except TypeError:
        return [_json_str(chunk) if type(chunk) is str else dumps_json(chunk) for chunk in chunks]


async def stream_sse(
    request: web.Request, storage: Storage, endpoint: str, job_id: str
) -> web.StreamResponse:
    """Serve the job's stream as SSE until it has ended and every chunk was sent."""
    cursor = _cursor_from(request)
    with_chunks = _flag(request, "chunks", True)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )
    await response.prepare(request)
    try:
        await _write(request, response, f"retry: {RETRY_MS}\n\n".encode())
        await _pump(request, response, storage, endpoint, job_id, cursor, with_chunks)
    except _Disconnected:
        log.debug("SSE client of job %s went away", job_id)
    return response


def _piece_bytes(request: web.Request) -> int:
    from .state import STATE

    config = getattr(request.app.get(STATE), "config", None)
    return getattr(config, "stream_max_bytes", None) or DEFAULT_PIECE_BYTES


def _shutdown_event(request: web.Request) -> asyncio.Event | None:
    # The service sets this when it stops; a held stream then ends at once instead of
    # holding shutdown (the client reconnects, to this service once back or to a replica).
    from .state import STATE

    state = request.app.get(STATE)
    shutdown = getattr(state, "shutdown", None)
    return getattr(shutdown, "event", None)


async def _pump(
    request: web.Request,
    response: web.StreamResponse,
    storage: Storage,
    endpoint: str,
    job_id: str,
    cursor: int,
    with_chunks: bool,
) -> None:
    """Send what storage holds, then sleep until this job's own channel says something changed.

    Nothing else wakes a stream: no periodic re-read. Silence is filled by keep-alive comments
    (which read nothing), and a client that left is noticed by the shared departures watcher."""
    channel = job_channel(job_id)
    told: list[str | None] = [None]  # the last update event's [status, output], as JSON
    shutdown = _shutdown_event(request)
    piece = _piece_bytes(request)
    ended = False
    ends = []
    if shutdown is not None:
        ends.append(asyncio.ensure_future(shutdown.wait()))
    with watch_request(request) as departed:
        ends.append(asyncio.ensure_future(departed.wait()))
        try:
            while not any(end.done() for end in ends):
                # Listen before reading: a change landing while we read or write still wakes us.
                waiter = asyncio.ensure_future(storage.wait(channel, KEEPALIVE_S))
                await asyncio.sleep(0)
                try:
                    # While the job runs, each read takes what just landed (small pieces); once it
                    # ended, the rest is read in the configured pieces (each read holds its result).
                    size, at = piece if ended else min(piece, READ_BYTES), cursor if with_chunks else None
                    try:
                        job, chunks = await _read(storage, endpoint, job_id, at, size)
                    except JobNotFound:
                        gone = f"job {job_id} is gone: purged from the queue, or its result expired"
                        await _write(request, response, _event("error", {"error": gone}))
                        return
                    if chunks:
                        events = chunk_events(chunks, cursor)
                        cursor += len(chunks)
                        await _write(request, response, events)
                    ended = job.state.is_terminal
                    # More chunks are stored than this bounded read returned: send them before
                    # the final status, and read again at once rather than wait for a change.
                    more = with_chunks and cursor < job.stream_len
                    if await _tell_state(request, response, job, cursor, more, told):
                        return
                    if more:
                        continue
                    waiter = await _wait_for_change(request, response, storage, channel, waiter, ends)
                finally:
                    if not waiter.done():
                        waiter.cancel()
            if departed.is_set():
                raise _Disconnected()
        finally:
            for end in ends:
                end.cancel()


async def _tell_state(
    request: web.Request, response: web.StreamResponse, job: JobRecord, cursor: int, more: bool,
    told: list[str | None],
) -> bool:  # fmt: skip
    """Send the final status once every chunk went (True: the stream is done), or an update
    event when a running job's status or progress changed (a terminal state is told once, by
    the status event after the last chunk; its result is not encoded before that)."""
    if job.state.is_terminal:
        if more:
            return False
        await _write(request, response, _event("status", job.to_status(), cursor))
        return True
    status = job.to_status()
    update = dumps_json([status.get("status"), status.get("output")])
    if update != told[0]:
        told[0] = update
        await _write(request, response, _event("update", status))
    return False


async def _read(
    storage: Storage, endpoint: str, job_id: str, cursor: int | None, piece: int
) -> tuple[JobRecord, list[Any]]:
    """The job and its chunks from `cursor` on (None: the job alone); raises JobNotFound."""
    if cursor is not None:
        job, chunks, _ = await storage.read_stream(endpoint, job_id, cursor, max_bytes=piece)
        return job, chunks
    found = await storage.get(endpoint, job_id)
    if found is None:
        raise JobNotFound(job_id)
    return found, []


async def _wait_for_change(
    request: web.Request,
    response: web.StreamResponse,
    storage: Storage,
    channel: str,
    waiter: asyncio.Future[bool],
    ends: list[asyncio.Future[Any]],
) -> asyncio.Future[bool]:
    """Wait until the job's channel fires or the stream must end; a keep-alive after each
    KEEPALIVE_S of silence, without reading storage. Returns the last waiter (to cancel)."""
    while True:
        await asyncio.wait({waiter, *ends}, return_when=asyncio.FIRST_COMPLETED)
        if any(end.done() for end in ends) or (waiter.done() and waiter.result()):
            return waiter
        # Listen again before writing, so a change that lands during the write still wakes us.
        waiter = asyncio.ensure_future(storage.wait(channel, KEEPALIVE_S))
        await asyncio.sleep(0)
        try:
            await _write(request, response, b": keep-alive\n\n")
        except BaseException:
            waiter.cancel()
            raise


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _write(request: web.Request, response: web.StreamResponse, data: bytes) -> None:
    if _gone(request):
        raise _Disconnected()
    try:
        await response.write(data)
    except (ConnectionError, RuntimeError) as exc:
        raise _Disconnected() from exc
