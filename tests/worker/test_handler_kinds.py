"""Every kind of handler runs, recognised by what it returns, not how it is defined."""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any

import pytest

from worker_kit.worker.execution import Job

from .conftest import make_handler

# -- value handlers -------------------------------------------------------------------------


def sync_fn(job: Job) -> Any:
    # Runs off the event loop, in a thread of its own.
    main = threading.current_thread() is threading.main_thread()
    return {"kind": "sync", "x": job.input["x"], "main": main}


async def async_fn(job: Job) -> Any:
    await asyncio.sleep(0)
    return {"kind": "async", "x": job["input"]["x"]}


class CallableObject:
    def __call__(self, job: Job) -> Any:
        return {"kind": "callable", "x": job.input["x"]}


class AsyncCallableObject:
    async def __call__(self, job: Job) -> Any:
        return {"kind": "async-callable", "x": job.input["x"]}


async def _scaled(factor: int, job: Job) -> Any:
    return {"kind": "partial", "x": job.input["x"] * factor}


def hiding_wrapper(fn: Any) -> Any:
    # A decorator that hides the coroutine function behind a plain def (no functools.wraps
    # marker of async-ness): only the returned object says it is a coroutine.
    def wrapper(job: Job) -> Any:
        return fn(job)

    return wrapper


@hiding_wrapper
async def wrapped_async(job: Job) -> Any:
    return {"kind": "wrapped", "x": job.input["x"]}


VALUE_HANDLERS = {
    "sync": (sync_fn, {"kind": "sync", "x": 7, "main": False}),
    "async": (async_fn, {"kind": "async", "x": 7}),
    "callable": (CallableObject(), {"kind": "callable", "x": 7}),
    "async-callable": (AsyncCallableObject(), {"kind": "async-callable", "x": 7}),
    "partial": (functools.partial(_scaled, 3), {"kind": "partial", "x": 21}),
    "wrapped": (wrapped_async, {"kind": "wrapped", "x": 7}),
    "lambda-coroutine": (lambda job: async_fn(job), {"kind": "async", "x": 7}),
}


@pytest.mark.parametrize("kind", list(VALUE_HANDLERS))
async def test_value_handlers(kind: str, service: Any, start_worker: Any, api_at: Any) -> None:
    fn, expected = VALUE_HANDLERS[kind]
    url = service.endpoint_url("kinds")
    api = api_at(url)
    await start_worker(fn, url)
    job_id = await api.run({"x": 7})
    status = await api.wait(job_id)
    assert status["status"] == "COMPLETED", status
    assert status["output"] == expected


# -- streaming handlers ---------------------------------------------------------------------


def sync_gen(job: Job) -> Any:
    for i in range(job.input["n"]):
        yield f"s{i}"


async def async_gen(job: Job) -> Any:
    for i in range(job.input["n"]):
        await asyncio.sleep(0)
        yield f"s{i}"


class GeneratorObject:
    def __call__(self, job: Job) -> Any:
        yield from (f"s{i}" for i in range(job.input["n"]))


class AsyncGeneratorObject:
    async def __call__(self, job: Job) -> Any:
        for i in range(job.input["n"]):
            yield f"s{i}"


def _gen_with_prefix(prefix: str, job: Job) -> Any:
    for i in range(job.input["n"]):
        yield f"{prefix}{i}"


def plain_wrapper(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        return fn(*args)

    return wrapper


@plain_wrapper
async def wrapped_async_gen(job: Job) -> Any:
    for i in range(job.input["n"]):
        yield f"s{i}"


async def coroutine_returning_generator(job: Job) -> Any:
    return sync_gen(job)


STREAM_HANDLERS = {
    "generator": sync_gen,
    "async-generator": async_gen,
    "generator-object": GeneratorObject(),
    "async-generator-object": AsyncGeneratorObject(),
    "partial-generator": functools.partial(_gen_with_prefix, "s"),
    "wrapped-async-generator": wrapped_async_gen,
    "coroutine-returning-generator": coroutine_returning_generator,
}


@pytest.mark.parametrize("kind", list(STREAM_HANDLERS))
async def test_streaming_handlers(kind: str, service: Any, start_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("kinds")
    api = api_at(url)
    await start_worker(STREAM_HANDLERS[kind], url)
    job_id = await api.run({"n": 5})
    status = await api.wait(job_id)
    assert status["status"] == "COMPLETED", status
    assert status["output"] == [f"s{i}" for i in range(5)]  # the stream's list, by default
    assert await api.chunks(job_id) == [f"s{i}" for i in range(5)]


@pytest.mark.parametrize("fn", [sync_gen, async_gen], ids=["generator", "async-generator"])
async def test_return_aggregate_stream(fn: Any, service: Any, start_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("kinds")
    api = api_at(url)
    await start_worker(make_handler(fn, return_aggregate_stream=True), url)
    job_id = await api.run({"n": 4})
    status = await api.wait(job_id)
    assert status["status"] == "COMPLETED", status
    assert status["output"] == ["s0", "s1", "s2", "s3"]
    assert await api.chunks(job_id) == ["s0", "s1", "s2", "s3"]


async def test_job_object(service: Any, start_worker: Any, api_at: Any) -> None:
    def inspect_job(job: Job) -> Any:
        return {
            "id_matches": job.id == job["id"],
            "input": job["input"],
            "get": job.get("input"),
            "missing": job.get("nope", "default"),
            "attempt": job.attempt,
            "cancelled": job.cancelled,
            "has_input": "input" in job,
        }

    url = service.endpoint_url("kinds")
    api = api_at(url)
    await start_worker(inspect_job, url)
    job_id = await api.run([1, 2])
    status = await api.wait(job_id)
    assert status["output"] == {
        "id_matches": True, "input": [1, 2], "get": [1, 2], "missing": "default",
        "attempt": 1, "cancelled": False, "has_input": True,
    }
