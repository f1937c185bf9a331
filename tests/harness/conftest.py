"""Helpers for the harness tests: handler files in tmp_path, and subprocesses running them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child: no WORKER_KIT_URL inherited, so start() picks the harness."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_KIT_")}
    env.update(extra)
    return env


def run_py(
    *args: str | Path, cwd: Path | None = None, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or clean_env(),
    )


@pytest.fixture
def py() -> Callable[..., subprocess.CompletedProcess[str]]:
    """run_py: run `python *args` to completion with captured text output."""
    return run_py


@pytest.fixture
def write_handler(tmp_path: Path) -> Callable[..., Path]:
    """Write `source` (dedented) to tmp_path/name and return its path."""

    def write(source: str, name: str = "handler.py") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return path

    return write


@dataclass
class DevServer:
    proc: subprocess.Popen[str]
    url: str
    banner: list[str]
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def interrupt(self, timeout: float = 20) -> int:
        """Ctrl-C, as a user would; the exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)


def start_dev_server(
    argv: list[str], tmp_path: Path, *, cwd: Path | None = None, timeout: float = 30
) -> DevServer:
    """Start `python *argv` (a --serve or `worker-kit dev` command line) and wait for its URL."""
    stderr_path = tmp_path / f"serve-{time.monotonic_ns()}.stderr"
    with stderr_path.open("w") as stderr:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=cwd or tmp_path,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=clean_env(),
        )
    banner: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=5)
            raise AssertionError(
                f"server exited ({proc.returncode}) before its URL: {stderr_path.read_text()}"
            )
        banner.append(line.rstrip("\n"))
        if line.strip().startswith("endpoint:"):
            return DevServer(proc, line.split("endpoint:", 1)[1].strip(), banner, stderr_path)
    proc.kill()
    raise AssertionError(f"no URL within {timeout} s: {banner}")


@pytest.fixture(scope="session")
def start_server() -> Callable[..., DevServer]:
    """start_dev_server, for fixtures of a wider scope than dev_servers."""
    return start_dev_server


@pytest.fixture
def dev_servers(tmp_path: Path) -> Iterator[Callable[..., DevServer]]:
    """Start dev servers; any still running at teardown are killed (tests stop them cleanly)."""
    started: list[DevServer] = []

    def start(argv: list[str], **kwargs: object) -> DevServer:
        server = start_dev_server(argv, tmp_path, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=10)
        if server.proc.stdout:
            server.proc.stdout.close()
