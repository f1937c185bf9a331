"""What is particular to the SQLite backend: URLs, durability across kill -9, group
commit, per-operation atomicity inside a batch, and reads that do not wait for the writer."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from worker_kit.errors import ConfigError, JobConflict, JobNotFound, SequenceGap, StaleLease, StorageError
from worker_kit.job import JobState, Policy
from worker_kit.protocol import OutputItem, pack
from worker_kit.storage import open_storage
from worker_kit.storage.rules import FakeClock
from worker_kit.storage.sqlite import claims, connections, engine, small_reads
from worker_kit.storage.sqlite.backend import SQLiteStorage
from worker_kit.storage.sqlite.schema import SCHEMA_VERSION, SQLiteURL

EP = "ep"


async def opened(url: str) -> SQLiteStorage:
    storage = open_storage(url)
    assert isinstance(storage, SQLiteStorage)
    await storage.open()
    return storage


# -- URLs --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "path", "synchronous"),
    [
        ("sqlite:///worker-kit.db", "worker-kit.db", "normal"),
        ("sqlite:///data/jobs.db", "data/jobs.db", "normal"),
        ("sqlite:////var/lib/wk/jobs.db", "/var/lib/wk/jobs.db", "normal"),
        ("sqlite://:memory:", None, "normal"),
        ("sqlite:///:memory:", None, "normal"),
        ("sqlite:////tmp/x.db?synchronous=full", "/tmp/x.db", "full"),
        ("sqlite:///x.db?synchronous=NORMAL", "x.db", "normal"),
    ],
)
def test_url_forms(url: str, path: str | None, synchronous: str) -> None:
    parsed = SQLiteURL.parse(url)
    assert (parsed.path, parsed.synchronous) == (path, synchronous)


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///", "sqlite://host/x.db", "sqlite:///x.db?synchronous=off", "sqlite:///x.db?mode=ro",
     "postgres:///x"],
)  # fmt: skip
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        SQLiteURL.parse(url)


async def test_file_is_created_in_wal_mode_with_parent_dirs(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "jobs.db"
    storage = await opened(f"sqlite:///{path}?synchronous=full")
    try:
        await storage.submit(EP, 1, policy=Policy(), retention_ms=1000)
    finally:
        await storage.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1


async def test_jobs_survive_close_and_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    storage = await opened(url)
    job = await storage.submit(EP, {"b": b"\x00"}, policy=Policy(), retention_ms=1000)
    claimed = (await storage.claim(EP, "w1", 1, 30_000))[0]
    await storage.close()
    storage = await opened(url)
    try:
        got = await storage.get(EP, job.id)
        assert got is not None and got.input == {"b": b"\x00"} and got.token == claimed.token
        done = await storage.finish(EP, job.id, claimed.token or "", JobState.COMPLETED, output=1)
        assert done.state is JobState.COMPLETED
    finally:
        await storage.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    storage = open_storage(f"sqlite:///{path}")
    with pytest.raises(StorageError, match="newer"):
        await storage.open()


async def test_chunks_are_stored_as_one_run_per_request(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    storage = await opened(f"sqlite:///{path}")
    try:
        await storage.submit(EP, "r", policy=Policy(), retention_ms=60_000)
        [job] = await storage.claim(EP, "w1", 1, 30_000)
        token = job.token or ""
        await storage.append_output(EP, job.id, token, [OutputItem(i, "chunk", f"t{i}") for i in range(100)])
        await storage.append_output(EP, job.id, token, [OutputItem(100, "chunk", b"\x00")])
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT idx FROM chunks WHERE job_id = ? ORDER BY idx", (job.id,)).fetchall()
        assert rows == [(0,), (100,)]
        _, chunks, cursor = await storage.read_stream(EP, job.id, 99)
        assert chunks == ["t99", b"\x00"] and cursor == 101
    finally:
        await storage.close()


@pytest.mark.parametrize("input_bytes", [10, 100_000])
async def test_small_cursor_reads_of_any_job(tmp_path: Path, input_bytes: int) -> None:
    # A cursor read bounded to a few kilobytes runs on the event loop's thread, unless the
    # job's record is large (its input here): then on a reader thread. Same answers either way.
    storage = await opened(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        await storage.submit(EP, "x" * input_bytes, policy=Policy(), retention_ms=60_000)
        [job] = await storage.claim(EP, "w1", 1, 30_000)
        token = job.token or ""
        await storage.append_output(EP, job.id, token, [OutputItem(i, "chunk", f"t{i}") for i in range(10)])
        record, chunks, cursor = await storage.read_stream(EP, job.id, 3, max_bytes=12)
        assert chunks == ["t3", "t4", "t5", "t6"] and cursor == 7 and record.stream_len == 10
        assert record.input == "x" * input_bytes
        with pytest.raises(JobNotFound):
            await storage.read_stream(EP, "ghost", 0, max_bytes=12)
    finally:
        await storage.close()


async def test_a_schema_1_stream_of_one_chunk_per_row_reads_on(tmp_path: Path) -> None:
    # Schema 1 stored one chunk per row: such a file opens as it is (becoming schema 3), its
    # chunks read from any cursor, and the stream goes on with runs after them.
    path = tmp_path / "jobs.db"
    storage = await opened(f"sqlite:///{path}")
    await storage.submit(EP, "r", policy=Policy(), retention_ms=60_000)
    [job] = await storage.claim(EP, "w1", 1, 30_000)
    token = job.token or ""
    await storage.close()
    with sqlite3.connect(path) as conn:  # as a schema-1 build wrote three chunks
        conn.executemany(
            "INSERT INTO chunks (job_id, idx, data) VALUES (?, ?, ?)",
            [(job.id, i, pack(f"old{i}")) for i in range(3)],
        )
        conn.execute("UPDATE jobs SET next_seq = 3, stream_len = 3 WHERE id = ?", (job.id,))
        conn.execute("PRAGMA user_version = 1")
    storage = await opened(f"sqlite:///{path}")
    try:
        items = [OutputItem(3, "chunk", "new3"), OutputItem(4, "chunk", "new4")]
        await storage.append_output(EP, job.id, token, items)
        everything = ["old0", "old1", "old2", "new3", "new4"]
        for cursor in range(6):
            assert (await storage.read_stream(EP, job.id, cursor))[1] == everything[cursor:]
        _, chunks, cursor = await storage.read_stream(EP, job.id, 1, max_bytes=10)
        assert chunks == ["old1", "old2"] and cursor == 3
        assert (await storage.read_stream(EP, job.id))[1:] == (everything, 5)  # consuming
    finally:
        await storage.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4


async def test_a_schema_1_database_without_later_columns_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    storage = await opened(f"sqlite:///{path}")
    old = await storage.submit(EP, "old", policy=Policy(execution_timeout_ms=5000), retention_ms=1000)
    await storage.close()
    with sqlite3.connect(path) as conn:  # as an earlier build of schema 1 made it
        conn.execute("ALTER TABLE jobs DROP COLUMN timeout_explicit")
    storage = await opened(f"sqlite:///{path}")
    try:
        got = await storage.get(EP, old.id)
        # Jobs stored before the column existed read as not chosen: the handler's timeout may apply.
        unchosen = Policy(execution_timeout_ms=5000, execution_timeout_explicit=False)
        assert got is not None and got.policy == unchosen
        policy = Policy(execution_timeout_ms=5000, execution_timeout_explicit=True)
        new = await storage.submit(EP, "new", policy=policy, retention_ms=1000)
        assert (await storage.get(EP, new.id)).policy == policy  # type: ignore[union-attr]
    finally:
        await storage.close()


async def test_calls_after_close_fail_clearly(tmp_path: Path) -> None:
    storage = await opened(f"sqlite:///{tmp_path / 'jobs.db'}")
    await storage.close()
    with pytest.raises(StorageError, match="not open"):
        await storage.submit(EP, 1, policy=Policy(), retention_ms=1000)
    with pytest.raises(StorageError, match="not open"):
        await storage.get(EP, "x")


# -- durability --------------------------------------------------------------------------------
SUBMITTER = textwrap.dedent(
    """
    import asyncio, sys
    from worker_kit.job import Policy
    from worker_kit.storage import open_storage

    async def main(url):
        storage = open_storage(url)
        await storage.open()
        n = 0
        while True:
            jobs = await asyncio.gather(*(
                storage.submit("ep", {"n": n + i}, policy=Policy(), retention_ms=60000) for i in range(8)
            ))
            n += 8
            # Printed only once submit() returned, i.e. once the job is acknowledged.
            sys.stdout.write("".join(job.id + "\\n" for job in jobs))
            sys.stdout.flush()

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.parametrize("synchronous", ["normal", "full"])
async def test_acknowledged_submits_survive_kill_9(tmp_path: Path, synchronous: str) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}?synchronous={synchronous}"
    script = tmp_path / "submitter.py"
    script.write_text(SUBMITTER)
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), url, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    acknowledged: list[str] = []
    try:
        while len(acknowledged) < 300:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not line:
                pytest.fail(f"the submitter exited early with code {await proc.wait()}")
            acknowledged.append(line.decode().strip())
        proc.send_signal(signal.SIGKILL)
        # Lines the child wrote before it died were acknowledged too; a cut-off last line was not.
        rest = (await proc.stdout.read()).decode()
        acknowledged += [line for line in rest.split("\n")[:-1] if line]
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    # The child loops forever, so it ended by the kill (asyncio reports -9, or 255 if the
    # child was reaped before its watcher saw the status).
    assert proc.returncode != 0
    storage = await opened(url)
    try:
        missing = [job_id for job_id in acknowledged if await storage.get(EP, job_id) is None]
        assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged jobs lost"
        assert (await storage.counts(EP))["IN_QUEUE"] >= len(acknowledged)
    finally:
        await storage.close()


