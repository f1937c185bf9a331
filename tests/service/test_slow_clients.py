"""Issue #13 point 3: slow or greedy clients get bounded time and sockets, real slow sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from worker_kit.service.config import EndpointConfig, RateLimit


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the service sent before it closed the connection (fails if it is still open)."""
    async with asyncio.timeout(seconds):
        return await reader.read()


async def test_slow_headers_are_cut_off(service_factory: Any) -> None:
    svc = await service_factory(header_timeout_s=1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\n")
    await writer.drain()
    for _ in range(3):  # one header line every half second, never the blank line that ends them
        await asyncio.sleep(0.5)
        if writer.is_closing() or reader.at_eof():
            break
        try:
            writer.write(b"X-Slow: 1\r\n")
            await writer.drain()
        except ConnectionError:
            break
    # Closed by the service after about a second, though the client was still sending.
    assert await closed_within(reader, 10) == b""
    writer.close()
    # The service still answers others.
    async with aiohttp.ClientSession() as session, session.get(svc.url + "/health") as resp:
        assert resp.status == 200


async def test_slow_body_gets_408_and_holds_no_slot(service_factory: Any) -> None:
    # One /run at a time: a trickling body must not hold that one slot.
    limits = {"run": RateLimit(1000, 10.0, 1)}
    svc = await service_factory(body_timeout_s=1.0, default=EndpointConfig(rate_limits=limits))
    reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
    writer.write(
        b"POST /v2/ep/run HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n{\"input\": \""
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    # Meanwhile another client's /run goes through: the slow one holds no slot.
    async with aiohttp.ClientSession() as session:
        async with session.post(svc.endpoint_url("ep") + "/run", json={"input": 1}) as resp:
            assert resp.status == 200, await resp.text()
    async with asyncio.timeout(10):
        answer = await reader.readuntil(b"(body_timeout_s)\"}")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    # The connection is closed soon after, though the client never finished its body.
    assert await closed_within(reader, 10) == b""
    writer.close()


async def test_connections_per_client_address_are_capped(service_factory: Any) -> None:
    svc = await service_factory(max_connections_per_client=3)
    held = [await asyncio.open_connection("127.0.0.1", svc.port) for _ in range(3)]
    await asyncio.sleep(0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
    answer = await closed_within(reader, 5)
    assert answer.startswith(b"HTTP/1.1 503") and b"max_connections_per_client" in answer, answer
    writer.close()
    # Once one closes, a new connection is served.
    held.pop()[1].close()
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert (await closed_within(reader, 5)).startswith(b"HTTP/1.1 200")
    writer.close()
    for _, w in held:
        w.close()
