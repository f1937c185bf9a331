"""Settings, start(), `worker-kit work`, logging and cold-start imports, through real processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from worker_kit.errors import ConfigError
from worker_kit.service.config import EndpointConfig
from worker_kit.worker.registry import Registry, handler
from worker_kit.worker.settings import EXIT_REFUSED, load_settings

from .conftest import HANDLERS

URL = "http://127.0.0.1:9/v2/ep"


def run_py(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    environ = {"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=environ,
                          cwd=cwd, timeout=60)


# -- settings -------------------------------------------------------------------------------


def test_flags_win_over_env_over_options() -> None:
    env = {"WORKER_KIT_URL": URL, "WORKER_KIT_CONCURRENCY": "3", "WORKER_KIT_GRACE": "7"}
    s = load_settings(["--concurrency", "5"], env, {"concurrency": 9, "timeout_s": 12, "grace_s": 1})
    assert (s.url, s.concurrency, s.grace_s, s.timeout_s) == (URL, 5, 7.0, 12.0)
    assert (s.log_level, s.log_format, s.stuck_grace_s, s.api_key) == ("INFO", "text", 5.0, None)
    assert (s.on_stuck, s.isolation, s.max_rss_mb, s.kill_rss_mb) == ("restart", None, None, None)
    s = load_settings(["--on-stuck", "EXIT", "--max-rss-mb", "512"], {"WORKER_KIT_URL": URL,
                      "WORKER_KIT_ISOLATION": "process", "WORKER_KIT_KILL_RSS_MB": "900"})
    assert (s.on_stuck, s.isolation, s.max_rss_mb, s.kill_rss_mb) == ("exit", "process", 512.0, 900.0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORKER_KIT_CONCURRENCY": "many"}, "WORKER_KIT_CONCURRENCY must be an integer"),
        ({"WORKER_KIT_CONCURRENCY": "0"}, "WORKER_KIT_CONCURRENCY must be >= 1"),
        ({"WORKER_KIT_TIMEOUT": "-1"}, "WORKER_KIT_TIMEOUT must be > 0"),
        ({"WORKER_KIT_GRACE": "soon"}, "WORKER_KIT_GRACE must be a number"),
        ({"WORKER_KIT_LOG_LEVEL": "loud"}, "WORKER_KIT_LOG_LEVEL must be one of"),
        ({"WORKER_KIT_LOG_FORMAT": "xml"}, "WORKER_KIT_LOG_FORMAT must be text or json"),
        ({"WORKER_KIT_URL": "queue:8000"}, "WORKER_KIT_URL must look like"),
        ({"WORKER_KIT_ON_STUCK": "ignore"}, "WORKER_KIT_ON_STUCK must be restart or exit"),
        ({"WORKER_KIT_ISOLATION": "fork"}, "WORKER_KIT_ISOLATION must be thread or process"),
        ({"WORKER_KIT_MAX_RSS_MB": "0"}, "WORKER_KIT_MAX_RSS_MB must be > 0"),
        ({"WORKER_KIT_KILL_RSS_MB": "lots"}, "WORKER_KIT_KILL_RSS_MB must be a number"),
    ],
)
def test_bad_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings([], {"WORKER_KIT_URL": URL, **env})


def test_unknown_flag_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unrecognized arguments: --concurency"):
        load_settings(["--concurency", "2"], {"WORKER_KIT_URL": URL})


def test_bad_setting_exits_2_with_one_line() -> None:
    proc = run_py(str(HANDLERS / "echo.py"), env={"WORKER_KIT_URL": URL, "WORKER_KIT_CONCURRENCY": "x"})
    assert proc.returncode == 2
    expected = "echo.py: error: WORKER_KIT_CONCURRENCY must be an integer, got 'x'"
    assert proc.stderr.strip().splitlines() == [expected]


def test_missing_url_says_how_to_fix(tmp_path: Path) -> None:
    proc = run_py(str(HANDLERS / "echo.py"), cwd=tmp_path)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "WORKER_KIT_URL is not set" in line and "--test-input" in line and "--serve" in line
    assert len(line.splitlines()) == 1


def test_help_explains_settings() -> None:
    proc = run_py(str(HANDLERS / "echo.py"), "--help")
    assert proc.returncode == 0
    for name in ("WORKER_KIT_URL", "WORKER_KIT_API_KEY", "WORKER_KIT_CONCURRENCY", "WORKER_KIT_TIMEOUT",
                 "WORKER_KIT_GRACE", "WORKER_KIT_LOG_LEVEL", "WORKER_KIT_LOG_FORMAT", "WORKER_KIT_WORKER_ID",
                 "--test-input", "--serve", "exit codes"):
        assert name in proc.stdout, name


def test_import_worker_kit_stays_light() -> None:
    code = ("import sys, worker_kit\n@worker_kit.handler(timeout=5)\ndef f(job): return 1\n"
            "print(sorted(m for m in ('aiohttp', 'msgpack', 'worker_kit.worker.loop') if m in sys.modules))")
    proc = run_py("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# -- registry -------------------------------------------------------------------------------


def test_registry_lookup() -> None:
    reg = Registry()
    with pytest.raises(ConfigError, match="no handler registered"):
        reg.get()

    def a(job: Any) -> None: ...

    def b(job: Any) -> None: ...

    from worker_kit.worker.registry import Handler

    ha = reg.add(Handler(fn=a, name="a", timeout=3))
    assert reg.get() is ha and reg.get("a") is ha and reg.get(a) is ha
    reg.add(Handler(fn=b, name="b"))
    with pytest.raises(ConfigError, match=r"several handlers are registered \(a, b\)"):
        reg.get()
    with pytest.raises(ConfigError, match="no handler named 'c'"):
        reg.get("c")
    assert reg.get(len).name == "len"  # an unregistered callable gets default options
    with pytest.raises(ConfigError, match="two handlers are named 'a'"):
        reg.add(Handler(fn=b, name="a"))


def test_decorator_validates_options() -> None:
    with pytest.raises(ConfigError, match="timeout must be a positive number"):
        handler(timeout=0)(lambda job: None)
    with pytest.raises(ConfigError, match="concurrency must be an int >= 1 or a callable"):
        handler(concurrency=0)(lambda job: None)


# -- processes against the service ----------------------------------------------------------


async def test_json_logs(service: Any, spawn_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("entry")
    api = api_at(url)
    worker = await spawn_worker("echo.py", url, log_format="json")
    job_id = await api.run(1)
    assert (await api.wait(job_id))["status"] == "COMPLETED"
    await worker.wait_log("COMPLETED in")
    lines = [json.loads(line) for line in worker.logs().splitlines() if line.strip()]
    done = [entry for entry in lines if entry.get("state") == "COMPLETED"]
    assert done and done[0]["job_id"] == job_id and done[0]["level"] == "info" and "duration_ms" in done[0]


async def test_work_command_runs_a_file_that_only_registers(
    service: Any, tmp_path: Path, api_at: Any
) -> None:
    handler_file = tmp_path / "only_registers.py"
    handler_file.write_text(
        "import worker_kit\n\n@worker_kit.handler\ndef double(job):\n    return job.input * 2\n"
    )
    url = service.endpoint_url("entry")
    api = api_at(url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker_kit", "work", str(handler_file), "--url", url, "--concurrency", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        job_id = await api.run(21)
        status = await api.wait(job_id)
        assert status["status"] == "COMPLETED" and status["output"] == 42
        proc.terminate()
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
        assert proc.stdout is not None
        out = (await proc.stdout.read()).decode()
        assert "handler double" in out and "concurrency 2" in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_work_command_runs_a_file_that_calls_start(service: Any, api_at: Any) -> None:
    url = service.endpoint_url("entry")
    api = api_at(url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker_kit", "work", str(HANDLERS / "echo.py"), "--url", url,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        status = await api.wait(await api.run("hi"))
        assert status["output"]["echo"] == "hi"
    finally:
        proc.terminate()
        async with asyncio.timeout(10):
            assert await proc.wait() == 0


async def test_refused_worker_key_exits_4(service_factory: Any, spawn_worker: Any, api_at: Any) -> None:
    service = await service_factory(default=EndpointConfig(worker_keys=("right-key",)))
    url = service.endpoint_url("entry")
    api = api_at(url)
    bad = await spawn_worker("echo.py", url, api_key="wrong-key")
    assert await bad.wait(10) == EXIT_REFUSED
    assert "check WORKER_KIT_API_KEY" in bad.logs()
    await spawn_worker("echo.py", url, api_key="right-key")
    status = await api.wait(await api.run(5))
    assert status["status"] == "COMPLETED"


def test_test_input_flag_runs_the_local_harness(tmp_path: Path) -> None:
    proc = run_py(str(HANDLERS / "echo.py"), "--test-input", '{"input": {"x": 1}}', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    assert final["status"] == "COMPLETED" and final["output"]["echo"] == {"x": 1}


def test_test_input_file_used_without_url(tmp_path: Path) -> None:
    (tmp_path / "test_input.json").write_text('{"input": "from file"}')
    proc = run_py(str(HANDLERS / "echo.py"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["output"]["echo"] == "from file"


async def test_worker_installs_no_signal_handlers(service: Any, start_worker: Any, api_at: Any) -> None:
    import signal

    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    url = service.endpoint_url("entry")
    api = api_at(url)
    await start_worker(lambda job: job.input, url)
    assert (await api.wait(await api.run(1)))["status"] == "COMPLETED"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
