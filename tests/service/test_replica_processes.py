"""Two `worker-kit serve` processes on one Redis, with workers attached to different replicas and
clients on both: what one replica starts, the other sees, wakes and finishes; a replica killed
with SIGKILL, or Redis itself restarted, loses no acknowledged job.

Each test uses its own key prefix on the shared Redis (never flushed), or its own redis-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from worker_kit.client import AsyncEndpoint
from worker_kit.client.async_api import AsyncJobHandle
from worker_kit.errors import ServiceError, ServiceUnavailable

pytest.importorskip("redis")
pytest.importorskip("worker_kit.storage.redis")
pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
EP = "replicas"
ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"}

CONFIG = """
lease_ms = 1500
sweep_interval_s = 0.1
deadline_grace_ms = 500
shutdown_timeout_s = 2.0
log_level = "warning"
[defaults]
rate_limits = false
backpressure = false
"""

HANDLER = """
import asyncio, pathlib
import worker_kit

@worker_kit.handler(return_aggregate_stream=True)
async def work(job):
    kind = job.input.get("kind")
    if kind == "ticks":
        for i in range(job.input["n"]):
            yield i
            await asyncio.sleep(0.02)
        return
    if kind == "hold":
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            pathlib.Path(job.input["marker"]).write_text("interrupted")
            raise
    await asyncio.sleep(job.input.get("sleep", 0))
    yield {"echo": job.input.get("n")}

worker_kit.start()
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_KIT_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


