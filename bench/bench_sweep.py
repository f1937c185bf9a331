"""Bounded maintenance, end to end: `python -m bench.bench_sweep [--jobs N] [--full] [--only KIND ...]`.

A real service process (`worker-kit serve`) on SQLite and on Redis (its own redis-server) meets
mass maintenance, while a client keeps submitting to another endpoint (4 loops of `POST /run`,
one request at a time each); the figure is the latency of those submits while the maintenance
runs (p50/p99/max), against the same service idle just before.

- expiry:  N queued jobs whose TTL has passed, found at once by the sweep;
- timeout: N running jobs past their execution timeout, found at once by the sweep;
- purge:   `POST /purge-queue` of N queued jobs.

The jobs are written straight into the store before the service starts, by the storage API with
a clock an hour in the past: so they are all overdue together, however long writing them took.
Quick size 5 000 jobs; --full 100 000 (issue #16's sizes); --background 900000 puts that many
more jobs in the store first (queued on another endpoint, nothing due), as in issue #16's
"1 M-job database". Also printed: how long the
maintenance took, the service's CPU per job, and its peak RSS. `python -m bench` runs the
mass expiry as its `sweep_sqlite` and `sweep_redis` keys.

--update-loop also times the cause of quadratic maintenance found on SQLite (issue #16): one
claim-style UPDATE ... RETURNING loop over 5k/10k/20k rows in one transaction, with and without
a SAVEPOINT and `PRAGMA temp_store=MEMORY`, on the real schema.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from worker_kit.job import Policy
from worker_kit.storage.base import Storage
from worker_kit.storage.redis import RedisStorage
from worker_kit.storage.sqlite.backend import SQLiteStorage
from worker_kit.storage.sqlite.schema import DDL, RECORD_COLUMNS

from . import procs
from .bench_redis import start_redis

KINDS = ("expiry", "timeout", "purge")
#: Submitting loops beside the maintenance, and the pause each takes between its requests.
LOOPS, PAUSE_S = 4, 0.005
#: Idle time measured first, for the baseline.
IDLE_S = 1.5
EP, LIVE = "mass", "live"


@dataclass(slots=True)
class Result:
    kind: str
    jobs: int
    seconds: float  # how long the maintenance took
    during: list[float]  # /run latencies while it ran, seconds
    idle: list[float]
    cpu_s: float  # service CPU spent over the maintenance
    peak_rss_mb: float

    def p(self, q: float, idle: bool = False) -> float:
        """The q-quantile (0..1) of /run latency in ms (during the maintenance, or idle)."""
        samples = sorted(self.idle if idle else self.during)
        if not samples:
            return float("nan")
        return samples[min(len(samples) - 1, int(q * len(samples)))] * 1000

    def line(self) -> str:
        return (f"{self.kind:>7} {self.jobs:>7}: {self.seconds:6.2f} s "
                f"({self.cpu_s / self.jobs * 1e6:5.0f} µs CPU/job, peak RSS {self.peak_rss_mb:4.0f} MB); "
                f"/run beside it p50 {self.p(0.5):5.1f} ms, p99 {self.p(0.99):6.1f} ms, "
                f"max {max(self.during, default=0) * 1000:6.1f} ms, n={len(self.during)} "
                f"(idle p50 {self.p(0.5, True):4.1f}, p99 {self.p(0.99, True):5.1f})")


# -- the UPDATE loop (--update-loop) ---------------------------------------------------------------
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



# -- filling the store ------------------------------------------------------------------------------
def _past() -> float:
    return time.time() - 3600.0


async def fill(storage: Storage, kind: str, n: int, background: int = 0) -> None:
    """N jobs of endpoint EP, overdue (expiry, timeout) or queued (purge), by the storage API;
    first `background` queued jobs of another endpoint that nothing is due for (a large store)."""
    await storage.open()
    try:
        policy = {"expiry": Policy(ttl_ms=1000), "timeout": Policy(execution_timeout_ms=1000),
                  "purge": Policy()}[kind]
        sem = asyncio.Semaphore(256)

        async def one(endpoint: str, i: int, policy: Policy) -> None:
            async with sem:
                await storage.submit(endpoint, i, policy=policy, retention_ms=600_000)

        for endpoint, count, how in (("rest", background, Policy(ttl_ms=7 * 86_400_000)), (EP, n, policy)):
            for start in range(0, count, 5000):
                await asyncio.gather(*(one(endpoint, i, how) for i in range(start, min(count, start + 5000))))
        if kind == "timeout":
            left = n
            while left > 0:
                left -= len(await storage.claim(EP, "gone-worker", min(500, left), 1000))
    finally:
        await storage.close()


# -- the service and its clients --------------------------------------------------------------------
@contextlib.contextmanager
def service(work: Path, storage_url: str) -> Iterator[tuple[str, int]]:
    config = work / "bench.toml"
    config.write_text(procs.CONFIG)

    def args(port: int) -> list[str]:
        return [procs.PY, "-m", "worker_kit", "serve", "--port", str(port), "--storage", storage_url,
                "--config", str(config), "--log-level", "warning"]

    with procs._server(args, "/health") as (url, proc):
        yield url, proc.pid


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _submit_loop(session: aiohttp.ClientSession, url: str, stop: asyncio.Event,
                       out: list[tuple[float, float]]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        async with session.post(url, json={"input": 1}) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        out.append((start, time.perf_counter() - start))
        await asyncio.sleep(PAUSE_S)


async def _left(session: aiohttp.ClientSession, base: str) -> int:
    async with session.get(f"{base}/v2/{EP}/health") as resp:
        jobs = (await resp.json())["jobs"]
    return int(jobs["inQueue"]) + int(jobs["inProgress"])


async def measure(base: str, pid: int, kind: str, n: int, timeout: float) -> Result:
    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        loops = [asyncio.create_task(_submit_loop(session, f"{base}/v2/{LIVE}/run", stop, samples))
                 for _ in range(LOOPS)]
        try:
            if kind == "purge":
                await asyncio.sleep(IDLE_S)
                cpu0, began = procs.cpu_seconds(pid), time.perf_counter()
                async with session.post(f"{base}/v2/{EP}/purge-queue", json={}) as resp:
                    removed = (await resp.json())["removed"]
                assert removed == n, (removed, n)
            else:
                # The sweep begins at its first round after start: the first sign of it is the
                # first job it ended. Until then the service is idle.
                while await _left(session, base) == n:  # noqa: ASYNC110 - another process's state
                    await asyncio.sleep(0.01)
                cpu0, began = procs.cpu_seconds(pid), time.perf_counter()
                deadline = began + timeout
                while await _left(session, base) > 0:
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"{kind}: the sweep did not end {n} jobs within {timeout} s")
                    await asyncio.sleep(0.02)
            ended = time.perf_counter()
            cpu = procs.cpu_seconds(pid) - cpu0
        finally:
            stop.set()
            await asyncio.gather(*loops)
    during = [lat for start, lat in samples if began <= start < ended or began <= start + lat <= ended]
    idle = [lat for start, lat in samples if start + lat < began]
    return Result(kind, n, ended - began, during, idle, cpu, peak_rss_mb(pid))


def run_one(
    work: Path, backend: str, kind: str, n: int, redis_port: int | None = None, background: int = 0
) -> Result:
    """One maintenance on a fresh store (SQLite file, or a fresh Redis prefix)."""
    clock = None if kind == "purge" else _past  # purge: queued now, with a long TTL
    if backend == "sqlite":
        url = f"sqlite:///{work / f'sweep-{kind}-{time.monotonic_ns()}.db'}"
        storage: Storage = SQLiteStorage.from_url(url, clock=clock)
    else:
        url = f"redis://127.0.0.1:{redis_port}/0?prefix=sweep{time.monotonic_ns()}"
        storage = RedisStorage.from_url(url, clock=clock)
    began = time.perf_counter()
    asyncio.run(fill(storage, kind, n, background))
    print(f"  ({backend} {kind}: {n + background} jobs written in {time.perf_counter() - began:.0f} s)",
          file=sys.stderr, flush=True)
    with service(work, url) as (base, pid):
        return asyncio.run(measure(base, pid, kind, n, timeout=max(120.0, n / 100)))


@contextlib.contextmanager
def redis_server(work: Path) -> Iterator[int]:
    proc, port = start_redis(work)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--full", action="store_true", help="100 000 jobs")
    parser.add_argument("--only", nargs="*", choices=KINDS, default=list(KINDS))
    parser.add_argument("--backend", nargs="*", choices=("sqlite", "redis"), default=["sqlite", "redis"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--update-loop", action="store_true", help="also time the UPDATE loop variants")
    parser.add_argument("--background", type=int, default=0, metavar="N",
                        help="N more jobs in the store, queued on another endpoint (e.g. 900000)")
    args = parser.parse_args()
    n = 100_000 if args.full else args.jobs
    print(f"{platform.node()} · {os.cpu_count()} CPUs · Python {platform.python_version()} · load "
          f"{os.getloadavg()[0]:.1f} · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    with tempfile.TemporaryDirectory(prefix="wk-bench-sweep-") as tmp:
        work = Path(tmp)
        if args.update_loop:
            print("one UPDATE ... RETURNING loop in one transaction, seconds "
                  "(savepoint+temp_store=MEMORY, savepoint only, temp_store=MEMORY only, neither):")
            for rows in (5000, 10_000, 20_000):
                cells = [update_loop(work, rows, sp, mem) for sp, mem in ((1, 1), (1, 0), (0, 1), (0, 0))]
                print(f"   {rows:>6} rows: " + "  ".join(f"{c:6.2f}" for c in cells), flush=True)
        with redis_server(work) if "redis" in args.backend else contextlib.nullcontext() as port:
            for backend in args.backend:
                for kind in args.only:
                    p99s = []
                    for _ in range(args.rounds):
                        result = run_one(work, backend, kind, n, port, args.background)
                        p99s.append(result.p(0.99))
                        print(f"{backend:>6} {result.line()}", flush=True)
                    if args.rounds > 1:
                        median = statistics.median(p99s)
                        print(f"{backend:>6} {kind:>7}: median p99 {median:.1f} ms", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}", file=sys.stderr)


if __name__ == "__main__":
    main()
