"""Streaming delivery: Server-Sent Events against polling /stream, side by side (run by hand).

    python bench/bench_stream.py [--jobs 8] [--chunks 100] [--interval-ms 10] [--burst 20000]

Three processes on 127.0.0.1: `worker-kit serve` (SQLite in a temporary directory, rate limits
off), a producer speaking the native worker protocol (this file with --producer), and the
reader (this process). Every chunk carries the producer's wall-clock send time, so the reader
measures how long each chunk took to reach it (same machine, same clock).

1. Latency. `--jobs` jobs, each streaming `--chunks` chunks `--interval-ms` apart, one chunk per
   output request (a token stream). Per mode: the median first-chunk latency over the jobs, and
   the p50 / p99 latency of all chunks. The reader is attached before the job starts.
2. Throughput. One job streams `--burst` small chunks as fast as the producer can (100 per output
   request); chunks per second delivered to the reader, from first to last chunk.

Modes: SSE through worker_kit.client (push), long-poll /stream?wait=, and fixed-interval polling
of /stream?cursor= every 100 ms and every 1 s (the hosted SDK's interval).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

ENDPOINT = "bench-stream"
CONFIG = """
log_level = "warning"
[defaults]
rate_limits = false
backpressure = false
"""


# -- producer (a separate process) ---------------------------------------------------------------
async def produce(url: str) -> None:
    """Claim jobs forever; each input says how many chunks to stream, how fast, in what batches."""
    async with aiohttp.ClientSession() as session:

        async def post(path: str, body: dict[str, Any]) -> Any:
            async with session.post(url + path, json=body) as resp:
                answer = await resp.json()
                assert resp.status == 200, answer
                return answer

        while True:
            claim = {"worker_id": "bench-producer", "max": 1, "wait_ms": 30000}
            answer = await post("/worker/claim", claim)
            for job in answer["jobs"]:
                spec, token = job["input"], job["token"]
                await asyncio.sleep(spec.get("start_delay", 0))
                seq = 0
                while seq < spec["n"]:
                    batch = min(spec["batch"], spec["n"] - seq)
                    items = [{"seq": seq + k, "kind": "chunk", "data": {"i": seq + k, "t": time.time()}}
                             for k in range(batch)]
                    await post(f"/worker/jobs/{job['id']}/output", {"token": token, "items": items})
                    seq += batch
                    if spec["interval"]:
                        await asyncio.sleep(spec["interval"])
                await post(f"/worker/jobs/{job['id']}/finish", {"token": token, "state": "COMPLETED"})


# -- readers -----------------------------------------------------------------------------------------
Reader = Callable[[aiohttp.ClientSession, str, str], AsyncIterator[dict[str, Any]]]


async def read_sse(
    session: aiohttp.ClientSession, url: str, job_id: str
) -> AsyncIterator[dict[str, Any]]:
    from worker_kit.client import AsyncEndpoint

    async with AsyncEndpoint(url) as ep:
        async for chunk in ep.job(job_id).stream():
            yield chunk


def read_polling(interval: float) -> Reader:
    async def read(session: aiohttp.ClientSession, url: str, job_id: str) -> AsyncIterator[dict[str, Any]]:
        cursor = 0
        while True:
            async with session.get(f"{url}/stream/{job_id}", params={"cursor": str(cursor)}) as resp:
                answer = await resp.json()
            for item in answer["stream"]:
                yield item["output"]
            cursor = answer.get("cursor", cursor + len(answer["stream"]))
            if answer["status"] in ("COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED") and not answer["stream"]:
                return
            await asyncio.sleep(interval)

    return read


async def read_long_poll(
    session: aiohttp.ClientSession, url: str, job_id: str
) -> AsyncIterator[dict[str, Any]]:
    cursor = 0
    while True:
        params = {"cursor": str(cursor), "wait": "30000"}
        async with session.get(f"{url}/stream/{job_id}", params=params) as resp:
            answer = await resp.json()
        for item in answer["stream"]:
            yield item["output"]
        cursor = answer.get("cursor", cursor + len(answer["stream"]))
        if answer["status"] in ("COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED") and not answer["stream"]:
            return


MODES: dict[str, Reader] = {
    "SSE (worker_kit.client)": read_sse,
    "long-poll /stream?wait=": read_long_poll,
    "poll /stream every 100 ms": read_polling(0.1),
    "poll /stream every 1 s": read_polling(1.0),
}


async def submit(session: aiohttp.ClientSession, url: str, spec: dict[str, Any]) -> str:
    async with session.post(f"{url}/run", json={"input": spec}) as resp:
        return (await resp.json())["id"]


async def latency(
    session: aiohttp.ClientSession, url: str, reader: Reader, args: argparse.Namespace
) -> tuple[float, float, float]:
    firsts, all_lat = [], []
    pick = random.Random(7)  # the same start delays for every mode
    for _ in range(args.jobs):
        # The producer waits before streaming, so the reader is attached first; the wait is
        # random so fixed-interval polls do not line up with the first chunk by accident.
        delay = pick.uniform(0.2, 1.2)
        spec = {"n": args.chunks, "batch": 1, "interval": args.interval_ms / 1000, "start_delay": delay}
        job_id = await submit(session, url, spec)
        lat = []
        async for chunk in reader(session, url, job_id):
            lat.append(time.time() - chunk["t"])
        assert len(lat) == args.chunks, (len(lat), args.chunks)
        firsts.append(lat[0])
        all_lat += lat
    all_lat.sort()
    return (statistics.median(firsts) * 1000, all_lat[len(all_lat) // 2] * 1000,
            all_lat[int(len(all_lat) * 0.99)] * 1000)


async def throughput(
    session: aiohttp.ClientSession, url: str, reader: Reader, args: argparse.Namespace
) -> tuple[float, float]:
    """(chunks/s delivered: N over the time from the producer's first send until the reader holds
    all N, chunks/s produced: the producer's own pace, the ceiling)."""
    job_id = await submit(session, url, {"n": args.burst, "batch": 100, "interval": 0, "start_delay": 0.3})
    chunks = [chunk async for chunk in reader(session, url, job_id)]
    done = time.time()
    assert [c["i"] for c in chunks] == list(range(args.burst))
    first_sent, last_sent = chunks[0]["t"], chunks[-1]["t"]
    return args.burst / (done - first_sent), args.burst / max(last_sent - first_sent, 1e-9)


def start_process(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def write_config(tmp: str) -> Path:
    config = Path(tmp, "bench.toml")
    config.write_text(CONFIG)
    return config


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(tmp)
        server = start_process([sys.executable, "-m", "worker_kit", "serve", "--port", "0",
                                "--storage", f"sqlite:///{tmp}/bench.db", "--config", str(config)])
        producer = None
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if "listening on" not in line:
                raise SystemExit(f"service did not start: {line!r}")
            url = f"{line.rsplit(' ', 1)[1].strip()}/v2/{ENDPOINT}"
            producer = start_process([sys.executable, __file__, "--producer", url])
            rows = []
            async with aiohttp.ClientSession() as session:
                for name, reader in MODES.items():
                    first, p50, p99 = await latency(session, url, reader, args)
                    rate, produced = await throughput(session, url, reader, args)
                    rows.append((name, first, p50, p99, rate, produced))
                    print(f"  {name}: first {first:.1f} ms, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
                          f"{rate:,.0f} chunks/s (producer {produced:,.0f})", file=sys.stderr, flush=True)
        finally:
            for proc in (producer, server):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)
    print(f"\nMachine: {os.cpu_count()} CPUs, {platform.python_implementation()} "
          f"{platform.python_version()}; {args.jobs} jobs x {args.chunks} chunks "
          f"{args.interval_ms:g} ms apart; burst {args.burst:,} chunks.\n")
    print("| mode | first chunk ms (median) | chunk latency p50 ms | p99 ms | burst chunks/s delivered "
          "| (producer chunks/s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, first, p50, p99, rate, produced in rows:
        print(f"| {name} | {first:.1f} | {p50:.1f} | {p99:.1f} | {rate:,.0f} | {produced:,.0f} |")
    print(json.dumps({"rows": rows}), file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--producer", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--interval-ms", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=20000)
    parsed = parser.parse_args()
    if parsed.producer:
        asyncio.run(produce(parsed.producer))
    else:
        asyncio.run(main(parsed))
