"""The working directory and live service a page's blocks run against.

Each page gets a fresh directory holding a copy of `examples/` and the page's file blocks
(`# handler.py` ...). A page with `<!-- docs-test: workers endpoint=file ... -->` also gets a real
`worker-kit serve` process (in-memory storage, a free port) and one `worker-kit work FILE` process
per endpoint (`<!-- docs-test: service -->`: the service alone), started before its first block
and stopped (SIGTERM, so they drain) after its last.
The page's `127.0.0.1:8000`, `localhost:8000` and `--port 8000` become that port, so parallel test runs on one
machine never fight over port 8000.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .markdown import ROOT, Page

DOC_PORT = 8000
PORT_IN_TEXT = re.compile(rf"(?:(?<=127\.0\.0\.1:)|(?<=localhost:)|(?<=--port )){DOC_PORT}\b")
START_TIMEOUT_S = 60.0


def block_env(workdir: Path) -> dict[str, str]:
    """The environment blocks run in: this venv first on PATH, no WORKER_KIT_/RUNPOD_ settings
    leaking in from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_KIT_", "RUNPOD_", "PYTEST_"))}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)
    env["PYTHONUNBUFFERED"] = "1"
    env["PWD"] = str(workdir)
    return env


@dataclass
class PageStack:
    """A page's directory and, when it asks for one, its running service and workers."""

    page: Page
    workdir: Path
    port: int | None = None
    processes: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def localize(self, text: str) -> str:
        """The block's text with the docs' port replaced by the live service's."""
        return PORT_IN_TEXT.sub(str(self.port), text) if self.port else text

    def logs(self) -> str:
        """The tail of every background process's log, for a failure message."""
        out = []
        for name, proc, log in self.processes:
            tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
            out.append(f"--- {name} (exit {proc.poll()}) ---\n" + "\n".join(tail))
        return "\n".join(out)

    def start(self) -> None:
        prepare_workdir(self.page, self.workdir)
        if self.page.service:
            self._start_service()
            for endpoint, handler in self.page.workers.items():
                self._start_worker(endpoint, handler)
            self._wait_for_workers()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.workdir / ".docs-test" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                argv, cwd=self.workdir, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes.append((name, proc, log))
        return proc

    def _start_service(self) -> None:
        env = block_env(self.workdir)
        argv = [
            "worker-kit",
            "serve",
            "--port",
            "0",
            "--storage",
            "sqlite://:memory:",
            "--log-level",
            "warning",
        ]
        proc = self._spawn(
            "service", [shutil.which("worker-kit", path=env["PATH"]) or argv[0], *argv[1:]], env
        )
        log = self.processes[-1][2]
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
            if found:
                self.port = int(found[1])
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"docs stack: the service did not start\n{self.logs()}")

    def _start_worker(self, endpoint: str, handler: str) -> None:
        env = block_env(self.workdir)
        env["WORKER_KIT_URL"] = f"http://127.0.0.1:{self.port}/v2/{endpoint}"
        env["WORKER_KIT_GRACE"] = "2"
        exe = shutil.which("worker-kit", path=env["PATH"]) or "worker-kit"
        self._spawn(f"worker-{endpoint}", [exe, "work", handler], env)

    def _wait_for_workers(self) -> None:
        """Until every endpoint's worker has made its first claim (so it is counted by /health)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        waiting = set(self.page.workers)
        while waiting and time.monotonic() < deadline:
            for endpoint in sorted(waiting):
                url = f"http://127.0.0.1:{self.port}/v2/{endpoint}/health"
                with urllib.request.urlopen(url, timeout=5) as answer:
                    workers = json.load(answer).get("workers", {})
                if sum(v for v in workers.values() if isinstance(v, int)) >= 1:
                    waiting.discard(endpoint)
            if any(proc.poll() is not None for _, proc, _ in self.processes):
                break
            time.sleep(0.1)
        if waiting:
            raise RuntimeError(f"docs stack: no worker claimed on {sorted(waiting)}\n{self.logs()}")

    def stop(self) -> None:
        """SIGTERM workers first (they drain), then the service; SIGKILL what outlives 10 s."""
        for _, proc, _ in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def prepare_workdir(page: Page, workdir: Path) -> None:
    """A copy of examples/ and every file block of the page, as a reader would have them."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "examples", workdir / "examples", dirs_exist_ok=True)
    for block in page.blocks:
        if block.file_name:
            target = workdir / block.file_name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text, encoding="utf-8")
