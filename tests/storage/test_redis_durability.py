"""An acknowledged submit survives a crash of Redis run with deploy/redis.conf (docs/storage.md).

The test starts its OWN redis-server (never the shared one) on a free port in tmp_path, with the
repository's configuration, submits jobs concurrently, kills Redis with SIGKILL, restarts it on
the same files and finds every job whose submit() returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker_kit.job import JobState, Policy
from worker_kit.storage.redis import RedisStorage

pytestmark = pytest.mark.redis

CONF = Path(__file__).resolve().parents[2] / "deploy" / "redis.conf"


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _redis_server(data: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (.ci/run needs it)")
    proc = subprocess.Popen(
        [binary, str(CONF), "--port", str(port), "--dir", str(data), "--bind", "127.0.0.1",
         "--logfile", str(data / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def _open(port: int) -> RedisStorage:
    storage = RedisStorage.from_url(f"redis://127.0.0.1:{port}/0?prefix=durable")
    for _ in range(100):
        try:
            await storage.open()
            return storage
        except Exception:
            await asyncio.sleep(0.05)
    raise AssertionError("the test's redis-server did not come up")


async def test_acknowledged_submits_survive_redis_kill_9(tmp_path: Path) -> None:
    port = _free_port()
    acknowledged: list[str] = []
    enough = asyncio.Event()
    with _redis_server(tmp_path, port) as proc:
        storage = await _open(port)

        async def submit(i: int) -> None:
            job = await storage.submit("ep", {"n": i}, policy=Policy(), retention_ms=60_000)
            acknowledged.append(job.id)
            if len(acknowledged) >= 50:
                enough.set()

        submits = [asyncio.create_task(submit(i)) for i in range(200)]
        await enough.wait()
        proc.kill()  # while submits are still in flight
        await asyncio.gather(*submits, return_exceptions=True)
        await storage.close()
    assert acknowledged
    with _redis_server(tmp_path, port):
        storage = await _open(port)
        try:
            for job_id in acknowledged:
                job = await storage.get("ep", job_id)
                assert job is not None and job.state is JobState.IN_QUEUE
            assert (await storage.counts("ep"))["IN_QUEUE"] >= len(acknowledged)
            claimed = await storage.claim("ep", "w1", 500, 30_000)
            assert {j.id for j in claimed} >= set(acknowledged)
        finally:
            await storage.close()
