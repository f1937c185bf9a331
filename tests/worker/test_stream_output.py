"""A streaming job's output: the list of its chunks by default, so callers that did not read the
stream (/runsync, /status, webhooks, run_sync) get the answer too; left empty, never failed, when
that list would be over the result limit and nobody asked for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from worker_kit.service.config import EndpointConfig
from worker_kit.worker import execution

from .conftest import make_handler


def words(job: Any) -> Iterator[str]:
    for word in job.input["prompt"].split():
        yield word + " "


def big(job: Any) -> Iterator[str]:
    for _ in range(job.input["n"]):
        yield "x" * 4000


async def test_a_streaming_handler_answers_its_chunks_by_default(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    url = service.endpoint_url("agg")
    api = api_at(url)
    await start_worker(make_handler(words), url)
    status, reply = await api.call("POST", "/runsync", {"input": {"prompt": "hi there"}})
    assert status == 200 and reply["status"] == "COMPLETED", reply
    assert reply["output"] == ["hi ", "there "]


async def test_return_aggregate_stream_false_answers_chunks_only(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    url = service.endpoint_url("agg")
    api = api_at(url)
    await start_worker(make_handler(words, return_aggregate_stream=False), url)
    job_id = await api.run({"prompt": "hi there"})
    status = await api.wait(job_id)
    assert status["status"] == "COMPLETED" and "output" not in status, status
    assert await api.chunks(job_id) == ["hi ", "there "]


async def test_a_default_list_over_the_services_limit_is_left_out(
    service_factory: Any, start_worker: Any, api_at: Any
) -> None:
    svc = await service_factory(default=EndpointConfig(result_limit=10_000))
    url = svc.endpoint_url("agg")
    api = api_at(url)
    await start_worker(make_handler(big), url)
    job_id = await api.run({"n": 5})  # 20 kB of chunks: each fits, their list does not
    status = await api.wait(job_id)
    assert status["status"] == "COMPLETED" and "output" not in status, status
    assert await api.chunks(job_id) == ["x" * 4000] * 5


async def test_an_asked_for_list_over_the_limit_fails_saying_so(
    service_factory: Any, start_worker: Any, api_at: Any
) -> None:
    svc = await service_factory(default=EndpointConfig(result_limit=10_000))
    url = svc.endpoint_url("agg")
    api = api_at(url)
    await start_worker(make_handler(big, return_aggregate_stream=True), url)
    status = await api.wait(await api.run({"n": 5}))
    assert status["status"] == "FAILED" and "result too large" in status["error"], status


async def test_a_long_stream_stops_being_held_in_memory(
    service: Any, start_worker: Any, api_at: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(execution, "AGGREGATE_AUTO_MAX_BYTES", 10_000)  # the 20 MB bound, scaled down
    url = service.endpoint_url("agg")
    api = api_at(url)
    await start_worker(make_handler(big), url)
    status = await api.wait(await api.run({"n": 5}))
    assert status["status"] == "COMPLETED" and "output" not in status, status
    assert len(await api.chunks(job_id := status["id"])) == 5, job_id


async def test_the_same_rule_in_a_child_process(service_factory: Any, spawn_worker: Any, api_at: Any) -> None:
    """isolation="process": the child runs the handler; the list and its too-large rule come back."""
    svc = await service_factory(default=EndpointConfig(result_limit=1000))
    small, roomy = svc.endpoint_url("iso-small"), svc.endpoint_url("iso-roomy")
    await spawn_worker("isolated.py", small)
    status = await api_at(small).wait(await api_at(small).run({"do": "stream", "n": 150}))  # ~2 kB of items
    assert status["status"] == "COMPLETED" and "output" not in status, status
    assert len(await api_at(small).chunks(status["id"])) == 150
    await spawn_worker("isolated.py", roomy)
    status = await api_at(roomy).wait(await api_at(roomy).run({"do": "stream", "n": 3}))
    assert status["status"] == "COMPLETED" and [item["i"] for item in status["output"]] == [0, 1, 2], status
