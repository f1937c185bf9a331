"""Request and response plumbing shared by the client and worker routes.

Handlers raise `ApiError`; the error middleware (app.py) renders it as `{"error": ...}`.
Bodies are read by hand against a per-route limit, so a too-large body is refused from its
Content-Length before a byte of it is read, and a chunked one as soon as it passes the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from ..ids import JOB_ID_RULE, valid_job_id
from ..portable import problem
from ..protocol import JSON, MSGPACK, encode
from ..protocol.fields import integral as integral  # re-exported: client_api reads it from here
from ..protocol.refusals import ApiError as ApiError  # one class for every refusal (protocol/refusals.py)
from ..protocol.reports import decode_body
from ..storage.base import Storage, targeted
from .departures import client_gone as client_gone  # re-exported: routes import it from here
from .departures import watch

T = TypeVar("T")

#: How long a request body may take to arrive (ServiceConfig.body_timeout_s; set by create_app).
BODY_TIMEOUT_S = web.AppKey("worker_kit_body_timeout_s", float)
#: Where read_body keeps a body it has read, so a route reading it again gets the same bytes.
_BODY = web.RequestKey("worker_kit_body", bytes)
#: Content-Encodings a request body may have (aiohttp inflates gzip and deflate as it reads).
SUPPORTED_ENCODINGS = ("", "identity", "gzip", "deflate")
#: Bodies are read from the socket in pieces of this size while the limit is enforced.
_READ_PIECE = 256 * 1024


def wants_msgpack(request: web.Request) -> bool:
    return MSGPACK in request.headers.get("Accept", "")


def respond(
    request: web.Request, body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """JSON, or msgpack when the request's Accept header asks for it."""
    content_type = MSGPACK if MSGPACK in request.headers.get("Accept", "") else JSON  # wants_msgpack()
    return web.Response(
        body=encode(body, content_type), status=status, content_type=content_type, headers=headers
    )


def body_content_type(request: web.Request) -> str:
    if request.headers.get("Content-Type") == JSON:
        return JSON  # what nearly every client sends, exactly: no header to parse
    return MSGPACK if request.content_type == MSGPACK else JSON


async def read_body(request: web.Request, limit: int, what: str) -> bytes:
    """The raw body, refusing with 413 anything over `limit` bytes, and with 400 a body whose
    Content-Encoding does not decode (aiohttp inflates gzip and deflate as it reads)."""
    if request.content.at_eof():  # read already (or empty): a route reading it again gets the same
        cached = request.get(_BODY)
        if cached is not None:
            return cached
    encoding = request.headers.get("Content-Encoding")
    if encoding is not None:
        encoding = encoding.strip().lower()
        if encoding not in SUPPORTED_ENCODINGS:
            raise ApiError(
                415,
                f"Content-Encoding {encoding[:40]!r} is not supported; "
                "send the body as is, or with gzip or deflate",
            )
    else:
        encoding = "identity"
    content = request.content
    try:
        if content.is_eof():  # all of it has arrived (the common case): no wait to bound
            length = request.content_length
            if encoding == "identity" and length is not None and length <= limit:
                # _read_body's own first step, without its coroutines: the bytes are all here.
                raw = await content.readexactly(length) if length else b""
            else:
                raw = await _read_body(request, limit, what, encoding)
        else:
            async with asyncio.timeout(request.app.get(BODY_TIMEOUT_S)):
                raw = await _read_body(request, limit, what, encoding)
    except asyncio.IncompleteReadError as exc:  # fewer bytes than its Content-Length said
        raise ApiError(400, f"{what} body ended after {len(exc.partial)} of {exc.expected} bytes") from None
    except TimeoutError:
        timeout_s = request.app.get(BODY_TIMEOUT_S)
        raise ApiError(
            408,
            f"{what} body did not arrive within {timeout_s:g} s (body_timeout_s)",
            headers={"Connection": "close"},
        ) from None
    except web.RequestPayloadError as exc:
        cause = exc.__cause__
        reason = getattr(cause, "message", None) or str(cause or exc)
        raise ApiError(
            400, f"{what} body is not valid {encoding} data (Content-Encoding): {reason.strip()}"
        ) from None
    request[_BODY] = raw
    return raw


def body_read(request: web.Request) -> bytes | None:
    """The body read_body has read already (client_op reads a POST's body before it takes a
    rate-limit slot), or None: the same bytes a second read_body would give, without its coroutine."""
    try:
        return request[_BODY]
    except KeyError:
        return None


async def _read_body(request: web.Request, limit: int, what: str, encoding: str) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(413, f"{what} body is {length} bytes, over the limit of {limit} bytes", limit=limit)
    # aiohttp inflates a Content-Encoding (gzip, deflate...) body as it is read, so the
    # Content-Length (compressed bytes) says nothing about how much there is to read:
    # read such a body to its end, counting inflated bytes against the limit.
    if length is not None and encoding in ("", "identity"):
        return await request.content.readexactly(length) if length else b""  # read_body answers a short one
    parts: list[bytes] = []
    size = 0
    while True:
        piece = await request.content.read(_READ_PIECE)
        if not piece:
            break
        size += len(piece)
        if size > limit:
            raise ApiError(413, f"{what} body is over the limit of {limit} bytes", limit=limit)
        parts.append(piece)
    return b"".join(parts)


