"""`python handler.py --serve`: the whole client API on localhost, with real semantics.

One server (concurrency 2) is shared by the tests of this module; each test uses its own
gate directory, through which the handler and the test coordinate without timing guesses.
"""

from __future__ import annotations

import asyncio
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.api import Api

DevServer = Any  # conftest.DevServer: proc, url, banner, stderr(), interrupt()
SERVE_HANDLER = """
    import asyncio
    import pathlib

    import worker_kit


    async def wait_for(path):
        while not path.exists():
            await asyncio.sleep(0.01)


    @worker_kit.handler(return_aggregate_stream=True)
    async def handler(job):
        mode = job.input.get("mode", "echo")
        gate = pathlib.Path(job.input.get("dir", "."))
        if mode == "echo":
            yield job.input.get("value")
        elif mode == "stream":
            yield "first"
            await wait_for(gate / "release")
            yield "second"
        elif mode == "block":
            (gate / f"started-{job.id}").touch()
            await asyncio.sleep(3600)
        elif mode == "barrier":
            (gate / f"started-{job.id}").touch()
            while len(list(gate.glob("started-*"))) < job.input["n"]:
                await asyncio.sleep(0.01)
            yield "met"
        elif mode == "flaky":
            if not (gate / "ok").exists():
                raise RuntimeError("not yet")
            yield "recovered"


    worker_kit.start()
"""

TERMINAL = {"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, start_server: Any) -> Iterator[DevServer]:
    tmp = tmp_path_factory.mktemp("serve")
    path = tmp / "handler.py"
    path.write_text(textwrap.dedent(SERVE_HANDLER))
    srv = start_server([str(path), "--serve", "--port", "0", "--concurrency", "2"], tmp)
    yield srv
    if srv.proc.poll() is None:
        srv.proc.send_signal(signal.SIGINT)
        try:
            srv.proc.wait(timeout=20)
        except Exception:
            srv.proc.kill()
            srv.proc.wait()
    assert srv.proc.stdout is not None
    srv.proc.stdout.close()


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    return tmp_path


def _started(gate: Path) -> int:
    return len(list(gate.glob("started-*")))


async def _wait_files(gate: Path, count: int, timeout: float = 20) -> None:
    for _ in range(int(timeout / 0.02)):
        if _started(gate) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"only {_started(gate)} of {count} jobs started")


@pytest.fixture
async def api(server: DevServer) -> Any:
    async with aiohttp.ClientSession() as session:
        yield Api(session, server.url)


def test_banner_names_the_url(server: DevServer) -> None:
    assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/v2/local")
    assert any("concurrency 2" in line for line in server.banner)


async def test_runsync_and_run_with_get_and_post_status(api: Api) -> None:
    done = await api.ok("POST", "/runsync", {"input": {"value": "hi"}})
    assert done["status"] == "COMPLETED" and done["output"] == ["hi"]
    queued = await api.ok("POST", "/run", {"input": {"value": 42}})
    assert queued["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    final = await api.wait(queued["id"])
    assert final["status"] == "COMPLETED" and final["output"] == [42]
    posted = await api.ok("POST", f"/status/{queued['id']}")
    assert posted["status"] == "COMPLETED" and posted["output"] == [42]
    await api.ok("GET", "/status/no-such-job", expect=404)


async def test_stream_is_incremental(api: Api, gate: Path) -> None:
    job = await api.ok("POST", "/run", {"input": {"mode": "stream", "dir": str(gate)}})
    async with asyncio.timeout(20):
        while True:
            first = await api.ok("GET", f"/stream/{job['id']}")
            if first["stream"]:
                break
            await asyncio.sleep(0.02)
    # The first chunk arrives while the handler is still waiting to produce the second.
    assert first["stream"] == [{"output": "first"}]
    assert first["status"] == "IN_PROGRESS"
    (gate / "release").touch()
    rest: list[Any] = []
    async with asyncio.timeout(20):
        while True:
            part = await api.ok("POST", f"/stream/{job['id']}")
            rest += part["stream"]
            if part["status"] in TERMINAL and not part["stream"]:
                break
            await asyncio.sleep(0.02)
    assert rest == [{"output": "second"}]
    assert part["status"] == "COMPLETED"


async def test_cancel_stops_a_running_job(api: Api, gate: Path) -> None:
    job = await api.ok("POST", "/run", {"input": {"mode": "block", "dir": str(gate)}})
    await _wait_files(gate, 1)
    answer = await api.ok("POST", f"/cancel/{job['id']}")
    assert answer == {"id": job["id"], "status": "CANCELLED"}
    assert (await api.ok("GET", f"/status/{job['id']}"))["status"] == "CANCELLED"


async def test_retry_requeues_a_failed_job_under_the_same_id(api: Api, gate: Path) -> None:
    job = await api.ok("POST", "/run", {"input": {"mode": "flaky", "dir": str(gate)}})
    failed = await api.wait(job["id"])
    assert failed["status"] == "FAILED" and "not yet" in failed["error"]
    (gate / "ok").touch()
    answer = await api.ok("POST", f"/retry/{job['id']}")
    assert answer == {"id": job["id"], "status": "IN_QUEUE"}
    final = await api.wait(job["id"])
    assert final["status"] == "COMPLETED" and final["output"] == ["recovered"]
    assert final.get("retries") == 1
    conflict = await api.ok("POST", f"/retry/{job['id']}", expect=409)
    assert "error" in conflict


async def test_concurrency_two_runs_two_jobs_at_once(api: Api, gate: Path) -> None:
    # Each job waits until both have started: it can only finish with two slots.
    jobs = [
        await api.ok("POST", "/run", {"input": {"mode": "barrier", "n": 2, "dir": str(gate)}}) for _ in "ab"
    ]
    for job in jobs:
        final = await api.wait(job["id"])
        assert final["status"] == "COMPLETED" and final["output"] == ["met"]


async def test_purge_queue_removes_only_queued_jobs(api: Api, gate: Path) -> None:
    running = [await api.ok("POST", "/run", {"input": {"mode": "block", "dir": str(gate)}}) for _ in "ab"]
    await _wait_files(gate, 2)  # both slots busy: further jobs stay queued
    queued = [await api.ok("POST", "/run", {"input": {"value": i}}) for i in range(3)]
    for job in queued:
        assert (await api.ok("GET", f"/status/{job['id']}"))["status"] == "IN_QUEUE"
    answer = await api.ok("POST", "/purge-queue")
    assert answer["removed"] == 3
    for job in queued:
        assert (await api.ok("GET", f"/status/{job['id']}"))["status"] == "CANCELLED"
    for job in running:
        assert (await api.ok("GET", f"/status/{job['id']}"))["status"] == "IN_PROGRESS"
        await api.ok("POST", f"/cancel/{job['id']}")


async def test_health_counts_jobs_and_workers(api: Api) -> None:
    await api.ok("POST", "/runsync", {"input": {"value": 1}})
    health = await api.ok("GET", "/health")
    assert health["jobs"]["completed"] >= 1
    assert "inQueue" in health["jobs"] and "inProgress" in health["jobs"]
    assert "workers" in health


def test_ctrl_c_stops_cleanly(server: DevServer) -> None:
    # Last in the module: the shared server is stopped as a user would.
    assert server.interrupt() == 0, server.stderr()
    assert "worker_kit: stopped" in server.stderr()
