"""End-to-end no-op jobs per second with one and with two service replicas (run by hand).

    python bench/bench_replicas.py [--jobs 3000] [--workers 2] [--concurrency 16] [--rounds 3]
                                   [--redis redis://127.0.0.1:6379/15] [--modes sqlite,redis-1,redis-2,bare]

Every job goes the whole way: a client submits it (POST /run), a worker process claims it, runs
a no-op async handler and reports it, and the client sees it COMPLETED (the clock stops when the
service's counts say every job completed). Each setup runs in its own processes:

- sqlite   one `worker-kit serve` on SQLite (a temporary file);
- redis-1  one `worker-kit serve` on Redis;
- redis-2  two `worker-kit serve` processes on the same Redis, workers and submits split across them;
- bare     the baseline: a bare aiohttp queue (an in-memory deque behind /run, a long-poll /claim
           and /finish) with bare aiohttp worker processes doing the same round trips.

For Redis it also prints the Redis server's CPU time per job (INFO cpu, before and after), and
for every setup the CPU time per job of the service processes (/proc/PID/stat). Each Redis run
uses its own key prefix and deletes its keys afterwards; nothing else in the Redis is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
EP = "bench"
CONFIG = """
log_level = "warning"
[defaults]
rate_limits = false
backpressure = false
"""
HANDLER = """
import worker_kit

@worker_kit.handler
async def noop(job):
    return None

worker_kit.start()
"""


# -- the baseline: a bare aiohttp queue and bare workers ----------------------------------------------
def bare_server(port: int) -> None:
    import uvloop
    from aiohttp import web

    queue: deque[tuple[str, Any]] = deque()
    waiters: deque[asyncio.Future[None]] = deque()
    done = {"n": 0}

    async def run(request: web.Request) -> web.Response:
        body = await request.json()
        job_id = secrets.token_hex(16)
        queue.append((job_id, body.get("input")))
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                break
        return web.json_response({"id": job_id, "status": "IN_QUEUE"})

    async def claim(request: web.Request) -> web.Response:
        body = await request.json()
        if not queue:
            fut = asyncio.get_running_loop().create_future()
            waiters.append(fut)
            try:
                await asyncio.wait_for(fut, 30)
            except TimeoutError:
                pass
        jobs = [queue.popleft() for _ in range(min(body.get("max", 1), len(queue)))]
        return web.json_response({"jobs": [{"id": i, "input": x} for i, x in jobs]})

    async def finish(request: web.Request) -> web.Response:
        await request.json()
        done["n"] += 1
        return web.json_response({"status": "COMPLETED"})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"jobs": {"completed": done["n"]}})

    app = web.Application()
    app.router.add_post(f"/v2/{EP}/run", run)
    app.router.add_post(f"/v2/{EP}/claim", claim)
    app.router.add_post(f"/v2/{EP}/finish/{{id}}", finish)
    app.router.add_get(f"/v2/{EP}/health", health)

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    uvloop.install()
    asyncio.run(serve())


def bare_worker(url: str, concurrency: int) -> None:
    import uvloop

    async def slot(session: aiohttp.ClientSession) -> None:
        while True:
            async with session.post(f"{url}/claim", json={"max": 1}) as resp:
                jobs = (await resp.json())["jobs"]
            for job in jobs:
                async with session.post(f"{url}/finish/{job['id']}", json={"output": None}) as resp:
                    await resp.read()

    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(slot(session) for _ in range(concurrency)))

    uvloop.install()
    asyncio.run(main())


# -- processes -------------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_KIT_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def start_server(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env())
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, f"{line.rsplit(' ', 1)[1].strip()}/v2/{EP}"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu(url: str) -> float:
    import redis

    info = redis.Redis.from_url(url).info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def drop_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)


# -- the load -------------------------------------------------------------------------------------------
async def completed(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(f"{url}/health") as resp:
        return int((await resp.json())["jobs"]["completed"])


async def drive(urls: list[str], jobs: int, concurrency: int) -> float:
    """Submit `jobs` no-op jobs round robin over `urls`; seconds until all completed."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency * 2)) as session:
        before = await completed(session, urls[0])
        counter = iter(range(jobs))
        started = time.perf_counter()

        async def submitter() -> None:
            for n in counter:
                async with session.post(f"{urls[n % len(urls)]}/run", json={"input": {"n": n}}) as resp:
                    if resp.status != 200:
                        raise SystemExit(f"submit failed: {resp.status} {await resp.text()}")
                    await resp.read()

        await asyncio.gather(*(submitter() for _ in range(concurrency)))
        while await completed(session, urls[0]) - before < jobs:  # noqa: ASYNC110 - another process's state
            await asyncio.sleep(0.02)
        return time.perf_counter() - started


