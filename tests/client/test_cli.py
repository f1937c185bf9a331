"""`worker-kit` client commands as subprocesses against the real service: output, --json
and exit codes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import loopback_app
from worker_kit.client import AsyncEndpoint
from worker_kit.service.config import EndpointConfig, RateLimit

from .conftest import ScriptedWorker, cli_env, free_port, run_cli


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path)


async def test_help_for_every_command(env: dict[str, str]) -> None:
    for command in ("submit", "run", "status", "stream", "cancel", "retry", "purge", "health"):
        code, out, _ = await run_cli(command, "--help", env=env)
        assert code == 0 and "--url" in out and "exit codes" in out, command


async def test_run_completed_plain_and_json(endpoint_url: str, worker: ScriptedWorker,
                                            env: dict[str, str]) -> None:
    code, out, err = await run_cli("run", '{"output": {"a": [1, 2]}}', "--url", endpoint_url, env=env)
    assert code == 0, err
    assert json.loads(out) == {"a": [1, 2]}
    code, out, _ = await run_cli("run", '{"output": "text"}', "--url", endpoint_url, "--json", env=env)
    assert code == 0
    status = json.loads(out)
    assert status["status"] == "COMPLETED" and status["output"] == "text"
    code, out, _ = await run_cli("run", '{"output": "text"}', "--url", endpoint_url, env=env)
    assert out == "text\n"


async def test_run_exit_codes_by_final_state(endpoint_url: str, worker: ScriptedWorker,
                                             env: dict[str, str]) -> None:
    code, out, err = await run_cli("run", '{"fail": "it broke"}', "--url", endpoint_url, env=env)
    assert code == 1 and out == "" and "FAILED: it broke" in err
    code, out, err = await run_cli("run", '{"gate": "never"}', "--url", endpoint_url,
                                   "--execution-timeout", "200", "--json", env=env)
    assert code == 3 and json.loads(out)["status"] == "TIMED_OUT", err
    code, out, err = await run_cli("run", '{"gate": "never"}', "--url", endpoint_url, "--timeout", "0.5",
                                   env=env)
    assert code == 10 and "still IN_PROGRESS" in err and "status --wait" in err

    async def cancel_when_running() -> None:
        for _ in range(1000):
            if worker.held:
                break
            await asyncio.sleep(0.01)
        async with AsyncEndpoint(endpoint_url) as ep:
            for job_id in list(worker.held):
                await ep.job(job_id).cancel()

    canceller = asyncio.create_task(cancel_when_running())
    worker.held.clear()
    code, out, err = await run_cli("run", '{"gate": "never2"}', "--url", endpoint_url, env=env)
    await canceller
    assert code == 4 and "CANCELLED" in err


async def test_input_from_file_and_stdin_and_env_url(endpoint_url: str, worker: ScriptedWorker,
                                                     env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "input.json"
    path.write_text('{"output": "from file"}')
    code, out, _ = await run_cli("run", f"@{path}", "--url", endpoint_url, env=env)
    assert (code, out) == (0, "from file\n")
    code, out, _ = await run_cli("run", "--url", endpoint_url, env=env, stdin=b'{"output": "from stdin"}')
    assert (code, out) == (0, "from stdin\n")
    root, endpoint = endpoint_url.rsplit("/v2/", 1)
    code, out, _ = await run_cli("run", "-", env={**env, "WORKER_KIT_CLIENT_URL": root,
                                                  "WORKER_KIT_ENDPOINT": endpoint}, stdin=b"[1]")
    assert (code, json.loads(out)) == (0, [1])
    code, out, _ = await run_cli("health", "--url", root, "--endpoint", endpoint, "--json", env=env)
    assert code == 0 and json.loads(out)["jobs"]["completed"] >= 3


async def test_submit_status_stream_cancel_retry_purge_health(
    endpoint_url: str, worker: ScriptedWorker, env: dict[str, str]
) -> None:
    url = ("--url", endpoint_url)
    script = '{"chunks": ["he", "llo"], "gate": "s", "output": 1}'
    code, out, _ = await run_cli("submit", script, *url, env=env)
    job_id = out.strip()
    assert code == 0 and len(job_id) == 32

    worker.gate("s").set()
    code, out, _ = await run_cli("stream", job_id, *url, env=env)
    assert (code, out) == (0, "hello")
    code, out, _ = await run_cli("stream", job_id, *url, "--json", "--cursor", "1", env=env)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and lines[0] == {"output": "llo"} and lines[-1]["status"] == "COMPLETED"

    code, out, _ = await run_cli("status", job_id, *url, "--json", env=env)
    assert code == 0 and json.loads(out)["status"] == "COMPLETED"
    code, out, _ = await run_cli("status", job_id, *url, "--wait", env=env)
    assert code == 0 and json.loads(out)["output"] == 1

    code, out, _ = await run_cli("submit", '{"fail_once": "flake"}', *url, "--json", env=env)
    failing = json.loads(out)["id"]
    code, out, _ = await run_cli("status", failing, *url, "--wait", "--json", env=env)
    assert code == 1 and json.loads(out)["error"] == "flake"
    code, out, _ = await run_cli("retry", failing, *url, env=env)
    assert (code, out) == (0, f"job {failing} IN_QUEUE\n")
    code, out, _ = await run_cli("status", failing, *url, "--wait", env=env)
    assert code == 0
    code, _, err = await run_cli("retry", failing, *url, env=env)
    assert code == 11 and "409" in err

    code, out, _ = await run_cli("submit", '{"gate": "held"}', *url, env=env)
    held = out.strip()
    code, out, _ = await run_cli("cancel", held, *url, "--json", env=env)
    assert code == 0 and json.loads(out) == {"id": held, "status": "CANCELLED"}
    code, out, _ = await run_cli("stream", held, *url, env=env)
    assert code == 4


async def test_purge(service: Any, env: dict[str, str]) -> None:
    url = ("--url", service.endpoint_url("idle"))
    for _ in range(2):
        assert (await run_cli("submit", "{}", *url, env=env))[0] == 0
    code, out, _ = await run_cli("purge", *url, env=env)
    assert (code, out) == (0, "removed 2 queued jobs\n")
    code, out, _ = await run_cli("purge", *url, "--json", env=env)
    assert code == 0 and json.loads(out)["removed"] == 0


async def test_error_exit_codes(service_factory: Any, env: dict[str, str]) -> None:
    svc = await service_factory(default=EndpointConfig(
        client_keys=("k",), run_body_limit=2000, rate_limits={"status": RateLimit(1, 60.0, None)},
    ))
    url = ("--url", svc.endpoint_url("strict"))
    code, _, err = await run_cli("health", *url, env=env)
    assert code == 6 and "401" in err and "--api-key" in err and len(err.strip().splitlines()) == 1
    authed = (*url, "--api-key", "k")
    code, _, err = await run_cli("status", "0" * 32, *authed, env=env)
    assert code == 7 and "404" in err
    code, _, err = await run_cli("submit", json.dumps("x" * 5000), *authed, env=env)
    assert code == 8 and "413" in err
    code, _, err = await run_cli("status", "0" * 32, *authed, "--retries", "0", env=env)
    assert code == 9 and "429" in err
    code, _, err = await run_cli("health", "--url", f"http://127.0.0.1:{free_port()}/v2/x", env=env)
    assert code == 5 and "cannot reach" in err
    code, _, err = await run_cli("submit", "{not json", *authed, env=env)
    assert code == 2 and "not valid JSON" in err
    code, _, err = await run_cli("health", env=env)
    assert code == 2 and "no service URL" in err
    code, _, err = await run_cli("health", "--url", "http://127.0.0.1:1", env=env)
    assert code == 2 and "--endpoint ID" in err and "endpoint_id" not in err
    code, _, err = await run_cli("submit", "@/nonexistent/file.json", *authed, env=env)
    assert code == 2 and "cannot read" in err


async def test_run_stream_prints_chunks(
    endpoint_url: str, worker: ScriptedWorker, env: dict[str, str]
) -> None:
    script = json.dumps({"chunks": ["to", "ken", {"n": 1}], "output": "x"})
    code, out, _ = await run_cli("run", script, "--url", endpoint_url, "--stream", env=env)
    assert (code, out) == (0, 'token{"n":1}\n')
    # A handler that streams nothing still has its output printed, not dropped.
    code, out, _ = await run_cli("run", '{"output": {"a": 1}}', "--url", endpoint_url, "--stream", env=env)
    assert code == 0 and json.loads(out) == {"a": 1}
    script = json.dumps({"chunks": ["a"], "fail": "after a"})
    code, out, err = await run_cli("run", script, "--url", endpoint_url, "--stream", "--json", env=env)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and lines[0] == {"output": "a"} and lines[-1]["status"] == "FAILED"
    assert "FAILED: after a" in err


async def test_live_line_on_a_terminal(
    endpoint_url: str, worker: ScriptedWorker, env: dict[str, str]
) -> None:
    import os
    import pty
    import sys

    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker_kit", "run", json.dumps({"progress": [{"pct": 40}], "gate": "tty"}),
        "--url", endpoint_url, stdout=asyncio.subprocess.PIPE, stderr=slave, env=env,
    )
    os.close(slave)
    seen = b""
    loop = asyncio.get_running_loop()
    try:
        while b'progress: {"pct": 40}' not in seen:
            seen += await asyncio.wait_for(loop.run_in_executor(None, os.read, master, 4096), 10)
        worker.gate("tty").set()
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        os.close(master)
    text = seen.decode()
    assert "IN_PROGRESS" in text and "\r\x1b[K" in text  # redrawn in place
    assert proc.returncode == 0 and json.loads(out) == {"progress": [{"pct": 40}], "gate": "tty"}

    # Not a terminal: no live line at all.
    code, _, err = await run_cli("run", '{"output": 1}', "--url", endpoint_url, env=env)
    assert code == 0 and err == ""


async def test_interrupted_run_names_the_job_that_goes_on(
    endpoint_url: str, worker: ScriptedWorker, env: dict[str, str]
) -> None:
    import signal
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker_kit", "run", '{"gate": "ctrl-c"}', "--url", endpoint_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    for _ in range(1000):
        if worker.held:
            break
        await asyncio.sleep(0.01)
    (job_id,) = worker.held
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 130
    assert f"job {job_id} goes on" in err.decode() and f"worker-kit cancel {job_id}" in err.decode()
    async with AsyncEndpoint(endpoint_url) as ep:
        assert (await ep.job(job_id).status())["status"] == "IN_PROGRESS"
    worker.gate("ctrl-c").set()


@pytest.mark.parametrize("command", ["run", "submit"])
async def test_ctrl_c_while_the_submit_is_answered_still_names_the_job(
    endpoint_url: str, env: dict[str, str], command: str
) -> None:
    """The service may hold the job before the client has its answer: a proxy in front of the real
    service forwards the /run but holds its answer until the CLI has been interrupted."""
    import signal
    import sys

    from aiohttp import ClientSession, web

    forwarded, release = asyncio.Event(), asyncio.Event()

    async def hold_run(request: web.Request) -> web.Response:
        async with ClientSession() as session:
            async with session.post(f"{endpoint_url}/run", data=await request.read(),
                                    headers={"Content-Type": request.content_type}) as answer:
                body, status = await answer.read(), answer.status
        forwarded.set()
        await release.wait()
        return web.Response(body=body, status=status, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v2/held/run", hold_run)
    async with loopback_app(app) as base:
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "worker_kit", command, '{"gate": "never"}', "--url", f"{base}/v2/held",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            )
            await asyncio.wait_for(forwarded.wait(), 30)
            proc.send_signal(signal.SIGINT)
            await asyncio.sleep(0.3)  # the CLI is interrupted while its request is unanswered
            release.set()
            _, err = await asyncio.wait_for(proc.communicate(), 10)
        finally:
            release.set()
    assert proc.returncode == 130
    async with AsyncEndpoint(endpoint_url) as ep:
        page = await ep.requests()
    (job_id,) = [entry["id"] for entry in page["requests"]]
    assert f"job {job_id} goes on" in err.decode() and f"worker-kit cancel {job_id}" in err.decode()


async def test_waiting_out_a_rate_limit_is_announced(service_factory: Any, env: dict[str, str]) -> None:
    # A window longer than a CLI process takes to start on a loaded machine, so the third call is refused.
    svc = await service_factory(default=EndpointConfig(rate_limits={"status": RateLimit(1, 4.0, None)}))
    url = ("--url", svc.endpoint_url("limited"))
    code, out, _ = await run_cli("submit", "{}", *url, env=env)
    assert code == 0
    job_id = out.strip()
    assert (await run_cli("status", job_id, *url, env=env))[0] == 0
    code, out, err = await run_cli("status", job_id, *url, env=env)  # refused once, then let through
    assert code == 0 and json.loads(out)["status"] == "IN_QUEUE"
    assert "429" in err and "retrying in" in err, err


async def test_stdout_closed_early_ends_quietly(
    endpoint_url: str, worker: ScriptedWorker, env: dict[str, str]
) -> None:
    import os
    import sys

    script = json.dumps({"chunks": ["first\n"], "gate": "pipe", "chunks_after": ["x\n"] * 5000})
    read_end, write_end = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker_kit", "run", "--stream", script, "--url", endpoint_url,
        stdout=write_end, stderr=asyncio.subprocess.PIPE, env=env,
    )
    os.close(write_end)
    loop = asyncio.get_running_loop()
    try:
        first = await asyncio.wait_for(loop.run_in_executor(None, os.read, read_end, 6), 10)
        assert first == b"first\n"
    finally:
        os.close(read_end)  # the reader leaves, as head does after its line
    worker.gate("pipe").set()
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 141 and err == b"", err


async def test_the_client_key_has_its_own_variable(service_factory: Any, env: dict[str, str]) -> None:
    keys = EndpointConfig(client_keys=("client-key",), worker_keys=("worker-key",))
    svc = await service_factory(default=keys)
    # A shell set up for a worker: its URL serves the client too, its key is the worker's.
    worker_shell = {**env, "WORKER_KIT_URL": svc.endpoint_url("keys"), "WORKER_KIT_API_KEY": "worker-key"}
    code, _, err = await run_cli("health", env=worker_shell)
    assert code == 6 and "403" in err and "WORKER_KIT_CLIENT_API_KEY" in err, err
    assert "note: no WORKER_KIT_CLIENT_API_KEY; sending $WORKER_KIT_API_KEY" in err, err
    client_too = {**worker_shell, "WORKER_KIT_CLIENT_API_KEY": "client-key"}
    code, out, err = await run_cli("health", "--json", env=client_too)
    assert code == 0 and "inQueue" in json.loads(out)["jobs"] and err == "", err
    # The old spelling still works for a client shell that set it to the client key, and says so.
    legacy = {**env, "WORKER_KIT_CLIENT_URL": svc.endpoint_url("keys"), "WORKER_KIT_API_KEY": "client-key"}
    code, _, err = await run_cli("health", env=legacy)
    assert code == 0 and "WORKER_KIT_CLIENT_API_KEY" in err, err


async def test_help_says_which_key_is_which(env: dict[str, str]) -> None:
    code, out, _ = await run_cli("run", "--help", env=env)
    assert code == 0 and "WORKER_KIT_CLIENT_API_KEY" in out and "not its worker key" in out
    code, out, _ = await run_cli("work", "--help", env=env)
    assert code == 0 and "WORKER_KIT_URL" in out
