"""One HTTP/1.1 connection of the worker's HTTP client (worker_kit/worker/http_client.py).

An asyncio protocol that carries one request at a time and parses the answer with httptools
(llhttp, in C): Content-Length, chunked and read-until-close bodies, interim 1xx answers skipped,
keep-alive decided by the parser from the version and `Connection` header. Every way a request
can end without an answer (the peer closed or reset the connection, a malformed answer, bytes
nobody asked for) fails the request's future with a `LinkError` whose text says which.
"""

from __future__ import annotations

import asyncio
import select

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser


class LinkError(ConnectionError):
    """The request got no usable answer on its connection (the text says why)."""


class HttpResponse:
    """A complete answer: status, headers (lower-case names, latin-1 text; the last of repeated
    names wins) and the whole body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower case ("" when absent)."""
        value = self.headers.get("content-type", "")
        if value == "application/msgpack":  # the service's own answers: nothing to trim
            return value
        return value.partition(";")[0].strip().lower()


class Connection(asyncio.Protocol):
    """A keep-alive connection; `send` starts a request, its answer (or error) lands in the future."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        #: Whether the last answer leaves the connection fit for another request.
        self.reusable = False
        self.idle_since = 0.0
        self._parser = HttpResponseParser(self)
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._keep_alive = False
        self._until_close = False  # the answer has no length: its body ends when the peer closes
        self._started = False  # a byte of the answer has arrived
        self._headers_done = False
        self._poll: select.poll | None = None
        self._lost: asyncio.Future[None] | None = None
        self._fresh = True  # no request sent yet
        #: What came before the first request (a service over its connection cap answers 503
        #: at once): kept for that request's answer.
        self._early = b""

    # -- requests ---------------------------------------------------------------------------------
    def send(self, waiter: asyncio.Future[HttpResponse], head: bytes, body: bytes | None) -> None:
        assert self.transport is not None
        self._waiter = waiter
        self._headers = {}
        self._body = []
        self._started = self._headers_done = self._until_close = False
        self.reusable = False
        self._fresh = False
        early, self._early = self._early, b""
        if not self.closed:
            if body is None or len(body) < 65536:
                self.transport.write(head + body if body else head)
            else:  # a large body is not copied onto the head
                self.transport.write(head)
                self.transport.write(body)
        if early:
            self._feed(early)
        if self.closed and not waiter.done():
            self._waiter = None
            waiter.set_exception(LinkError("the service closed the connection before answering"))

    def expire(self, waiter: asyncio.Future[HttpResponse], timeout_s: float) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError(f"no answer within {timeout_s:g} s"))
        self.abort()

    def usable(self) -> bool:
        """Whether an idle connection may carry a request: open, and nothing readable on its
        socket. Readable while idle means the peer closed it (or sent what nobody asked for)
        in the moment since the loop last looked: never send a request into that."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return False
        if self._poll is None:
            sock = self.transport.get_extra_info("socket")
            if sock is None:
                return True
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLIN | select.POLLPRI)
        return not self._poll.poll(0)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def wait_closed(self, timeout_s: float) -> None:
        """Until the transport has let go of its socket (at most `timeout_s`, then it is aborted)."""
        if self.transport is None or self._lost is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self._lost)
        except TimeoutError:
            self.transport.abort()

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport
        self._lost = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            if self._fresh:
                self._early += data
            else:
                self.fail("the service sent bytes nobody asked for")
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        self._started = True
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade:
            self.fail("the service answered with a protocol upgrade")
        except HttpParserError as exc:
            self.fail(f"malformed answer from the service: {exc}")

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost finishes or fails the request

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._poll = None
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        if self._until_close and self._headers_done:
            status = self._parser.get_status_code()
            waiter.set_result(HttpResponse(status, self._headers, b"".join(self._body)))
            return
        where = "in the middle of its answer" if self._started else "before answering"
        detail = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
        waiter.set_exception(LinkError(f"the service closed the connection {where}{detail}"))

    # -- httptools callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers_done = False
        if self._waiter is None:
            raise LinkError("an answer nobody asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._keep_alive = self._parser.should_keep_alive()
        headers = self._headers
        self._until_close = "content-length" not in headers and "transfer-encoding" not in headers

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self._headers = {}
            self._body = []
            return
        waiter, self._waiter = self._waiter, None
        assert self.transport is not None
        # An answer that came while the request was still being written (an early 413, say)
        # leaves the rest of the request unsent: that connection cannot carry another.
        self.reusable = self._keep_alive and not self.transport.get_write_buffer_size()
        if waiter is not None and not waiter.done():
            waiter.set_result(HttpResponse(status, self._headers, b"".join(self._body)))

    def fail(self, reason: str) -> None:
        """End the connection; a request in flight on it fails with `reason`."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(LinkError(reason))
        self.abort()
