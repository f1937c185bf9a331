"""The worker runtime's own cost per job, without the service's: `python bench/bench_worker_cpu.py`.

A minimal exchange server (aiohttp + msgpack, no storage, no checks: the least a service could do
for `POST /worker/exchange`) hands out no-op jobs as fast as a real worker (`python handler.py`)
finishes them. Printed: the worker's CPU per job in its steady state (from /proc, after the first
fifth of the jobs), the server's, and the rate. With `--callgrind`, instructions per job of the
worker process instead (two runs under valgrind, N1 and N2 jobs: (I2 - I1) / (N2 - N1)), a figure
that does not move with the machine's load.

    python bench/bench_worker_cpu.py [--jobs 5000] [--concurrency 1] [--isolation thread|process]
    python bench/bench_worker_cpu.py --callgrind [--jobs 1300]
    python bench/bench_worker_cpu.py server PORT JOBS      # the exchange server alone
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import procs  # noqa: E402


def serve(port: int, jobs: int) -> None:
    import msgpack
    import uvloop
    from aiohttp import web

    state: dict[str, Any] = {"requests": 0, "given": 0, "finished": 0, "first": None, "last": None}

    async def exchange(request: web.Request) -> web.Response:
        body = msgpack.unpackb(await request.read())
        finished = body.get("finish") or []
        state["requests"] += 1
        state["finished"] += len(finished)
        if finished:
            state["last"] = time.time()
        out = []
        while len(out) < body.get("max", 0) and state["given"] < jobs:
            state["given"] += 1
            state["first"] = state["first"] or time.time()
            out.append({"id": f"{state['given']:032d}", "token": "t" * 32, "input": {"prompt": "hello"},
                        "attempt": 1, "policy": {"ttl": 86_400_000}, "deadline_ms": 600_000})
        reply = {"jobs": out, "lease_ms": 30_000, "finished": [{"code": 200}] * len(finished)}
        return web.Response(body=msgpack.packb(reply), content_type="application/msgpack")

    async def heartbeat(request: web.Request) -> web.Response:
        reply = msgpack.packb({"stop": [], "lease_ms": 30_000})
        return web.Response(body=reply, content_type="application/msgpack")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(state)

    app = web.Application()
    app.router.add_post("/v2/e/worker/exchange", exchange)
    app.router.add_post("/v2/e/worker/heartbeat", heartbeat)
    app.router.add_get("/v2/e/stats", stats)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=uvloop.new_event_loop())


def _stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/stats", timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def run_once(jobs: int, concurrency: int, isolation: str, callgrind: bool = False) -> dict[str, float]:
    port = procs.free_port()
    server = subprocess.Popen([procs.PY, __file__, "server", str(port), str(jobs)])
    url = f"http://127.0.0.1:{port}/v2/e"
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"wk-worker-cpu-{os.getpid()}.py"
    work.write_text(procs.HANDLERS["noop"])
    env = {**os.environ, "WORKER_KIT_URL": url, "WORKER_KIT_CONCURRENCY": str(concurrency),
           "WORKER_KIT_LOG_LEVEL": "WARNING", "WORKER_KIT_ISOLATION": isolation}
    args = [procs.PY, str(work)]
    if callgrind:
        args = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *args]
    try:
        procs.wait_http(url + "/stats")
        worker = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
        marks: list[tuple[int, float, float]] = []
        while True:
            done = _stats(url)["finished"]
            if not marks and done >= jobs // 5:
                marks.append((done, procs.cpu_seconds(worker.pid), procs.cpu_seconds(server.pid)))
            if done >= jobs:
                marks.append((done, procs.cpu_seconds(worker.pid), procs.cpu_seconds(server.pid)))
                break
            time.sleep(0.05)
        stats = _stats(url)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    finally:
        server.terminate()
        server.wait()
        work.unlink()
    (d0, w0, s0), (d1, w1, s1) = marks
    out = {"worker_us": (w1 - w0) / (d1 - d0) * 1e6, "server_us": (s1 - s0) / (d1 - d0) * 1e6,
           "jobs_per_s": jobs / (stats["last"] - stats["first"]),
           "jobs_per_request": jobs / stats["requests"]}
    if callgrind:
        found = re.search(r"Collected : (\d+)", err)
        out["instructions"] = float(found.group(1)) if found else float("nan")
    return out


def main(argv: list[str]) -> None:
    if argv[:1] == ["server"]:
        serve(int(argv[1]), int(argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--isolation", choices=("thread", "process"), default="thread")
    parser.add_argument("--callgrind", action="store_true")
    args = parser.parse_args(argv)
    if args.callgrind:
        n2 = args.jobs or 1300
        n1 = max(1, n2 // 4)
        i1 = run_once(n1, args.concurrency, args.isolation, callgrind=True)["instructions"]
        i2 = run_once(n2, args.concurrency, args.isolation, callgrind=True)["instructions"]
        print(f"worker: {(i2 - i1) / (n2 - n1) / 1000:.0f} k instructions per job "
              f"(concurrency {args.concurrency}, {args.isolation})")
        return
    got = run_once(args.jobs or 5000, args.concurrency, args.isolation)
    print(f"worker CPU {got['worker_us']:.0f} us/job, exchange server {got['server_us']:.0f} us/job, "
          f"{got['jobs_per_s']:.0f} jobs/s, {got['jobs_per_request']:.1f} jobs per request "
          f"(concurrency {args.concurrency}, {args.isolation}; load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main(sys.argv[1:])
