"""Dockerfile.worker, tested without a container engine: its ENTRYPOINT (exec form) and ENV are
parsed and that exact command is run as a process against a real service, as the container would
run it in WORKDIR with the HANDLER file copied to handler.py. SIGTERM mid-job must drain."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from worker_kit.client import AsyncEndpoint

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile.worker"

GATED_HANDLER = """
    import asyncio
    import pathlib

    import worker_kit


    @worker_kit.handler
    async def slow(job):
        gate = pathlib.Path(job.input["dir"])
        (gate / f"started-{job.id}").touch()
        while not (gate / "release").exists():
            await asyncio.sleep(0.01)
        return {"finished": job.input["n"]}


    worker_kit.start()
"""


@dataclass
class DockerSpec:
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    args: dict[str, str] = field(default_factory=dict)
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> DockerSpec:
    spec = DockerSpec()
    logical = re.sub(r"\\\n", " ", text)  # line continuations
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        spec.instructions.append((op, rest))
        if op in ("ENTRYPOINT", "CMD"):
            if not rest.startswith("["):
                raise AssertionError(f"{op} must use the exec form (a JSON array), got: {rest}")
            setattr(spec, op.lower(), json.loads(rest))
        elif op == "ENV":
            tokens = shlex.split(rest)
            if tokens and "=" not in tokens[0]:
                spec.env[tokens[0]] = " ".join(tokens[1:])
            else:
                for token in tokens:
                    key, _, value = token.partition("=")
                    spec.env[key] = value
        elif op == "WORKDIR":
            spec.workdir = rest
        elif op == "ARG":
            key, _, value = rest.partition("=")
            spec.args[key] = value
    return spec


@pytest.fixture(scope="module")
def spec() -> DockerSpec:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_image_shape(spec: DockerSpec) -> None:
    assert spec.instructions[0] == ("FROM", "python:3.11-slim")
    assert spec.entrypoint is not None and spec.entrypoint[0] == "python"
    assert spec.workdir == "/app"
    handler_arg = spec.args.get("HANDLER")
    assert handler_arg and (DOCKERFILE.parent / handler_arg).is_file(), "the default HANDLER must exist"
    # The handler lands where the entrypoint runs it from.
    script = spec.entrypoint[-1]
    assert ("COPY", f"${{HANDLER}} {spec.workdir}/{script}") in spec.instructions
    assert spec.env.get("PYTHONUNBUFFERED") == "1"


def _any_started(gate: Path) -> bool:
    return any(gate.glob("started-*"))


async def _started(gate: Path, timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.02)):
        if _any_started(gate):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the job never started")


async def test_entrypoint_drains_on_sigterm(spec: DockerSpec, service, tmp_path: Path) -> None:
    app_dir = tmp_path / "app"  # stands for WORKDIR /app
    app_dir.mkdir()
    assert spec.entrypoint is not None
    (app_dir / spec.entrypoint[-1]).write_text(textwrap.dedent(GATED_HANDLER))
    gate = tmp_path / "gate"
    gate.mkdir()
    url = service.endpoint_url("docker")
    # The image's `python` is the interpreter worker_kit is installed in: here, this one.
    argv = [sys.executable, *spec.entrypoint[1:], *(spec.cmd or [])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_KIT_")}
    env.update(spec.env)
    env["WORKER_KIT_URL"] = url
    log = (tmp_path / "worker.log").open("w")
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=app_dir, env=env, stdout=subprocess.DEVNULL, stderr=log
    )
    try:
        async with AsyncEndpoint(url) as ep:
            running = await ep.run({"dir": str(gate), "n": 1})
            await _started(gate)
            waiting = await ep.run({"dir": str(gate), "n": 2})
            proc.send_signal(signal.SIGTERM)
            # The job is mid-run when SIGTERM arrives and may finish only now: a worker that
            # did not drain would have left it unfinished.
            await asyncio.sleep(0.2)
            (gate / "release").touch()
            async with asyncio.timeout(30):
                code = await proc.wait()
            assert code == 0, (tmp_path / "worker.log").read_text()
            final = await running.status()
            assert final["status"] == "COMPLETED" and final["output"] == {"finished": 1}
            # Claiming stopped at SIGTERM: the second job is still queued for another worker.
            assert (await waiting.status())["status"] == "IN_QUEUE"
    finally:
        log.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
