"""Service throughput next to a bare aiohttp route, on this machine (run by hand).

    python bench/bench_service.py [--requests 10000] [--rounds 3] [--concurrency 32] [--seconds 20]

Starts `worker-kit serve` (SQLite in a temporary directory, rate limits and backpressure off)
and a bare aiohttp app returning a small JSON dict, each as its own process with uvloop, and
drives both with the same aiohttp load generator on 127.0.0.1:

- POST /v2/bench/run              vs  POST /bare (reads the JSON body, answers a dict)
- GET  /v2/bench/status/{id}      vs  GET  /bare/{id}

and prints the median requests per second over the rounds and the ratio service / bare (target >= 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, Python put bench/ itself first on the path; the project root makes `bench` a package.
sys.path.insert(0, str(ROOT))
from bench import procs  # noqa: E402

CONFIG = """
log_level = "warning"
[defaults]
rate_limits = false
backpressure = false
"""


def bare_server(port: int) -> None:
    """The baseline: the least an aiohttp JSON route can do."""
    import uvloop
    from aiohttp import web

    async def post(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"id": uuid.uuid4().hex, "status": "IN_QUEUE", "n": len(body)})

    async def get(request: web.Request) -> web.Response:
        return web.json_response(
            {"id": request.match_info["id"], "status": "IN_QUEUE", "delayTime": 0, "executionTime": 0}
        )

    app = web.Application()
    app.router.add_post("/bare", post)
    app.router.add_get("/bare/{id}", get)

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print(f"listening on http://127.0.0.1:{port}", flush=True)  # only once the port is bound
        await asyncio.Event().wait()

    uvloop.install()
    asyncio.run(serve())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(
    session: aiohttp.ClientSession,
    make: Callable[[int], Awaitable[None]],
    total: int,
    concurrency: int,
    seconds: float,
) -> tuple[int, float]:
    """Run `make(i)` `total` times with `concurrency` in flight, stopping early after `seconds`."""
    counter = iter(range(total))
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        for i in counter:
            if time.perf_counter() > deadline:
                return
            await make(i)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - started


async def bench(
    service_url: str, bare_url: str, total: int, concurrency: int, seconds: float, rounds: int
) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    results: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=connector) as session:
        ids: list[str] = []
        payload = {"input": {"prompt": "hello world", "max_tokens": 16}}

        async def run(_: int) -> None:
            async with session.post(f"{service_url}/v2/bench/run", json=payload) as resp:
                assert resp.status == 200, await resp.text()
                ids.append((await resp.json())["id"])

        async def bare_post(_: int) -> None:
            async with session.post(f"{bare_url}/bare", json=payload) as resp:
                assert resp.status == 200
                await resp.json()

        async def status(i: int) -> None:
            async with session.get(f"{service_url}/v2/bench/status/{ids[i % len(ids)]}") as resp:
                assert resp.status == 200, await resp.text()
                await resp.json()

        async def bare_get(i: int) -> None:
            async with session.get(f"{bare_url}/bare/{i}") as resp:
                assert resp.status == 200
                await resp.json()

        await load(session, bare_post, 500, concurrency, seconds)  # warm up both servers and the client
        await load(session, run, 500, concurrency, seconds)
        rates: dict[str, list[float]] = {}
        # Rounds alternate the two servers, so drift (caches, the SQLite file growing) hits both alike.
        for round_no in range(rounds):
            for name, fn in (
                ("bare_post", bare_post),
                ("run", run),
                ("bare_get", bare_get),
                ("status", status),
            ):
                done, elapsed = await load(session, fn, total, concurrency, seconds)
                rates.setdefault(name, []).append(done / elapsed)
                print(
                    f"  round {round_no + 1} {name:10s} {done:6d} requests in {elapsed:6.2f} s = "
                    f"{done / elapsed:8.0f} req/s",
                    flush=True,
                )
    for name, values in rates.items():
        results[name] = statistics.median(values)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=10000, help="requests per measurement (default 10000)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--seconds", type=float, default=20.0, help="time cap per measurement (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported (default 3)")
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server is not None:
        bare_server(args.bare_server)
        return

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(CONFIG)
        service, service_url = procs.start_announced(
            [
                sys.executable,
                "-m",
                "worker_kit",
                "serve",
                "--port",
                "0",
                "--storage",
                f"sqlite:///{tmp}/bench.db",
                "--config",
                str(config),
            ]
        )
        bare, bare_url = procs.start_announced([sys.executable, __file__, "--bare-server", str(free_port())])
        try:
            print(
                f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs; "
                f"{args.requests} requests, {args.concurrency} in flight",
                flush=True,
            )
            r = asyncio.run(
                bench(service_url, bare_url, args.requests, args.concurrency, args.seconds, args.rounds)
            )
        finally:
            for proc in (service, bare):
                proc.terminate()
                proc.wait(10)
    run_ratio = r["run"] / r["bare_post"]
    print(f"/run    {r['run']:8.0f} req/s  vs bare POST {r['bare_post']:8.0f} req/s  ratio {run_ratio:.2f}")
    print(
        f"/status {r['status']:8.0f} req/s  vs bare GET  {r['bare_get']:8.0f} req/s  ratio "
        f"{r['status'] / r['bare_get']:.2f}"
    )


if __name__ == "__main__":
    main()
