"""Process plumbing for the bench suite: free ports, the service and workers as subprocesses,
CPU time of a process from /proc, and waiting for an HTTP server to answer."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent
CONFIG = "[defaults]\nrate_limits_enabled = false\nbackpressure = false\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far.

    In nanoseconds, summed over its threads' /proc/PID/task/TID/schedstat (time on a CPU),
    where the kernel keeps them; else /proc/PID/stat's clock ticks (10 ms: a few percent of a
    measure of 2 000 requests). The sum leaves out threads that have ended, which the processes
    measured here do not do while measured (their threads live as long as they do)."""
    running = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # no schedstat here, or the thread just ended
            running += int((task / "schedstat").read_text().split()[0])
    if running:
        return running / 1e9
    return sum(user_system(pid))


def user_system(pid: int) -> tuple[float, float]:
    """The process's user and system CPU seconds so far, in clock ticks (10 ms)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error answer: the server is up
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up") from exc
            time.sleep(0.05)


@contextlib.contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    # Output goes to a file nobody reads during the run: a pipe would fill up and stall the process.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, cwd=cwd, stdout=log, stderr=log)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            elif proc.returncode:
                log.seek(0)
                sys.stderr.write(f"{args[1:4]} exited {proc.returncode}:\n{log.read()[-2000:].decode()}\n")


@contextlib.contextmanager
def _server(args_for: Callable[[int], list[str]], probe: str, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A server process on a free port. Another program on this shared machine may take the port
    between our choosing it and the server binding it: then start again on another one."""
    for _ in range(5):
        port = free_port()
        with process(args_for(port), env=env, cwd=cwd) as proc:
            url = f"http://127.0.0.1:{port}"
            try:
                wait_http(url + probe)
            except RuntimeError:
                if proc.poll() is None:
                    raise
                continue
            time.sleep(0.2)
            if proc.poll() is not None:
                continue  # it could not bind: someone else answered on that port
            yield url, proc
            return
    raise RuntimeError(f"no server could start: {args_for(0)}")


@contextlib.contextmanager
def service(work: Path, env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`worker-kit serve` on a fresh SQLite file, rate limits and backpressure off: (base URL, process).
    The database is work/bench-{port}.db. `env`: more of the process's environment (PYTHONPATH
    to run another checkout's worker_kit)."""
    config = work / "bench.toml"
    config.write_text(CONFIG)

    def args(port: int) -> list[str]:
        return [PY, "-m", "worker_kit", "serve", "--port", str(port), "--storage",
                f"sqlite:///{work / f'bench-{port}.db'}", "--config", str(config), "--log-level", "warning"]

    # In the work directory: from a checkout's root, `python -m` would import that checkout's
    # worker_kit before PYTHONPATH's.
    with _server(args, "/health", env=env, cwd=work) as running:
        yield running


@contextlib.contextmanager
def bare_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with _server(lambda port: [PY, "-m", "bench.bare", "server", "--port", str(port)], "/v2/bare/stats",
                 cwd=ROOT) as running:
        yield running


HANDLERS = {
    "noop": "import worker_kit\n\n\n@worker_kit.handler\nasync def noop(job):\n    return None\n\n\n"
            "worker_kit.start()\n",
    "tokens": "import json, time\nimport worker_kit\n\n\n@worker_kit.handler\nasync def tokens(job):\n"
              "    yield json.dumps({'t0': time.time()})\n    for i in range(1, job.input['n']):\n"
              "        yield f'tok{i} '\n\n\nworker_kit.start()\n",
}


@contextlib.contextmanager
def worker(
    work: Path, url: str, kind: str, concurrency: int, extra_env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    handler = work / f"{kind}_handler.py"
    handler.write_text(HANDLERS[kind])
    env = {"WORKER_KIT_URL": url, "WORKER_KIT_CONCURRENCY": str(concurrency),
           "WORKER_KIT_LOG_LEVEL": "WARNING", **(extra_env or {})}
    with process([PY, str(handler)], env=env) as proc:
        yield proc


# -- servers that say where they listen -----------------------------------------------------------
def serve_announced(app: Any) -> None:
    """Serve an aiohttp app on uvloop on a free loopback port, first printing `listening on URL`
    on stdout (what start_announced() reads), until the process is stopped."""
    import asyncio

    import uvloop
    from aiohttp import web

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    uvloop.install()
    asyncio.run(serve())


def start_announced(argv: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """Start a server process that prints `listening on URL` first (serve_announced, or `worker-kit
    serve --port 0`): (the process, its URL)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"{argv[1:3]} did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1].strip()
