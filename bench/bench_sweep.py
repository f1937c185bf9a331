"""Bounded maintenance, by hand: `python bench/bench_sweep.py [--jobs 20000] [--full]`.

1. The suspected cause of quadratic maintenance on SQLite (issue #16): one long UPDATE loop in a
   single SAVEPOINT with `PRAGMA temp_store=MEMORY`. Times the claim-style UPDATE ... RETURNING
   loop over 5k/10k/20k rows in one transaction, with and without each of the two, on the real
   schema.
2. A mass expiry through the storage API: N queued jobs past their TTL at once (a FakeClock moved
   past it), swept by `sweep()` calls until none is left, while submits run beside it; on SQLite
   and on Redis (its own redis-server). Prints the sweep's total time, its cost per job, and the
   p50/p99 latency of the concurrent submits against submits with no sweep running.

--full uses 100 000 jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_redis import start_redis

from worker_kit.job import Policy
from worker_kit.storage.redis import RedisStorage
from worker_kit.storage.rules import BATCH, FakeClock
from worker_kit.storage.sqlite.backend import SQLiteStorage
from worker_kit.storage.sqlite.schema import DDL, RECORD_COLUMNS


def update_loop(work: Path, n: int, savepoint: bool, temp_memory: bool) -> float:
    path = work / f"loop-{n}-{savepoint}-{temp_memory}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    if temp_memory:
        conn.execute("PRAGMA temp_store=MEMORY")
    conn.executescript(DDL)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO jobs (id, endpoint, state, qpos, execution_timeout_ms, ttl_ms, retention_ms, "
        "created_at, ttl_deadline, input) VALUES (?, 'ep', 'IN_QUEUE', ?, 1000, 1000, 1000, 0, 1e12, x'00')",
        [(secrets.token_hex(16), i) for i in range(n)],
    )
    conn.execute("COMMIT")
    ids = [row[0] for row in conn.execute("SELECT id FROM jobs ORDER BY qpos")]
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    if savepoint:
        conn.execute("SAVEPOINT op")
    for job_id in ids:
        conn.execute(
            "UPDATE jobs SET state = 'IN_PROGRESS', token = ?, worker_id = 'w', started_at = 1, "
            f"run_deadline = 2, lease_until = 3 WHERE id = ? RETURNING {RECORD_COLUMNS}",
            (secrets.token_hex(16), job_id),
        ).fetchone()
    if savepoint:
        conn.execute("RELEASE op")
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


async def submit_latencies(storage: object, stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await storage.submit("live", 1, policy=Policy(), retention_ms=60_000)  # type: ignore[attr-defined]
        out.append(time.perf_counter() - start)
        await asyncio.sleep(0.002)


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


async def mass_expiry(storage: SQLiteStorage | RedisStorage, clock: FakeClock, n: int) -> str:
    await storage.open()
    try:
        sem = asyncio.Semaphore(64)

        async def fill(i: int) -> None:
            async with sem:
                await storage.submit("ep", i, policy=Policy(ttl_ms=1000), retention_ms=60_000)

        await asyncio.gather(*(fill(i) for i in range(n)))
        idle: list[float] = []
        stop = asyncio.Event()
        task = asyncio.create_task(submit_latencies(storage, stop, idle))
        await asyncio.sleep(1.0)
        stop.set()
        await task
        clock.advance(5.0)
        during: list[float] = []
        stop = asyncio.Event()
        task = asyncio.create_task(submit_latencies(storage, stop, during))
        start, ended, calls = time.perf_counter(), 0, 0
        while True:
            result = await storage.sweep(3, 500)
            ended, calls = ended + len(result.ended), calls + 1
            if not result.more:
                break
        elapsed = time.perf_counter() - start
        stop.set()
        await task
        assert ended == n, (ended, n)
        return (f"{elapsed:6.2f} s ({elapsed / n * 1e6:5.0f} µs/job, {calls} sweep() calls); submits "
                f"beside it p50 {pct(during, 0.5):5.1f} ms, p99 {pct(during, 0.99):6.1f} ms, "
                f"max {max(during) * 1000:6.1f} ms (idle: p50 {pct(idle, 0.5):4.1f} ms, "
                f"p99 {pct(idle, 0.99):5.1f} ms)")
    finally:
        await storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--full", action="store_true", help="100 000 jobs")
    args = parser.parse_args()
    n = 100_000 if args.full else args.jobs
    work = Path(tempfile.mkdtemp(prefix="wk-bench-sweep-"))
    print(f"{platform.node()} · {os.cpu_count()} CPUs · Python {platform.python_version()} · SQLite "
          f"{sqlite3.sqlite_version} · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("\n1. one UPDATE ... RETURNING loop in one transaction, seconds "
          "(savepoint+temp_store=MEMORY, savepoint only, temp_store=MEMORY only, neither):")
    for rows in (5000, 10_000, 20_000):
        cells = [update_loop(work, rows, sp, mem) for sp, mem in ((1, 1), (1, 0), (0, 1), (0, 0))]
        print(f"   {rows:>6} rows: " + "  ".join(f"{c:6.2f}" for c in cells))
    print(f"\n2. {n} queued jobs past their TTL at once, swept in batches of {BATCH}:")
    clock = FakeClock()
    print("   SQLite: " + asyncio.run(mass_expiry(SQLiteStorage.from_url(f"sqlite:///{work / 'sweep.db'}",
                                                                       clock=clock), clock, n)))
    proc, port = start_redis(work)
    try:
        clock = FakeClock()
        storage = RedisStorage.from_url(f"redis://127.0.0.1:{port}/0?prefix=sweep", clock=clock)
        print("   Redis:  " + asyncio.run(mass_expiry(storage, clock, n)))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
