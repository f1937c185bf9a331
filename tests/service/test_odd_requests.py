"""Issue #13 points 5 and 6: bodies with a broken Content-Encoding and SSE cursors out of range
are answered 4xx with {"error": reason} before anything is answered or stored."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import aiohttp
import pytest

SSE = {"Accept": "text/event-stream"}


@pytest.fixture
async def fresh() -> Any:
    # A broken body leaves its connection unusable: each request gets its own.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


async def post(session: aiohttp.ClientSession, url: str, body: bytes, encoding: str) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    async with session.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_invalid_compressed_bodies_are_400(service: Any, fresh: aiohttp.ClientSession) -> None:
    url = service.endpoint_url("ep")
    for encoding, body in (("gzip", b"notgzip"), ("deflate", b"notdeflate")):
        status, answer = await post(fresh, url + "/run", body, encoding)
        assert status == 400 and f"not valid {encoding}" in answer["error"], answer
    # The same on a worker route and a hosted report.
    status, answer = await post(fresh, url + "/worker/claim", b"junk", "gzip")
    assert status == 400 and "gzip" in answer["error"]
    status, answer = await post(fresh, url + "/job-done/w1/nojob", b"junk", "gzip")
    assert status == 400 and "gzip" in answer["error"]
    async with fresh.get(url + "/health") as resp:
        assert sum((await resp.json())["jobs"].values()) == 0


async def test_valid_compressed_bodies_are_read(service: Any, fresh: aiohttp.ClientSession) -> None:
    url = service.endpoint_url("ep")
    bodies = (("gzip", gzip.compress(b'{"input": 1}')), ("deflate", zlib.compress(b'{"input": 2}')))
    for encoding, packed in bodies:
        status, answer = await post(fresh, url + "/run", packed, encoding)
        assert status == 200 and answer["status"] == "IN_QUEUE", answer


async def test_unknown_content_encodings_are_415(service: Any, fresh: aiohttp.ClientSession) -> None:
    for encoding in ("bogus", "gzip, gzip", "compress"):
        status, answer = await post(fresh, service.endpoint_url("ep") + "/run", b'{"input": 1}', encoding)
        assert status == 415 and "Content-Encoding" in answer["error"], (encoding, answer)


@pytest.mark.parametrize(
    "where, value",
    [
        ("header", "9223372036854775808"),
        ("header", "99999999999999999999999999"),
        ("query", "9223372036854775808"),
        ("header", "+5"),
        ("header", "1_0"),
        ("header", "-1"),
    ],
)
async def test_sse_cursor_out_of_range_is_400_before_the_stream(
    service: Any, fresh: aiohttp.ClientSession, where: str, value: str
) -> None:
    url = service.endpoint_url("ep")
    async with fresh.post(url + "/run", json={"input": 1}) as resp:
        job_id = (await resp.json())["id"]
    headers = {**SSE, "Last-Event-ID": value} if where == "header" else SSE
    params = {"cursor": value} if where == "query" else None
    async with fresh.get(f"{url}/stream/{job_id}", headers=headers, params=params) as resp:
        assert resp.status == 400 and resp.content_type == "application/json"
        assert "cursor" in (await resp.json())["error"]