def start_bare(args: argparse.Namespace) -> tuple[list[subprocess.Popen[Any]], list[str], list[Any]]:
    code = f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import bench_replicas as b; "
    server, url = start_server([sys.executable, "-c", code + f"b.bare_server({_free_port()})"])
    worker_code = code + f"b.bare_worker({url!r}, {args.concurrency})"
    workers = [subprocess.Popen([sys.executable, "-c", worker_code], env=_env()) for _ in range(args.workers)]
    return [server], [url], workers


def start_worker_kit(
    storage: str, replicas: int, args: argparse.Namespace, tmp: Path
) -> tuple[list[subprocess.Popen[Any]], list[str], list[Any]]:
    servers, urls = [], []
    serve = [sys.executable, "-m", "worker_kit", "serve", "--port", "0", "--storage", storage]
    for _ in range(replicas):
        proc, url = start_server([*serve, "--config", str(tmp / "bench.toml")])
        servers.append(proc)
        urls.append(url)
    workers = []
    for i in range(args.workers):  # spread over the replicas
        env = {**_env(), "WORKER_KIT_URL": urls[i % len(urls)], "WORKER_KIT_LOG_LEVEL": "warning",
               "WORKER_KIT_CONCURRENCY": str(args.concurrency)}  # fmt: skip
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        workers.append(subprocess.Popen([sys.executable, str(tmp / "noop.py")], env=env, **quiet))
    return servers, urls, workers


def run_setup(mode: str, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    prefix = f"wk-bench-{secrets.token_hex(4)}"
    on_redis = mode.startswith("redis")
    if mode == "bare":
        servers, urls, workers = start_bare(args)
    else:
        storage = f"sqlite:///{tmp / f'{mode}.db'}" if not on_redis else f"{args.redis}?prefix={prefix}"
        servers, urls, workers = start_worker_kit(storage, 2 if mode == "redis-2" else 1, args, tmp)
    try:
        asyncio.run(drive(urls, min(200, args.jobs), args.concurrency))  # warm-up: workers connected
        rates, cpu_service, cpu_redis = [], [], []
        for _ in range(args.rounds):
            cpu0 = sum(cpu_seconds(p.pid) for p in servers)
            r0 = redis_cpu(args.redis) if on_redis else 0.0
            seconds = asyncio.run(drive(urls, args.jobs, args.concurrency))
            rates.append(args.jobs / seconds)
            cpu_service.append((sum(cpu_seconds(p.pid) for p in servers) - cpu0) / args.jobs)
            if on_redis:
                cpu_redis.append((redis_cpu(args.redis) - r0) / args.jobs)
        return {
            "jobs_s": statistics.median(rates),
            "service_us": statistics.median(cpu_service) * 1e6,
            "redis_us": statistics.median(cpu_redis) * 1e6 if cpu_redis else float("nan"),
        }
    finally:
        for proc in [*workers, *servers]:
            proc.kill()
            proc.wait()
        if on_redis:
            drop_prefix(args.redis, prefix)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per round (default 3000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=16, help="job slots per worker and submitters")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per setup; the median is shown")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15", help="the Redis to use")
    parser.add_argument("--modes", default="bare,sqlite,redis-1,redis-2", help="comma-separated setups")
    args = parser.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"# {machine}, {time.strftime('%Y-%m-%d')}; {args.jobs} jobs x {args.rounds} rounds, "
          f"{args.workers} workers x {args.concurrency} slots")  # fmt: skip
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="wk-bench-replicas-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "bench.toml").write_text(CONFIG)
        (tmp / "noop.py").write_text(HANDLER)
        for mode in args.modes.split(","):
            results[mode] = run_setup(mode, args, tmp)
    bare = results.get("bare", {}).get("jobs_s")
    print("| setup | jobs/s | vs bare | service CPU µs/job | Redis CPU µs/job |")
    print("|---|---|---|---|---|")
    for mode, r in results.items():
        ratio = f"{r['jobs_s'] / bare:.2f}" if bare else "-"
        redis_us = "-" if r["redis_us"] != r["redis_us"] else f"{r['redis_us']:.0f}"
        print(f"| {mode} | {r['jobs_s']:,.0f} | {ratio} | {r['service_us']:.0f} | {redis_us} |")


if __name__ == "__main__":
    main()
