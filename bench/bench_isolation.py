"""What process isolation costs, by hand: `python bench/bench_isolation.py [--jobs 1000]`.

Starts the queue service as a subprocess (SQLite in a temp dir, rate limits off), then, for a
worker in the default thread mode and in process isolation (WORKER_KIT_ISOLATION=process):

1. no-op jobs per second, one worker process at concurrency 1 and 4, jobs queued before the
   worker starts, timed from the first job seen done to the last (so start-up is not counted),
   side by side with a bare aiohttp loop making the same claim and finish requests;
2. `/runsync` latency of a no-op job, one request at a time (p50, p99), side by side with the
   same requests served by the bare aiohttp loop;
3. recovery from a stuck handler: the time from a stuck job's deadline (its status turning
   TIMED_OUT) to the next queued job done, with WORKER_KIT_STUCK_GRACE=0.5. In thread mode
   the worker replaces itself in place (os.execv); in process mode the child is killed and a
   fresh one started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp

HANDLER = """
    import time

    import worker_kit

    @worker_kit.handler(timeout=1)
    def noop(job):
        if job.input == "stuck":
            time.sleep(60)  # one C call: cannot be interrupted
        return job.input

    worker_kit.start()
"""
MODES = {"thread": {}, "process": {"WORKER_KIT_ISOLATION": "process"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def bare_worker(url: str, concurrency: int) -> None:
    """The baseline: claim one job, finish it, repeat, for ever (until terminated)."""
    from worker_kit.protocol import MSGPACK, pack, unpack

    headers = {"Content-Type": MSGPACK, "Accept": MSGPACK}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def one(i: int) -> None:
            while True:
                body = pack({"worker_id": f"bare-{i}", "max": 1, "wait_ms": 30_000})
                async with session.post(url + "/worker/claim", data=body) as resp:
                    jobs = unpack(await resp.read())["jobs"]
                for job in jobs:
                    done = pack({"token": job["token"], "state": "COMPLETED", "output": job["input"]})
                    async with session.post(f"{url}/worker/jobs/{job['id']}/finish", data=done) as resp:
                        await resp.read()

        await asyncio.gather(*(one(i) for i in range(concurrency)))


class Bench:
    def __init__(self, base: str, handler: Path, session: aiohttp.ClientSession) -> None:
        self.base, self.handler, self.session = base, handler, session
        self.n = 0
        self.log = open(handler.parent / "workers.log", "ab")  # workers log here for the whole run

    def endpoint(self, name: str) -> str:
        self.n += 1
        return f"{self.base}/v2/{name}-{self.n}"

    def start(self, url: str, mode: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        if mode == "bare":
            cmd = [sys.executable, __file__, "--bare-worker", env.get("WORKER_KIT_CONCURRENCY", "1")]
        else:
            cmd = [sys.executable, str(self.handler)]
        environ = {**os.environ, **MODES.get(mode, {}), **env, "WORKER_KIT_URL": url,
                   "WORKER_KIT_LOG_LEVEL": "WARNING"}
        return subprocess.Popen(cmd, env=environ, stdout=subprocess.DEVNULL, stderr=self.log)

    async def post(self, url: str, body: Any) -> Any:
        async with self.session.post(url, json=body) as resp:
            return await resp.json()

    async def status(self, url: str, job_id: str) -> str:
        async with self.session.get(f"{url}/status/{job_id}") as resp:
            return (await resp.json())["status"]

    async def until(self, url: str, job_id: str, state: str) -> None:
        """Poll the job's status every 2 ms until it is `state`."""
        for _ in range(30_000):
            if await self.status(url, job_id) == state:
                return
            await asyncio.sleep(0.002)
        raise TimeoutError(f"job {job_id} never became {state}")

    async def done_count(self, url: str) -> int:
        async with self.session.get(url + "/health") as resp:
            return (await resp.json())["jobs"].get("completed", 0)

    async def jobs_per_s(self, mode: str, jobs: int, concurrency: int) -> float:
        url = self.endpoint(f"rate-{mode}-{concurrency}")
        sem = asyncio.Semaphore(32)

        async def submit(i: int) -> None:
            async with sem:
                await self.post(url + "/run", {"input": i})

        await asyncio.gather(*(submit(i) for i in range(jobs)))
        proc = self.start(url, mode, {"WORKER_KIT_CONCURRENCY": str(concurrency)})
        try:
            first_t, first_n = None, 0
            while True:
                n = await self.done_count(url)
                now = time.perf_counter()
                if first_t is None and n > 0:
                    first_t, first_n = now, n
                if n >= jobs:
                    assert first_t is not None
                    return (n - first_n) / max(now - first_t, 1e-9)
                await asyncio.sleep(0.01)
        finally:
            proc.terminate()
            proc.wait(10)

    async def runsync_ms(self, modes: tuple[str, ...], requests: int) -> dict[str, list[float]]:
        """Sequential /runsync requests, round robin over one worker per mode, so a noisy moment
        on the machine hits every mode alike."""
        urls = {mode: self.endpoint(f"runsync-{mode}") for mode in modes}
        procs = [self.start(urls[mode], mode, {}) for mode in modes]
        try:
            times: dict[str, list[float]] = {mode: [] for mode in modes}
            for i in range(requests + 3):
                for mode in modes:
                    began = time.perf_counter()
                    reply = await self.post(urls[mode] + "/runsync?wait=30000", {"input": i})
                    if i >= 3:  # the first ones warm the worker and its handler process
                        times[mode].append((time.perf_counter() - began) * 1000)
                    assert reply["status"] == "COMPLETED", reply
            return times
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)

    async def recovery_s(self, mode: str) -> float:
        url = self.endpoint(f"stuck-{mode}")
        proc = self.start(url, mode, {"WORKER_KIT_STUCK_GRACE": "0.5"})
        try:
            warm = await self.post(url + "/runsync?wait=30000", {"input": 0})
            assert warm["status"] == "COMPLETED", warm
            stuck = (await self.post(url + "/run", {"input": "stuck"}))["id"]
            after = (await self.post(url + "/run", {"input": 1}))["id"]
            await self.until(url, stuck, "TIMED_OUT")
            deadline = time.perf_counter()
            await self.until(url, after, "COMPLETED")
            return time.perf_counter() - deadline
        finally:
            proc.terminate()
            proc.wait(10)


