"""Issue #13 point 10: endpoint ids and job ids have one alphabet, enforced on every route;
`.` and `..` path segments are refused rather than resolved."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from worker_kit.errors import ConfigError
from worker_kit.ids import valid_endpoint_id, valid_job_id
from worker_kit.service.config import ServiceConfig


async def raw_get(port: int, path: str) -> tuple[int, bytes]:
    """A request whose path goes on the wire exactly as written (HTTP clients normalise dots away)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize(
    "path",
    ["/v2/../health", "/v2/./health", "/v2/%2e%2e/health", "/v2/.%2E/x", "/v2/ep/status/..", "/v2/e/../x"],
)
async def test_dot_segments_are_refused(service: Any, path: str) -> None:
    status, body = await raw_get(service.port, path)
    assert status == 400 and b"'.' and '..'" in body, (path, body)


@pytest.mark.parametrize("endpoint", [".hidden", "-x", "a%20b", "caf%C3%A9", "e" * 129, "a%2Fb"])
async def test_bad_endpoint_ids_are_404_on_every_kind_of_route(service: Any, endpoint: str) -> None:
    for path in ("/health", "/run", "/worker/claim", "/job-take/w1"):
        method = "GET" if path in ("/health",) or path.startswith("/job-take") else "POST"
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        writer.write(
            f"{method} /v2/{endpoint}{path} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
            "Content-Type: application/json\r\nConnection: close\r\n\r\n{}".encode()
        )
        data = await reader.read()
        writer.close()
        assert data.startswith(b"HTTP/1.1 404") and b"endpoint ids are" in data, (endpoint, path, data[:200])


@pytest.mark.parametrize("job_id", ["a.b", "a%20b", "x" * 129, "%C3%A9"])
async def test_bad_job_ids_are_404_on_every_route(service: Any, job_id: str) -> None:
    for path in (f"/status/{job_id}", f"/stream/{job_id}"):
        status, body = await raw_get(service.port, f"/v2/ep{path}")
        assert status == 404 and b"job ids are" in body, (path, body)
    for method, path in (
        ("POST", f"/cancel/{job_id}"),
        ("POST", f"/retry/{job_id}"),
        ("POST", f"/worker/jobs/{job_id}/finish"),
        ("POST", f"/worker/jobs/{job_id}/output"),
        ("POST", f"/worker/jobs/{job_id}/release"),
        ("POST", f"/job-done/w1/{job_id}"),
        ("POST", f"/job-stream/w1/{job_id}"),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        body = b'{"token": "t", "output": "done"}'
        writer.write(
            f"{method} /v2/ep{path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode() + body
        )
        data = await reader.read()
        writer.close()
        assert data.startswith(b"HTTP/1.1 404") and b"job ids are" in data, (path, data[:300])


def test_the_alphabets() -> None:
    assert valid_endpoint_id("my-endpoint_2.v1") and valid_endpoint_id("a" * 128)
    for bad in ("", ".", "..", ".a", "-a", "a/b", "a b", "é", "a" * 129):
        assert not valid_endpoint_id(bad), bad
    assert valid_job_id("0123456789abcdef0123456789abcdef") and valid_job_id("sync-A_1")
    for bad in ("", ".", "a.b", "a/b", "x" * 129, "é"):
        assert not valid_job_id(bad), bad


def test_config_refuses_bad_endpoint_ids() -> None:
    for bad in (".", "..", "-x"):
        with pytest.raises(ConfigError, match="endpoint ids are"):
            ServiceConfig.from_dict({"endpoints": {bad: {}}})
