"""The hosted service's own SDK (`runpod` 1.12.0), unmodified, as a worker against this service's
hosted-protocol routes, in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

SDK_WORKER = '''
import asyncio
import runpod

async def handler(job):
    await asyncio.sleep(job["input"].get("sleep", 0))
    return {"slept": job["input"].get("sleep", 0)}

runpod.serverless.start({"handler": handler})
'''
#: One handler for the other points of the protocol: chunks, progress, errors.
SDK_KINDS = '''
import asyncio
import runpod

async def handler(job):
    what = job["input"]["what"]
    if what == "stream":
        for i in range(3):
            yield {"tok": i}
    elif what == "progress":
        runpod.serverless.progress_update(job, {"step": 1})
        await asyncio.sleep(3)
        yield "done"
    else:
        raise ValueError("no such model")

runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
'''


@pytest.fixture
async def sdk_worker(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    procs: list[asyncio.subprocess.Process] = []

    # The test extra pins runpod==1.12.0: a missing SDK fails here, it is never skipped.
    assert importlib.util.find_spec("runpod") is not None, "pip install -e '.[test]' installs runpod"

    async def start(endpoint_url: str, pod_id: str = "sdk-pod", source: str = SDK_WORKER) -> Path:
        script = tmp_path / f"{pod_id}.py"
        script.write_text(source)
        log = tmp_path / f"{pod_id}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "WORKER_KIT_"))}
        env.update({
            "RUNPOD_WEBHOOK_GET_JOB": f"{endpoint_url}/job-take/$ID?",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{endpoint_url}/job-done/$RUNPOD_POD_ID/$ID?",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{endpoint_url}/job-stream/$RUNPOD_POD_ID/$ID?",
            "RUNPOD_WEBHOOK_PING": f"{endpoint_url}/ping/$RUNPOD_POD_ID?",
            "RUNPOD_AI_API_KEY": "unused", "RUNPOD_POD_ID": pod_id, "RUNPOD_PING_INTERVAL": "1000",
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_SKIP_GPU_CHECK": "true",
            "RUNPOD_LOG_LEVEL": "INFO", "HOME": str(tmp_path),  # no ~/.runpod/config.toml key override
        })
        with open(log, "wb") as out:  # noqa: ASYNC230 - a local file, opened once
            # A session of its own: the SDK starts a process of its own (its pinger), which must
            # go with the worker at teardown instead of pinging a closed port forever.
            proc = await asyncio.create_subprocess_exec(sys.executable, str(script), stdout=out, stderr=out,
                                                        env=env, cwd=str(tmp_path), start_new_session=True)
        procs.append(proc)
        return log

    yield start
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the worker and its children
        await proc.wait()


async def test_an_sdk_worker_runs_jobs(service: Any, api_at: Any, sdk_worker: Any) -> None:
    url = service.endpoint_url("sdk")
    api = api_at(url)
    await sdk_worker(url)
    job_id = await api.run({"sleep": 0})
    status = await api.wait(job_id, timeout=60)
    assert status["status"] == "COMPLETED" and status["output"] == {"slept": 0}, status


@pytest.mark.parametrize("round_", range(3))
async def test_a_cancel_right_after_the_take_still_stops_the_job(
    service: Any, api_at: Any, sdk_worker: Any, round_: int
) -> None:
    # The SDK queues a taken job for a moment before its task exists; a stop that arrives then is
    # dropped by the SDK. The service repeats it while the worker still lists the job.
    url = service.endpoint_url("sdk")
    api = api_at(url)
    await sdk_worker(url)
    warm = await api.run({"sleep": 0})
    await api.wait(warm, timeout=60)
    job_id = await api.run({"sleep": 60})
    await api.wait(job_id, states={"IN_PROGRESS"}, timeout=30)
    await api.cancel(job_id)
    next_id = await api.run({"sleep": 0})
    status = await api.wait(next_id, timeout=30)
    assert status["status"] == "COMPLETED", status


async def test_sdk_chunks_progress_and_errors(service: Any, api_at: Any, sdk_worker: Any) -> None:
    url = service.endpoint_url("sdk-kinds")
    api = api_at(url)
    await sdk_worker(url, "kinds-pod", SDK_KINDS)
    streamed = await api.run({"what": "stream"})
    status = await api.wait(streamed, timeout=60)
    assert status["status"] == "COMPLETED", status
    assert await api.chunks(streamed) == [{"tok": 0}, {"tok": 1}, {"tok": 2}]
    assert status["output"] == [{"tok": 0}, {"tok": 1}, {"tok": 2}]  # return_aggregate_stream

    progressing = await api.run({"what": "progress"})
    async with asyncio.timeout(30):
        while (st := await api.status(progressing)).get("output") != {"step": 1}:
            assert st["status"] in ("IN_QUEUE", "IN_PROGRESS"), st
            await asyncio.sleep(0.05)
    assert (await api.wait(progressing, timeout=60))["output"] == ["done"]

    failing = await api.run({"what": "raise"})
    status = await api.wait(failing, timeout=60)
    # A generator handler's exception reaches the service as the SDK's plain "handler: ..." text.
    assert status["status"] == "FAILED" and "no such model" in status["error"], status


SDK_CLIENT = '''
import json, sys
import runpod

runpod.api_key = "unused"
runpod.endpoint_url_base = sys.argv[1]
endpoint = runpod.Endpoint(sys.argv[2])
print(json.dumps(endpoint.run_sync({"sleep": 0, "word": "hi"}, timeout=60)))
job = endpoint.run({"sleep": 0, "word": "again"})
print(json.dumps({"status": job.status(), "output": job.output(timeout=60)}))
'''


async def test_the_sdk_client_with_its_base_url_pointed_here(
    service: Any, api_at: Any, spawn_worker: Any, tmp_path: Path
) -> None:
    import json

    url = service.endpoint_url("sdk-client")
    await spawn_worker("echo.py", url)
    script = tmp_path / "sdk_client.py"
    script.write_text(SDK_CLIENT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env["HOME"] = str(tmp_path)
    root = url.rsplit("/v2/", 1)[0]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), f"{root}/v2", "sdk-client",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    first, second = (json.loads(line) for line in out.decode().splitlines()[-2:])
    assert first["echo"] == {"sleep": 0, "word": "hi"}
    assert second["output"]["echo"]["word"] == "again"
