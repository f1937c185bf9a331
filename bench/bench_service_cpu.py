"""The service's instructions per job, end to end: `python bench/bench_service_cpu.py`.

`worker-kit serve` (SQLite, as bench/procs.py `service()` configures it) runs under
`valgrind --tool=callgrind`. A client submits N jobs (`POST /run`, 4 in flight), then a real
worker (`python handler.py`, an async no-op handler, at the given concurrency) runs them all,
and the service is stopped. Two runs, with N1 and N2 jobs: (I2 - I1) / (N2 - N1) is what one
job costs the service, its submit and its share of an exchange (finish + claim), a figure the
machine's load does not move. With `--submits-only` no worker starts: the submit alone, so the
difference of the two figures is the exchange's share.

Under valgrind the service runs some 50 times slower, so time-driven work (heartbeats, the
sweep, metrics' loop-lag probe) adds more per job than at full speed: compare figures from
this script with each other, not with the bare server's.

With `--cpu`, one run without valgrind instead: the CPU time the service and the worker spend
per job while the worker runs them (from /proc), the rate, and how busy the service was (its CPU
time over the run's wall time): noisy on a shared machine, but at full speed. `--bare` adds the
same for the bare job loop of the suite (bench/bare.py): its server's and its client's CPU per job.

    python bench/bench_service_cpu.py [--concurrency 1] [--jobs 2500] [--submits-only]
    python bench/bench_service_cpu.py --cpu [--concurrency 16] [--jobs 20000] [--bare]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import procs  # noqa: E402
from bench.suite import _db_window, _submit, _wait_completed, bare_job_loop  # noqa: E402


def run_once(jobs: int, concurrency: int, submits_only: bool) -> int:
    """Instructions the service process ran, start to stop."""
    with tempfile.TemporaryDirectory(prefix="wk-svc-cpu-") as tmp:
        work = Path(tmp)
        (work / "bench.toml").write_text(procs.CONFIG)
        port = procs.free_port()
        service = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", procs.PY, "-m", "worker_kit",
             "serve", "--port", str(port), "--storage", f"sqlite:///{work / 'bench.db'}", "--config",
             str(work / "bench.toml"), "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=procs.ROOT,
        )  # fmt: skip
        try:
            ep = f"http://127.0.0.1:{port}/v2/bench"
            procs.wait_http(f"http://127.0.0.1:{port}/health", timeout=180)
            asyncio.run(_submit(ep, [None] * jobs, concurrency=4))
            if not submits_only:
                with procs.worker(work, ep, "noop", concurrency):
                    asyncio.run(_wait_completed(ep, jobs, timeout=1200))
        finally:
            service.send_signal(signal.SIGTERM)
            _, err = service.communicate(timeout=300)
    found = re.search(r"Collected : (\d+)", err)
    if found is None:
        raise RuntimeError(f"valgrind printed no count: {err[-500:]}")
    return int(found.group(1))


def cpu_once(jobs: int, concurrency: int) -> str:
    """One run at full speed: CPU per job of the service and the worker, the rate, how busy."""
    with tempfile.TemporaryDirectory(prefix="wk-svc-cpu-") as tmp, procs.service(Path(tmp)) as (url, service):
        ep = url + "/v2/bench"
        asyncio.run(_submit(ep, [None] * jobs))
        s0, t0 = procs.cpu_seconds(service.pid), time.monotonic()
        with procs.worker(Path(tmp), ep, "noop", concurrency) as worker:
            asyncio.run(_wait_completed(ep, jobs, timeout=600))
            s1, t1, w1 = procs.cpu_seconds(service.pid), time.monotonic(), procs.cpu_seconds(worker.pid)
        count, seconds = _db_window(next(Path(tmp).glob("bench-*.db")))
    per_job = (s1 - s0) / jobs * 1e6
    return (f"concurrency {concurrency}: {count / seconds:.0f} jobs/s; service {per_job:.0f} us CPU per job, "
            f"busy {(s1 - s0) / (t1 - t0) * 100:.0f} % of the run; worker {w1 / jobs * 1e6:.0f} us per job "
            f"(its start included); load {os.getloadavg()[0]:.1f}")


def bare_cpu_once(jobs: int, concurrency: int) -> str:
    """The same at full speed for the bare job loop (bench/bare.py): CPU per job of its server and
    of its client process (two requests per job), and the rate."""
    rate, server, client = bare_job_loop(jobs, concurrency)
    return (f"bare, concurrency {concurrency}: {rate:.0f} jobs/s; server {server / jobs * 1e6:.0f} us CPU "
            f"per job; client {client / jobs * 1e6:.0f} us per job (its start included); load "
            f"{os.getloadavg()[0]:.1f}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2500, help="jobs of the larger run (the other: a fifth)")
    parser.add_argument("--submits-only", action="store_true", help="no worker: the submits alone")
    parser.add_argument("--cpu", action="store_true", help="one run at full speed: CPU time per job")
    parser.add_argument("--bare", action="store_true",
                        help="with --cpu: then the bare job loop (bench/bare.py) the same way")
    args = parser.parse_args(argv)
    if args.cpu:
        print(cpu_once(args.jobs, args.concurrency))
        if args.bare:
            print(bare_cpu_once(args.jobs, args.concurrency))
        return
    n2 = args.jobs
    n1 = max(1, n2 // 5)
    i1 = run_once(n1, args.concurrency, args.submits_only)
    i2 = run_once(n2, args.concurrency, args.submits_only)
    what = f"per job, submit + exchange (concurrency {args.concurrency})"
    if args.submits_only:
        what = "per submit"
    print(f"service: {(i2 - i1) / (n2 - n1) / 1000:.0f} k instructions {what}; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
