"""Serve the app on a TCP port: `async with run_service(config) as svc:`.

Used by `worker-kit serve`, the local harness and the tests. Port 0 picks a free port;
`svc.url` tells which.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from ..storage import Storage, redacted
from .app import create_app
from .config import ServiceConfig
from .connections import ConnectionGuard, GuardedTCPSite
from .state import STATE

log = logging.getLogger("worker_kit.service")


@dataclass(slots=True)
class RunningService:
    app: web.Application
    runner: web.AppRunner
    config: ServiceConfig
    url: str
    port: int

    @property
    def storage(self) -> Storage:
        return self.app[STATE].storage

    def endpoint_url(self, endpoint_id: str) -> str:
        return f"{self.url}/v2/{endpoint_id}"


def _url_host(host: str) -> str:
    # A wildcard bind is reachable on loopback; an IPv6 literal needs brackets in a URL.
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


@asynccontextmanager
async def run_service(config: ServiceConfig, storage: Storage | None = None) -> AsyncIterator[RunningService]:
    """Start the service; on exit answer held long-polls, wait up to `shutdown_timeout_s` for
    in-flight requests, stop the sweeper and webhooks, then close storage."""
    app = create_app(config, storage)
    # keepalive_timeout bounds how long a connection may take to send a request's headers
    # (aiohttp closes a connection still waiting for them when it runs out), so slow headers
    # cannot hold sockets for ever: header_timeout_s.
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=config.shutdown_timeout_s,
        keepalive_timeout=config.header_timeout_s,
        # After an answer that left part of a body unread (413, 408), the rest is read and
        # dropped for at most this long before the connection closes (aiohttp's default is 10 s).
        lingering_time=2.0,
    )
    await runner.setup()
    try:
        guard = ConnectionGuard(config.max_connections_per_client)
        site = GuardedTCPSite(runner, config.host or None, config.port, guard)
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else config.port
        svc = RunningService(
            app=app, runner=runner, config=config, url=f"http://{_url_host(config.host)}:{port}", port=port
        )
        log.info(
            "serving on %s (storage %s)",
            svc.url,
            redacted(config.storage) if storage is None else type(storage).__name__,
        )
        yield svc
    finally:
        await runner.cleanup()
