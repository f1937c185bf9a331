"""AsyncEndpoint / AsyncJobHandle against the real service and a scripted worker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from worker_kit import JobCancelled, JobFailed, JobNotFound, JobTimedOut
from worker_kit.client import AsyncEndpoint, NotFound, WaitTimeout
from worker_kit.errors import (
    AuthError,
    ConfigError,
    PayloadTooLarge,
    RateLimited,
    ServiceError,
    ServiceUnavailable,
)
from worker_kit.service.config import EndpointConfig, RateLimit

from .conftest import ScriptedWorker, free_port


async def test_run_status_output(endpoint_url: str, worker: ScriptedWorker) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:
        handle = await ep.run({"output": {"answer": 42}})
        assert handle.last_status == {"id": handle.id, "status": "IN_QUEUE"}
        assert await handle.output(timeout=10) == {"answer": 42}
        status = await handle.status()
        assert status["status"] == "COMPLETED" and status["output"] == {"answer": 42}
        assert status["id"] == handle.id


async def test_url_forms(service: Any) -> None:
    root = service.url
    for ep in (AsyncEndpoint(root, "e1"), AsyncEndpoint(root + "/v2/e1"), AsyncEndpoint(root + "/v2", "e1"),
               AsyncEndpoint(root + "/v2/e1/", "e1")):
        assert ep.url == root + "/v2/e1" and ep.endpoint_id == "e1"
        await ep.close()
    with pytest.raises(ConfigError, match="names endpoint"):
        AsyncEndpoint(root + "/v2/e1", "e2")
    with pytest.raises(ConfigError, match="no endpoint id"):
        AsyncEndpoint(root)
    with pytest.raises(ConfigError, match="http"):
        AsyncEndpoint("ftp://x/v2/e")
    for malformed in ("http://[::1/v2/e", "http://:80/v2/e", "http://h:99999/v2/e"):
        with pytest.raises(ConfigError, match="invalid service URL"):
            AsyncEndpoint(malformed)
    with pytest.raises(ConfigError, match="control character"):
        AsyncEndpoint(root, "e1", api_key="first\nsecond")


async def test_run_sync_completed_and_typed_failures(endpoint_url: str, worker: ScriptedWorker) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:
        assert await ep.run_sync("hello", timeout=10) == "hello"
        with pytest.raises(JobFailed) as failed:
            await ep.run_sync({"fail": "boom: bad input"}, timeout=10)
        assert failed.value.error == "boom: bad input"
        assert failed.value.status["status"] == "FAILED"
        assert failed.value.status["errorDetail"]["type"] == "RuntimeError"


async def test_run_sync_cancelled(endpoint_url: str, worker: ScriptedWorker) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:
        waiting = asyncio.create_task(ep.run_sync({"gate": "never"}, timeout=20))
        for _ in range(1000):
            if worker.held:
                break
            await asyncio.sleep(0.01)
        (job_id,) = worker.held
        assert (await ep.job(job_id).cancel())["status"] == "CANCELLED"
        with pytest.raises(JobCancelled) as cancelled:
            await waiting
        assert cancelled.value.job_id == job_id


async def test_job_timed_out_by_service(endpoint_url: str, worker: ScriptedWorker) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:
        handle = await ep.run({"gate": "never"}, policy={"executionTimeout": 200})
        with pytest.raises(JobTimedOut) as timed_out:
            await handle.output(timeout=15)
        assert timed_out.value.error  # the service says why
        assert isinstance(timed_out.value, TimeoutError)


async def test_wait_timeout_leaves_the_job_running(endpoint_url: str, worker: ScriptedWorker) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:
        with pytest.raises(WaitTimeout) as waited:
            await ep.run_sync({"gate": "g1", "output": "late"}, timeout=1)
        job = ep.job(waited.value.job_id)
        assert (await job.status())["status"] == "IN_PROGRESS"
        handle = await ep.run({"gate": "g1", "output": "later"})
        with pytest.raises(WaitTimeout):
            await handle.output(timeout=0.3)
        worker.gate("g1").set()
        assert await job.output(timeout=10) == "late"
        assert await handle.output(timeout=10) == "later"


async def test_watch_shows_progress_then_final(endpoint_url: str, worker: ScriptedWorker) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:
        handle = await ep.run({"progress": [{"step": 1}], "gate": "w", "output": "done"})
        seen: list[dict[str, Any]] = []
        async for status in handle.watch(timeout=10):
            seen.append(status)
            if status.get("output") == {"step": 1}:
                worker.gate("w").set()
        assert seen[-1]["status"] == "COMPLETED" and seen[-1]["output"] == "done"
        assert any(s["status"] == "IN_PROGRESS" and s.get("output") == {"step": 1} for s in seen)
        assert ep.push is True


async def test_stream_chunks_then_typed_error(endpoint_url: str, worker: ScriptedWorker) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:
        handle = await ep.run({"chunks": ["a", {"b": 1}, [2]], "chunk_delay": 0.02, "output": "end"})
        assert [c async for c in handle.stream()] == ["a", {"b": 1}, [2]]
        assert await handle.output() == "end"
        # Reading consumed nothing: the chunks can be read again, from any cursor.
        assert [c async for c in handle.stream(cursor=1)] == [{"b": 1}, [2]]

        failing = await ep.run({"chunks": ["x", "y"], "fail": "died mid-stream"})
        got = []
        with pytest.raises(JobFailed, match="died mid-stream"):
            async for chunk in failing.stream():
                got.append(chunk)
        assert got == ["x", "y"]


async def test_cancel_queued_job_and_output_raises(endpoint_url: str) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:  # no worker: the job stays queued
        handle = await ep.run({"output": 1})
        assert (await handle.status())["status"] == "IN_QUEUE"
        assert (await handle.cancel()) == {"id": handle.id, "status": "CANCELLED"}
        with pytest.raises(JobCancelled):
            await handle.output(timeout=5)
        with pytest.raises(JobCancelled):
            async for _ in handle.stream():
                pass


async def test_retry_failed_job(endpoint_url: str, worker: ScriptedWorker) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:
        handle = await ep.run({"fail_once": "flaky", "output": "second time lucky"})
        with pytest.raises(JobFailed, match="flaky"):
            await handle.output(timeout=10)
        assert (await handle.retry()) == {"id": handle.id, "status": "IN_QUEUE"}
        assert await handle.output(timeout=10) == "second time lucky"
        assert (await handle.status()).get("retries") == 1
        with pytest.raises(ServiceError) as conflict:
            await handle.retry()  # COMPLETED cannot be retried
        assert conflict.value.status == 409


async def test_purge_queue_and_health(endpoint_url: str) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:
        for n in range(3):
            await ep.run({"output": n})
        health = await ep.health()
        assert health["jobs"]["inQueue"] == 3
        answer = await ep.purge_queue()
        assert answer["removed"] == 3
        assert (await ep.health())["jobs"]["inQueue"] == 0


async def test_not_found_is_typed(endpoint_url: str) -> None:
    async with AsyncEndpoint(endpoint_url) as ep:
        job = ep.job("0" * 32)
        with pytest.raises(NotFound) as missing:
            await job.status()
        assert isinstance(missing.value, JobNotFound) and missing.value.status == 404
        with pytest.raises(NotFound):
            await job.output(timeout=5)
        with pytest.raises(NotFound):
            async for _ in job.stream():
                pass


async def test_auth_errors(service_factory: Any) -> None:
    svc = await service_factory(default=EndpointConfig(client_keys=("good",), worker_keys=("w",)))
    url = svc.endpoint_url("secure")
    async with AsyncEndpoint(url) as anonymous:
        with pytest.raises(AuthError) as no_key:
            await anonymous.run({})
        assert no_key.value.status == 401
    async with AsyncEndpoint(url, api_key="w") as wrong_kind:
        with pytest.raises(AuthError) as refused:
            await wrong_kind.health()
        assert refused.value.status in (401, 403)
    async with AsyncEndpoint(url, api_key="good") as ep:
        handle = await ep.run({"x": 1})
        assert (await handle.status())["status"] == "IN_QUEUE"
    async with AsyncEndpoint(url, api_key="good\n") as from_a_file:  # trailing newline dropped
        assert (await from_a_file.job(handle.id).status())["status"] == "IN_QUEUE"


async def test_payload_too_large(service_factory: Any) -> None:
    svc = await service_factory(default=EndpointConfig(run_body_limit=1000))
    async with AsyncEndpoint(svc.endpoint_url("small")) as ep:
        with pytest.raises(PayloadTooLarge) as too_large:
            await ep.run("x" * 5000)
        assert too_large.value.status == 413 and too_large.value.message


async def test_rate_limited_retries_after_retry_after(service_factory: Any) -> None:
    limits = {"status": RateLimit(1, 1.0, None)}
    svc = await service_factory(default=EndpointConfig(rate_limits=limits))
    async with AsyncEndpoint(svc.endpoint_url("limited"), retries=0) as impatient:
        job = await impatient.run({})
        await job.status()
        with pytest.raises(RateLimited) as limited:
            await job.status()
        assert limited.value.retry_after is not None and limited.value.retry_after >= 1
    async with AsyncEndpoint(svc.endpoint_url("limited"), retries=2) as patient:
        job = patient.job(job.id)
        await job.status()  # may itself wait out the previous refusal
        assert (await job.status())["status"] == "IN_QUEUE"  # honoured Retry-After, then succeeded


async def test_unreachable_service() -> None:
    async with AsyncEndpoint(f"http://127.0.0.1:{free_port()}/v2/nowhere", retries=1) as ep:
        with pytest.raises(ServiceUnavailable, match="cannot reach"):
            await ep.health()
        with pytest.raises(ServiceUnavailable):
            await ep.run({})


async def test_one_session_and_closed_client(endpoint_url: str, worker: ScriptedWorker) -> None:
    ep = AsyncEndpoint(endpoint_url)
    await ep.run_sync(1, timeout=10)
    session = ep._transport.session
    await ep.run_sync(2, timeout=10)
    assert ep._transport.session is session
    await ep.close()
    assert session.closed
    with pytest.raises(RuntimeError, match="closed"):
        await ep.health()


async def test_waiting_for_a_free_stream_slot_is_not_a_failure(service_factory: Any) -> None:
    # One concurrent /stream per endpoint: the second waiter is turned away (429) until the
    # first one's stream ends, and must wait as told rather than give up (retries=0).
    svc = await service_factory(default=EndpointConfig(rate_limits={"sse": RateLimit(None, 10.0, 1)}))
    url = svc.endpoint_url("one-stream")
    async with ScriptedWorker(url) as worker, AsyncEndpoint(url, retries=0) as ep:
        first = await ep.run({"gate": "slot", "output": 1})
        second = await ep.run({"gate": "slot", "output": 2})
        waiting = asyncio.gather(first.output(timeout=20), second.output(timeout=20))
        await asyncio.sleep(0.3)
        worker.gate("slot").set()
        assert await waiting == [1, 2]
