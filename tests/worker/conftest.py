"""Fixtures for the worker runtime tests: real worker processes (or in-process Workers)
against the real in-process service from tests/conftest.py, whose `api_at` fixture is the
client (tests/support/api.py: the public API as raw HTTP, so these tests depend on no other
part than the service).

    async def test_x(service, spawn_worker, api_at):
        url = service.endpoint_url("ep")
        w = await spawn_worker("echo.py", url)
        api = api_at(url)
        job_id = await api.run({"x": 1})
        status = await api.wait(job_id)
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
