"""The SQLite backend's own cost per operation, without the service: `python bench/bench_store_ops.py`.

One process opens a SQLiteStorage on a fresh file (synchronous=normal, as `worker-kit serve`
runs it), queues PREFILL jobs, then runs N operations of one kind one after the other, each
awaited before the next (concurrency 1, so each is its own transaction, as at `/run` or
`/worker/exchange` with one client):

- `submit`: `storage.submit` of a small input (what `POST /run` stores);
- `get`: `storage.get` of a queued job (what `GET /status` reads);
- `cycle`: `storage.finish` of the job in hand, then `storage.claim` of the next (what one
  `/worker/exchange` did before `Storage.exchange`);
- `exchange`: the same as one `storage.exchange` call (what one `/worker/exchange` does now);
- `exchange8` (only when named): one `storage.exchange` of 8 finishes and a claim of 8, what
  each exchange of one worker at concurrency 16 carries.

Under `--callgrind` each kind runs twice under valgrind, with N1 and N2 operations, and the
instructions per operation are (I2 - I1) / (N2 - N1): a figure the machine's load does not
move. Printed beside it: how many of those instructions run inside libsqlite3 itself. Without
`--callgrind`, CPU time per operation (noisy on a shared machine).

    python bench/bench_store_ops.py --callgrind [--ops submit get cycle] [--n 1500]
    python bench/bench_store_ops.py [--n 20000] [--prefill 200000]
    python bench/bench_store_ops.py child OP N PREFILL      # one run, as valgrind runs it
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OPS = ("submit", "get", "cycle", "exchange")
#: Jobs one operation takes from the queue: the prefill must hold them all.
BATCH = {"exchange8": 8}
ENDPOINT = "e"
INPUT = {"prompt": "hello"}


async def _run(op: str, n: int, prefill: int, path: str) -> float:
    """Seconds of process CPU the N operations took."""
    from worker_kit.job import JobState, Policy
    from worker_kit.storage.base import Finish
    from worker_kit.storage.sqlite import SQLiteStorage

    storage = SQLiteStorage.from_url(f"sqlite:///{path}")
    await storage.open()
    policy = Policy()
    try:
        ids = [
            (await storage.submit(ENDPOINT, INPUT, policy=policy, retention_ms=600_000)).id
            for _ in range(prefill)
        ]
        holds = op in ("cycle", "exchange", "exchange8")
        batch = BATCH.get(op, 1)
        concurrency = 2 * batch if batch > 1 else 1
        claimed = await storage.claim(ENDPOINT, "w1", batch, 30_000, concurrency=concurrency) if holds else []
        start = time.process_time()
        if op == "submit":
            for _ in range(n):
                await storage.submit(ENDPOINT, INPUT, policy=policy, retention_ms=600_000)
        elif op == "get":
            for i in range(n):
                assert await storage.get(ENDPOINT, ids[i % len(ids)]) is not None
        elif op == "cycle":
            job = claimed[0]
            for _ in range(n):
                assert job.token is not None
                await storage.finish(ENDPOINT, job.id, job.token, JobState.COMPLETED, output={"ok": 1})
                (job,) = await storage.claim(ENDPOINT, "w1", 1, 30_000, concurrency=1)
        else:
            jobs = claimed
            for _ in range(n):
                done = [Finish(job.id, job.token or "", JobState.COMPLETED, output={"ok": 1}) for job in jobs]
                ended, jobs = await storage.exchange(ENDPOINT, done, "w1", batch, 30_000,
                                                     concurrency=concurrency)  # fmt: skip
                assert len(jobs) == batch and not any(isinstance(job, Exception) for job in ended)
        return time.process_time() - start
    finally:
        await storage.close()


def child(op: str, n: int, prefill: int) -> None:
    with tempfile.TemporaryDirectory(prefix="wk-store-ops-") as tmp:
        spent = asyncio.run(_run(op, n, prefill, os.path.join(tmp, "jobs.db")))
    print(f"{spent:.6f}")


def _by_object(out_file: str) -> dict[str, int]:
    """Self instructions per ELF object, from a callgrind output file."""
    names: dict[str, str] = {}
    totals: collections.Counter[str] = collections.Counter()
    current = ""
    skip_next = False
    with open(out_file) as lines:
        for line in lines:
            if line.startswith(("ob=", "cob=")):
                # A name is given once, where it first appears (either form), then by its number.
                found = re.match(r"c?ob=\((\d+)\)(?: (.*))?", line.strip())
                key, name = found.groups() if found else (line.split("=", 1)[1].strip(),) * 2
                if name:
                    names[key] = name
                if line.startswith("ob="):
                    current = names.get(key, key)
            elif line.startswith("calls="):
                skip_next = True  # the next cost line is the call's inclusive cost, not self cost
            elif line[:1].isdigit() or line[:1] in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    totals[current] += int(parts[-1])
    return dict(totals)


def callgrind(op: str, n: int, prefill: int) -> tuple[int, int]:
    """(instructions, of which in libsqlite3) of one run."""
    with tempfile.TemporaryDirectory(prefix="wk-store-cg-") as tmp:
        out = os.path.join(tmp, "cg.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
             "child", op, str(n), str(prefill)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        objects = _by_object(out)
    return sum(objects.values()), sum(v for k, v in objects.items() if "libsqlite3" in k)


def main(argv: list[str]) -> None:
    if argv[:1] == ["child"]:
        child(argv[1], int(argv[2]), int(argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", nargs="+", choices=(*OPS, *BATCH), default=list(OPS))
    parser.add_argument("--n", type=int, default=None, help="operations (the larger size under callgrind)")
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--prefill", type=int, default=None,
                        help="jobs queued before the operations run (default: the operations' count + 10)")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    for op in args.ops:
        if args.callgrind:
            n2 = args.n or 1500
            n1 = max(1, n2 // 5)
            prefill = args.prefill or n2 * BATCH.get(op, 1) + 10
            i1, s1 = callgrind(op, n1, prefill)
            i2, s2 = callgrind(op, n2, prefill)
            per, in_sqlite = (i2 - i1) / (n2 - n1), (s2 - s1) / (n2 - n1)
            print(f"{op:7s} {per / 1000:7.1f} k instructions per op, {in_sqlite / 1000:6.1f} k in libsqlite3")
        else:
            n = args.n or 20_000
            prefill = args.prefill or n * BATCH.get(op, 1) + 10
            got = subprocess.run([sys.executable, __file__, "child", op, str(n), str(prefill)],
                                 check=True, capture_output=True, text=True)  # fmt: skip
            print(f"{op:7s} {float(got.stdout) / n * 1e6:7.1f} us CPU per op (load {load:.1f})")


if __name__ == "__main__":
    main(sys.argv[1:])