# -- group commit and atomicity ----------------------------------------------------------------
class WriteLock:
    """Holds SQLite's write lock from a second connection, so the backend's writer waits and
    the operations sent meanwhile pile up into one batch."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


async def queued_behind_lock(path: Path, *ops: object) -> list[object]:
    lock = WriteLock(path)
    try:
        tasks = [asyncio.ensure_future(op) for op in ops]  # type: ignore[call-overload]
        await asyncio.sleep(0.3)  # every op is queued; the writer is stuck on the first batch
        assert not any(t.done() for t in tasks)
    finally:
        lock.release()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_concurrent_submits_share_commits(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    storage = await opened(f"sqlite:///{path}?synchronous=full")
    try:
        before = storage.stats()
        jobs = await queued_behind_lock(
            path, *(storage.submit(EP, i, policy=Policy(), retention_ms=1000) for i in range(50))
        )
        after = storage.stats()
        assert after["operations"] - before["operations"] == 50
        # The first op may have been taken alone before the rest arrived; the rest share one commit.
        assert after["transactions"] - before["transactions"] <= 2
        assert len({job.id for job in jobs}) == 50  # type: ignore[attr-defined]
        assert (await storage.counts(EP))["IN_QUEUE"] == 50
    finally:
        await storage.close()


async def test_a_failing_operation_does_not_break_its_batch(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    storage = await opened(f"sqlite:///{path}")
    try:
        await storage.submit(EP, "r", policy=Policy(), retention_ms=1000)
        [job] = await storage.claim(EP, "w1", 1, 30_000)
        queued = await storage.submit(EP, "q", policy=Policy(), retention_ms=1000)

        def writes_then_fails(conn: sqlite3.Connection, notes: list[str]) -> None:
            # Every built-in transition validates before it writes; this one writes first, so
            # only the per-operation savepoint can undo it.
            conn.execute("UPDATE jobs SET state = 'FAILED', error = 'half-done' WHERE id = ?", (job.id,))
            conn.execute("INSERT INTO chunks (job_id, idx, data) VALUES (?, 0, x'a1')", (job.id,))
            raise RuntimeError("op failed after writing")

        results = await queued_behind_lock(
            path,
            storage.submit(EP, "a", policy=Policy(), retention_ms=1000),
            storage.retry(EP, queued.id),  # conflict: the job is queued, not failed
            storage._engine.write(writes_then_fails),
            storage.append_output(
                EP, job.id, job.token or "", [OutputItem(0, "chunk", "x"), OutputItem(2, "chunk", "z")]
            ),
            storage.submit(EP, "b", policy=Policy(), retention_ms=1000),
        )
        assert isinstance(results[1], JobConflict)
        assert isinstance(results[2], RuntimeError) and "after writing" in str(results[2])
        assert isinstance(results[3], SequenceGap)
        for submitted in (results[0], results[4]):
            assert await storage.get(EP, submitted.id) is not None  # type: ignore[attr-defined]
        record, chunks, _ = await storage.read_stream(EP, job.id, 0)
        assert record.state is JobState.IN_PROGRESS and record.error is None
        assert chunks == [] and record.next_seq == 0
        counts = await storage.counts(EP)
        assert counts["IN_PROGRESS"] == 1 and counts["FAILED"] == 0 and counts["IN_QUEUE"] == 3
    finally:
        await storage.close()


async def test_reads_do_not_wait_for_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    storage = await opened(f"sqlite:///{path}")
    try:
        job = await storage.submit(EP, "x", policy=Policy(), retention_ms=1000)
        lock = WriteLock(path)
        try:
            pending = asyncio.ensure_future(storage.submit(EP, "y", policy=Policy(), retention_ms=1000))
            await asyncio.sleep(0.1)
            # The writer is blocked; reads are served anyway, from the last committed state.
            got = await asyncio.wait_for(storage.get(EP, job.id), 5)
            assert got is not None and got.input == "x"
            assert (await asyncio.wait_for(storage.counts(EP), 5))["IN_QUEUE"] == 1
            assert not pending.done()
        finally:
            lock.release()
        second = await pending
        assert await storage.get(EP, second.id) is not None  # read-your-writes once acknowledged
    finally:
        await storage.close()


async def test_a_large_record_is_read_whole_off_the_event_loop(tmp_path: Path) -> None:
    storage = await opened(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        small = await storage.submit(EP, {"x": 1}, policy=Policy(), retention_ms=1000)
        big_input = {"pad": b"x" * (small_reads.SMALL_PAYLOADS + 1)}
        big = await storage.submit(EP, big_input, policy=Policy(), retention_ms=1000)
        assert storage._engine.read_inline(lambda conn: small_reads.record(conn, EP, big.id, 0.0)) is (
            small_reads.TOO_LARGE
        )
        got = await storage.get(EP, big.id)
        assert got is not None and got.input == big_input
        got = await storage.get(EP, small.id)
        assert got is not None and got.input == {"x": 1}
        assert await storage.get("other-endpoint", small.id) is None
    finally:
        await storage.close()


async def test_a_read_that_cannot_run_at_once_waits_on_the_pool() -> None:
    # In memory, reads share the writer's connection: while a batch holds it, a read on the
    # event loop cannot run, and waits on the pool instead of failing or blocking the loop.
    storage = await opened("sqlite://:memory:")
    try:
        job = await storage.submit(EP, "x", policy=Policy(), retention_ms=1000)
        holding, release = threading.Event(), threading.Event()

        def slow_write(conn: sqlite3.Connection, notes: list[str]) -> None:
            holding.set()
            release.wait(10)

        write = asyncio.ensure_future(storage._engine.write(slow_write))
        try:
            assert await asyncio.to_thread(holding.wait, 10)
            read = asyncio.ensure_future(storage.get(EP, job.id))
            await asyncio.sleep(0.2)
            assert not read.done()  # the loop was free meanwhile: this sleep ran
        finally:
            release.set()
        got = await asyncio.wait_for(read, 10)
        assert got is not None and got.input == "x"
        await write
    finally:
        await storage.close()


async def test_commits_made_by_the_event_loop_are_checkpointed(tmp_path: Path) -> None:
    # Small submits one at a time are committed by the event loop, whose connection never
    # checkpoints: the writer thread must copy them into the database file regularly, or the
    # WAL would grow for ever.
    path = tmp_path / "jobs.db"
    storage = await opened(f"sqlite:///{path}")
    try:
        empty = path.stat().st_size
        for i in range(engine.CHECKPOINT_EVERY * 2 + 10):
            await storage.submit(EP, {"n": i, "pad": "x" * 2000}, policy=Policy(), retention_ms=60_000)
        assert storage._engine._on_loop.commits >= engine.CHECKPOINT_EVERY * 2  # made on the loop
        deadline = asyncio.get_running_loop().time() + 10
        while path.stat().st_size <= empty + 100 * 2000:
            assert asyncio.get_running_loop().time() < deadline, "the WAL was never checkpointed"
            await asyncio.sleep(0.05)
        assert (await storage.counts(EP))["IN_QUEUE"] == engine.CHECKPOINT_EVERY * 2 + 10
    finally:
        await storage.close()


async def test_a_claim_and_finish_of_a_large_input_leave_the_event_loop(tmp_path: Path) -> None:
    # A claim of one job and a finish may run on the event loop, but not when the input they
    # carry back is large: found before anything is written, the batch goes to the writer thread.
    storage = await opened(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        big = {"pad": b"x" * (connections.LOOP_BYTES + 1)}
        await storage.submit(EP, big, policy=Policy(), retention_ms=60_000)
        await storage.submit(EP, {"n": 1}, policy=Policy(), retention_ms=60_000)
        commits = storage._engine._on_loop.commits
        [job] = await storage.claim(EP, "w1", 1, 30_000)
        assert job.input == big and job.state is JobState.IN_PROGRESS and job.token
        assert storage._engine._on_loop.commits == commits  # the writer thread ran it
        done = await storage.finish(EP, job.id, job.token, JobState.COMPLETED, output="ok")
        assert done.state is JobState.COMPLETED and done.output == "ok" and done.input == big
        assert storage._engine._on_loop.commits == commits
        [small] = await storage.claim(EP, "w1", 1, 30_000)  # a small one runs on the loop
        assert small.input == {"n": 1} and storage._engine._on_loop.commits == commits + 1
        done = await storage.finish(EP, small.id, small.token or "", JobState.COMPLETED, output=1)
        assert done.output == 1 and storage._engine._on_loop.commits == commits + 2
        counts = await storage.counts(EP)
        assert counts["COMPLETED"] == 2 and counts["IN_PROGRESS"] == 0
    finally:
        await storage.close()


async def test_a_finish_that_fails_a_check_changes_nothing(tmp_path: Path) -> None:
    # A finish without items ends a running job in one statement whose conditions are the
    # checks; each case they exclude falls through to the checks and gets their answer.
    storage = await opened(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        await storage.submit(EP, {"n": 1}, policy=Policy(), retention_ms=60_000)
        [job] = await storage.claim(EP, "w1", 1, 30_000)
        with pytest.raises(JobNotFound):  # another endpoint's job of that id
            await storage.finish("other", job.id, job.token or "", JobState.COMPLETED, output=1)
        with pytest.raises(StaleLease):
            await storage.finish(EP, job.id, "not-the-token", JobState.COMPLETED, output=1)
        running = await storage.get(EP, job.id)
        assert running is not None and running.state is JobState.IN_PROGRESS and running.output is None
        done = await storage.finish(EP, job.id, job.token or "", JobState.FAILED, error="boom")
        assert done.state is JobState.FAILED and done.error == "boom" and done.worker_id == "w1"
        again = await storage.finish(EP, job.id, job.token or "", JobState.COMPLETED, output=2)
        assert again.state is JobState.FAILED and again.finished_at == done.finished_at  # the first stands
        counts = await storage.counts(EP)
        assert counts["FAILED"] == 1 and counts["IN_PROGRESS"] == 0 and counts["COMPLETED"] == 0
    finally:
        await storage.close()


# -- extensions ----------------------------------------------------------------------------------
async def test_worker_concurrency_is_recorded_and_kept(tmp_path: Path) -> None:
    storage = await opened(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        await storage.claim(EP, "w1", 2, 30_000, concurrency=8)
        await storage.heartbeat(EP, "w1", {}, 30_000)
        [info] = await storage.workers(EP, 60)
        assert info.concurrency == 8 and info.running == 0
        await storage.heartbeat(EP, "w1", {}, 30_000, concurrency=3)
        assert (await storage.workers(EP, 60))[0].concurrency == 3
        # Without a stated concurrency, busy + asked-for slots is the estimate.
        await storage.claim(EP, "w2", 4, 30_000)
        assert {w.worker_id: w.concurrency for w in await storage.workers(EP, 60)}["w2"] == 4
    finally:
        await storage.close()


async def test_a_claim_rewrites_its_workers_row_only_when_something_changed(tmp_path: Path) -> None:
    # A worker at concurrency 1 claims once per job: its row (a WAL page) is rewritten for a
    # new concurrency at once, for seen_at only once it is SEEN_EVERY_S old.
    path = tmp_path / "jobs.db"
    clock = FakeClock()
    storage = SQLiteStorage.from_url(f"sqlite:///{path}", clock=clock)
    await storage.open()

    def row() -> tuple[int, float]:
        with sqlite3.connect(path) as conn:
            return conn.execute("SELECT concurrency, seen_at FROM workers WHERE worker_id = 'w1'").fetchone()

    try:
        await storage.claim(EP, "w1", 1, 30_000, concurrency=1)
        concurrency, first = row()
        assert concurrency == 1
        clock.advance(claims.SEEN_EVERY_S / 2)
        await storage.claim(EP, "w1", 1, 30_000, concurrency=1)
        assert row() == (1, first)
        await storage.claim(EP, "w1", 1, 30_000, concurrency=2)
        concurrency, seen = row()
        assert concurrency == 2 and seen > first
        clock.advance(claims.SEEN_EVERY_S * 2)
        await storage.claim(EP, "w1", 1, 30_000, concurrency=2)
        assert row()[1] > first + claims.SEEN_EVERY_S
        [info] = await storage.workers(EP, 60)
        assert info.concurrency == 2
    finally:
        await storage.close()
