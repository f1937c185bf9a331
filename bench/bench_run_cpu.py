"""Instructions per `POST /v2/{endpoint}/run` (or `GET .../status/{id}`) of the service process,
next to the bare route's: `python bench/bench_run_cpu.py [--route status]`.

Each server (`worker-kit serve` on SQLite as the suite starts it, and bench/bare.py's server) runs
twice under `valgrind --tool=callgrind`, for N1 and N2 requests sent from this process, one at
a time over one keep-alive connection or `--concurrency` at a time (a /status request asks for one
job, submitted first);
the figure is (I2 - I1) / (N2 - N1), which the machine's
load does not move (start-up and shutdown cancel out, and so does timer work: the N1 run is kept
up as long as the N2 run took). `--keep DIR` leaves the callgrind files there for
`callgrind_annotate --inclusive=yes DIR/ours-run-N2.out`.

    python bench/bench_run_cpu.py [--n 1200] [--route run|status] [--concurrency 1] [--only ours|bare]
                                  [--keep DIR]
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

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import procs  # noqa: E402


def _server_args(kind: str, port: int, work: Path) -> list[str]:
    if kind == "bare":
        return [procs.PY, "-m", "bench.bare", "server", "--port", str(port)]
    config = work / "bench.toml"
    config.write_text(procs.CONFIG)
    return [procs.PY, "-m", "worker_kit", "serve", "--port", str(port), "--storage",
            f"sqlite:///{work / 'bench.db'}", "--config", str(config), "--log-level", "warning"]


async def _send(url: str, route: str, n: int, concurrency: int) -> None:
    """n requests of `route` to the endpoint at `url`, `concurrency` at a time."""
    left = n
    async with aiohttp.ClientSession() as session:
        job_id = ""
        if route == "status":
            async with session.post(f"{url}/run", json={"input": {"prompt": "hello"}}) as resp:
                job_id = (await resp.json())["id"]

        async def one_by_one() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                if route == "status":
                    request = session.get(f"{url}/status/{job_id}")
                else:
                    request = session.post(f"{url}/run", json={"input": {"prompt": "hello"}})
                async with request as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"/{route} answered {resp.status}")

        await asyncio.gather(*(one_by_one() for _ in range(concurrency)))


def _total(out_file: Path) -> int:
    """Instructions of the whole process (every thread), from a callgrind output file."""
    total = 0
    for line in out_file.read_text().splitlines():
        found = re.match(r"(?:summary|totals): (\d+)", line)
        if found:
            total = max(total, int(found.group(1)))
    return total


def measure(kind: str, route: str, n: int, out_dir: Path, span_s: float = 0.0, concurrency: int = 1
            ) -> tuple[int, float]:  # fmt: skip
    """(instructions, seconds from its first answer to its stop) of one server process that
    answered n `route` requests, kept running at least `span_s` after its first answer."""
    out = out_dir / f"{kind}-{route}-{n}.out"
    with tempfile.TemporaryDirectory(prefix="wk-run-cpu-") as tmp:
        port = procs.free_port()
        args = ["valgrind", "--tool=callgrind", "--dump-instr=no", f"--callgrind-out-file={out}",
                *_server_args(kind, port, Path(tmp))]
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            procs.wait_http(base + ("/v2/bare/stats" if kind == "bare" else "/health"), timeout=120)
            up = time.monotonic()
            asyncio.run(_send(f"{base}/v2/{'bare' if kind == 'bare' else 'bench'}", route, n, concurrency))
            time.sleep(max(0.0, span_s - (time.monotonic() - up)))
            spent = time.monotonic() - up
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return _total(out), spent


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1200, help="requests in the larger run (N2)")
    parser.add_argument("--route", choices=("run", "status"), default="run", help="the request measured")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight (the suite's: 8)")
    parser.add_argument("--only", choices=("ours", "bare"), default=None)
    parser.add_argument("--keep", type=Path, default=None, help="directory to leave the callgrind files in")
    args = parser.parse_args(argv)
    n2 = args.n
    n1 = max(1, n2 // 4)
    kinds = [args.only] if args.only else ["ours", "bare"]
    # Source changed since its last run would be compiled by the first (the N2) run only.
    subprocess.run([procs.PY, "-m", "compileall", "-q", str(ROOT / "worker_kit"), str(ROOT / "bench")],
                   check=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="wk-run-cg-") as tmp:
        out_dir = args.keep or Path(tmp)
        os.makedirs(out_dir, exist_ok=True)
        got = {}
        for kind in kinds:
            # N1's run is held as long as N2's took: what runs on timers (sweeper, webhook and
            # store-metrics polls: ~0.5 M instructions a second, stretched by valgrind's slowness)
            # then costs both runs the same, and cancels out.
            i2, span_s = measure(kind, args.route, n2, out_dir, concurrency=args.concurrency)
            i1, _ = measure(kind, args.route, n1, out_dir, span_s, concurrency=args.concurrency)
            got[kind] = (i2 - i1) / (n2 - n1)
            print(f"{kind}: {got[kind] / 1000:.0f} k instructions per /{args.route} (N1 {n1}, N2 {n2})",
                  flush=True)  # fmt: skip
    if len(got) == 2:
        print(f"ratio ours / bare: {got['ours'] / got['bare']:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
