"""The blocking Endpoint: from a plain thread and from inside a running event loop.

The service and worker run on their own loop in a thread (the `stack` fixture), so the
blocking calls here can hold the calling thread without starving them.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from worker_kit import Endpoint, JobCancelled, JobFailed, JobTimedOut
from worker_kit.client import JobHandle, NotFound, WaitTimeout
from worker_kit.errors import ServiceError

from .conftest import ThreadedStack


def _client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "worker-kit-client"]


def test_every_method_outside_a_loop(stack: ThreadedStack) -> None:
    before = len(_client_threads())
    with Endpoint(stack.url) as ep:
        assert ep.run_sync({"output": [1, 2]}, timeout=10) == [1, 2]

        handle = ep.run({"progress": ["half"], "chunks": ["t1", "t2"], "gate": "s1", "output": "fin"})
        assert isinstance(handle, JobHandle)
        states = []
        for status in handle.watch(timeout=10):
            states.append(status["status"])
            if status.get("output") == "half":
                stack.open_gate("s1")
        assert states[-1] == "COMPLETED" and "IN_PROGRESS" in states
        assert list(handle.stream()) == ["t1", "t2"]
        assert handle.output(timeout=5) == "fin"
        assert handle.status()["status"] == "COMPLETED"

        with pytest.raises(JobFailed, match="nope"):
            ep.run_sync({"fail": "nope"}, timeout=10)
        failed = ep.run({"fail_once": "first"})
        assert failed.wait(timeout=10)["status"] == "FAILED"
        assert failed.retry()["status"] == "IN_QUEUE"
        assert failed.output(timeout=10) == {"fail_once": "first"}

        queued_gate = ep.run({"gate": "s2"})
        with pytest.raises(WaitTimeout):
            queued_gate.output(timeout=0.3)
        assert queued_gate.cancel()["status"] == "CANCELLED"
        with pytest.raises(JobCancelled):
            queued_gate.output(timeout=5)

        with pytest.raises(JobTimedOut):
            ep.run_sync({"gate": "never"}, timeout=15, policy={"executionTimeout": 200})

        with pytest.raises(NotFound):
            ep.job("f" * 32).status()
        health = ep.health()
        assert health["jobs"]["completed"] >= 3
        assert "removed" in ep.purge_queue()
        assert len(_client_threads()) == before + 1  # one private loop thread per Endpoint
    assert len(_client_threads()) == before  # ...stopped by close()
    with pytest.raises(RuntimeError, match="closed"):
        ep.health()
    assert len(_client_threads()) == before  # a call after close() starts no new loop thread


def test_breaking_out_of_a_stream_early(stack: ThreadedStack) -> None:
    with Endpoint(stack.url) as ep:
        handle = ep.run({"chunks": ["a", "b"], "gate": "s3", "chunks_after": ["c"]})
        for chunk in handle.stream():
            assert chunk == "a"
            break  # closes the underlying request on the client's loop
        stack.open_gate("s3")
        assert list(handle.stream(cursor=1)) == ["b", "c"]


async def test_blocking_client_inside_a_running_loop(stack: ThreadedStack) -> None:
    asyncio.get_running_loop()  # this test's own loop is running while the blocking calls run
    with Endpoint(stack.url) as ep:
        assert ep.run_sync("inside", timeout=10) == "inside"
        handle = ep.run({"chunks": ["x"], "output": "y"})
        assert list(handle.stream()) == ["x"]
        assert handle.output(timeout=10) == "y"
        with pytest.raises(ServiceError) as conflict:
            handle.retry()
        assert conflict.value.status == 409


async def test_blocking_client_from_a_worker_thread_of_a_loop(stack: ThreadedStack) -> None:
    def work() -> object:
        with Endpoint(stack.url) as ep:
            return ep.run_sync({"output": "threaded"}, timeout=10)

    assert await asyncio.to_thread(work) == "threaded"
