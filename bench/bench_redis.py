"""The Redis backend's costs, by hand: `python bench/bench_redis.py [--jobs 2000] [--repeat 3]`.

Starts its OWN redis-server (no persistence, a free port, a temp dir; never the shared one) and
measures, side by side with the SQLite backend doing the same work (ratios within one run,
variants interleaved, medians of --repeat):

1. storage operations: a job life cycle (submit, claim, finish, get) through the Storage API
   in this process, 16 at a time: microseconds of wall time per operation on each backend, this
   process's CPU per life cycle, and Redis's own CPU per life cycle (`INFO cpu`, user + sys),
   i.e. the ceiling of one Redis: 1 / (CPU per life cycle) life cycles per second;
2. end to end: no-op jobs per second through `worker-kit serve` (one process) and one worker
   process at concurrency 1 and 16, on SQLite and on Redis, with Redis CPU per job.

Prints a table; docs/benchmarks.md records a run with the machine and date.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import redis

from worker_kit.job import JobState, Policy
from worker_kit.storage import Storage, open_storage

NOOP = """
    import worker_kit

    @worker_kit.handler
    async def noop(job):
        return job.input

    worker_kit.start()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    binary = shutil.which("redis-server") or sys.exit("redis-server is not installed")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                             "no", "--dir", str(work)], stdout=subprocess.DEVNULL)  # fmt: skip
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc, port
        except redis.ConnectionError:
            time.sleep(0.05)
    sys.exit("the bench's redis-server did not start")


def ping_cpu_us(port: int, n: int = 3000) -> float:
    """Redis CPU per PING, the cheapest command: the yardstick that makes figures from a loaded or
    slow machine comparable (a PING costs ~1-2 µs of Redis CPU on an idle modern core)."""
    client = redis.Redis(port=port)
    before = redis_cpu(port)
    for _ in range(n):
        client.ping()
    return (redis_cpu(port) - before) * 1e6 / n


def redis_cpu(port: int) -> float:
    info = redis.Redis(port=port).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# -- 1. storage operations -------------------------------------------------------------------------
async def _phase(n: int, op: Callable[[int], Awaitable[Any]], width: int = 16) -> float:
    sem = asyncio.Semaphore(width)

    async def one(i: int) -> None:
        async with sem:
            await op(i)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - start


async def storage_lifecycle(storage: Storage, n: int, endpoint: str) -> dict[str, float]:
    """Wall µs per operation for each step, and this process's CPU µs per life cycle."""
    ids: list[str] = [""] * n
    jobs: dict[int, Any] = {}

    async def submit(i: int) -> None:
        ids[i] = (await storage.submit(endpoint, {"i": i}, policy=Policy(), retention_ms=60_000)).id

    async def claim(i: int) -> None:
        (jobs[i],) = await storage.claim(endpoint, f"w{i % 16}", 1, 30_000)

    async def finish(i: int) -> None:
        await storage.finish(endpoint, jobs[i].id, jobs[i].token, JobState.COMPLETED, output=i)

    async def get(i: int) -> None:
        await storage.get(endpoint, ids[i])

    cpu = time.process_time()
    result = {name: await _phase(n, fn) * 1e6 / n for name, fn in
              (("submit", submit), ("claim", claim), ("finish", finish), ("get", get))}  # fmt: skip
    result["client CPU"] = (time.process_time() - cpu) * 1e6 / n
    return result


async def bench_storage(args: argparse.Namespace, work: Path, port: int) -> None:
    runs: dict[str, list[dict[str, float]]] = {"sqlite": [], "redis": []}
    redis_cpu_us: list[float] = []
    pings: list[float] = []
    for r in range(args.repeat):
        pings.append(ping_cpu_us(port))
        for kind in ("sqlite", "redis"):
            url = (f"sqlite:///{work / f'ops-{r}.db'}" if kind == "sqlite"
                   else f"redis://127.0.0.1:{port}/0?prefix=bench{r}")  # fmt: skip
            storage = open_storage(url)
            await storage.open()
            try:
                before = redis_cpu(port)
                runs[kind].append(await storage_lifecycle(storage, args.jobs, "ops"))
                if kind == "redis":
                    redis_cpu_us.append((redis_cpu(port) - before) * 1e6 / args.jobs)
            finally:
                await storage.close()
    print(f"\n1. storage operations ({args.jobs} job life cycles, 16 at a time, median of {args.repeat}):")
    print(f"   {'step':<12}{'SQLite µs/op':>14}{'Redis µs/op':>14}{'Redis/SQLite':>14}")
    for step in ("submit", "claim", "finish", "get", "client CPU"):
        s = statistics.median(run[step] for run in runs["sqlite"])
        r_ = statistics.median(run[step] for run in runs["redis"])
        print(f"   {step:<12}{s:>14.0f}{r_:>14.0f}{r_ / s:>13.2f}x")
    cpu, ping = statistics.median(redis_cpu_us), statistics.median(pings)
    print(f"   Redis server CPU per life cycle (submit+claim+finish+get, with their wake-up PUBLISHes): "
          f"{cpu:.0f} µs (spread {min(redis_cpu_us):.0f}-{max(redis_cpu_us):.0f}) -> one Redis core ~ "
          f"{1e6 / cpu:,.0f} life cycles/s here")
    print(f"   yardstick: a PING costs {ping:.1f} µs of Redis CPU here, so a life cycle costs "
          f"{cpu / ping:.0f} PINGs (~{cpu / ping * 1.5:.0f} µs where a PING costs 1.5 µs)")


