"""The scenarios of `python -m bench`. Each one runs our side and its bare baseline (bench/bare.py)
back to back in separate processes and returns one Sample; the runner repeats it, alternating
which side goes first, and reports the median ratio with its spread."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from . import procs


@dataclass(slots=True)
class Sample:
    ours: float
    baseline: float


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    figure: str
    unit: str
    higher_is_better: bool
    target: str
    run: Callable[[Path, dict[str, int], bool], Sample]


# -- helpers ---------------------------------------------------------------------------------------
async def _submit(ep: str, inputs: list[Any], concurrency: int = 32) -> list[str]:
    ids: list[str] = []
    queue = list(inputs)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> None:
            while queue:
                item = queue.pop()
                async with session.post(ep + "/run", json={"input": item}) as resp:
                    ids.append((await resp.json())["id"])

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return ids


async def _wait_completed(ep: str, n: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(ep + "/health") as resp:
                if (await resp.json())["jobs"]["completed"] >= n:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{n} jobs did not complete within {timeout} s")


def _db_window(db: Path) -> tuple[int, float]:
    with sqlite3.connect(db) as conn:
        count, first, last = conn.execute(
            "SELECT count(*), min(started_at), max(finished_at) FROM jobs WHERE state = 'COMPLETED'"
        ).fetchone()
    return count, last - first


# -- jobs per second -----------------------------------------------------------------------------
def jobs_per_s(concurrency: int, isolation: str = "thread") -> Callable[[Path, dict[str, int], bool], Sample]:
    def run(work: Path, sizes: dict[str, int], ours_first: bool) -> Sample:
        n = sizes["jobs"]
        sides = [lambda: _ours_jobs(work, n, concurrency, isolation), lambda: _bare_jobs(n, concurrency)]
        got = [side() for side in (sides if ours_first else sides[::-1])]
        return Sample(*(got if ours_first else got[::-1]))

    return run


def _ours_jobs(work: Path, n: int, concurrency: int, isolation: str = "thread") -> float:
    with procs.service(work) as (url, _):
        ep = url + "/v2/bench"
        asyncio.run(_submit(ep, [None] * n))
        with procs.worker(work, ep, "noop", concurrency, {"WORKER_KIT_ISOLATION": isolation}):
            asyncio.run(_wait_completed(ep, n))
        db = next(work.glob(f"bench-{url.rsplit(':', 1)[1]}.db"))
        count, seconds = _db_window(db)
    return count / seconds


def _bare_jobs(n: int, concurrency: int) -> float:
    return bare_job_loop(n, concurrency)[0]


def bare_job_loop(n: int, concurrency: int) -> tuple[float, float, float]:
    """The bare job loop over n jobs: its rate (jobs/s, from the first take to the last done, as
    its server recorded them), and the CPU seconds its server and its client process used."""
    with procs.bare_server() as (url, server):
        ep = url + "/v2/bare"
        server_before = procs.cpu_seconds(server.pid)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([procs.PY, "-m", "bench.bare", "client", "--url", ep, "--jobs", str(n),
                        "--concurrency", str(concurrency)], check=True, cwd=procs.ROOT)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = procs.cpu_seconds(server.pid) - server_before
        stats = json.loads(_get(ep + "/stats"))
    client_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return stats["done"] / (stats["last_done"] - stats["first_take"]), server_cpu, client_cpu


def _get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()  # type: ignore[no-any-return]


# -- CPU per request ------------------------------------------------------------------------------
def cpu_per_request(route: str) -> Callable[[Path, dict[str, int], bool], Sample]:
    def run(work: Path, sizes: dict[str, int], ours_first: bool) -> Sample:
        n = sizes["requests"]

        def ours() -> float:
            with procs.service(work) as (url, proc):
                return _cpu_of(proc.pid, url + "/v2/bench", route, n)

        def bare() -> float:
            with procs.bare_server() as (url, proc):
                return _cpu_of(proc.pid, url + "/v2/bare", route, n)

        got = [ours(), bare()] if ours_first else [bare(), ours()][::-1]
        return Sample(*got)

    return run


def _cpu_of(pid: int, ep: str, route: str, n: int) -> float:
    """Server CPU microseconds per request for n requests of `route` (8 at a time)."""

    async def load() -> float:
        ids = await _submit(ep, [{"x": 1}] * (n if route == "status" else 50), 8)
        async with aiohttp.ClientSession() as session:
            before = procs.cpu_seconds(pid)
            if route == "run":
                await _submit(ep, [{"prompt": "hello"}] * n, 8)
            else:
                queue = [ids[i % len(ids)] for i in range(n)]

                async def one() -> None:
                    while queue:
                        async with session.get(f"{ep}/status/{queue.pop()}") as resp:
                            await resp.read()

                await asyncio.gather(*(one() for _ in range(8)))
            return (procs.cpu_seconds(pid) - before) / n * 1e6

    return asyncio.run(load())


# -- SSE tokens per second ------------------------------------------------------------------------
async def _read_sse(url: str, n: int, chunk_of: Callable[[str], str], ready: asyncio.Event) -> float:
    """Tokens/s from the first token's own timestamp (the first yield) to the n-th token read.

    A token is an unnamed event (our service's form) or one named `chunk` (the bare relay's):
    one reader for both sides, whose cost is per line, as any SSE reader's is."""
    t0 = None
    count = 0
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
        url, headers={"Accept": "text/event-stream"}
    ) as resp:
        ready.set()
        event = ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if not line:
                event = ""  # an event ends at its blank line, and its name with it
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and (not event or event == "chunk"):
                token = chunk_of(line[6:])
                if t0 is None:
                    t0 = json.loads(token)["t0"]
                count += 1
                if count == n:
                    return n / (time.time() - t0)
    raise RuntimeError(f"the stream ended after {count} of {n} tokens")


