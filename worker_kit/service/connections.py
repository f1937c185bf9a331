"""Limits on client connections, before any request on them is read (docs/reliability.md).

`GuardedTCPSite` serves like aiohttp's TCPSite, but each connection first passes a
`ConnectionGuard`: one client address may hold at most `max_connections_per_client`
connections at once (`0` lifts the cap), so one host cannot take every socket the service has.
A connection over the cap gets a short 503 and is closed. Slow request headers are bounded by the
runner's keep-alive timeout (`header_timeout_s`, run_service), slow bodies by `body_timeout_s`
(http.read_body), and concurrency slots are taken only once a body has arrived (client_api).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from aiohttp import web

log = logging.getLogger("worker_kit.service")

_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
)


class ConnectionGuard:
    """Counts open connections per client address."""

    def __init__(self, max_per_client: int) -> None:
        self.max_per_client = max_per_client
        self.open: Counter[str] = Counter()
        self.refused = 0

    def admit(self, address: str) -> bool:
        if self.max_per_client and self.open[address] >= self.max_per_client:
            self.refused += 1
            return False
        self.open[address] += 1
        return True

    def release(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]


class _GuardedProtocol(asyncio.Protocol):
    """Forwards to aiohttp's request handler once the guard admits the connection."""

    def __init__(self, inner: Any, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._address: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self._guard.admit(address):
            body = (
                b'{"error": "too many connections from this address (max_connections_per_client = %d)"}'
                % self._guard.max_per_client
            )
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(_REFUSAL % (len(body), body))
            transport.close()
            return
        self._address = address
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._address is None:
            return
        self._guard.release(self._address)
        self._address = None
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._address is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._address is not None else None

    def pause_writing(self) -> None:
        if self._address is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._address is not None:
            self._inner.resume_writing()


class GuardedTCPSite(web.TCPSite):
    """aiohttp's TCPSite with every connection passed through a ConnectionGuard."""

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner, host, port)
        self.guard = guard

    async def start(self) -> None:
        # BaseSite.start registers the site; TCPSite.start would create the server with
        # aiohttp's own protocol factory, which this replaces by a guarded one.
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None

        def factory() -> asyncio.Protocol:
            return _GuardedProtocol(server(), self.guard)

        self._server = await asyncio.get_running_loop().create_server(
            factory, self._host, self._port, backlog=self._backlog, reuse_address=self._reuse_address
        )
