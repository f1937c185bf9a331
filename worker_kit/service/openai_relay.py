"""Relays a job's stream to an OpenAI client as Server-Sent Events (/openai/* with "stream": true).

A string chunk is written as it is (workers usually yield ready `data: ...\\n\\n` frames, and
a frame may be split across chunks); any other chunk is framed as `data: <json>\\n\\n`. The
stream ends with `data: [DONE]` unless the worker sent it, or, when the job did not complete,
with an OpenAI error event (`data: {"error": {...}}`, which the `openai` client raises).
Nothing cuts the stream but the job's end, which its execution timeout bounds; keep-alive
comments go out during silences, only ever between frames.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web

from ..errors import JobNotFound
from ..job import JobRecord, JobState
from ..protocol import dumps_json
from ..storage.base import job_channel
from .http import client_gone
from .sse import READ_BYTES
from .state import ServiceState

log = logging.getLogger("worker_kit.service.openai")

#: A `: keep-alive` comment is sent after this much silence (between frames only), so proxies
#: and clients with idle timeouts keep a slow model's stream open.
KEEPALIVE_S = 15.0
#: Storage is re-read at least this often even without a notification (a lost notification
#: between replicas costs this much latency, never a hang).
RECHECK_S = 2.0
#: How often a silent stream looks whether its client is still connected.
GONE_POLL_S = 0.25
_DONE = "data: [DONE]"


class Disconnected(Exception):
    """The client went away; the caller cancels the job."""


def error_event(message: str, type_: str, code: str | None = None) -> bytes:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return f"data: {dumps_json(body)}\n\n".encode()


def handler_error(job: JobRecord) -> dict[str, Any] | None:
    """The OpenAI error object a handler returned (`return openai_compat.error(...)`): the runtime
    ends such a job FAILED with the object's JSON text as `error`. None for any other failure."""
    if job.state is not JobState.FAILED or not job.error or not job.error.startswith("{"):
        return None
    try:
        value = json.loads(job.error)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        return value
    return None


def job_error(job: JobRecord) -> tuple[str, str, str]:
    """(message, OpenAI error type, code) for a job that ended other than COMPLETED."""
    if job.state is JobState.TIMED_OUT:
        return job.error or "the job timed out", "timeout", "timed_out"
    if job.state is JobState.CANCELLED:
        return job.error or "the job was cancelled", "server_error", "cancelled"
    return job.error or "the handler failed", "server_error", "handler_failed"


class Relay:
    """Writes one job's stream to one SSE response."""

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.request = request
        self.response = response
        self.sent_any = False
        self.done_sent = False
        self._tail = ""  # the last characters written, to find [DONE] and frame ends across chunks
        self.last_write = time.monotonic()

    @property
    def between_frames(self) -> bool:
        return not self._tail or self._tail.endswith(("\n\n", "\r\n\r\n", "\r\r"))

    async def write(self, data: bytes) -> None:
        if client_gone(self.request):
            raise Disconnected()
        try:
            await self.response.write(data)
        except (ConnectionError, RuntimeError) as exc:
            raise Disconnected() from exc
        self.last_write = time.monotonic()

    async def chunks(self, items: list[Any]) -> None:
        out = bytearray()
        for item in items:
            if isinstance(item, bytes | str):
                text = item.decode("utf-8", "replace") if isinstance(item, bytes) else item
                raw = item if isinstance(item, bytes) else item.encode()
            else:
                text = f"data: {dumps_json(item)}\n\n"
                raw = text.encode()
            window = self._tail + text
            self.done_sent = self.done_sent or _DONE in window
            self._tail = window[-32:]
            out += raw
        if out:
            self.sent_any = True
            await self.write(bytes(out))

    async def close_frame(self) -> None:
        """End a frame the worker left open, so the next event is not glued onto it."""
        if not self.between_frames:
            await self.write(b"\n\n")
            self._tail = "\n\n"

    async def finish(self, job: JobRecord) -> None:
        """The job ended and every chunk was relayed: end the stream as its state calls for."""
        if job.state is JobState.COMPLETED:
            if not self.sent_any and job.output is not None:
                # A handler that returned its answer instead of streaming it: relay that.
                await self.chunks(job.output if isinstance(job.output, list) else [job.output])
            await self.close_frame()
            if not self.done_sent:
                await self.write(f"{_DONE}\n\n".encode())
                self.done_sent = True
            return
        await self.close_frame()
        returned = handler_error(job)
        if returned is not None:
            await self.write(f"data: {dumps_json({'error': returned})}\n\n".encode())
        else:
            await self.write(error_event(*job_error(job)))

    async def keepalive(self) -> None:
        if self.between_frames and time.monotonic() - self.last_write >= KEEPALIVE_S:
            await self.write(b": keep-alive\n\n")


async def relay_stream(
    request: web.Request, response: web.StreamResponse, state: ServiceState, endpoint: str, job_id: str
) -> bool:
    """Relay until the job ended and its stream was sent; True then. False when the service is
    shutting down (an error event was sent). Raises Disconnected when the client left."""
    relay = Relay(request, response)
    channel = job_channel(job_id)
    cursor, ended = 0, False
    shutdown = state.shutdown.event
    while True:
        if client_gone(request):
            raise Disconnected()
        timeout = min(RECHECK_S, KEEPALIVE_S)
        waiter = asyncio.ensure_future(state.storage.wait(channel, timeout))
        try:
            await asyncio.sleep(0)  # subscribe before reading, so a change in between still wakes us
            try:
                # Small pieces while the job runs (what just landed); the rest in large ones.
                size = state.config.stream_max_bytes
                size = size if ended else min(size, READ_BYTES)
                job, items, cursor = await state.storage.read_stream(endpoint, job_id, cursor, max_bytes=size)
            except JobNotFound:
                await relay.close_frame()
                await relay.write(
                    error_event(f"job {job_id} is gone (purged or expired)", "server_error", "gone")
                )
                return True
            await relay.chunks(items)
            ended = job.state.is_terminal
            if cursor < job.stream_len:
                continue  # a bounded read left chunks behind: read on at once
            if job.state.is_terminal:
                await relay.finish(job)
                return True
            if shutdown.is_set():
                await relay.close_frame()
                await relay.write(error_event("the service is shutting down", "server_error", "shutdown"))
                return False
            await _idle(request, waiter, shutdown)
        finally:
            if not waiter.done():
                waiter.cancel()
        await relay.keepalive()


async def _idle(request: web.Request, waiter: asyncio.Future[bool], shutdown: asyncio.Event) -> None:
    """Wait for a change, shutdown, or the recheck interval, looking at the client meanwhile."""
    stop = asyncio.ensure_future(shutdown.wait())
    try:
        while not waiter.done() and not stop.done():
            if client_gone(request):
                raise Disconnected()
            await asyncio.wait({waiter, stop}, timeout=GONE_POLL_S, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