def sse_tokens(work: Path, sizes: dict[str, int], ours_first: bool) -> Sample:
    n = sizes["tokens"]

    def ours() -> float:
        with procs.service(work) as (url, _):
            ep = url + "/v2/bench"

            async def go() -> float:
                (job_id,) = await _submit(ep, [{"n": n}], 1)
                ready = asyncio.Event()
                reader = asyncio.create_task(
                    _read_sse(f"{ep}/stream/{job_id}", n, lambda d: json.loads(d)["output"], ready))
                await ready.wait()
                with procs.worker(work, ep, "tokens", 1):
                    return await reader

            return asyncio.run(go())

    def bare() -> float:
        with procs.bare_server() as (url, _):
            ep = url + "/v2/bare"

            async def go() -> float:
                ready = asyncio.Event()
                reader = asyncio.create_task(_read_sse(ep + "/sse", n, json.loads, ready))
                await ready.wait()
                args = [procs.PY, "-m", "bench.bare", "producer", "--url", ep, "--tokens", str(n)]
                with procs.process(args, cwd=procs.ROOT):
                    return await reader

            return asyncio.run(go())

    got = [ours(), bare()] if ours_first else [bare(), ours()][::-1]
    return Sample(*got)


# -- idle SSE streams -----------------------------------------------------------------------------
def idle_sse_cpu(work: Path, sizes: dict[str, int], ours_first: bool) -> Sample:
    """Server CPU (% of one core) while `streams` SSE readers wait on jobs that do not change."""
    n = sizes["streams"]

    async def hold(pid: int, urls: list[str]) -> float:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as s:
            responses = [await s.get(u, headers={"Accept": "text/event-stream"}) for u in urls]
            await asyncio.sleep(1.0)
            before, t = procs.cpu_seconds(pid), time.monotonic()
            await asyncio.sleep(sizes["idle_s"])
            percent = (procs.cpu_seconds(pid) - before) / (time.monotonic() - t) * 100
            for r in responses:
                r.close()
            return percent

    def ours() -> float:
        with procs.service(work) as (url, proc):
            ep = url + "/v2/bench"
            ids = asyncio.run(_submit(ep, [None] * n))
            return asyncio.run(hold(proc.pid, [f"{ep}/stream/{i}" for i in ids]))

    def bare() -> float:
        with procs.bare_server() as (url, proc):
            return asyncio.run(hold(proc.pid, [url + "/v2/bare/sse"] * n))

    got = [ours(), bare()] if ours_first else [bare(), ours()][::-1]
    return Sample(*got)


