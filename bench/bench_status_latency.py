"""SQLite storage benchmark, run by hand: `python bench/bench_status_latency.py [--quick]`.

1. get() latency (what /status costs in storage) with 1 000, 10 000 and 100 000 stored
   jobs: it must stay flat, since get is a primary-key lookup.
2. submit() throughput with 1, 16 and 64 concurrent submitters, for synchronous=normal
   and synchronous=full: group commit lets concurrent submits share one commit.

Prints Markdown tables (paste them into docs/benchmarks.md, "## Storage (SQLite)").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from worker_kit.job import JobState, Policy
from worker_kit.storage.sqlite.backend import SQLiteStorage

EP = "bench"
INPUT = {"prompt": "x" * 200, "max_tokens": 128}


async def fill(storage: SQLiteStorage, n: int) -> list[str]:
    """n jobs: half finished (COMPLETED), a tenth running, the rest queued, as a busy endpoint has."""
    ids: list[str] = []
    while len(ids) < n:
        batch = min(500, n - len(ids))
        jobs = await asyncio.gather(
            *(storage.submit(EP, INPUT, policy=Policy(), retention_ms=3_600_000) for _ in range(batch))
        )
        ids += [job.id for job in jobs]
    for done in range(0, n // 2, 500):
        claimed = await storage.claim(EP, "bench-worker", min(500, n // 2 - done), 3_600_000)
        await asyncio.gather(
            *(storage.finish(EP, j.id, j.token or "", JobState.COMPLETED, output={"text": "y" * 200})
              for j in claimed)
        )  # fmt: skip
    await storage.claim(EP, "bench-worker", n // 10, 3_600_000)
    return ids


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def get_latency(path: Path, n: int, samples: int) -> tuple[float, float, float]:
    storage = SQLiteStorage.from_url(f"sqlite:///{path}")
    await storage.open()
    try:
        ids = await fill(storage, n)
        rng = random.Random(n)
        for job_id in rng.sample(ids, min(200, n)):  # warm the connections and page cache
            await storage.get(EP, job_id)
        times = []
        for _ in range(samples):
            job_id = rng.choice(ids)
            start = time.perf_counter()
            record = await storage.get(EP, job_id)
            times.append(time.perf_counter() - start)
            assert record is not None
        return percentile(times, 0.5) * 1e6, percentile(times, 0.99) * 1e6, statistics.mean(times) * 1e6
    finally:
        await storage.close()


async def submit_throughput(path: Path, synchronous: str, submitters: int, total: int) -> tuple[float, float]:
    storage = SQLiteStorage.from_url(f"sqlite:///{path}?synchronous={synchronous}")
    await storage.open()
    per = total // submitters

    async def submitter() -> None:
        for _ in range(per):
            await storage.submit(EP, INPUT, policy=Policy(), retention_ms=60_000)

    try:
        before = storage.stats()
        start = time.perf_counter()
        await asyncio.gather(*(submitter() for _ in range(submitters)))
        elapsed = time.perf_counter() - start
        after = storage.stats()
        ops = after["operations"] - before["operations"]
        commits = after["transactions"] - before["transactions"]
        return per * submitters / elapsed, ops / max(1, commits)
    finally:
        await storage.close()


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {platform.system()}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--dir", default=None, help="where to put the database files (default: a temp dir)")
    args = parser.parse_args()
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    samples = 2_000 if args.quick else 10_000
    total = 1_024 if args.quick else 4_096

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(f"Machine: {machine()}; date {time.strftime('%Y-%m-%d', time.gmtime())}; files in {tmp}\n")
        print(f"get() latency ({samples} random lookups, sequential)\n")
        print("| stored jobs | p50 µs | p99 µs | mean µs |")
        print("|---:|---:|---:|---:|")
        for n in sizes:
            p50, p99, mean = await get_latency(Path(tmp) / f"get-{n}.db", n, samples)
            print(f"| {n:,} | {p50:.0f} | {p99:.0f} | {mean:.0f} |")

        print(f"\nsubmit() throughput ({total} submits per run)\n")
        print("| synchronous | concurrent submitters | jobs/s | submits per commit |")
        print("|---|---:|---:|---:|")
        for synchronous in ("normal", "full"):
            for submitters in (1, 16, 64):
                path = Path(tmp) / f"submit-{synchronous}-{submitters}.db"
                rate, per_commit = await submit_throughput(path, synchronous, submitters, total)
                print(f"| {synchronous} | {submitters} | {rate:,.0f} | {per_commit:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
