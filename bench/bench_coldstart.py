"""Worker cold start and idle memory, by hand: `python bench/bench_coldstart.py [--runs 10]`.

Cold start = from spawning `python handler.py` to its first claim request reaching the
service (here a bare socket that records the request and never answers, so the worker then
sits idle in its long-poll). Idle memory = the worker's resident set (VmRSS) one second
later. For comparison: `python -c pass`, `python -c "import worker_kit"`, and
`python -c "import runpod"` (the hosted SDK, 1.12.0) when a venv with it exists at
--runpod-python (default /tmp/runpod-venv/bin/python; create it with
`python -m venv /tmp/runpod-venv && /tmp/runpod-venv/bin/pip install runpod==1.12.0`).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HANDLER = """\
import worker_kit


@worker_kit.handler
def echo(job):
    return job.input


worker_kit.start()
"""


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cold_start_once(handler: Path) -> tuple[float, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    arrived = threading.Event()
    conns: list[socket.socket] = []

    def accept() -> None:
        conn, _ = server.accept()
        conns.append(conn)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        if b"/worker/claim" in data or b"/worker/exchange" in data:  # protocol 1 or 2
            arrived.set()

    threading.Thread(target=accept, daemon=True).start()
    env = {**os.environ, "WORKER_KIT_URL": f"http://127.0.0.1:{port}/v2/cold",
           "WORKER_KIT_LOG_LEVEL": "WARNING"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(handler)], env=env, stderr=subprocess.DEVNULL)
    try:
        if not arrived.wait(30):
            raise RuntimeError("the worker sent no claim within 30 s")
        elapsed = time.perf_counter() - t0
        time.sleep(1.0)
        return elapsed, rss_kb(proc.pid)
    finally:
        proc.kill()
        proc.wait()
        for conn in conns:
            conn.close()
        server.close()


def python_c(python: str, code: str, runs: int) -> tuple[float, int]:
    """Median wall time of `python -c code`, and its peak RSS in KB."""
    times, rss = [], 0
    probe = code + (
        "\nimport resource, sys; sys.stderr.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))"
    )
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - t0)
        rss = int(proc.stderr.strip().splitlines()[-1])
    return statistics.median(times), rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--runpod-python", default="/tmp/runpod-venv/bin/python")
    args = parser.parse_args()
    handler = Path(tempfile.mkdtemp(prefix="wk-cold-")) / "handler.py"
    handler.write_text(HANDLER)
    samples = [cold_start_once(handler) for _ in range(args.runs)]
    start = statistics.median(s[0] for s in samples)
    rss = statistics.median(s[1] for s in samples)
    print(f"worker_kit worker: process start to first claim {start * 1000:.0f} ms (median of {args.runs}); "
          f"idle RSS {rss / 1024:.1f} MB")
    contexts = ("import ssl; ssl.create_default_context(); "
                "ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).set_default_verify_paths()")
    for label, python, code in (
        ("python -c pass", sys.executable, "pass"),
        ("python -c 'import worker_kit'", sys.executable, "import worker_kit"),
        ("python -c 'import asyncio'", sys.executable, "import asyncio"),
        ("python -c 'import ssl'", sys.executable, "import ssl"),
        ("import ssl + the two SSL contexts aiohttp.connector builds at import", sys.executable, contexts),
        ("python -c 'import aiohttp'", sys.executable, "import aiohttp"),
        ("python -c 'import aiohttp, uvloop'", sys.executable, "import aiohttp, uvloop"),
        ("aiohttp, uvloop and the worker runtime's modules", sys.executable,
         "import aiohttp, uvloop, worker_kit.worker.loop, worker_kit.worker.entrypoint"),
        ("python -c 'import runpod' (1.12.0)", args.runpod_python, "import runpod"),
    ):
        if not Path(python).exists():
            print(f"{label}: skipped ({python} not found)")
            continue
        wall, peak = python_c(python, code, max(3, args.runs // 2))
        print(f"{label}: {wall * 1000:.0f} ms; peak RSS {peak / 1024:.1f} MB")


if __name__ == "__main__":
    main()