# -- cold start ---------------------------------------------------------------------------------------
def _first_request_ms(args: list[str], env: dict[str, str], port_box: list[int]) -> float:
    """ms from spawning `args` to the first request bytes reaching a listening socket."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port_box.append(listener.getsockname()[1])
    arrived: list[float] = []

    def accept() -> None:
        conn, _ = listener.accept()
        conn.recv(1)
        arrived.append(time.monotonic())
        conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    start = time.monotonic()
    full_args = [a.replace("{port}", str(port_box[-1])) for a in args]
    full_env = {k: v.replace("{port}", str(port_box[-1])) for k, v in env.items()}
    with procs.process(full_args, env=full_env, cwd=procs.ROOT):
        thread.join(30)
    listener.close()
    if not arrived:
        raise RuntimeError(f"{args} never sent a request")
    return (arrived[0] - start) * 1000


def cold_start(work: Path, sizes: dict[str, int], ours_first: bool) -> Sample:
    handler = work / "noop_handler.py"
    handler.write_text(procs.HANDLERS["noop"])
    ports: list[int] = []
    # Byte-compiled first, as an installed wheel is (pip compiles it) and as aiohttp in
    # site-packages is: a source checkout run with PYTHONDONTWRITEBYTECODE=1 would otherwise
    # compile every worker_kit module at each start (about 17 % more instructions here).
    subprocess.run([procs.PY, "-m", "compileall", "-q", str(procs.ROOT / "worker_kit")], check=True,
                   stdout=subprocess.DEVNULL)

    def ours() -> float:
        return _first_request_ms([procs.PY, str(handler)],
                                 {"WORKER_KIT_URL": "http://127.0.0.1:{port}/v2/cold"}, ports)

    def bare() -> float:
        return _first_request_ms([procs.PY, "-m", "bench.bare", "client", "--url",
                                  "http://127.0.0.1:{port}/v2/cold", "--jobs", "1"], {}, ports)

    got = [ours(), bare()] if ours_first else [bare(), ours()][::-1]
    return Sample(*got)


# -- bounded maintenance (bench/bench_sweep.py) ------------------------------------------------------
def sweep_p99(backend: str) -> Callable[[Path, dict[str, int], bool], Sample]:
    """/run p99 while the sweep ends a backlog of overdue jobs, against the same /run on the same
    service idle just before (the baseline of this figure is not a bare floor: the aim is absolute)."""

    def run(work: Path, sizes: dict[str, int], ours_first: bool) -> Sample:
        from .bench_sweep import redis_server, run_one

        with redis_server(work) if backend == "redis" else contextlib.nullcontext() as port:
            result = run_one(work, backend, "expiry", sizes["sweep_jobs"], port)
        return Sample(result.p(0.99), result.p(0.99, idle=True))

    return run


# -- idle workers ---------------------------------------------------------------------------------
def idle_workers(work: Path, sizes: dict[str, int], ours_first: bool) -> Sample:
    """The one figure measured against the service itself, as issue #16 defines it: service CPU
    per job with 100 real workers waiting in long-polls, against 1 (bench/bench_idle_workers.py)."""
    from .bench_idle_workers import measure

    n = sizes["paced_jobs"]
    order = [100, 1] if ours_first else [1, 100]
    got = {k: measure(work, k, n, rate=200.0) for k in order}
    return Sample(got[100], got[1])


SCENARIOS = [
    Scenario("jobs_c1", "no-op jobs/s end to end, concurrency 1", "jobs/s", True, "≥ 1.0x", jobs_per_s(1)),
    Scenario("jobs_c16", "no-op jobs/s end to end, concurrency 16", "jobs/s", True, "≥ 1.5x", jobs_per_s(16)),
    Scenario("jobs_c1_process", "no-op jobs/s, process isolation, concurrency 1", "jobs/s", True, "≥ 0.5x",
             jobs_per_s(1, "process")),
    Scenario("cpu_run", "service CPU per `POST /run`", "µs", False, "≤ 1.5x", cpu_per_request("run")),
    Scenario("cpu_status", "service CPU per `GET /status`", "µs", False, "≤ 1.5x", cpu_per_request("status")),
    Scenario("sse_tokens", "SSE tokens/s, first yield to reader", "tokens/s", True, "≥ 0.8x", sse_tokens),
    Scenario("idle_sse", "service CPU, idle SSE streams open", "% of a core", False, "~0 %", idle_sse_cpu),
    Scenario("sweep_sqlite", "`/run` p99 during a mass expiry, SQLite (baseline: idle)", "ms", False,
             "≤ 100 ms", sweep_p99("sqlite")),
    Scenario("sweep_redis", "`/run` p99 during a mass expiry, Redis (baseline: idle)", "ms", False,
             "≤ 100 ms", sweep_p99("redis")),
    Scenario("cold_start", "cold start: process start to first request", "ms", False, "≤ 150 ms", cold_start),
    Scenario("idle_workers", "service CPU per job, 100 idle workers (baseline: 1 worker)", "µs", False,
             "≤ 1.1x", idle_workers),
]

SIZES = {
    "quick": {"jobs": 4000, "requests": 4000, "tokens": 20000, "streams": 200, "idle_s": 3, "paced_jobs": 600,
              "sweep_jobs": 5000},
    "full": {"jobs": 20000, "requests": 10000, "tokens": 50000, "streams": 1000, "idle_s": 10,
             "paced_jobs": 3000, "sweep_jobs": 100_000},
}
