"""GET /requests page latency with 1 000 and 1 000 000 stored jobs, next to a bare aiohttp route
answering a page of the same size (run by hand).

    python bench/bench_requests.py [--sizes 1000,1000000] [--samples 300] [--dir DIR]

For each size: a SQLite file is filled through the storage API (concurrent submits, so group
commit applies), then half the jobs are marked COMPLETED and one in twenty FAILED with one SQL
UPDATE each (a shortcut for the fill only: the schema's triggers keep the per-state counts right).
One `worker-kit serve` per size (rate limits off) serves it in its own process, and this process
times requests one at a time, every kind taking turns so that load on the machine hits them all
alike: the first page (limit 50), a page from the middle of the list (by cursor), the first page
of FAILED jobs, and the first page with inputs and outputs. The bare baseline is an aiohttp app in
its own process answering a stored copy of the first page's JSON. Filling a million jobs takes
several minutes; --dir keeps the files for the next run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

# Run as a script, Python put bench/ itself first on the path; the project root makes `bench` a package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import procs
from worker_kit.job import Policy
from worker_kit.service.query_api import encode_cursor
from worker_kit.storage.sqlite.backend import SQLiteStorage

EP = "bench"
INPUT = {"prompt": "x" * 200, "max_tokens": 128}
CONFIG = """
log_level = "warning"
[defaults]
rate_limits = false
backpressure = false
"""


def bare_server(body_path: str) -> None:
    from aiohttp import web

    body = Path(body_path).read_bytes()

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/bare", page)

    procs.serve_announced(app)


async def fill(path: Path, n: int) -> None:
    storage = SQLiteStorage.from_url(f"sqlite:///{path}")
    await storage.open()
    try:
        done = 0
        while done < n:
            batch = min(1000, n - done)
            await asyncio.gather(
                *(storage.submit(EP, INPUT, policy=Policy(), retention_ms=86_400_000) for _ in range(batch))
            )
            done += batch
    finally:
        await storage.close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "UPDATE jobs SET state = 'COMPLETED', started_at = created_at + 0.01, "
            "finished_at = created_at + 0.2, worker_id = 'bench-worker', attempt = 1, output = input "
            "WHERE rowid % 2 = 0"
        )
        conn.execute(
            "UPDATE jobs SET state = 'FAILED', started_at = created_at + 0.01, "
            "finished_at = created_at + 0.1, worker_id = 'bench-worker', attempt = 1, "
            "error = 'ValueError: bench' WHERE rowid % 20 = 1"
        )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # start every size from a settled file
    conn.close()


def middle_cursor(path: Path, n: int) -> str:
    conn = sqlite3.connect(path)
    created_at, job_id = conn.execute(
        "SELECT created_at, id FROM jobs WHERE endpoint = ? "
        "ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET ?",
        (EP, n // 2),
    ).fetchone()
    conn.close()
    return encode_cursor(created_at, job_id)




async def one_ms(session: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with session.get(url) as resp:
        await resp.read()
        assert resp.status == 200, resp.status
    return (time.perf_counter() - started) * 1000


QUERIES = {
    "first page, `limit=50`": "limit=50",
    "a page from the middle, by `cursor`": "limit=50&cursor={cursor}",
    "first page of `status=FAILED`": "limit=50&status=FAILED",
    "first page, `include=input,output`": "limit=50&include=input,output",
}


async def measure(urls: dict[str, str], samples: int) -> dict[str, float]:
    """Median ms per URL; the URLs take turns, so a burst of load on the machine hits them all."""
    times: dict[str, list[float]] = {key: [] for key in urls}
    async with aiohttp.ClientSession() as session:
        for url in urls.values():  # warm up
            for _ in range(5):
                await one_ms(session, url)
        for _ in range(samples):
            for key, url in urls.items():
                times[key].append(await one_ms(session, url))
    return {key: statistics.median(values) for key, values in times.items()}


def prepare(directory: Path, n: int) -> Path:
    """A filled database for `n` jobs, reused from an earlier run in the same --dir."""
    path = directory / f"jobs-{n}.db"
    if path.exists():
        conn = sqlite3.connect(path)
        have = conn.execute("SELECT count(*) FROM jobs WHERE endpoint = ?", (EP,)).fetchone()[0]
        conn.close()
        if have == n:
            return path
        path.unlink()
    started = time.perf_counter()
    asyncio.run(fill(path, n))
    print(f"  filled {n:,} jobs in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return path


def main(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(args.dir or tmp)
        directory.mkdir(parents=True, exist_ok=True)
        config = Path(tmp, "bench.toml")
        config.write_text(CONFIG)
        paths = {n: prepare(directory, n) for n in sizes}
        running: list[subprocess.Popen[str]] = []
        try:
            urls: dict[str, str] = {}
            for n, path in paths.items():
                server, base = procs.start_announced([
                    sys.executable, "-m", "worker_kit", "serve", "--port", "0",
                    "--storage", f"sqlite:///{path}", "--config", str(config)])  # fmt: skip
                running.append(server)
                cursor = middle_cursor(path, n)
                for name, query in QUERIES.items():
                    urls[f"{n}|{name}"] = f"{base}/v2/{EP}/requests?{query.format(cursor=cursor)}"
            import urllib.request

            with urllib.request.urlopen(urls[f"{sizes[0]}|{next(iter(QUERIES))}"]) as resp:
                page = resp.read()
            body = Path(tmp, "page.json")
            body.write_bytes(page)
            bare, bare_url = procs.start_announced([sys.executable, __file__, "--bare", str(body)])
            running.append(bare)
            urls["bare"] = f"{bare_url}/bare"
            medians = asyncio.run(measure(urls, args.samples))
        finally:
            for proc in running:
                proc.terminate()
                proc.wait(10)
    report(sizes, medians, len(page), args.samples)


def report(sizes: list[int], medians: dict[str, float], page_bytes: int, samples: int) -> None:
    small, large = sizes[0], sizes[-1]
    bare_ms = medians["bare"]
    python = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"\nMachine: {os.cpu_count()} CPUs, {python}, SQLite {sqlite3.sqlite_version}; "
          f"{time.strftime('%Y-%m-%d')}; median of {samples} requests each, taking turns; a bare aiohttp "
          f"route answering the same {page_bytes:,}-byte page: {bare_ms:.2f} ms.\n")
    print(f"| request | {small:,} jobs ms | {large:,} jobs ms | {large:,} / {small:,} | {large:,} / bare |")
    print("|---|---:|---:|---:|---:|")
    for name in QUERIES:
        a, b = medians[f"{small}|{name}"], medians[f"{large}|{name}"]
        print(f"| {name} | {a:.2f} | {b:.2f} | {b / a:.2f} | {b / bare_ms:.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bare", metavar="BODY", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="1000,1000000")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--dir", help="keep the filled databases here and reuse them on the next run")
    parsed = parser.parse_args()
    if parsed.bare:
        bare_server(parsed.bare)
    else:
        main(parsed)
