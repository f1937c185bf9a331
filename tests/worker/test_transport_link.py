"""The native transport over the worker's own HTTP client: what each way a request can fail
becomes (the errors the worker loop acts on), and https against a local TLS server."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import msgpack
import pytest
from aiohttp import web

from tests.support.servers import loopback_app
from worker_kit.errors import AuthError, RateLimited, ServiceUnavailable
from worker_kit.worker.http_client import HttpClient
from worker_kit.worker.transport import NativeTransport


def refusing_app(status: int, headers: dict[str, str] | None = None) -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        body = msgpack.packb({"error": f"refused with {status}"})
        return web.Response(status=status, body=body, content_type="application/msgpack", headers=headers)

    app = web.Application()
    app.router.add_post("/v2/ep/worker/jobs/{job_id}/release", answer)
    return app


async def release_through(url: str) -> None:
    transport = NativeTransport(url + "/v2/ep", worker_id="w1")
    await transport.open()
    try:
        await transport.release("j1", "t1")
    finally:
        await transport.close()


async def test_5xx_is_service_unavailable_and_refusals_keep_retry_after() -> None:
    async with loopback_app(refusing_app(503, {"Retry-After": "3"})) as url:
        with pytest.raises(ServiceUnavailable, match="HTTP 503"):
            await release_through(url)
    async with loopback_app(refusing_app(429, {"Retry-After": "7"})) as url:
        with pytest.raises(RateLimited, match="refused with 429") as limited:
            await release_through(url)
    assert limited.value.retry_after == 7
    async with loopback_app(refusing_app(401)) as url:
        with pytest.raises(AuthError):
            await release_through(url)


async def test_network_errors_and_timeouts_are_service_unavailable_with_a_reason() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))  # bound, never listening: refused
        transport = NativeTransport(f"http://127.0.0.1:{probe.getsockname()[1]}/v2/ep", worker_id="w1")
        await transport.open()
        try:
            with pytest.raises(ServiceUnavailable, match="ConnectionRefusedError"):
                await transport.release("j1", "t1")
            assert transport.link.down_since is not None
        finally:
            await transport.close()

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    app = web.Application()
    app.router.add_post("/v2/ep/worker/slow", slow)
    async with loopback_app(app, shutdown_timeout=0.1) as url:
        transport = NativeTransport(url + "/v2/ep", worker_id="w1")
        await transport.open()
        try:
            with pytest.raises(ServiceUnavailable, match=r"TimeoutError: no answer within 0\.2 s"):
                await transport._post("/worker/slow", b"", 0.2)
        finally:
            await transport.close()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA of the test's own and a certificate it signed for 127.0.0.1 and localhost."""
    d = tmp_path_factory.mktemp("tls")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)  # fmt: skip
    return d


def tls_server_context(certs: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs / "server.pem", certs / "server.key")
    return context


def hello_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello over {request.scheme}")

    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_post("/v2/ep/worker/jobs/{job_id}/release", hello)
    return app


async def test_https_with_an_untrusted_certificate_is_a_clear_error(certs: Path) -> None:
    async with loopback_app(hello_app(), ssl_context=tls_server_context(certs)) as url:
        assert url.startswith("https://")
        with pytest.raises(ServiceUnavailable, match=r"SSLCertVerificationError.*CERTIFICATE_VERIFY_FAILED"):
            await release_through(url)


async def test_https_trusting_a_ca_file_named_by_ssl_cert_file(
    certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certs / "ca.pem"))
    async with loopback_app(hello_app(), ssl_context=tls_server_context(certs)) as url:
        http = HttpClient({})
        try:
            answers = [await http.request("GET", url + "/hello", None, 10) for _ in range(3)]
            big = await http.request("POST", url + "/v2/ep/worker/jobs/j/release", b"x" * 3_000_000, 30)
        finally:
            await http.close()
        http = HttpClient({})
        try:  # by name too (the certificate names both)
            by_name = await http.request("GET", url.replace("127.0.0.1", "localhost") + "/hello", None, 10)
        finally:
            await http.close()
    assert [a.body for a in answers] == [b"hello over https"] * 3
    assert big.body == by_name.body == b"hello over https"


async def test_a_service_over_its_connection_cap_is_unavailable_not_a_hang(service_factory: Any) -> None:
    # The cap answers 503 on accept, before reading the request, and closes.
    svc = await service_factory(max_connections_per_client=1)
    held = await asyncio.open_connection("127.0.0.1", svc.port)  # the one connection allowed
    transport = NativeTransport(svc.endpoint_url("capped"), worker_id="w1")
    await transport.open()
    try:
        with pytest.raises(ServiceUnavailable, match=r"HTTP 503|closed the connection|Reset"):
            await asyncio.wait_for(transport.release("j1", "t1"), 10)
    finally:
        await transport.close()
        held[1].close()
