"""The client and CLI for /status-sync (status(wait=...), `status --wait`) and /requests."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from worker_kit.client import AsyncEndpoint, Endpoint

from .conftest import ScriptedWorker, cli_env, run_cli


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path)


async def test_status_wait_is_held_until_the_job_ends(endpoint_url: str, worker: ScriptedWorker) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:
        handle = await ep.run({"gate": "g", "output": {"done": 1}})
        held = asyncio.create_task(handle.status(wait=60))
        await asyncio.sleep(0.3)
        assert not held.done()
        worker.gate("g").set()
        async with asyncio.timeout(20):
            status = await held
        assert status["status"] == "COMPLETED" and status["output"] == {"done": 1}
        # A short wait answers the current state; a wait of 0 answers at once.
        queued = await ep.run({"gate": "never"})
        assert (await queued.status(wait=0.2))["status"] in ("IN_QUEUE", "IN_PROGRESS")
        with pytest.raises(ValueError):
            await queued.status(wait=-1)


async def test_requests_pages_filters_and_iterates(endpoint_url: str, worker: ScriptedWorker) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:
        failed = await ep.run({"fail": "bad"})
        await failed.wait(timeout=20)
        done = [await ep.run({"output": i}) for i in range(3)]
        for handle in done:
            await handle.wait(timeout=20)
        page = await ep.requests(limit=2)
        assert page["total"] == 4 and page["hasMore"]
        assert [e["id"] for e in page["requests"]] == [done[2].id, done[1].id]
        rest = await ep.requests(limit=2, cursor=page["cursor"], include=["output"])
        assert [e.get("output") for e in rest["requests"]] == [0, None] and not rest["hasMore"]
        only_failed = await ep.requests(status="failed")
        assert [(e["id"], e["error"]) for e in only_failed["requests"]] == [(failed.id, "bad")]
        every = [e["id"] async for e in ep.iter_requests(page_size=1)]
        assert every == [h.id for h in reversed(done)] + [failed.id]
        with pytest.raises(ValueError):
            await ep.requests(limit=0)


def _blocking(endpoint_url: str, job_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    with Endpoint(endpoint_url) as ep:
        status = ep.job(job_id).status(wait=10)
        return ep.requests(limit=5, status=["COMPLETED"]), status


async def test_blocking_client(endpoint_url: str, worker: ScriptedWorker) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:
        job = await ep.run({"output": "x"})
    page, status = await asyncio.to_thread(_blocking, endpoint_url, job.id)
    assert status["status"] == "COMPLETED"
    assert page["requests"][0]["id"] == job.id


async def test_cli_requests_table_json_and_errors(
    endpoint_url: str, worker: ScriptedWorker, env: dict[str, str]
) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:
        ids = []
        for i in range(3):
            handle = await ep.run({"fail": f"broken {i}"} if i == 0 else {"output": i})
            await handle.wait(timeout=20)
            ids.append(handle.id)
    url = ["--url", endpoint_url]
    code, out, err = await run_cli("requests", *url, "--limit", "2", env=env)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATUS", "CREATED"]
    assert [line.split()[0] for line in lines[1:]] == [ids[2], ids[1]]
    assert "2 of 3 job(s); next page: worker-kit requests --cursor " in err
    cursor = err.rsplit("--cursor ", 1)[1].strip()
    code, out, _ = await run_cli("requests", *url, "--cursor", cursor, "--json", env=env)
    page = json.loads(out)
    assert [e["id"] for e in page["requests"]] == [ids[0]] and page["requests"][0]["error"] == "broken 0"
    code, out, _ = await run_cli("requests", *url, "--all", "--json", "--limit", "1", env=env)
    assert [json.loads(line)["id"] for line in out.splitlines()] == ids[::-1]
    code, out, err = await run_cli("requests", *url, "--status", "FAILED", env=env)
    assert code == 0 and "broken 0" in out and ids[1] not in out
    code, _, err = await run_cli("requests", *url, "--status", "DONE", env=env)
    assert code == 2 and "unknown state" in err
    code, _, err = await run_cli("requests", *url, "--cursor", "garbage", env=env)
    assert code == 11 and "cursor" in err
    code, out, _ = await run_cli("requests", "--help", env=env)
    assert code == 0 and "--status" in out and "exit codes" in out


async def test_cli_status_wait_timeout_exits_10(
    endpoint_url: str, worker: ScriptedWorker, env: dict[str, str]
) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:
        job = await ep.run({"gate": "never"})
    args = ("status", job.id, "--url", endpoint_url, "--wait", "--timeout", "0.5")
    code, out, err = await run_cli(*args, env=env)
    assert code == 10 and "still" in err and out == ""
