"""A small aiohttp app of a test's own (a webhook receiver, a proxy) served on a free loopback port."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator

from aiohttp import web


@contextlib.asynccontextmanager
async def loopback_app(
    app: web.Application, shutdown_timeout: float = 60.0, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 and a free port for the block: its base URL (http://127.0.0.1:PORT,
    https:// with `ssl_context`). `shutdown_timeout` bounds how long cleanup waits for handlers
    still running (a proxied long-poll, say)."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
        scheme = "https" if ssl_context is not None else "http"
        yield f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
