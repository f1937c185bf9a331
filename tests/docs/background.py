"""Blocks marked `<!-- docs-test: background -->`: servers, run as written and then stopped.

Each command line of the block is started as its own process (a server runs until stopped, so
they cannot run one after the other), with the docs' port 8000 replaced by a free port of the
block's own. The block passes when the service answers `/health`, every endpoint named in the
block (`…/v2/ENDPOINT`) has a worker that claims, every process is still running, and each then
stops with exit code 0 on SIGTERM (workers first, as a deployment stops them).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from .markdown import Block
from .stack import PORT_IN_TEXT, START_TIMEOUT_S, PageStack, block_env

STOP_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.load(answer)
    except (OSError, ValueError):
        return None


def _commands(text: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", text)
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _ready(port: int, endpoints: list[str]) -> bool:
    health = _get(f"http://127.0.0.1:{port}/health")
    if not health or health.get("status") != "ok":
        return False
    for endpoint in endpoints:
        workers = (_get(f"http://127.0.0.1:{port}/v2/{endpoint}/health") or {}).get("workers", {})
        if sum(v for v in workers.values() if isinstance(v, int)) < 1:
            return False
    return True


def run_background(block: Block, stack: PageStack) -> None:
    port = _free_port()
    text = PORT_IN_TEXT.sub(str(port), block.text)
    endpoints = sorted(set(re.findall(rf"127\.0\.0\.1:{port}/v2/([\w.-]+)", text)))
    logs = stack.workdir / ".docs-test"
    logs.mkdir(exist_ok=True)
    started: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        for i, command in enumerate(_commands(text)):
            log = logs / f"background-{block.line}-{i}.log"
            with log.open("wb") as sink:
                proc = subprocess.Popen(
                    ["bash", "-c", command], cwd=stack.workdir, env=block_env(stack.workdir),
                    stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                )
            started.append((command, proc, log))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(port, endpoints):
            dead = [(c, p.returncode) for c, p, _ in started if p.poll() is not None]
            assert not dead and time.monotonic() < deadline, (
                f"not serving on port {port} with workers on {endpoints} (ended: {dead})\n{_logs(started)}"
            )
            time.sleep(0.1)
        dead = [(c, p.returncode) for c, p, _ in started if p.poll() is not None]
        assert not dead, f"ended while the others ran: {dead}\n{_logs(started)}"
    finally:
        codes = _stop(started)
    assert all(code == 0 for code in codes), f"exit codes on SIGTERM: {codes}\n{_logs(started)}"


def _stop(started: list[tuple[str, subprocess.Popen[bytes], Path]]) -> list[int | None]:
    codes: list[int | None] = []
    for _, proc, _ in reversed(started):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            codes.append(proc.wait(timeout=STOP_TIMEOUT_S))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            codes.append(proc.wait())
    return codes[::-1]


def _logs(started: list[tuple[str, subprocess.Popen[bytes], Path]]) -> str:
    parts = []
    for command, _, log in started:
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
        parts.append(f"--- {command} ---\n" + "\n".join(tail))
    return "\n".join(parts)