class Group:
    """Processes of one test: replicas, workers, maybe a redis-server; all killed at the end."""

    def __init__(self, tmp_path: Path, storage: str) -> None:
        self.tmp_path, self.storage = tmp_path, storage
        self.procs: list[subprocess.Popen[str]] = []
        (tmp_path / "worker-kit.toml").write_text(CONFIG)
        (tmp_path / "handler.py").write_text(HANDLER)

    def replica(self) -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker_kit", "serve", "--port", "0", "--storage", self.storage,
             "--config", str(self.tmp_path / "worker-kit.toml")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env(),
        )  # fmt: skip
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, f"replica did not start: {line!r}"
        return proc, f"{line.rsplit(' ', 1)[1].strip()}/v2/{EP}"

    def worker(self, url: str, concurrency: int = 4) -> subprocess.Popen[str]:
        env = {**_env(), "WORKER_KIT_URL": url, "WORKER_KIT_CONCURRENCY": str(concurrency)}
        proc = subprocess.Popen(
            [sys.executable, str(self.tmp_path / "handler.py")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, env=env,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    prefix = f"wk-test-{secrets.token_hex(6)}"
    made = Group(tmp_path, f"{REDIS_URL}?prefix={prefix}")
    try:
        yield made
    finally:
        made.stop_all()
        import redis as redis_sync

        client = redis_sync.Redis.from_url(REDIS_URL)
        try:  # this test's keys only: the shared Redis is never flushed
            keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _all_terminal(endpoint: AsyncEndpoint, ids: list[str], timeout: float) -> dict[str, str]:
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job_id in [i for i in ids if states.get(i) not in TERMINAL]:
            with contextlib.suppress(ServiceError, ServiceUnavailable):
                states[job_id] = (await AsyncJobHandle(endpoint, job_id).status())["status"]
        if all(states.get(i) in TERMINAL for i in ids):
            break
        await asyncio.sleep(0.2)
    return states


# -- one job, two replicas -----------------------------------------------------------------------------


async def test_claim_through_one_replica_and_report_through_the_other(
    group: Group, session: aiohttp.ClientSession
) -> None:
    (_, a), (_, b) = group.replica(), group.replica()
    async with AsyncEndpoint(a) as client_a:
        handle = await client_a.run({"n": 1})
    async with session.post(f"{b}/worker/claim", json={"worker_id": "w1", "max": 1, "wait_ms": 5000}) as r:
        assert r.status == 200
        [job] = (await r.json())["jobs"]
    assert job["id"] == handle.id
    body = {"token": job["token"], "state": "COMPLETED", "output": {"via": "a"}}
    async with session.post(f"{a}/worker/jobs/{job['id']}/finish", json=body) as r:
        assert r.status == 200, await r.text()
    stale = {**body, "token": "0" * 32}
    async with session.post(f"{b}/worker/jobs/{job['id']}/finish", json=stale) as r:
        assert r.status == 409  # fencing holds across replicas
    async with AsyncEndpoint(b) as client_b:
        assert await AsyncJobHandle(client_b, handle.id).output(timeout=10) == {"via": "a"}


async def test_a_cancel_sent_to_one_replica_reaches_a_worker_held_by_the_other(
    group: Group, tmp_path: Path
) -> None:
    (_, a), (_, b) = group.replica(), group.replica()
    group.worker(b, concurrency=1)
    marker = tmp_path / "interrupted"
    async with AsyncEndpoint(a) as client_a:
        handle = await client_a.run({"kind": "hold", "marker": str(marker)})
        for _ in range(150):
            if (await handle.status())["status"] == "IN_PROGRESS":
                break
            await asyncio.sleep(0.1)
        assert (await handle.cancel())["status"] == "CANCELLED"
    for _ in range(150):  # the worker's handler is interrupted: the cancel reached it through b
        if marker.exists():
            break
        await asyncio.sleep(0.1)
    assert marker.read_text() == "interrupted"


async def test_runsync_and_server_sent_events_are_woken_across_replicas(group: Group) -> None:
    (_, a), (_, b) = group.replica(), group.replica()
    group.worker(b)  # every job runs on a worker attached to b; every client talks to a
    async with AsyncEndpoint(a) as client_a:
        assert await client_a.run_sync({"n": 7}, timeout=30) == [{"echo": 7}]
        handle = await client_a.run({"kind": "ticks", "n": 20})
        chunks = [chunk async for chunk in handle.stream()]
    assert chunks == list(range(20))
    assert client_a.push is not False  # delivered by Server-Sent Events, not by polling


# -- failures --------------------------------------------------------------------------------------------


async def _load(clients: list[AsyncEndpoint], jobs: int, during: Any) -> list[str]:
    """Submit `jobs` jobs round robin through `clients`, calling `during()` halfway; the ids of
    those the service acknowledged."""
    acknowledged: list[str] = []
    for n in range(jobs):
        if n == jobs // 2:
            await during()
        for client in clients[n % len(clients):] + clients[: n % len(clients)]:
            try:
                acknowledged.append((await client.run({"n": n, "sleep": 0.02})).id)
                break
            except (ServiceError, ServiceUnavailable):
                continue  # not acknowledged: try the next replica
    return acknowledged


async def test_a_replica_killed_under_load_loses_no_acknowledged_job(group: Group) -> None:
    (proc_a, a), (_, b) = group.replica(), group.replica()
    group.worker(a, concurrency=2)
    group.worker(b, concurrency=2)

    async def kill_a() -> None:
        proc_a.send_signal(signal.SIGKILL)
        proc_a.wait(timeout=10)

    async with AsyncEndpoint(a, retries=0) as client_a, AsyncEndpoint(b) as client_b:
        ids = await _load([client_a, client_b], 60, kill_a)
        assert len(ids) >= 45
        states = await _all_terminal(client_b, ids, timeout=90)
    assert all(states.get(job_id) in TERMINAL for job_id in ids), states
    assert sum(s == "COMPLETED" for s in states.values()) == len(ids), states


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_server(port: int, data: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "",
         "--appendonly", "yes", "--appendfsync", "always"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    for _ in range(100):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server program")
async def test_redis_restarted_under_load_loses_no_acknowledged_job(tmp_path: Path) -> None:
    port, data = _free_port(), tmp_path / "redis-data"
    data.mkdir()
    group = Group(tmp_path, f"redis://127.0.0.1:{port}/0")
    servers = [_redis_server(port, data)]
    try:
        (_, a), (_, b) = group.replica(), group.replica()
        group.worker(a, concurrency=2)
        group.worker(b, concurrency=2)

        async def crash_and_restart_redis() -> None:
            servers[-1].send_signal(signal.SIGKILL)  # a crash: only the append-only file remains
            servers[-1].wait(timeout=10)
            await asyncio.sleep(1.0)
            servers.append(_redis_server(port, data))

        async with AsyncEndpoint(a, retries=2) as client_a, AsyncEndpoint(b, retries=2) as client_b:
            ids = await _load([client_a, client_b], 40, crash_and_restart_redis)
            assert len(ids) >= 30
            states = await _all_terminal(client_b, ids, timeout=90)
        assert all(states.get(job_id) == "COMPLETED" for job_id in ids), states
    finally:
        group.stop_all()
        for server in servers:
            if server.poll() is None:
                server.kill()
                server.wait(timeout=10)


# -- the store unreachable ----------------------------------------------------------------------------


def _serve_once(storage: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker_kit", "serve", "--port", "0", "--storage", storage],
        capture_output=True, text=True, timeout=60, env=_env(),
    )  # fmt: skip


def test_serve_names_an_unreachable_redis_in_one_line() -> None:
    result = _serve_once(f"redis://127.0.0.1:{_free_port()}/0")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("worker-kit serve: cannot open storage")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server program")
def test_serve_names_a_redis_that_refuses_the_password(tmp_path: Path) -> None:
    port = _free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--requirepass", "the-right-password", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        for url in (f"redis://127.0.0.1:{port}/0", f"redis://:wrong@127.0.0.1:{port}/0"):
            result = _serve_once(url)
            assert result.returncode == 2, result.stderr
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
            assert "cannot open storage" in lines[0] and "wrong" not in lines[0]  # no password echoed
    finally:
        server.kill()
        server.wait(timeout=10)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server program")
async def test_requests_get_503_while_redis_is_down_and_resume_after(tmp_path: Path) -> None:
    port, data = _free_port(), tmp_path / "redis-data"
    data.mkdir()
    group = Group(tmp_path, f"redis://127.0.0.1:{port}/0")
    server = _redis_server(port, data)
    try:
        _, a = group.replica()
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{a}/run", json={"input": 1}) as resp:
                assert resp.status == 200
                job_id = (await resp.json())["id"]
            server.send_signal(signal.SIGKILL)
            server.wait(timeout=10)
            async with session.get(f"{a}/status/{job_id}") as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"].isdigit()
                assert "the job store is unreachable" in (await resp.json())["error"]
            server = _redis_server(port, data)
            for _ in range(100):
                async with session.get(f"{a}/status/{job_id}") as resp:
                    if resp.status == 200:
                        assert (await resp.json())["status"] == "IN_QUEUE"  # kept by the append-only file
                        break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the replica did not resume after Redis came back")
    finally:
        group.stop_all()
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
