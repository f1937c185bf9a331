"""Worker throughput, by hand: `python bench/bench_worker.py [--jobs 2000]`.

Starts the queue service as a subprocess (SQLite in a temp dir, rate limits and backpressure
off), then measures, each against its own endpoint:

1. no-op jobs per second for one worker_kit worker process at concurrency 1 and 16
   (async and sync no-op handlers), side by side with a bare aiohttp loop making the same
   claim and finish requests (`--bare`, the ceiling the service allows);
2. streaming: small chunks (tokens) per second, and MB/s with 1 MB chunks, from the handler
   to a client reading /stream with a cursor.

Jobs are queued before the worker starts; the rate is measured from the first job seen
done to the last, by polling /health, so process start-up is not counted.
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

TERMINAL = ("COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED")

HANDLERS = {
    "async": """
        import worker_kit

        @worker_kit.handler
        async def noop(job):
            return job.input

        worker_kit.start()
    """,
    "sync": """
        import worker_kit

        @worker_kit.handler
        def noop(job):
            return job.input

        worker_kit.start()
    """,
    "tokens": """
        import worker_kit

        @worker_kit.handler
        async def tokens(job):
            for i in range(job.input["n"]):
                yield "tok "

        worker_kit.start()
    """,
    "megabytes": """
        import worker_kit

        @worker_kit.handler
        def megabytes(job):
            chunk = "x" * 1_000_000
            for i in range(job.input["n"]):
                yield chunk

        worker_kit.start()
    """,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the bare loop: the same requests, nothing else ----------------------------------------------


async def bare_loop(url: str, concurrency: int) -> None:
    """Claim one job, finish it, repeat; `concurrency` such loops. Exits when the queue stays empty."""
    from worker_kit.protocol import MSGPACK, pack, unpack

    headers = {"Content-Type": MSGPACK, "Accept": MSGPACK}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def one(i: int) -> None:
            empty = 0
            while empty < 2:
                body = pack({"worker_id": f"bare-{i}", "max": 1, "wait_ms": 1000})
                async with session.post(url + "/worker/claim", data=body) as resp:
                    jobs = unpack(await resp.read())["jobs"]
                empty = 0 if jobs else empty + 1
                for job in jobs:
                    done = pack({"token": job["token"], "state": "COMPLETED", "output": job["input"]})
                    async with session.post(f"{url}/worker/jobs/{job['id']}/finish", data=done) as resp:
                        await resp.read()

        await asyncio.gather(*(one(i) for i in range(concurrency)))


# -- measuring ---------------------------------------------------------------------------------


async def submit(session: aiohttp.ClientSession, url: str, count: int, input: Any = None) -> list[str]:
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> str:
        async with sem, session.post(url + "/run", json={"input": input if input is not None else i}) as r:
            return (await r.json())["id"]

    return await asyncio.gather(*(one(i) for i in range(count)))


async def completed(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url + "/health") as resp:
        return (await resp.json())["jobs"].get("completed", 0)


async def measure_noop(base: str, endpoint: str, jobs: int, cmd: list[str], env: dict[str, str]) -> float:
    url = f"{base}/v2/{endpoint}"
    async with aiohttp.ClientSession() as session:
        await submit(session, url, jobs)
        proc = subprocess.Popen(  # noqa: ASYNC220
            cmd, env={**os.environ, **env, "WORKER_KIT_URL": url},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            first_t, first_n = None, 0
            while True:
                n = await completed(session, url)
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


async def measure_stream(
    base: str, endpoint: str, handler: Path, n: int, unit_bytes: int
) -> tuple[float, float]:
    url = f"{base}/v2/{endpoint}"
    env = {**os.environ, "WORKER_KIT_URL": url, "WORKER_KIT_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, str(handler)], env=env, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    try:
        async with aiohttp.ClientSession() as session:
            (job_id,) = await submit(session, url, 1, {"n": n})
            got, cursor, first = 0, 0, None
            while True:
                async with session.get(f"{url}/stream/{job_id}?cursor={cursor}") as resp:
                    reply = await resp.json()
                if reply["stream"] and first is None:
                    first = time.perf_counter()
                got += len(reply["stream"])
                cursor = reply.get("cursor", cursor + len(reply["stream"]))
                if reply["status"] in TERMINAL and not reply["stream"]:
                    break
                if not reply["stream"]:
                    await asyncio.sleep(0.002)
            elapsed = time.perf_counter() - (first or time.perf_counter())
            assert got == n, (got, n, reply["status"])
            return n / elapsed, n * unit_bytes / elapsed / 1e6
    finally:
        proc.terminate()
        proc.wait(10)


async def main_async(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="wk-bench-"))
    config = work / "bench.toml"
    config.write_text("[defaults]\nrate_limits_enabled = false\nbackpressure = false\n")
    handlers = {}
    for name, source in HANDLERS.items():
        handlers[name] = work / f"{name}.py"
        handlers[name].write_text(textwrap.dedent(source))
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
        quiet = {"WORKER_KIT_LOG_LEVEL": "WARNING"}
        print(f"no-op jobs per second ({args.jobs} jobs queued, one worker process, "
              f"median of {args.repeat} interleaved runs):")
        for c in args.concurrency:
            runs: dict[str, list[float]] = {"async": [], "sync": [], "bare": []}
            for r in range(args.repeat):  # interleaved, so a noisy moment hits every variant alike
                for kind in ("async", "sync", "bare"):
                    if kind == "bare":
                        cmd = [sys.executable, __file__, "--bare", "--bare-concurrency", str(c)]
                    else:
                        cmd = [sys.executable, str(handlers[kind])]
                    runs[kind].append(await measure_noop(
                        base, f"{kind}-{c}-{r}", args.jobs, cmd, {**quiet, "WORKER_KIT_CONCURRENCY": str(c)}))
            med = {k: statistics.median(v) for k, v in runs.items()}
            bare = med["bare"]
            print(f"  concurrency {c:>2}: worker_kit async {med['async']:7.0f}/s "
                  f"({med['async'] / bare:4.0%} of bare), sync {med['sync']:7.0f}/s "
                  f"({med['sync'] / bare:4.0%}); bare aiohttp loop {bare:7.0f}/s")
        rate, _ = await measure_stream(base, "tokens", handlers["tokens"], args.tokens, 4)
        print(f"streaming tokens: {rate:,.0f} chunks/s ({args.tokens} small chunks, handler to client)")
        _, mbps = await measure_stream(base, "megabytes", handlers["megabytes"], args.megabytes, 1_000_000)
        print(f"streaming 1 MB chunks: {mbps:,.0f} MB/s ({args.megabytes} chunks, handler to client)")
    finally:
        service.terminate()
        service.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=20000)
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare-concurrency", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        asyncio.run(bare_loop(os.environ["WORKER_KIT_URL"], args.bare_concurrency))
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
