"""`kill -9` of a `worker-kit serve` process during a burst of /run loses no acknowledged job."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

CONFIG = """
[defaults]
rate_limits = false
backpressure = false
"""


@contextlib.asynccontextmanager
async def serve_process(
    tmp_path: Path, db: Path, name: str, *flags: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    config = tmp_path / "serve.toml"
    config.write_text(CONFIG)
    with (tmp_path / f"{name}.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker_kit",
            "serve",
            "--port",
            "0",
            "--storage",
            f"sqlite:///{db}",
            "--config",
            str(config),
            *flags,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(30):
                line = (await proc.stdout.readline()).decode()
            assert "listening on http://127.0.0.1:" in line, line
            yield proc, line.rsplit(" ", 1)[1].strip()
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_kill_9_during_a_burst_loses_no_acknowledged_job(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    acked: list[str] = []
    enough = asyncio.Event()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with serve_process(tmp_path, db, "first") as (proc, url):

            async def submitter(n: int) -> None:
                i = 0
                while True:
                    try:
                        async with session.post(f"{url}/v2/ep/run", json={"input": {"n": n, "i": i}}) as resp:
                            body = await resp.json()
                    except (TimeoutError, aiohttp.ClientError):
                        return  # the service is gone
                    assert resp.status == 200, body
                    acked.append(body["id"])
                    i += 1
                    if len(acked) >= 300:
                        enough.set()

            tasks = [asyncio.create_task(submitter(n)) for n in range(16)]
            async with asyncio.timeout(60):
                await enough.wait()
            proc.send_signal(signal.SIGKILL)  # in the middle of the burst: requests are in flight
            await proc.wait()
            async with asyncio.timeout(30):
                await asyncio.gather(*tasks)
        assert proc.returncode == -signal.SIGKILL

        async with serve_process(tmp_path, db, "second") as (_, url):
            missing = []
            for job_id in acked:
                async with session.get(f"{url}/v2/ep/status/{job_id}") as resp:
                    if resp.status != 200:
                        missing.append(job_id)
                    else:
                        assert (await resp.json())["status"] == "IN_QUEUE"
            assert missing == [], f"{len(missing)} of {len(acked)} acknowledged jobs lost"
            async with session.get(f"{url}/v2/ep/health") as resp:
                assert (await resp.json())["jobs"]["inQueue"] >= len(acked)


async def test_sigterm_answers_held_long_polls_and_exits_cleanly(tmp_path: Path) -> None:
    async with (
        serve_process(tmp_path, tmp_path / "jobs.db", "term") as (proc, url),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
    ):

        async def claim() -> tuple[int, object]:
            body = {"worker_id": "w", "wait_ms": 60_000}
            async with session.post(f"{url}/v2/ep/worker/claim", json=body) as resp:
                return resp.status, await resp.json()

        held = asyncio.create_task(claim())
        await asyncio.sleep(0.3)
        assert not held.done()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await held == (200, {"jobs": [], "lease_ms": 30_000, "result_limit": 20 * 1024 * 1024})
            assert await proc.wait() == 0


async def test_json_logs_one_object_per_line(tmp_path: Path) -> None:
    flags = ("--log-format", "json", "--log-level", "debug")
    async with (
        serve_process(tmp_path, tmp_path / "jobs.db", "json", *flags) as (proc, url),
        aiohttp.ClientSession() as session,
    ):
        async with session.post(f"{url}/v2/ep/run", json={"input": 1}) as resp:
            job_id = (await resp.json())["id"]
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
    entries = [json.loads(line) for line in (tmp_path / "json.log").read_text().splitlines()]
    assert any(
        e.get("job_id") == job_id and "submitted" in e["msg"] and e["level"] == "info" for e in entries
    )
    assert any(
        e.get("path") == "/v2/ep/run" and e.get("status") == 200 and e["level"] == "debug" for e in entries
    )
