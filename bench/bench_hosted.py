"""The hosted service's SDK worker against the worker_kit runtime, on the same service, by hand:
`python bench/bench_hosted.py [--jobs 40] [--chunks 2000]`.

Starts `worker-kit serve` as a subprocess (SQLite in a temp dir, rate limits off) and, for each
worker in turn, in its own process:

- `runpod` 1.12.0's worker (the baseline: the hosted service's own SDK, unmodified, on this
  service's hosted-protocol routes);
- the worker_kit runtime speaking the native protocol (WORKER_KIT_URL);
- the worker_kit runtime in hosted mode (the same RUNPOD_WEBHOOK_* variables as the SDK worker);

measures, at concurrency 1 and 8:

1. no-op jobs per second: `--jobs` jobs queued before the worker starts, timed from the first job
   seen done to the last (start-up is not counted);
2. streamed chunks per second: one job yielding `--chunks` small chunks, timed by the service's own
   executionTime for the job (the handler yields from its first instruction, so the timer starts
   at the first yield).

Prints one table, ratios against the SDK worker. Figures are noisy on a shared machine: run it
two or three times and read the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

SDK_WORKER = """
import os
import runpod

async def handler(job):
    n = job["input"].get("chunks", 0)
    if not n:
        yield job["input"]
        return
    for i in range(n):
        yield i

slots = int(os.environ["CONCURRENCY"])
runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda _: slots})
"""
WK_WORKER = """
import worker_kit

@worker_kit.handler
async def handler(job):
    n = job.input.get("chunks", 0)
    if not n:
        yield job.input
        return
    for i in range(n):
        yield i

if __name__ == "__main__":
    worker_kit.start()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hosted_env(url: str, pod: str) -> dict[str, str]:
    return {
        "RUNPOD_WEBHOOK_GET_JOB": f"{url}/job-take/$ID?",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{url}/job-done/$RUNPOD_POD_ID/$ID?",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{url}/job-stream/$RUNPOD_POD_ID/$ID?",
        "RUNPOD_WEBHOOK_PING": f"{url}/ping/$RUNPOD_POD_ID?",
        "RUNPOD_AI_API_KEY": "bench", "RUNPOD_POD_ID": pod,
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_SKIP_GPU_CHECK": "true",
        "RUNPOD_LOG_LEVEL": "ERROR",
    }


def worker_command(kind: str, url: str, concurrency: int, tmp: Path) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "WORKER_KIT_"))}
    env["HOME"] = str(tmp)
    if kind == "runpod SDK":
        script = tmp / "sdk_worker.py"
        script.write_text(SDK_WORKER)
        env.update(hosted_env(url, f"sdk-{concurrency}"), CONCURRENCY=str(concurrency))
    else:
        script = tmp / "wk_worker.py"
        script.write_text(WK_WORKER)
        env.update(WORKER_KIT_CONCURRENCY=str(concurrency), WORKER_KIT_LOG_LEVEL="WARNING")
        if kind == "worker_kit hosted mode":
            env.update(hosted_env(url, f"wkh-{concurrency}"))
        else:
            env["WORKER_KIT_URL"] = url
    return [sys.executable, str(script)], env


async def wait_healthy(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"the service at {url} did not start")


async def submit(session: aiohttp.ClientSession, url: str, job_input: Any) -> str:
    async with session.post(f"{url}/run", json={"input": job_input}) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["id"]


async def status(session: aiohttp.ClientSession, url: str, job_id: str) -> dict[str, Any]:
    async with session.get(f"{url}/status/{job_id}") as resp:
        return await resp.json()


async def wait_done(session: aiohttp.ClientSession, url: str, job_id: str) -> tuple[float, dict[str, Any]]:
    while True:
        st = await status(session, url, job_id)
        if st["status"] in ("COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"):
            return time.perf_counter(), st
        await asyncio.sleep(0.005)


async def one_run(
    kind: str, url: str, concurrency: int, jobs: int, chunks: int, tmp: Path
) -> tuple[float, float]:
    """(no-op jobs/s, chunks/s) for one worker process."""
    async with aiohttp.ClientSession() as session:
        ids = [await submit(session, url, {"i": i}) for i in range(jobs)]
        cmd, env = worker_command(kind, url, concurrency, tmp)
        proc = await asyncio.create_subprocess_exec(
            *cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            done = [await wait_done(session, url, job_id) for job_id in ids]
            times = sorted(t for t, _ in done)
            assert all(st["status"] == "COMPLETED" for _, st in done), [st for _, st in done][:3]
            jobs_per_s = (len(times) - 1) / (times[-1] - times[0])
            stream_id = await submit(session, url, {"chunks": chunks})
            _, st = await wait_done(session, url, stream_id)
            assert st["status"] == "COMPLETED", st
            chunks_per_s = chunks / max(st["executionTime"] / 1000, 1e-3)
        finally:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    return jobs_per_s, chunks_per_s


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--chunks", type=int, default=2000)
    args = parser.parse_args()
    kinds = ["runpod SDK", "worker_kit native", "worker_kit hosted mode"]
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        port = free_port()
        config = tmp / "bench.toml"
        config.write_text("[defaults]\nrate_limits_enabled = false\nbackpressure = false\n")
        service = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker_kit", "serve", "--port", str(port),
            "--storage", f"sqlite:///{tmp / 'bench.db'}", "--config", str(config), "--log-level", "warning",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            await wait_healthy(f"http://127.0.0.1:{port}/health")
            results: dict[tuple[str, int], tuple[float, float]] = {}
            for concurrency in (1, 8):
                for kind in kinds:
                    url = f"http://127.0.0.1:{port}/v2/bench-{kind.split()[-1]}-{concurrency}"
                    results[kind, concurrency] = await one_run(
                        kind, url, concurrency, args.jobs, args.chunks, tmp
                    )
        finally:
            service.terminate()
            await service.wait()
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}; {args.jobs} jobs, {args.chunks} chunks")
    print(f"{'worker':<24} {'conc':>4} {'jobs/s':>9} {'x SDK':>7} {'chunks/s':>10} {'x SDK':>7}")
    for concurrency in (1, 8):
        base_jobs, base_chunks = results["runpod SDK", concurrency]
        for kind in kinds:
            jobs_s, chunks_s = results[kind, concurrency]
            print(f"{kind:<24} {concurrency:>4} {jobs_s:>9.1f} {jobs_s / base_jobs:>7.2f} "
                  f"{chunks_s:>10.0f} {chunks_s / base_chunks:>7.2f}")


if __name__ == "__main__":
    asyncio.run(main())
