"""worker_kit.testing: a handler tested end to end in a few lines, as a user's test suite would."""

from __future__ import annotations

import asyncio

import pytest

from worker_kit.errors import ConfigError, JobFailed
from worker_kit.testing import endpoint_fixture, local_endpoint, local_endpoint_sync, local_stack
from worker_kit.validation import Field


def shout(job):  # deliberately undecorated: testing accepts plain functions too
    return job.input.upper()


async def words(job):
    for word in job.input.split():
        yield word


async def gated(job):
    await job_gate.wait()
    return job.input


job_gate = asyncio.Event()

shout_endpoint = endpoint_fixture(shout)
words_endpoint = endpoint_fixture(words, name="streaming")
blocking_endpoint = endpoint_fixture(shout, sync=True)


async def test_local_endpoint_runs_a_plain_function() -> None:
    async with local_endpoint(shout) as ep:
        assert await ep.run_sync("hello", timeout=30) == "HELLO"
        assert ep.url.startswith("http://127.0.0.1:") and ep.url.endswith("/v2/local")
        health = await ep.health()
        assert health["jobs"]["completed"] == 1


async def test_fixture_factory(shout_endpoint) -> None:
    job = await shout_endpoint.run("abc")
    assert await job.output(timeout=30) == "ABC"


async def test_named_fixture_and_streaming(streaming) -> None:
    job = await streaming.run("a b c")
    assert [chunk async for chunk in job.stream()] == ["a", "b", "c"]
    assert await job.output(timeout=30) == ["a", "b", "c"]  # a stream's answer is its chunks
    assert await streaming.run_sync("d e", timeout=30) == ["d", "e"]


async def test_local_stack_takes_what_local_endpoint_takes() -> None:
    import aiohttp

    import worker_kit
    from worker_kit.worker.registry import get_handler

    worker_kit.handler(name="shout_registered")(shout)
    for handler in (shout, "shout_registered", get_handler("shout_registered")):
        async with local_stack(handler) as stack, aiohttp.ClientSession() as http:
            async with http.post(stack.url + "/runsync", json={"input": "raw"}) as resp:
                body = await resp.json()
            assert body["status"] == "COMPLETED" and body["output"] == "RAW", body
            assert stack.endpoint_id == "local" and stack.worker_task.done() is False


async def test_local_stack_refuses_a_bad_handler_before_starting() -> None:
    with pytest.raises(ConfigError, match="no handler named 'nope'"):
        async with local_stack("nope"):
            pass


async def test_failures_surface_as_typed_errors() -> None:
    def broken(job):
        raise KeyError("missing")

    async with local_endpoint(broken) as ep:
        with pytest.raises(JobFailed) as info:
            await ep.run_sync({}, timeout=30)
        assert "missing" in str(info.value.error)


async def test_concurrency_and_the_stack() -> None:
    job_gate.clear()
    async with local_endpoint(gated, concurrency=2) as ep:
        jobs = [await ep.run(i) for i in range(2)]
        # Both are claimed at once with two slots, before either can finish.
        for _ in range(1500):
            if {(await j.status())["status"] for j in jobs} == {"IN_PROGRESS"}:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("two slots did not run two jobs at once")
        job_gate.set()
        assert [await j.output(timeout=30) for j in jobs] == [0, 1]
        assert ep.stack.service.url in ep.url


async def test_validation_end_to_end_handler_not_run() -> None:
    calls: list[object] = []

    from worker_kit.worker.registry import Handler

    def fn(job):
        calls.append(job.input)
        return job.input

    handler = Handler(fn=fn, name="checked", input_schema={"size": Field(int, min=1, default=8)})
    async with local_endpoint(handler) as ep:
        with pytest.raises(JobFailed) as info:
            await ep.run_sync({"size": 0, "colour": "red"}, timeout=30)
        status = info.value.status
        assert status["error"] == (
            "input validation failed: size: must be >= 1; got 0; "
            "colour: unknown field (expected one of: size)"
        )
        assert status["errorDetail"]["errors"] == [
            "size: must be >= 1; got 0",
            "colour: unknown field (expected one of: size)",
        ]
        assert calls == []
        assert await ep.run_sync({}, timeout=30) == {"size": 8}
        assert calls == [{"size": 8}]


def test_sync_context_manager_for_tests_without_asyncio() -> None:
    with local_endpoint_sync(words, concurrency=2) as ep:
        job = ep.run("x y")
        assert list(job.stream()) == ["x", "y"]
        assert ep.health()["jobs"]["completed"] == 1
        url = ep.url
    # Stopped afterwards: nothing listens on the port any more.
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/health", timeout=5)


def test_sync_fixture(blocking_endpoint) -> None:
    assert blocking_endpoint.run_sync("sync", timeout=30) == "SYNC"


def test_sync_stack_start_failure_is_raised() -> None:
    with pytest.raises(RuntimeError, match="did not start"), local_endpoint_sync(shout, lease_ms="bad"):
        pass
