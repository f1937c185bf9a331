"""Server-Sent Events from the service's /stream, with reconnection from the last cursor."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from ..errors import NotFound, RateLimited, ServiceUnavailable
from ..retrying import Backoff
from .events import iter_sse_batches
from .transport import ClientTransport, error_from_response, log

#: Answers meaning "no Server-Sent Events here": the client polls instead.
NO_PUSH_STATUSES = frozenset({405, 406, 415, 501})


class NoPush(Exception):
    """The service answered /stream without Server-Sent Events."""


_scan = json.JSONDecoder().scan_once


def _json(text: str) -> Any:
    """json.loads(text), without its Python layers around the C scanner for a document that
    is one value and nothing else (a chunk event's data): a token stream parses one a token."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return json.loads(text)  # nothing at the start (whitespace, say): loads decides
    return value if end == len(text) else json.loads(text)


async def follow_job(
    transport: ClientTransport,
    job_id: str,
    *,
    read_timeout: float | None,
    on_push: Callable[[bool], None],
    cursor: int = 0,
    chunks: bool = True,
) -> AsyncIterator[tuple[str, Any, int]]:
    """See AsyncEndpoint.follow. `on_push` learns whether the service offers Server-Sent Events.

    One function on purpose (past our usual 60 lines): reconnecting and reading share the cursor,
    the backoff and the failure count, which split halves would hand back and forth."""
    backoff = Backoff(cap=transport.backoff_cap)
    failures = 0
    params = {"cursor": str(cursor)}
    while True:
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(cursor)}
        params["cursor"] = str(cursor)
        if not chunks:
            params["chunks"] = "0"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=transport.timeout,
                                        sock_read=read_timeout)
        retry_after: float | None = None
        try:
            async with transport.session.get(
                transport.url(f"/stream/{job_id}"), params=params, headers=headers, timeout=timeout
            ) as resp:
                if resp.status >= 400:
                    error = error_from_response(resp.status, await resp.read(), resp.headers)
                    if resp.status in NO_PUSH_STATUSES:
                        on_push(False)
                        raise NoPush()
                    if isinstance(error, RateLimited):
                        # Turned away before anything happened (e.g. the endpoint's limit of
                        # concurrent streams): wait as told; not a failure of the connection.
                        retry_after = error.retry_after or backoff.next_delay()
                        log.info("event stream of job %s: %s; retrying in %.1fs", job_id, error, retry_after)
                        failures -= 1
                        raise ServiceUnavailable(str(error))
                    if resp.status < 500:
                        raise error
                    raise ServiceUnavailable(str(error))
                if not resp.content_type.startswith("text/event-stream"):
                    on_push(False)
                    raise NoPush()
                on_push(True)
                delivered = False
                async for events in iter_sse_batches(resp.content):
                    if not delivered:  # this connection works: the failures before it are forgiven
                        delivered, failures = True, 0
                        backoff.reset()
                    for event in events:
                        # A chunk is an unnamed event; services before that change named it "chunk".
                        if event.event == "message" or event.event == "chunk":
                            payload = _json(event.data)
                            cursor = int(event.id) if event.id else cursor + 1
                            yield "chunk", payload.get("output"), cursor
                        elif event.event == "update":
                            yield "update", json.loads(event.data), cursor
                        elif event.event == "status":
                            yield "status", json.loads(event.data), cursor
                            return
                        elif event.event == "error":
                            reason = json.loads(event.data).get("error", "stream error")
                            raise NotFound(404, reason)
        except (aiohttp.ClientError, TimeoutError, ServiceUnavailable, ValueError) as exc:
            failures += 1
            if failures > transport.retries:
                raise ServiceUnavailable(f"lost the event stream of job {job_id}: {exc}") from None
        # The stream ended without its final status event: the connection dropped.
        await asyncio.sleep(retry_after if retry_after is not None else backoff.next_delay())
