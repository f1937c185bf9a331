"""Waiting workers cost the service nothing per job, by hand: `python -m bench.bench_idle_workers`.

Issue #16's figure: the service's CPU per job with 100 idle workers long-polling, against 1.
One `worker-kit serve` (SQLite) and one process running K real worker runtimes
(`worker_kit.Worker`, each with its own worker id, HTTP session and long-poll; concurrency 1; an
async no-op handler). Jobs are submitted one at a time at a steady rate, so almost every worker
waits in its long-poll almost all the time. The figure is the service's CPU time per job with
K = 100 against K = 1: the same service, jobs and rate, so the ratio is what the extra waiting
workers cost (near 1 when a new job wakes one waiting claim rather than every one, and the waits'
own periodic re-reads are cheap). It is a ratio of the service against itself, as the issue
defines it, not against a bare floor. Rounds alternate which K goes first.

    python -m bench.bench_idle_workers [--jobs 1000] [--rate 200] [--rounds 3] [--workers 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from . import procs

Health = dict[str, dict[str, int]]


async def _run_workers(url: str, count: int) -> None:
    from worker_kit.worker import Worker
    from worker_kit.worker.registry import Handler

    async def noop(job: object) -> None:
        return None

    handler = Handler(fn=noop, name="noop")
    workers = [Worker(handler, url, worker_id=f"idle-{n}", concurrency=1) for n in range(count)]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    await stop.wait()
    await asyncio.gather(*(worker.stop(grace_s=0) for worker in workers), return_exceptions=True)
    await asyncio.gather(*tasks, return_exceptions=True)


async def _health(session: aiohttp.ClientSession, ep: str) -> Health:
    async with session.get(ep + "/health") as resp:
        return await resp.json()  # type: ignore[no-any-return]



async def _until(
    session: aiohttp.ClientSession, ep: str, done: Callable[[Health], bool], timeout: float = 120.0
) -> None:
    deadline = time.monotonic() + timeout
    while not done(await _health(session, ep)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting: {await _health(session, ep)}")
        await asyncio.sleep(0.1)


async def _paced_jobs(ep: str, pid: int, workers: int, jobs: int, rate: float) -> float:
    """Service CPU µs per job while `jobs` jobs are submitted at `rate` per second."""
    async with aiohttp.ClientSession() as session:
        # Every worker has made its first claim and waits in it.
        await _until(session, ep, lambda h: sum(h["workers"].values()) >= workers)
        await asyncio.sleep(0.5)
        before = procs.cpu_seconds(pid)
        began = time.monotonic()
        for n in range(jobs):
            await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
            async with session.post(ep + "/run", json={"input": None}) as resp:
                assert resp.status == 200, await resp.text()
        await _until(session, ep, lambda h: h["jobs"]["completed"] >= jobs)
        return (procs.cpu_seconds(pid) - before) * 1e6 / jobs


def measure(work: Path, workers: int, jobs: int, rate: float) -> float:
    with procs.service(work) as (url, service):
        ep = url + "/v2/bench"
        args = [procs.PY, "-m", "bench.bench_idle_workers", "workers", "--url", ep, "--count", str(workers)]
        with procs.process(args, cwd=procs.ROOT):
            return asyncio.run(_paced_jobs(ep, service.pid, workers, jobs, rate))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", default="measure", choices=["measure", "workers"])
    parser.add_argument("--url", help="(workers mode) the endpoint URL")
    parser.add_argument("--count", type=int, default=1, help="(workers mode) how many workers")
    parser.add_argument("--workers", type=int, default=100, help="idle workers against one (default 100)")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0, help="jobs submitted per second")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.mode == "workers":
        asyncio.run(_run_workers(args.url, args.count))
        return
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            order = [args.workers, 1] if round_no % 2 else [1, args.workers]
            got = {k: measure(Path(tmp), k, args.jobs, args.rate) for k in order}
            ratios.append(got[args.workers] / got[1])
            print(f"round {round_no + 1}: {got[1]:.0f} µs/job with 1 worker, "
                  f"{got[args.workers]:.0f} µs/job with {args.workers}: {ratios[-1]:.2f}x", flush=True)
    print(json.dumps({"workers": args.workers, "ratio_median": round(statistics.median(ratios), 3),
                      "ratios": [round(r, 3) for r in ratios]}))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
