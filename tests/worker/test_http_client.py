"""The worker's own HTTP client (worker_kit/worker/http_client.py) against real servers on loopback:
aiohttp apps, and raw sockets where a test needs bytes no framework would send."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from tests.support.servers import loopback_app
from worker_kit.worker.http_client import HttpClient, HttpResponse, LinkError
from worker_kit.worker.http_connection import Connection


def peer_port(request: web.Request) -> int:
    """The client's port: which connection a request came on."""
    return int(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient({"X-Test": "yes"})
    try:
        yield http
    finally:
        await http.close()


async def echo_app() -> web.Application:
    """POST /echo answers the body it got; GET /port which connection the request came on."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=body, content_type="application/octet-stream",
                            headers={"X-Got": request.headers.get("X-Test", ""),
                                     "X-Agent": request.headers.get("User-Agent", "")})  # fmt: skip

    async def port(request: web.Request) -> web.Response:
        return web.Response(text=str(peer_port(request)))

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/echo", echo)
    app.router.add_get("/port", port)
    return app


async def test_sequential_requests_reuse_one_connection() -> None:
    async with loopback_app(await echo_app()) as url, client() as http:
        ports = {(await http.request("GET", url + "/port", None, 10)).body for _ in range(5)}
        answer = await http.request("POST", url + "/echo", b"hello", 10)
    assert len(ports) == 1
    assert (answer.status, answer.body, answer.headers["x-got"]) == (200, b"hello", "yes")
    assert answer.headers["x-agent"].startswith("worker-kit-worker/")
    assert answer.content_type == "application/octet-stream"


async def test_concurrent_requests_each_get_a_connection_then_share_the_idle_ones() -> None:
    arrived: list[int] = []
    all_in = asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        arrived.append(peer_port(request))
        if len(arrived) == 5:
            all_in.set()
        await all_in.wait()  # answers only once all five are in flight at once
        return web.Response(text=request.query["n"])

    app = web.Application()
    app.router.add_get("/held", held)
    async with loopback_app(app) as url, client() as http:
        answers = await asyncio.wait_for(
            asyncio.gather(*(http.request("GET", f"{url}/held?n={n}", None, 10) for n in range(5))), 10
        )
        assert [a.body for a in answers] == [str(n).encode() for n in range(5)]
        assert len(set(arrived)) == 5
        arrived.clear()
        all_in.clear()
        await asyncio.gather(*(http.request("GET", f"{url}/held?n={n}", None, 10) for n in range(5)))
    assert len(set(arrived)) == 5


async def test_large_bodies_both_ways_and_a_chunked_answer() -> None:
    big = bytes(range(256)) * (6 * 4096)  # 6 MB

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(big), 700_001):  # odd sizes: chunk edges fall anywhere in a read
            await resp.write(big[i : i + 700_001])
        await resp.write_eof()
        return resp

    app = await echo_app()
    app.router.add_get("/chunked", chunked)
    async with loopback_app(app) as url, client() as http:
        echoed = await http.request("POST", url + "/echo", big, 30)
        streamed = await http.request("GET", url + "/chunked", None, 30)
        after = await http.request("POST", url + "/echo", b"small", 10)  # the connection is still sound
    assert echoed.body == big
    assert streamed.headers["transfer-encoding"] == "chunked"
    assert streamed.body == big
    assert after.body == b"small"


class RawServer:
    """A blocking socket server in a thread, answering each request with the next of `answers`
    (bytes, or a callable taking the socket). Counts connections."""

    def __init__(self, answers: list[bytes | Callable[[socket.socket], None]]) -> None:
        self.answers = answers
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                while self.answers:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        got = conn.recv(65536)
                        if not got:
                            break
                        data += got
                    if not data:
                        break  # the client closed this connection: take the next one
                    answer = self.answers.pop(0)
                    if callable(answer):
                        answer(conn)
                        break  # the callable decided this connection's fate
                    conn.sendall(answer)

    def close(self) -> None:
        self.answers.clear()
        self.sock.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def answer_then_close(closed: threading.Event) -> Callable[[socket.socket], None]:
    """An answer keeping the connection open by HTTP/1.1 rules, then the server drops it, as on
    its idle timeout; `closed` is set once the FIN is on its way."""

    def answer(conn: socket.socket) -> None:
        conn.sendall(OK)
        conn.shutdown(socket.SHUT_RDWR)
        closed.set()

    return answer


async def test_a_connection_the_server_closed_while_idle_is_replaced_not_an_error() -> None:
    server = RawServer([answer_then_close(threading.Event()), OK])
    try:
        async with client() as http:
            assert (await http.request("GET", server.url + "/a", None, 10)).body == b"ok"
            await asyncio.sleep(0.2)  # the loop sees the close
            assert (await http.request("GET", server.url + "/b", None, 10)).body == b"ok"
        assert server.connections == 2
    finally:
        server.close()


async def test_a_close_the_loop_has_not_seen_yet_is_noticed_before_reuse() -> None:
    closed = threading.Event()
    server = RawServer([answer_then_close(closed), OK])
    try:
        async with client() as http:
            assert (await http.request("GET", server.url + "/a", None, 10)).body == b"ok"
            # Blocking the loop on purpose: the server's FIN reaches our socket while the loop
            # cannot look, and the next request starts with no loop turn in between.
            assert closed.wait(10)
            time.sleep(0.05)  # noqa: ASYNC251
            assert (await http.request("GET", server.url + "/b", None, 10)).body == b"ok"
        assert server.connections == 2
    finally:
        server.close()


async def test_answers_without_length_interim_answers_and_connection_close() -> None:
    server = RawServer([
        b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\none",
        lambda conn: conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close"),
        OK,
    ])  # fmt: skip
    try:
        async with client() as http:
            assert (await http.request("GET", server.url + "/", None, 10)).body == b"final"
            assert (await http.request("GET", server.url + "/", None, 10)).body == b"one"
            answer = await http.request("GET", server.url + "/", None, 10)
            assert (answer.body, answer.content_type) == (b"until the close", "text/plain")
            assert (await http.request("GET", server.url + "/", None, 10)).body == b"ok"
        assert server.connections == 3  # new connections after "Connection: close" and after EOF
    finally:
        server.close()


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (lambda conn: None, "closed the connection before answering"),
        (lambda conn: conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
         "closed the connection in the middle of its answer"),
        (lambda conn: conn.sendall(b"HTTP/1.1 2x0 OK\r\n\r\n"), "malformed answer from the service"),
    ],
)  # fmt: skip
async def test_no_usable_answer_is_a_link_error_saying_why(answer: Any, reason: str) -> None:
    server = RawServer([answer])
    try:
        async with client() as http:
            with pytest.raises(LinkError, match=reason):
                await http.request("POST", server.url + "/", b"x", 10)
    finally:
        server.close()


async def test_timeout_covers_the_whole_request_and_spares_the_next() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query["s"]))
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/slow", slow)
    async with loopback_app(app, shutdown_timeout=0.1) as url, client() as http:
        with pytest.raises(TimeoutError, match=r"no answer within 0\.3 s"):
            await http.request("GET", url + "/slow?s=5", None, 0.3)
        assert (await http.request("GET", url + "/slow?s=0", None, 10)).body == b"late"


async def test_connection_refused_is_an_oserror() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: refused
        async with client() as http:
            with pytest.raises(ConnectionRefusedError):
                await http.request("GET", f"http://127.0.0.1:{port}/", None, 10)


async def test_close_fails_requests_in_flight_and_later_ones() -> None:
    async def hold(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    app = web.Application()
    app.router.add_get("/hold", hold)
    async with loopback_app(app, shutdown_timeout=0.1) as url:
        http = HttpClient({})
        held = asyncio.create_task(http.request("GET", url + "/hold", None, 60))
        await asyncio.sleep(0.2)
        await http.close()
        with pytest.raises(LinkError, match="client closed"):
            await held
        with pytest.raises(LinkError, match="is closed"):
            await http.request("GET", url + "/hold", None, 60)


async def test_cancelling_a_request_drops_its_connection() -> None:
    async with loopback_app(await echo_app()) as url, client() as http:
        first = (await http.request("GET", url + "/port", None, 10)).body
        task = asyncio.create_task(http.request("POST", url + "/echo", b"x" * 10_000_000, 30))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The cancelled request had taken the one idle connection: the next one is new.
        assert (await http.request("GET", url + "/port", None, 10)).body != first


async def test_an_answer_before_the_request_is_that_requests_answer() -> None:
    # The service's connection cap answers a 503 as soon as it accepts, before reading anything.
    refusal = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
               b"Content-Length: 4\r\n\r\nbusy")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def refuse() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(refusal)
                conn.recv(65536)  # the request, then close (no reset for unread bytes)

        thread = threading.Thread(target=refuse, daemon=True)
        thread.start()
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(Connection, "127.0.0.1", port)
        await asyncio.sleep(0.2)  # the 503 is in before anything was sent
        waiter: asyncio.Future[HttpResponse] = loop.create_future()
        conn.send(waiter, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", None)
        answer = await asyncio.wait_for(waiter, 10)
        conn.close()
        await conn.wait_closed(5)
        thread.join(10)
    assert (answer.status, answer.headers["retry-after"], answer.body) == (503, "1", b"busy")
    assert not conn.reusable
