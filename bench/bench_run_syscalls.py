"""What a `POST /run` costs the service in system calls and in user and system CPU, 8 in flight as
the suite sends them, optionally beside another checkout of worker_kit:
`python bench/bench_run_syscalls.py [--n 5000] [--rounds 3] [--beside DIR]`.

Each round starts `worker-kit serve` on a fresh SQLite file, warms it with 50 submits, then
sends N more and reads the process's user and system CPU from /proc (clock ticks: use N of
several thousand). With `--strace`, one more run per tree counts the system calls of those N
under `strace -c -f` (which slows the service, so its CPU is not counted): `pwrite64` calls are
WAL frames (two per page a commit wrote), `fcntl` calls the locks commits take and let go.
`--beside DIR` runs the same rounds with DIR's worker_kit (a `git archive` of another commit)
on PYTHONPATH, alternating which goes first.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import procs, suite  # noqa: E402

_COUNTED = ("pwrite64", "fcntl", "fdatasync", "write", "read", "getrandom", "getpid", "epoll_pwait")


def _submits(url: str, n: int) -> None:
    asyncio.run(suite._submit(url + "/v2/bench", [{"prompt": "hello"}] * n, 8))


def cpu_round(tree: Path | None, n: int) -> tuple[float, float]:
    """(user, system) µs of service CPU per /run."""
    env = None if tree is None else {"PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory() as work, procs.service(Path(work), env=env) as (url, proc):
        _submits(url, 50)
        before = procs.user_system(proc.pid)
        _submits(url, n)
        after = procs.user_system(proc.pid)
    return (after[0] - before[0]) / n * 1e6, (after[1] - before[1]) / n * 1e6


def syscalls(tree: Path | None, n: int) -> dict[str, float]:
    """System calls per /run, as `strace -c -f` counted them."""
    env = None if tree is None else {"PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory() as work, procs.service(Path(work), env=env) as (url, proc):
        _submits(url, 50)
        out = Path(work) / "strace.txt"
        tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(proc.pid), "-o", str(out)],
                                  stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(1.0)  # strace attaches to every thread
        _submits(url, n)
        tracer.send_signal(signal.SIGINT)
        tracer.wait()
        counts = {}
        for line in out.read_text().splitlines():
            match = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
            if match and match.group(2) in _COUNTED:
                counts[match.group(2)] = int(match.group(1)) / n
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--beside", type=Path, help="another checkout's root (holding worker_kit/)")
    parser.add_argument("--strace", action="store_true", help="also count system calls per /run")
    args = parser.parse_args()
    trees: list[tuple[str, Path | None]] = [("this", None)]
    if args.beside is not None:
        trees.append((str(args.beside), args.beside.resolve()))
    totals: dict[str, list[float]] = {name: [] for name, _ in trees}
    for r in range(args.rounds):
        for name, tree in trees if r % 2 == 0 else trees[::-1]:
            user, system = cpu_round(tree, args.n)
            totals[name].append(user + system)
            print(f"round {r + 1} {name}: user {user:.0f} µs, system {system:.0f} µs, "
                  f"total {user + system:.0f} µs per /run", flush=True)  # fmt: skip
    for name, _ in trees:
        print(f"{name}: median {statistics.median(totals[name]):.0f} µs per /run over {args.rounds} rounds")
    if args.strace:
        for name, tree in trees:
            counts = syscalls(tree, args.n)
            print(f"{name}: per /run " + ", ".join(f"{k} {v:.2f}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
