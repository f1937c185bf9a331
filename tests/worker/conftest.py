"""Fixtures for the worker runtime tests: real worker processes (or in-process Workers)
against the real in-process service from tests/conftest.py, and a tiny HTTP client of the
public API (plain aiohttp, so these tests depend on no other part than the service).

    async def test_x(service, spawn_worker, api):
        url = service.endpoint_url("ep")
        w = await spawn_worker("echo.py", url)
        job_id = await api.run(url, {"x": 1})
        status = await api.wait(url, job_id)
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

HANDLERS = Path(__file__).parent / "handlers"


async def until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    """Poll `check()` (sync or async) until it is truthy."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)
TERMINAL = {"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"}


class Api:
    """The public client API, as raw HTTP."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, url, json=body) as resp:
            return resp.status, await resp.json(content_type=None)

    async def run(self, url: str, input: Any, policy: dict[str, Any] | None = None) -> str:
        body: dict[str, Any] = {"input": input}
        if policy:
            body["policy"] = policy
        status, reply = await self.call("POST", url + "/run", body)
        assert status == 200, reply
        return reply["id"]

    async def status(self, url: str, job_id: str) -> dict[str, Any]:
        status, reply = await self.call("GET", f"{url}/status/{job_id}")
        assert status == 200, reply
        return reply

    async def wait(self, url: str, job_id: str, timeout: float = 20.0, states: set[str] = TERMINAL) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                st = await self.status(url, job_id)
                if st["status"] in states:
                    return st
                await asyncio.sleep(0.02)

    async def cancel(self, url: str, job_id: str) -> dict[str, Any]:
        status, reply = await self.call("POST", f"{url}/cancel/{job_id}")
        assert status == 200, reply
        return reply

    async def chunks(self, url: str, job_id: str) -> list[Any]:
        """Every stream chunk of the job so far, read with the non-consuming cursor (one
        answer holds a bounded number of bytes: follow the cursor until a page is empty)."""
        out: list[Any] = []
        cursor = 0
        while True:
            status, reply = await self.call("GET", f"{url}/stream/{job_id}?cursor={cursor}")
            assert status == 200, reply
            if not reply["stream"]:
                return out
            out.extend(c["output"] for c in reply["stream"])
            cursor = reply["cursor"]


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session)


class WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = 20.0) -> int:
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def wait_log(self, text: str, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while text not in self.logs():
                if self.proc.returncode is not None:
                    raise AssertionError(f"worker exited {self.proc.returncode} before logging {text!r}:\n"
                                         + self.logs())
                await asyncio.sleep(0.02)


SpawnWorker = Callable[..., Any]


@pytest.fixture
async def spawn_worker(tmp_path: Path) -> AsyncIterator[SpawnWorker]:
    """`await spawn_worker("echo.py", url, *args, **env)`: `python handlers/echo.py args` with
    WORKER_KIT_URL=url and WORKER_KIT_<KEY>=value for each env item; killed at teardown.
    `via_cli=True` starts `python -m worker_kit work handlers/echo.py args` instead."""
    procs: list[WorkerProcess] = []

    async def spawn(
        handler_file: str, url: str, *args: str, cwd: Path | None = None, via_cli: bool = False, **env: Any
    ) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(procs)}.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_KIT_")}
        environ.update({"WORKER_KIT_URL": url, "WORKER_KIT_LOG_LEVEL": "DEBUG", "PYTHONUNBUFFERED": "1"})
        environ.update({f"WORKER_KIT_{k.upper()}": str(v) for k, v in env.items()})
        log = open(log_path, "wb")  # noqa: ASYNC230 - a local file, opened once per worker
        try:
            cli = ["-m", "worker_kit", "work"] if via_cli else []
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *cli, str(HANDLERS / handler_file), *args,
                stdout=log, stderr=log, env=environ, cwd=str(cwd or tmp_path),
            )
        finally:
            log.close()
        wp = WorkerProcess(proc, log_path)
        procs.append(wp)
        await wp.wait_log("started: handler")
        return wp

    yield spawn
    for wp in procs:
        if wp.proc.returncode is None:
            wp.proc.send_signal(signal.SIGKILL)
            await wp.proc.wait()


def make_handler(fn: Callable[..., Any], **options: Any) -> Any:
    from worker_kit.worker.registry import Handler

    return Handler(fn=fn, name=options.pop("name", "test_handler"), **options)


@pytest.fixture
async def start_worker() -> AsyncIterator[Callable[..., Any]]:
    """`await start_worker(fn_or_handler, url, **worker_kwargs)`: an in-process Worker running
    in the test's loop; stopped (grace 0) at teardown. `worker.task` is its run() task."""
    from worker_kit.worker.loop import Worker
    from worker_kit.worker.registry import Handler

    workers: list[Any] = []

    async def start(handler: Any, url: str, **kwargs: Any) -> Any:
        if not isinstance(handler, Handler):
            handler = make_handler(handler)
        kwargs.setdefault("stuck_grace_s", 2.0)
        worker = Worker(handler, url, **kwargs)
        worker.task = asyncio.create_task(worker.run())
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        if not worker.task.done():
            await asyncio.wait_for(worker.stop(grace_s=0), 15)
        await worker.task