async def main_async(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="wk-bench-iso-"))
    config = work / "bench.toml"
    config.write_text("[defaults]\nrate_limits_enabled = false\nbackpressure = false\n")
    handler = work / "noop.py"
    handler.write_text(textwrap.dedent(HANDLER))
    port = free_port()
    service = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "worker_kit", "serve", "--port", str(port), "--storage",
         f"sqlite:///{work / 'bench.db'}", "--config", str(config), "--log-level", "warning"],
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"{base}/v2/warmup/health"):
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            bench = Bench(base, handler, session)
            await report(bench, args)
    finally:
        service.terminate()
        service.wait(10)


async def report(bench: Bench, args: argparse.Namespace) -> None:
    kinds = ("thread", "process", "bare")
    print(f"no-op jobs per second ({args.jobs} jobs queued, one worker process, median of {args.repeat} "
          "interleaved runs):")
    for c in args.concurrency:
        runs: dict[str, list[float]] = {k: [] for k in kinds}
        for _ in range(args.repeat):
            for kind in kinds:
                runs[kind].append(await bench.jobs_per_s(kind, args.jobs, c))
        med = {k: statistics.median(v) for k, v in runs.items()}
        thread, bare = med["thread"], med["bare"]
        print(f"  concurrency {c}: thread {thread:6.0f}/s ({thread / bare:4.0%} of bare), "
              f"process {med['process']:6.0f}/s ({med['process'] / med['bare']:4.0%} of bare, "
              f"{med['process'] / med['thread']:4.0%} of thread); bare aiohttp loop {med['bare']:6.0f}/s")
    print(f"/runsync latency of a no-op job, ms ({args.requests} sequential requests):")
    lat = {kind: sorted(t) for kind, t in (await bench.runsync_ms(kinds, args.requests)).items()}
    for kind in kinds:
        t = lat[kind]
        p50, p99 = statistics.median(t), t[int(len(t) * 0.99) - 1]
        ratio = p50 / statistics.median(lat["bare"])
        print(f"  {kind:>7}: p50 {p50:5.2f}  p99 {p99:6.2f}  ({ratio:.2f}x bare p50)")
    print(f"stuck handler: deadline to the next job done, s (WORKER_KIT_STUCK_GRACE=0.5, median of "
          f"{args.repeat}):")
    for kind in ("thread", "process"):
        times = [await bench.recovery_s(kind) for _ in range(args.repeat)]
        print(f"  {kind:>7}: {statistics.median(times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bare-worker", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_worker:
        asyncio.run(bare_worker(os.environ["WORKER_KIT_URL"], args.bare_worker))
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
