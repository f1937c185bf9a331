"""The worker's HTTP/1.1 client: what both worker transports send their requests through.

Why not aiohttp: importing it costs most of a worker's cold start (its connector builds SSL
contexts at import, even for http:// services). This client makes a TLS context only for an
https:// URL (asyncio imports `ssl` itself; the context, loading the CA store, is the cost), and
parses answers with httptools.

What it does: per origin, a pool of keep-alive connections, one request in flight on each, so a
held claim, a held heartbeat and any number of reports run at once; a total timeout per request
(connecting included); https with the default verification (the system's CA store, or the file
and directory named by SSL_CERT_FILE / SSL_CERT_DIR); clean close. What it does not: proxies
(like aiohttp's default, trust_env=False, the *_PROXY variables are not read), redirects,
cookies, compression, credentials in the URL.

A connection the service closed while idle is noticed before reuse and replaced; a request whose
connection fails once sent is never sent again (it may have reached the service): the caller
gets a `LinkError`, an `OSError` (refused, reset, TLS failure) or a `TimeoutError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from .. import __version__
from .http_connection import Connection, HttpResponse, LinkError

__all__ = ["HttpClient", "HttpResponse", "LinkError"]

#: An idle connection older than this is closed rather than reused: under any server's
#: keep-alive timeout worth the name, so the race with a server closing it is rare.
IDLE_S = 15.0
#: Idle connections kept per origin; more are closed when their request ends.
MAX_IDLE = 32
#: Request heads kept for reuse.
MAX_HEADS = 64
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: What a worker's requests say they come from, unless the caller's headers say otherwise.
USER_AGENT = f"worker-kit-worker/{__version__}"


def _tls_context() -> Any:
    import ssl  # already imported by asyncio; named here where it is used

    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


def _quoted(target: str) -> str:
    """A request target with what may not appear raw in one percent-encoded (as aiohttp did)."""
    from urllib.parse import quote

    return quote(target, safe="/?#&=%:@!$'()*+,;~-._[]")


class _Origin:
    """The connections to one scheme://host:port."""

    def __init__(self, origin: str, headers: bytes, tls: Any) -> None:
        scheme, _, hostport = origin.partition("://")
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(f"not an http:// or https:// URL: {origin!r}")
        if "@" in hostport:
            raise ValueError("credentials in the URL are not supported: send an API key instead")
        host, port = hostport, _DEFAULT_PORTS[scheme]
        if hostport.startswith("["):  # [IPv6]:port
            end = hostport.find("]")
            host, rest = hostport[1:end], hostport[end + 1 :]
            if rest.startswith(":"):
                port = int(rest[1:])
        elif ":" in hostport:
            host, _, digits = hostport.rpartition(":")
            port = int(digits)
        if not host:
            raise ValueError(f"no host in {origin!r}")
        self.host, self.port = host, port
        self.tls = tls if scheme == "https" else None
        try:
            host_header = hostport.encode("ascii")
        except UnicodeEncodeError:  # an internationalised name travels in its ASCII form
            host_header = host.encode("idna") + (b":%d" % port if ":" in hostport else b"")
        self.head_tail = b"Host: " + host_header + b"\r\n" + headers
        self.idle: list[Connection] = []  # most recently used last

    def take_idle(self, now: float) -> Connection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if now - conn.idle_since > IDLE_S:
                # The rest were idle longer still.
                for stale in (*idle, conn):
                    stale.close()
                idle.clear()
                return None
            if conn.usable():
                return conn
            conn.close()
        return None


class HttpClient:
    """Requests with fixed `headers` to any http(s) URL; `close` ends every connection."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        headers = {"User-Agent": USER_AGENT, **headers}
        self._headers = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items())
        self._origins: dict[str, _Origin] = {}
        #: (method, url) -> its origin and head up to the body's length: a worker sends the same
        #: few requests over and over (job ids make more; the map is emptied when it grows).
        self._heads: dict[tuple[str, str], tuple[_Origin, bytes]] = {}
        self._busy: set[Connection] = set()
        self._tls: Any = None
        self._closed = False

    def _origin(self, origin: str) -> _Origin:
        found = self._origins.get(origin)
        if found is None:
            if origin.startswith("https:") and self._tls is None:
                self._tls = _tls_context()
            found = self._origins[origin] = _Origin(origin, self._headers, self._tls)
        return found

    async def request(self, method: str, url: str, body: bytes | None, timeout_s: float) -> HttpResponse:
        """One request; the whole of it (connecting, sending, the answer) within `timeout_s`."""
        if self._closed:
            raise LinkError("the worker's HTTP client is closed")
        known = self._heads.get((method, url))
        if known is None:
            known = self._head(method, url)
        origin, head = known
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + timeout_s
        conn = origin.take_idle(now)
        if conn is None:
            conn = await self._connect(origin, deadline, timeout_s)
        head += b"\r\n" if body is None else b"Content-Length: %d\r\n\r\n" % len(body)
        waiter: asyncio.Future[HttpResponse] = loop.create_future()
        self._busy.add(conn)
        timer = loop.call_at(deadline, conn.expire, waiter, timeout_s)
        try:
            conn.send(waiter, head, body)
            answer = await waiter
        except BaseException:
            conn.abort()  # cancelled, timed out or broken mid-request: its state is unknown
            raise
        finally:
            timer.cancel()
            self._busy.discard(conn)
        if conn.reusable and not conn.closed and not self._closed and len(origin.idle) < MAX_IDLE:
            conn.idle_since = loop.time()
            origin.idle.append(conn)
        else:
            conn.close()
        return answer

    def _head(self, method: str, url: str) -> tuple[_Origin, bytes]:
        cut = url.find("/", url.find("://") + 3)
        origin = self._origin(url if cut < 0 else url[:cut])
        target = "/" if cut < 0 else url[cut:]
        if " " in target or not target.isascii() or not target.isprintable():
            target = _quoted(target)
        head = f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + origin.head_tail
        if len(self._heads) >= MAX_HEADS:
            self._heads.clear()
        self._heads[(method, url)] = (origin, head)
        return origin, head

    async def _connect(self, origin: _Origin, deadline: float, timeout_s: float) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await loop.create_connection(
                    Connection, origin.host, origin.port, ssl=origin.tls,
                    server_hostname=origin.host if origin.tls else None,
                )  # fmt: skip
        except TimeoutError:
            where = f"{origin.host}:{origin.port}"
            raise TimeoutError(f"no connection to {where} within {timeout_s:g} s") from None
        if self._closed:
            conn.abort()
            raise LinkError("the worker's HTTP client is closed")
        return conn

    async def close(self, timeout_s: float = 2.0) -> None:
        """Close every connection; requests still in flight fail with a `LinkError`."""
        self._closed = True
        busy, idle = [*self._busy], [c for o in self._origins.values() for c in o.idle]
        self._busy.clear()
        for origin in self._origins.values():
            origin.idle.clear()
        for conn in busy:
            conn.fail("the worker's HTTP client closed")
        for conn in idle:
            conn.close()
        conns = busy + idle
        # Let each transport release its socket before the loop may end (no unclosed-socket warnings).
        await asyncio.gather(*(conn.wait_closed(timeout_s) for conn in conns))