# -- 2. end to end ---------------------------------------------------------------------------------
async def _completed(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url + "/health") as resp:
        return (await resp.json())["jobs"].get("completed", 0)


async def noop_rate(base: str, endpoint: str, jobs: int, handler: Path, concurrency: int) -> float:
    url = f"{base}/v2/{endpoint}"
    async with aiohttp.ClientSession() as session:
        sem = asyncio.Semaphore(32)

        async def submit(i: int) -> None:
            async with sem, session.post(url + "/run", json={"input": i}) as resp:
                await resp.read()

        await asyncio.gather(*(submit(i) for i in range(jobs)))
        env = {**os.environ, "WORKER_KIT_URL": url, "WORKER_KIT_CONCURRENCY": str(concurrency),
               "WORKER_KIT_LOG_LEVEL": "WARNING"}  # fmt: skip
        proc = subprocess.Popen([sys.executable, str(handler)], env=env, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
        try:
            first_t, first_n = None, 0
            while True:
                n = await _completed(session, url)
                now = time.perf_counter()
                if first_t is None and n > 0:
                    first_t, first_n = now, n
                if n >= jobs:
                    return (n - first_n) / max(now - (first_t or now), 1e-9)
                await asyncio.sleep(0.01)
        finally:
            proc.terminate()
            proc.wait(10)


async def serve(storage_url: str, config: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "worker_kit", "serve", "--port", str(port), "--storage", storage_url,
         "--config", str(config), "--log-level", "warning"], stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"{base}/v2/warmup/health"):
                    return proc, base
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    sys.exit("the service did not start")


async def bench_end_to_end(args: argparse.Namespace, work: Path, port: int) -> None:
    config = work / "bench.toml"
    config.write_text("[defaults]\nrate_limits_enabled = false\nbackpressure = false\n")
    handler = work / "noop.py"
    handler.write_text(textwrap.dedent(NOOP))
    services = {kind: await serve(url, config) for kind, url in
                (("sqlite", f"sqlite:///{work / 'e2e.db'}"), ("redis", f"redis://127.0.0.1:{port}/0?prefix=e2e"))}
    try:
        print(f"\n2. end to end: no-op jobs/s, one service process, one worker process "
              f"({args.jobs} jobs queued, median of {args.repeat}):")
        for concurrency in (1, 16):
            rates: dict[str, list[float]] = {"sqlite": [], "redis": []}
            cpu: list[float] = []
            for r in range(args.repeat):
                for kind, (_, base) in services.items():
                    before = redis_cpu(port)
                    endpoint = f"e2e-{concurrency}-{r}"
                    rates[kind].append(await noop_rate(base, endpoint, args.jobs, handler, concurrency))
                    if kind == "redis":
                        cpu.append((redis_cpu(port) - before) * 1e6 / args.jobs)
            s, r_ = statistics.median(rates["sqlite"]), statistics.median(rates["redis"])
            print(f"   concurrency {concurrency:>2}: SQLite {s:6.0f}/s, Redis {r_:6.0f}/s ({r_ / s:.2f}x); "
                  f"Redis CPU {statistics.median(cpu):.0f} µs per job (submit, /health polls, claim, finish)")
    finally:
        for proc, _ in services.values():
            proc.terminate()
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-end-to-end", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wk-bench-redis-"))
    proc, port = start_redis(work)
    try:
        print(f"{platform.node()} · {platform.processor() or platform.machine()} · {os.cpu_count()} CPUs · "
              f"Python {platform.python_version()} · redis-server "
              f"{redis.Redis(port=port).info('server')['redis_version']} · "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        asyncio.run(bench_storage(args, work, port))
        if not args.skip_end_to_end:
            asyncio.run(bench_end_to_end(args, work, port))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
