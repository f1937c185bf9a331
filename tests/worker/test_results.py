"""What a handler returns or raises becomes the job's final state."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from worker_kit.service.config import EndpointConfig
from worker_kit.worker.execution import Job

from .conftest import make_handler


async def run_one(
    service: Any, start_worker: Any, api_at: Any, fn: Any, input: Any = None, **kw: Any
) -> dict:
    url = service.endpoint_url("results")
    api = api_at(url)
    await start_worker(fn, url, **kw)
    job_id = await api.run(input)
    return await api.wait(job_id)


async def test_exception_fails_with_traceback(service: Any, start_worker: Any, api_at: Any) -> None:
    def broken(job: Job) -> Any:
        raise ValueError("the input is bad")

    status = await run_one(service, start_worker, api_at, broken)
    assert status["status"] == "FAILED"
    assert status["error"] == "ValueError: the input is bad"
    detail = status["errorDetail"]
    assert detail["type"] == "ValueError" and detail["message"] == "the input is bad"
    assert "Traceback" in detail["traceback"] and "def broken" not in detail["traceback"]
    assert 'raise ValueError("the input is bad")' in detail["traceback"]


async def test_async_exception_fails(service: Any, start_worker: Any, api_at: Any) -> None:
    async def broken(job: Job) -> Any:
        raise KeyError("k")

    status = await run_one(service, start_worker, api_at, broken)
    assert status["status"] == "FAILED"
    assert status["error"] == "KeyError: 'k'"


async def test_generator_exception_after_chunks(service: Any, start_worker: Any, api_at: Any) -> None:
    def half(job: Job) -> Any:
        yield "one"
        raise RuntimeError("midway")

    url = service.endpoint_url("results")
    api = api_at(url)
    await start_worker(half, url)
    job_id = await api.run(None)
    status = await api.wait(job_id)
    assert status["status"] == "FAILED" and status["error"] == "RuntimeError: midway"
    assert await api.chunks(job_id) == ["one"]


async def test_error_dict_fails(service: Any, start_worker: Any, api_at: Any) -> None:
    status = await run_one(service, start_worker, api_at, lambda job: {"error": "model not loaded"})
    assert status["status"] == "FAILED" and status["error"] == "model not loaded"


async def test_error_dict_with_non_string_error(service: Any, start_worker: Any, api_at: Any) -> None:
    status = await run_one(service, start_worker, api_at, lambda job: {"error": {"code": 7}})
    assert status["status"] == "FAILED" and status["error"] == '{"code":7}'


async def test_falsy_error_key_completes(service: Any, start_worker: Any, api_at: Any) -> None:
    status = await run_one(service, start_worker, api_at, lambda job: {"error": None, "ok": 1})
    assert status["status"] == "COMPLETED" and status["output"] == {"error": None, "ok": 1}


async def test_unserialisable_result_fails_clearly(service: Any, start_worker: Any, api_at: Any) -> None:
    status = await run_one(service, start_worker, api_at, lambda job: {"when": object()})
    assert status["status"] == "FAILED"
    assert status["error"].startswith("result is not serialisable: TypeError")


async def test_unserialisable_chunk_fails_clearly(service: Any, start_worker: Any, api_at: Any) -> None:
    def gen(job: Job) -> Any:
        yield "fine"
        yield {1, 2}

    status = await run_one(service, start_worker, api_at, gen)
    assert status["status"] == "FAILED"
    assert status["error"].startswith("TypeError")


async def test_result_over_local_limit_fails(service: Any, start_worker: Any, api_at: Any) -> None:
    status = await run_one(service, start_worker, api_at, lambda job: "x" * 5000, result_limit=4096)
    assert status["status"] == "FAILED"
    assert status["error"].startswith("result too large") and "result limit" in status["error"]


async def test_result_refused_by_service_fails(service_factory: Any, start_worker: Any, api_at: Any) -> None:
    # The service's limit is lower than the worker's: the 413 turns into FAILED with the reason.
    service = await service_factory(default=EndpointConfig(result_limit=10_000))
    status = await run_one(service, start_worker, api_at, lambda job: "y" * 20_000)
    assert status["status"] == "FAILED"
    assert status["error"].startswith("result too large: the service refused it")


async def test_a_raised_endpoint_result_limit_is_honoured(
    service_factory: Any, start_worker: Any, api_at: Any
) -> None:
    # The worker learns the endpoint's result limit from the service: a configured limit above
    # the 20 MB default lets larger results through; a limit given to the worker still applies.
    service = await service_factory(default=EndpointConfig(result_limit=24 * 1024 * 1024))
    big = "z" * (21 * 1024 * 1024)
    status = await run_one(service, start_worker, api_at, lambda job: big)
    assert status["status"] == "COMPLETED", status.get("error")
    assert len(status["output"]) == len(big)
    url = service.endpoint_url("own-limit")
    api = api_at(url)
    await start_worker(lambda job: "x" * 5000, url, result_limit=4096)
    status = await api.wait(await api.run(None))
    assert status["status"] == "FAILED" and status["error"].startswith("result too large")


async def test_bytes_result(service: Any, start_worker: Any, api_at: Any) -> None:
    status = await run_one(service, start_worker, api_at, lambda job: b"\x00\x01binary")
    assert status["status"] == "COMPLETED"
    assert base64.b64decode(status["output"]) == b"\x00\x01binary"


async def test_input_validation(service: Any, start_worker: Any, api_at: Any) -> None:
    from worker_kit.validation import Field

    ran = []

    def handler(job: Job) -> Any:
        ran.append(job.input)
        return job.input

    schema = {"prompt": Field(str, required=True), "steps": Field(int, default=10)}
    url = service.endpoint_url("results")
    api = api_at(url)
    await start_worker(make_handler(handler, input_schema=schema), url)
    ok = await api.wait(await api.run({"prompt": "hi"}))
    assert ok["status"] == "COMPLETED" and ok["output"] == {"prompt": "hi", "steps": 10}
    bad = await api.wait(await api.run({"steps": "many"}))
    assert bad["status"] == "FAILED"
    assert bad["error"].startswith("input validation failed: ")
    assert bad["errorDetail"]["type"] == "ValidationError" and len(bad["errorDetail"]["errors"]) == 2
    assert ran == [{"prompt": "hi", "steps": 10}]  # the handler never saw the bad input


async def test_a_handler_that_cancels_its_own_task_still_ends_its_job(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    # Its task is the runtime's business: the job ends with a clear state, not by its lease.
    async def quits(job: Job) -> Any:
        current = asyncio.current_task()
        assert current is not None
        current.cancel()
        await asyncio.sleep(5)
        return "never"

    url = service.endpoint_url("results")
    api = api_at(url)
    await start_worker(quits, url)
    job_id = await api.run(None)
    status = await api.wait(job_id, timeout=4)
    assert status["status"] == "FAILED", status
