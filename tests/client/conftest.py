"""Fixtures for the client tests: a scripted worker made of plain HTTP calls to the worker
API (docs/protocol.md), so these tests need only the real service.

A job's input is its script (a dict; any other input is echoed back as the output):
    {"chunks": [...], "chunk_delay": s}   stream chunks, one request each
    {"progress": [...]}                    progress updates before anything else
    {"gate": "name"}                       hold the job (heartbeating) until the test opens the gate
    {"chunks_after": [...]}                more chunks, streamed after the gate opened
    {"hold": s}                            hold the job s seconds (heartbeating)
    {"fail": "reason"}                     end FAILED with that error
    {"fail_once": "reason"}                end FAILED the first time this job id runs, else COMPLETED
    {"output": value}                      end COMPLETED with that output (default: the input)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web


class ScriptedWorker:
    def __init__(self, url: str, *, api_key: str | None = None, concurrency: int = 4) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.concurrency = concurrency
        self.worker_id = f"scripted-{os.getpid()}-{id(self):x}"
        self.gates: dict[str, asyncio.Event] = {}
        self.held: dict[str, str] = {}  # job id -> token
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.stopped: dict[str, str] = {}  # job id -> stop reason seen on heartbeat
        self.finished: list[str] = []
        self.runs: dict[str, int] = {}  # job id -> times claimed
        self._session: aiohttp.ClientSession | None = None
        self._loops: list[asyncio.Task[None]] = []

    def gate(self, name: str) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())

    async def __aenter__(self) -> ScriptedWorker:
        self._session = aiohttp.ClientSession(headers=self.headers)
        self._loops = [asyncio.create_task(self._claim_loop()), asyncio.create_task(self._heartbeat_loop())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in [*self._loops, *self.tasks.values()]:
            task.cancel()
        await asyncio.gather(*self._loops, *self.tasks.values(), return_exceptions=True)
        assert self._session is not None
        await self._session.close()

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        assert self._session is not None
        async with self._session.post(self.url + path, json=body) as resp:
            return resp.status, await resp.json()

    async def _claim_loop(self) -> None:
        while True:
            free = self.concurrency - len(self.tasks)
            if free <= 0:
                await asyncio.sleep(0.02)
                continue
            status, answer = await self.post(
                "/worker/claim", {"worker_id": self.worker_id, "max": free, "wait_ms": 500}
            )
            assert status == 200, answer
            for job in answer["jobs"]:
                self.held[job["id"]] = job["token"]
                self.tasks[job["id"]] = asyncio.create_task(self._run(job))

    async def _heartbeat_loop(self) -> None:
        while True:
            if self.held:
                body = {"worker_id": self.worker_id, "jobs": dict(self.held), "wait_ms": 300}
                status, answer = await self.post("/worker/heartbeat", body)
                assert status == 200, answer
                for stop in answer["stop"]:
                    self.stopped[stop["id"]] = stop["reason"]
                    self.held.pop(stop["id"], None)
                    task = self.tasks.get(stop["id"])
                    if task is not None:
                        task.cancel()
            else:
                await asyncio.sleep(0.05)

    async def _run(self, job: dict[str, Any]) -> None:
        job_id, token, script = job["id"], job["token"], job["input"]
        try:
            if not isinstance(script, dict):
                script = {"output": script}
            seq = 0
            for value in script.get("progress", []):
                await self._output(job_id, token, [{"seq": seq, "kind": "progress", "data": value}])
                seq += 1
            for chunk in script.get("chunks", []):
                await self._output(job_id, token, [{"seq": seq, "kind": "chunk", "data": chunk}])
                seq += 1
                await asyncio.sleep(script.get("chunk_delay", 0))
            if "gate" in script:
                await self.gate(script["gate"]).wait()
            for chunk in script.get("chunks_after", []):
                await self._output(job_id, token, [{"seq": seq, "kind": "chunk", "data": chunk}])
                seq += 1
            await asyncio.sleep(script.get("hold", 0))
            body: dict[str, Any] = {"token": token}
            self.runs[job_id] = self.runs.get(job_id, 0) + 1
            error = script.get("fail") or (script.get("fail_once") if self.runs[job_id] == 1 else None)
            if error:
                body.update(state="FAILED", error=error,
                            error_detail={"type": "RuntimeError", "message": error, "traceback": ""})
            else:
                body.update(state="COMPLETED", output=script.get("output", job["input"]))
            status, answer = await self.post(f"/worker/jobs/{job_id}/finish", body)
            assert status in (200, 409), answer
            self.finished.append(job_id)
        finally:
            self.held.pop(job_id, None)
            self.tasks.pop(job_id, None)

    async def _output(self, job_id: str, token: str, items: list[dict[str, Any]]) -> None:
        status, answer = await self.post(f"/worker/jobs/{job_id}/output", {"token": token, "items": items})
        assert status == 200, answer


@pytest.fixture
async def endpoint_url(service: Any) -> str:
    return service.endpoint_url("client-tests")


@pytest.fixture
async def worker(endpoint_url: str) -> AsyncIterator[ScriptedWorker]:
    async with ScriptedWorker(endpoint_url) as w:
        yield w


class WebhookReceiver:
    """An aiohttp server on 127.0.0.1 that records webhook POSTs; answers `fail_first` 500s."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.delivered = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        if len(self.calls) <= self.fail_first:
            return web.Response(status=500, text="not yet")
        self.delivered.set()
        return web.Response(text="ok")

    async def __aenter__(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_KIT_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env


async def run_cli(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None,
                  timeout: float = 30) -> tuple[int, str, str]:
    """`worker-kit ARGS` as a subprocess: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker_kit", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class ThreadedStack:
    """The real service and a scripted worker on their own loop in a thread, so a test can
    call the blocking client from a thread that has no loop, or from one whose loop is busy."""

    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        self.tmp_path, self.overrides = tmp_path, overrides
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self.worker: ScriptedWorker | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="threaded-stack", daemon=True)

    def __enter__(self) -> ThreadedStack:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        import dataclasses

        from worker_kit.service.config import ServiceConfig
        from worker_kit.service.runner import run_service

        config = ServiceConfig(port=0, storage=f"sqlite:///{self.tmp_path}/threaded.db", lease_ms=2000,
                               sweep_interval_s=0.1, deadline_grace_ms=500, shutdown_timeout_s=2.0)
        self._stop = asyncio.Event()
        async with run_service(dataclasses.replace(config, **self.overrides)) as svc:
            self.url = svc.endpoint_url("sync-tests")
            async with ScriptedWorker(self.url) as worker:
                self.worker = worker
                self._ready.set()
                await self._stop.wait()

    def open_gate(self, name: str) -> None:
        assert self.worker is not None
        worker = self.worker
        self.loop.call_soon_threadsafe(lambda: worker.gate(name).set())


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ThreadedStack]:
    with ThreadedStack(tmp_path) as threaded:
        yield threaded


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 whose open connections a test can sever at will."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        await self._server.wait_closed()

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

