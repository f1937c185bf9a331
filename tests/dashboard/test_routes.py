"""The dashboard's routes without a browser: the page and its files, the push feed, a job's
details, and the bounded memory behind them (#11)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

import aiohttp

from worker_kit.job import JobRecord, JobState
from worker_kit.service.activity import MAX_ENDPOINTS, MinuteStats, percentile
from worker_kit.service.config import EndpointConfig
from worker_kit.service.dashboard import PREVIEW_CHARS

from .conftest import CLIENT_KEY, WORKER_KEY, Endpoint

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


async def read_events(resp: aiohttp.ClientResponse, count: int) -> list[tuple[str, Any]]:
    """The first `count` events of an SSE response."""
    events: list[tuple[str, Any]] = []
    buffer = b""
    while len(events) < count:
        piece = await resp.content.readany()
        assert piece, "the feed ended"
        buffer += piece
        while b"\n\n" in buffer and len(events) < count:
            block, buffer = buffer.split(b"\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.decode().splitlines() if ": " in line)
            events.append((fields["event"], json.loads(fields["data"])))
    return events


async def test_page_and_its_files_are_served_from_the_package(service: Any, session: Any) -> None:
    async with session.get(service.url + "/") as resp:
        assert resp.status == 200 and 'href="/dashboard"' in await resp.text()
    async with session.get(service.url + "/dashboard") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert '<script src="/dashboard/dashboard.js"' in page and "http" not in page.split("<body>")[0]
    for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        async with session.get(f"{service.url}/dashboard/{name}") as resp:
            assert resp.status == 200 and resp.content_type == kind and len(await resp.read()) > 1000
    async with session.post(service.endpoint_url("seen") + "/run", json={"input": 1}) as resp:
        assert resp.status == 200
    async with session.get(service.url + "/dashboard/endpoints") as resp:
        assert resp.status == 200 and (await resp.json())["endpoints"] == ["seen"]
    async with session.get(service.url + "/dashboard/secrets.txt") as resp:
        assert resp.status == 404 and "no dashboard file" in (await resp.json())["error"]


async def test_feed_pushes_a_snapshot_per_change(keyed: Any, session: Any) -> None:
    ep = Endpoint(session, keyed.endpoint_url("ep"))
    feed = keyed.endpoint_url("ep") + "/dashboard/feed"
    async with session.get(feed) as resp:
        assert resp.status == 401
    async with session.get(feed, headers={"Authorization": f"Bearer {WORKER_KEY}"}) as resp:
        assert resp.status == 403
    async with session.get(feed + "?state=DONE", headers=AUTH) as resp:
        assert resp.status == 400 and "unknown state" in (await resp.json())["error"]

    first_id = await ep.run({"n": 1})
    async with session.get(feed, headers=AUTH) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        [(event, snap)] = await read_events(resp, 1)
        assert event == "snapshot" and snap["endpoint"] == "ep"
        assert snap["load"]["inQueue"] == 1 and snap["load"]["desiredWorkers"] == 1
        assert [r["id"] for r in snap["requests"]] == [first_id]
        assert snap["requests"][0]["status"] == "IN_QUEUE" and snap["workers"] == []
        assert len(snap["series"]["completed"]) == 15
        second_id = await ep.run({"n": 2})
        for _ in range(10):  # the submit wakes the feed; a recheck may come first
            [(event, snap)] = await read_events(resp, 1)
            if len(snap["requests"]) == 2:
                break
        assert [r["id"] for r in snap["requests"]] == [second_id, first_id]
        assert snap["load"]["inQueue"] == 2


async def test_feed_filters_requests_by_state(keyed: Any, session: Any) -> None:
    ep = Endpoint(session, keyed.endpoint_url("ep"))
    queued = await ep.run(1)
    cancelled = await ep.run(2)
    assert (await ep.call("POST", f"/cancel/{cancelled}"))[0] == 200
    feed = keyed.endpoint_url("ep") + "/dashboard/feed"
    async with session.get(feed + "?state=CANCELLED,FAILED", headers=AUTH) as resp:
        [(_, snap)] = await read_events(resp, 1)
    assert [(r["id"], r["status"]) for r in snap["requests"]] == [(cancelled, "CANCELLED")]
    async with session.get(feed + "?state=IN_QUEUE", headers=AUTH) as resp:
        [(_, snap)] = await read_events(resp, 1)
    assert [r["id"] for r in snap["requests"]] == [queued]


async def test_job_details_show_input_unless_turned_off(service_factory: Any, session: Any) -> None:
    svc = await service_factory(
        endpoints={"open": EndpointConfig(), "private": EndpointConfig(dashboard_inputs=False)}
    )
    open_ep = Endpoint(session, svc.endpoint_url("open"), key=None)
    private = Endpoint(session, svc.endpoint_url("private"), key=None)
    job_id = await open_ep.run({"prompt": "hi"})
    status, detail = await open_ep.call("GET", f"/dashboard/jobs/{job_id}")
    assert status == 200 and detail["input"] == {"prompt": "hi"} and detail["status"] == "IN_QUEUE"
    assert detail["attempt"] == 0 and detail["policy"]["ttl"] > 0 and "output" not in detail
    big_id = await open_ep.run("x" * (PREVIEW_CHARS + 10))
    status, detail = await open_ep.call("GET", f"/dashboard/jobs/{big_id}")
    assert "input" not in detail and len(detail["inputPreview"]) == PREVIEW_CHARS
    secret_id = await private.run({"password": "hunter2"})
    status, detail = await private.call("GET", f"/dashboard/jobs/{secret_id}")
    assert status == 200 and detail["inputHidden"] is True and "hunter2" not in json.dumps(detail)
    status, body = await open_ep.call("GET", "/dashboard/jobs/nope")
    assert status == 404 and "not found" in body["error"]
    status, body = await open_ep.call("GET", f"/dashboard/jobs/{secret_id}")  # another endpoint's job
    assert status == 404


def ended(endpoint: str, state: JobState, delay_s: float, run_s: float) -> JobRecord:
    job = JobRecord(id="j", endpoint=endpoint, input=None, state=state, created_at=1000.0)
    job.started_at = job.created_at + delay_s
    job.finished_at = job.started_at + run_s
    return job


def test_minute_stats_give_counts_and_percentiles_and_stay_bounded() -> None:
    stats = MinuteStats()
    for run_s in (0.125, 0.25, 0.375, 0.5, 1.0):
        stats.job_ended(ended("ep", JobState.COMPLETED, 0.0625, run_s))
    stats.job_ended(ended("ep", JobState.FAILED, 0.0625, 2.0))
    series = stats.series("ep")
    assert series["completed"][-1] == 5 and series["failed"][-1] == 1
    assert series["execP50"][-1] == 375 and series["execP95"][-1] == 2000
    assert series["delayP50"][-1] == 62
    assert sum(series["completed"][:-1]) == 0 and series["execP50"][0] is None
    assert percentile([], 50) is None and percentile([5.0], 95) == 5.0
    for i in range(MAX_ENDPOINTS + 500):
        stats.job_ended(ended(f"made-up-{i}", JobState.COMPLETED, 0.0625, 0.125))
    assert len(stats._minutes) == MAX_ENDPOINTS and stats.series("ep")["completed"][-1] == 0


async def test_job_details_follow_a_run_progress_then_output(service: Any, session: Any) -> None:
    ep = Endpoint(session, service.endpoint_url("ep"), key=None)
    job_id = await ep.run({"prompt": "hi"})
    status, body = await ep.call("POST", "/worker/claim", {"worker_id": "w1", "max": 1, "wait_ms": 1000})
    assert status == 200
    [job] = body["jobs"]
    progress = {"token": job["token"], "items": [{"seq": 0, "kind": "progress", "data": {"pct": 50}}]}
    assert (await ep.call("POST", f"/worker/jobs/{job_id}/output", progress))[0] == 200
    status, detail = await ep.call("GET", f"/dashboard/jobs/{job_id}")
    assert status == 200 and detail["status"] == "IN_PROGRESS" and detail["progress"] == {"pct": 50}
    assert detail["attempt"] == 1 and detail["workerId"] == "w1" and detail["startedAt"] is not None
    finish = {"token": job["token"], "state": "COMPLETED", "output": {"text": "done"}}
    assert (await ep.call("POST", f"/worker/jobs/{job_id}/finish", finish))[0] == 200
    status, detail = await ep.call("GET", f"/dashboard/jobs/{job_id}")
    assert status == 200 and detail["status"] == "COMPLETED" and detail["output"] == {"text": "done"}
    assert detail["completedAt"] >= detail["startedAt"]


async def test_an_open_feed_ends_cleanly_when_the_service_stops(session: Any, tmp_path: Any) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker_kit", "serve", "--port", "0", "--storage", "sqlite://:memory:",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        url = line.rsplit(" ", 1)[1].strip()
        async with session.get(url + "/v2/ep/dashboard/feed") as resp:
            [(event, _)] = await read_events(resp, 1)
            assert event == "snapshot"
            proc.send_signal(signal.SIGTERM)
            rest = await asyncio.wait_for(resp.content.read(), 30)  # the stream ends, it does not hang
            assert b"event: error" not in rest
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