def decode_object(raw: bytes, content_type: str | None, what: str, *, finite: bool = True) -> dict[str, Any]:
    """A decoded JSON or msgpack body that must be a portable object (worker_kit.portable):
    refused with 400 if it does not parse, is not an object, or holds something that could not
    be answered in every format the service speaks. `finite=False` (worker reports) lets NaN
    and Infinity through."""
    value = decode_body(raw, content_type, what)
    bad = problem(value, finite=finite)
    if bad is not None:
        raise ApiError(400, f"{what}: {bad}")
    return value


async def read_object(request: web.Request, limit: int, what: str, *, finite: bool = True) -> dict[str, Any]:
    """A JSON or msgpack body that must be a portable object (see decode_object)."""
    raw = await read_body(request, limit, what)
    return decode_object(raw, body_content_type(request), what, finite=finite)


async def read_optional_object(request: web.Request, limit: int, what: str) -> dict[str, Any]:
    """Like read_object, but an absent or empty body is an empty object (POST /status, /cancel...)."""
    if not request.body_exists:
        return {}
    raw = await read_body(request, limit, what)
    if not raw.strip():
        return {}
    return decode_object(raw, body_content_type(request), what)


def query_int(
    request: web.Request, name: str, *, default: int | None, minimum: int, maximum: int
) -> int | None:
    if not request.rel_url.raw_query_string:
        return default  # most requests: no query to parse at all
    given = request.query.getall(name, ())
    if not given:
        return default
    if len(given) > 1:  # which one was meant is not ours to guess
        raise ApiError(400, f"query parameter {name} is given {len(given)} times; give it once")
    raw = given[0]
    if not raw.isascii() or not raw.isdigit():
        raise ApiError(
            400, f"query parameter {name} must be a whole number between {minimum} and {maximum}, not {raw!r}"
        )
    value = int(raw)
    if not (minimum <= value <= maximum):
        raise ApiError(400, f"query parameter {name} must be between {minimum} and {maximum}, not {value}")
    return value


def job_id_of(request: web.Request, raw: str | None = None) -> str:
    """The path's job id; one outside the job-id alphabet (worker_kit.ids) cannot exist: 404."""
    job_id = request.match_info["job_id"] if raw is None else raw
    if not valid_job_id(job_id):
        raise ApiError(404, f"no such job: {JOB_ID_RULE}")
    return job_id


class Shutdown:
    """Set when the service stops, so long-polls answer at once instead of holding shutdown."""

    def __init__(self) -> None:
        self.event = asyncio.Event()


#: Held claims and heartbeats re-read storage at least this often (a heartbeat renews its leases
#: each time). Waits on a job's own channel (/runsync, /stream?wait=, /status-sync) do not:
#: the waiter subscribes before it reads, so only that job's events need wake it.
RECHECK_S = 2.0


async def wait_until(
    storage: Storage,
    channel: str,
    timeout_s: float,
    check: Callable[[], Awaitable[T | None]],
    shutdown: Shutdown | None = None,
    gone: Callable[[], bool] | None = None,
    recheck_s: float | None = None,
) -> T | None:
    """Call `check` until it returns a value, waking on `channel`; None once `timeout_s` passes.

    The waiter subscribes before `check` reads storage, so a change that lands in between
    still wakes it. With `gone` (e.g. `lambda: client_gone(request)`), the wait also ends,
    returning None, soon after `gone()` turns true: a long-poll whose client left stops holding
    and stops acting for it (renewing leases, claiming jobs) at once, not at its next wake-up.
    `recheck_s` calls `check` at least that often without a notification (a held heartbeat
    renews its leases that way); None: only notifications wake it (a job's own events).
    """
    with contextlib.ExitStack() as stack:
        departed = stack.enter_context(watch(gone)) if gone is not None else None
        return await _wait_until(storage, channel, timeout_s, check, shutdown, departed, gone, recheck_s)


async def _wait_until(
    storage: Storage,
    channel: str,
    timeout_s: float,
    check: Callable[[], Awaitable[T | None]],
    shutdown: Shutdown | None,
    departed: asyncio.Event | None,
    gone: Callable[[], bool] | None,
    recheck_s: float | None,
) -> T | None:
    # The watcher sets `departed` within a quarter of a second; `gone()` itself is asked too
    # at each wake-up, so a wake is never spent on a client already known to be gone.
    def has_left() -> bool:
        return departed is not None and (departed.is_set() or (gone is not None and gone()))

    deadline = time.monotonic() + timeout_s
    left = asyncio.ensure_future(departed.wait()) if departed is not None else None
    woken = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            span = max(remaining, 0.0) if recheck_s is None else min(max(remaining, 0.0), recheck_s)
            waiter = asyncio.ensure_future(storage.wait(channel, span))
            stop = asyncio.ensure_future(shutdown.event.wait()) if shutdown is not None else None
            try:
                await asyncio.sleep(0)  # let the waiter subscribe
                if has_left():
                    return None
                result = await check()
                woken = False  # the check acted on any wake received so far
                if result is not None or remaining <= 0 or (shutdown is not None and shutdown.event.is_set()):
                    return result
                events = {f for f in (waiter, stop, left) if f is not None}
                await asyncio.wait(events, return_when=asyncio.FIRST_COMPLETED)
                woken = waiter.done() and not waiter.cancelled() and waiter.result()
                if has_left():
                    return None
            finally:
                if not waiter.done():
                    waiter.cancel()
                if stop is not None:
                    stop.cancel()
    finally:
        if left is not None:
            left.cancel()
        if woken and targeted(channel):
            # A targeted wake (one new job) reached a wait that ends without acting on it (its
            # client left, the service stops): hand it on to another waiter, or the job would
            # wait for that one's next re-check.
            storage.publish(channel)
