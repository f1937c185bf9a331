"""The SQLite backend's counts per state (kept in memory since schema 3: counting.py) against its
rows: after every kind of transition, after a reopen, after a kill -9 of a real service, and
after the upgrade of a schema-2 file."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.api import Api
from worker_kit.errors import QueueFull
from worker_kit.job import JobState, Policy
from worker_kit.protocol import OutputItem
from worker_kit.storage.rules import FakeClock
from worker_kit.storage.sqlite.backend import SQLiteStorage
from worker_kit.storage.sqlite.schema import SCHEMA_VERSION

EP = "ep"
SCHEMA_3 = Path(__file__).parent / "data" / "schema3.sql"
SCHEMA_2 = Path(__file__).parent / "data" / "schema2.sql"


def counted_from_rows(path: Path, endpoint: str) -> dict[str, int]:
    """What the counts must be: the rows counted by a connection of their own."""
    counts = {state.value: 0 for state in JobState}
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT state, count(*) FROM jobs WHERE endpoint = ? GROUP BY state", (endpoint,))
        counts.update(dict(rows.fetchall()))
        retried = conn.execute("SELECT sum(retried) FROM endpoint_stats WHERE endpoint = ?", (endpoint,))
        counts["retried"] = retried.fetchone()[0] or 0
    return counts


async def test_counts_follow_every_transition(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    clock = FakeClock()
    storage = SQLiteStorage.from_url(f"sqlite:///{path}", clock=clock)
    await storage.open()
    seen: list[dict[str, int]] = []

    async def check() -> None:
        counts = await storage.counts(EP)
        assert counts == counted_from_rows(path, EP)
        seen.append(counts)

    try:
        short, long = Policy(execution_timeout_ms=1000, ttl_ms=60_000), Policy(ttl_ms=60_000)
        jobs = [await storage.submit(EP, i, policy=short if i == 6 else long, retention_ms=5000)
                for i in range(10)]  # fmt: skip
        await check()
        claimed = await storage.claim(EP, "w1", 1, 30_000, concurrency=1)  # the one-statement claim
        claimed += await storage.claim(EP, "w1", 5, 30_000, concurrency=6)
        claimed += await storage.claim(EP, "w2", 1, 30_000)  # no concurrency stated
        await check()
        a, b, c, d, _, f, _ = claimed
        await storage.finish(EP, a.id, a.token or "", JobState.COMPLETED, output=1)
        await storage.finish(EP, b.id, b.token or "", JobState.FAILED, error="x",
                             items=[OutputItem(0, "chunk", "c")])  # fmt: skip
        await storage.finish(EP, b.id, b.token or "", JobState.FAILED, error="x")  # a repeat: no change
        await check()
        await storage.cancel(EP, c.id)  # running
        await storage.cancel(EP, jobs[9].id)  # queued
        await storage.cancel(EP, a.id)  # ended already: no change
        await check()
        await storage.retry(EP, b.id)
        assert await storage.release(EP, d.id, d.token or "")
        await check()
        await storage.purge(EP, limit=1)
        await check()
        # The sweep: the fifth job's lease runs out (requeued), the seventh's execution timeout
        # (a second) is past, the sixth's worker renews its lease; then every time to live.
        clock.advance(31)
        await storage.heartbeat(EP, "w1", {f.id: f.token or ""}, 30_000)
        await storage.sweep(max_attempts=3, deadline_grace_ms=0)
        await check()
        clock.advance(3600)
        await storage.sweep(max_attempts=1, deadline_grace_ms=0)
        await check()
        clock.advance(60)  # past every retention: the records go
        await storage.sweep(max_attempts=1, deadline_grace_ms=0)
        await check()
    finally:
        await storage.close()
    assert seen[-1] == {**{s.value: 0 for s in JobState}, "retried": seen[-1]["retried"]}
    assert seen[-1]["retried"] == 2  # one by /retry, one by its lost lease
    assert len({tuple(sorted(c.items())) for c in seen}) == len(seen)  # each step changed something
    storage = SQLiteStorage.from_url(f"sqlite:///{path}")
    await storage.open()
    try:
        assert await storage.counts(EP) == seen[-1]  # counted again from the rows at open
    finally:
        await storage.close()


async def test_queue_limit_counts_the_submits_of_the_same_batch(tmp_path: Path) -> None:
    # Several submits committed together (one event-loop turn): each sees those before it.
    storage = SQLiteStorage.from_url(f"sqlite:///{tmp_path / 'jobs.db'}")
    await storage.open()
    try:
        got = await asyncio.gather(
            *(storage.submit(EP, i, policy=Policy(), retention_ms=5000, queue_limit=2) for i in range(6)),
            return_exceptions=True,
        )
        assert sum(isinstance(r, QueueFull) for r in got) == 3
        assert (await storage.counts(EP))["IN_QUEUE"] == 3
    finally:
        await storage.close()


async def test_counts_agree_with_the_rows_after_kill_9_of_the_service(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker_kit", "serve", "--port", "0", "--storage", f"sqlite:///{path}",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        while b"listening on" not in (line := await asyncio.wait_for(proc.stdout.readline(), 30)):
            assert line, f"the service exited with code {await proc.wait()}"
        url = line.decode().split("listening on", 1)[1].strip()
        async with aiohttp.ClientSession() as session:
            api = Api(session, f"{url}/v2/{EP}")
            ids = [await api.run({"n": i}) for i in range(12)]
            status, body = await api.post("/worker/claim", {"worker_id": "w", "max": 6, "wait_ms": 0})
            assert status == 200, body
            claimed = body["jobs"]
            for job, state in zip(claimed, ["COMPLETED", "COMPLETED", "COMPLETED", "FAILED"], strict=False):
                status, body = await api.post(f"/worker/jobs/{job['id']}/finish",
                                              {"token": job["token"], "state": state})  # fmt: skip
                assert status == 200, body
            await api.cancel(ids[-1])
            await api.cancel(ids[-2])
            expected = {"IN_QUEUE": 4, "IN_PROGRESS": 2, "COMPLETED": 3, "FAILED": 1, "CANCELLED": 2}
            health = await api.ok("GET", "/health")
            assert health["jobs"] == {"inQueue": 4, "inProgress": 2, "completed": 3, "failed": 1,
                                      "cancelled": 2, "timedOut": 0, "retried": 0}  # fmt: skip
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    storage = SQLiteStorage.from_url(f"sqlite:///{path}")
    await storage.open()
    try:
        counts = await storage.counts(EP)
        assert counts == counted_from_rows(path, EP)
        assert {k: counts[k] for k in expected} == expected
    finally:
        await storage.close()


async def test_a_schema_2_file_is_upgraded_with_its_counts(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA_2.read_text())
        conn.execute("PRAGMA user_version = 2")
        # The counts its triggers kept, and the rows they counted.
        kept = {ep: dict(conn.execute("SELECT state, n FROM job_counts WHERE endpoint = ?", (ep,)).fetchall())
                for ep in ("ep", "other")}  # fmt: skip
    clock = FakeClock(start=1_800_000_100.0)  # the file's jobs were made at 1_800_000_000
    storage = SQLiteStorage.from_url(f"sqlite:///{path}", clock=clock)
    await storage.open()
    try:
        for ep, counts in kept.items():
            got = await storage.counts(ep)
            assert {state: got[state] for state in counts} == counts
            assert got == counted_from_rows(path, ep) and got["retried"] == 1
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
            names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        assert not names & {"job_counts", "jobs_after_insert", "jobs_after_state", "jobs_after_delete",
                            "jobs_run_deadline", "jobs_lease", "jobs_ttl", "jobs_recent", "jobs_queue",
                            "jobs_recent_state"}  # fmt: skip
        assert {"jobs_due", "jobs_delete_chunks", "jobs_state_order"} <= names
        # The old jobs go on: a running one streams and finishes, a queued one is claimed, a
        # listing of all states finds every job, and the sweep still finds what is overdue.
        page = await storage.list_jobs(EP, limit=100)
        assert page.total == len(page.jobs) == 9
        running = [job for job in page.jobs if job.state is JobState.IN_PROGRESS]
        streaming = next(job for job in running if job.stream_len)
        _, chunks, _ = await storage.read_stream(EP, streaming.id, 0)
        assert chunks == ["x", b"y"]
        done = await storage.finish(EP, streaming.id, streaming.token or "", JobState.COMPLETED, output=2)
        assert done.state is JobState.COMPLETED
        claimed = await storage.claim(EP, "w9", 1, 30_000, concurrency=1)
        assert len(claimed) == 1 and claimed[0].input["b"] == b"\x00\x01"
        clock.advance(7200)  # past every time to live (an hour), not the retention (a day)
        result = await storage.sweep(max_attempts=1, deadline_grace_ms=0)
        assert [job.state for job in result.ended if job.endpoint == EP] == [JobState.TIMED_OUT] * 4
        counts = await storage.counts(EP)
        assert counts == counted_from_rows(path, EP)
        assert counts["IN_QUEUE"] == counts["IN_PROGRESS"] == 0 and counts["TIMED_OUT"] == 5
    finally:
        await storage.close()


@pytest.mark.parametrize("schema", [1, 2])
async def test_schema_1_and_2_files_are_upgraded_and_stay_so(tmp_path: Path, schema: int) -> None:
    # A schema-1 file is a schema-2 file with one chunk per row: the same upgrade applies.
    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA_2.read_text())
        conn.execute(f"PRAGMA user_version = {schema}")
    for _ in range(2):  # and a second open of the upgraded file finds it as it left it
        storage = SQLiteStorage.from_url(f"sqlite:///{path}")
        await storage.open()
        try:
            assert await storage.counts("other") == counted_from_rows(path, "other")
            with sqlite3.connect(path) as conn:
                assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        finally:
            await storage.close()


async def test_a_schema_3_file_keeps_its_queue_order_on_one_index(tmp_path: Path) -> None:
    # Schema 4 claims and lists through one index (jobs_state_order) where schema 3 had two.
    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA_3.read_text())
        conn.execute("PRAGMA user_version = 3")
    storage = SQLiteStorage.from_url(f"sqlite:///{path}", clock=FakeClock(start=1_800_000_100.0))
    await storage.open()
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
            names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "jobs_state_order" in names and not names & {"jobs_queue", "jobs_recent_state"}
        assert await storage.counts(EP) == counted_from_rows(path, EP)
        # The file's queue: jobs 4 and 5 as submitted, then job 2, retried after them.
        claimed = await storage.claim(EP, "w9", 3, 30_000, concurrency=3)
        assert [job.input["n"] for job in claimed] == [4, 5, 2]
        page = await storage.list_jobs(EP, limit=3)
        assert page.total == 7 and page.has_more
        rest = await storage.list_jobs(EP, limit=10, after=(page.jobs[-1].created_at, page.jobs[-1].id))
        listed = [*page.jobs, *rest.jobs]
        assert len({job.id for job in listed}) == 7 and not rest.has_more
        keys = [(job.created_at, job.id) for job in listed]
        assert keys == sorted(keys, reverse=True)
    finally:
        await storage.close()
