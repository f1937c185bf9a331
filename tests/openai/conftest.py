"""Fixtures for the OpenAI passthrough tests: the real service in the test's loop and a real
worker process running examples/openai_compatible.py, reached with the official `openai` client."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from worker_kit.service.runner import RunningService

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "openai_compatible.py"
ENDPOINT = "llm"


@dataclass
class Stack:
    service: RunningService
    worker: asyncio.subprocess.Process
    log: Path
    #: Clients handed out, closed at teardown (an unclosed one leaves sockets open).
    clients: list[Any] = field(default_factory=list)

    @property
    def base(self) -> str:
        """What an `openai` client takes as base_url."""
        return self.service.endpoint_url(ENDPOINT) + "/openai/v1"

    def client(self, **kw: Any) -> Any:
        import openai

        client = openai.AsyncOpenAI(base_url=self.base, api_key="unused", max_retries=0, **kw)
        self.clients.append(client)
        return client

    def sync_client(self, **kw: Any) -> Any:
        import openai

        client = openai.OpenAI(base_url=self.base, api_key="unused", max_retries=0, **kw)
        self.clients.append(client)
        return client


async def start_worker(
    url: str, log: Path, handler: Path = EXAMPLE, **env: str
) -> asyncio.subprocess.Process:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_KIT_")}
    environ.update({"WORKER_KIT_URL": url, "WORKER_KIT_CONCURRENCY": "4", "PYTHONUNBUFFERED": "1", **env})
    with open(log, "wb") as out:  # noqa: ASYNC230 - a local file, opened once
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(handler), stdout=out, stderr=out, env=environ
        )
    async with asyncio.timeout(30):
        while b"started: handler" not in log.read_bytes():  # noqa: ASYNC240 - a small local file
            assert proc.returncode is None, log.read_text(errors="replace")  # noqa: ASYNC240
            await asyncio.sleep(0.05)
    return proc


@pytest.fixture
async def stack_factory(service_factory: Any, tmp_path: Path) -> AsyncIterator[Any]:
    """`await stack_factory(**service_overrides)` -> a Stack; the worker is killed at teardown."""
    procs: list[asyncio.subprocess.Process] = []
    stacks: list[Stack] = []

    async def make(handler: Path = EXAMPLE, **overrides: Any) -> Stack:
        service = await service_factory(**overrides)
        log = tmp_path / f"worker-{len(procs)}.log"
        proc = await start_worker(service.endpoint_url(ENDPOINT), log, handler)
        procs.append(proc)
        stacks.append(Stack(service, proc, log))
        return stacks[-1]

    yield make
    for stack in stacks:
        for client in stack.clients:
            closed = client.close()
            if asyncio.iscoroutine(closed):
                await closed
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()


@pytest.fixture
async def stack(stack_factory: Any) -> Stack:
    return await stack_factory()
