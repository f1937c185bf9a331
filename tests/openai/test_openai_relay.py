"""The /openai/* stream relay and error answers, read as raw HTTP (what any SSE client sees)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from worker_kit import openai_compat as oa
from worker_kit.job import JobState
from worker_kit.service import openai_relay
from worker_kit.service.config import EndpointConfig, RateLimit

from .conftest import ENDPOINT

RAW = Path(__file__).resolve().parent / "handlers" / "raw_frames.py"


async def _sse(url: str, body: dict[str, Any]) -> tuple[int, str, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        return resp.status, (await resp.read()).decode(), dict(resp.headers)


def _frames(text: str) -> list[str]:
    return [f for f in text.split("\n\n") if f]


async def test_strings_pass_as_they_are_objects_are_framed_and_done_is_added(
    stack_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openai_relay, "KEEPALIVE_S", 0.1)
    stack = await stack_factory(RAW)
    script = [
        'data: {"a": ',  # a frame split across two chunks, with a silence between the halves
        {"sleep": 0.5},
        "1}\n\n",
        {"b": 2},
        {"sleep": 0.5},
        "data: x\n\n",
    ]
    status, text, headers = await _sse(stack.base + "/chat/completions", {"stream": True, "script": script})
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    frames = [f for f in _frames(text) if not f.startswith(":")]
    assert frames == ['data: {"a": 1}', 'data: {"b":2}', "data: x", "data: [DONE]"]
    # Keep-alive comments went out during the silences, but only between frames.
    assert ": keep-alive" in text
    assert 'data: {"a": 1}' in text


async def test_a_worker_that_sends_done_gets_no_second_one(stack_factory: Any) -> None:
    stack = await stack_factory(RAW)
    script = ["data: 1\n\ndata: [DO", "NE]\n\n"]
    _, text, _ = await _sse(stack.base + "/chat/completions", {"stream": True, "script": script})
    assert _frames(text) == ["data: 1", "data: [DONE]"]


async def test_the_stream_lasts_as_long_as_the_execution_timeout_allows(stack_factory: Any) -> None:
    # No fixed cut: the relay holds the stream until the job ends. A 2 s execution timeout
    # ends a slow stream with a timeout error event; the same stream finishes on an
    # endpoint whose timeout is longer.
    script = [s for i in range(6) for s in ({"sleep": 0.5}, f"data: {i}\n\n")]
    body = {"stream": True, "script": script}
    short = await stack_factory(RAW, default=EndpointConfig(execution_timeout_ms=1500))
    _, text, headers = await _sse(short.base + "/chat/completions", body)
    frames = _frames(text)
    assert "data: [DONE]" not in frames
    error = json.loads(frames[-1].removeprefix("data: "))["error"]
    assert error["type"] == "timeout" and error["code"] == "timed_out"
    assert len(frames) - 1 < 6  # cut by the timeout before the handler's last frame
    job = await short.service.storage.get(ENDPOINT, headers["X-Worker-Kit-Job-Id"])
    assert job is not None and job.state is JobState.TIMED_OUT

    long = await stack_factory(RAW, default=EndpointConfig(execution_timeout_ms=60_000))
    _, text, _ = await _sse(long.base + "/chat/completions", body)
    assert _frames(text) == [*(f"data: {i}" for i in range(6)), "data: [DONE]"]


async def test_no_answer_within_wait_is_a_504_and_the_job_is_cancelled(service_factory: Any) -> None:
    svc = await service_factory()  # no worker: the job stays queued
    url = svc.endpoint_url(ENDPOINT) + "/openai/v1/chat/completions?wait=50"
    async with aiohttp.ClientSession() as session, session.post(url, json={"model": "m"}) as resp:
        assert resp.status == 504
        body = await resp.json()
        job_id = resp.headers["X-Worker-Kit-Job-Id"]
    assert body["error"]["type"] == "timeout" and "no answer within 50 ms" in body["error"]["message"]
    job = await svc.storage.get(ENDPOINT, job_id)
    assert job is not None and job.state is JobState.CANCELLED


@pytest.mark.parametrize(
    ("raw", "query", "needle"),
    [
        (b"{not json", "", "JSON"),
        (b"[1, 2]", "", "must be an object"),
        (b"", "", ""),
        (b"{}", "?wait=0", "wait"),
        (b"{}", "?wait=999999999", "wait"),
    ],
)
async def test_bad_requests_get_a_400_openai_error(service: Any, raw: bytes, query: str, needle: str) -> None:
    url = service.endpoint_url(ENDPOINT) + "/openai/v1/chat/completions" + query
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session, session.post(url, data=raw, headers=headers) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["error"]["type"] == "invalid_request_error"
    assert needle in body["error"]["message"]
    counts = await service.storage.counts(ENDPOINT)
    assert counts["IN_QUEUE"] == 0  # nothing was submitted


async def test_own_rate_limit_bucket_and_keys(service_factory: Any) -> None:
    import openai

    limits = {**EndpointConfig().rate_limits, "openai": RateLimit(1, 10.0, None)}
    svc = await service_factory(default=EndpointConfig(rate_limits=limits, client_keys=("client-key-1",)))
    base = svc.endpoint_url(ENDPOINT) + "/openai/v1"
    async with openai.AsyncOpenAI(base_url=base, api_key="wrong-key-0", max_retries=0) as stranger:
        with pytest.raises(openai.PermissionDeniedError):
            await stranger.models.list(timeout=0.5)
    async with openai.AsyncOpenAI(base_url=base, api_key="client-key-1", max_retries=0) as client:
        # The first request passes the limit (and waits for a worker that never comes).
        with pytest.raises(openai.APIStatusError) as first:
            await client.models.list(extra_query={"wait": 10})
        assert first.value.status_code == 504
        with pytest.raises(openai.RateLimitError):
            await client.models.list(extra_query={"wait": 10})
    # /run has its own bucket.
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer client-key-1"}) as session:
        async with session.post(svc.endpoint_url(ENDPOINT) + "/run", json={"input": 1}) as resp:
            assert resp.status == 200


RETURNS = Path(__file__).resolve().parent / "handlers" / "returns.py"


async def test_returned_answers_one_element_lists_and_errors(stack_factory: Any) -> None:
    import openai

    stack = await stack_factory(RETURNS)
    url = stack.base + "/anything"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"answer": [{"x": 1}]}) as resp:
            assert resp.status == 200 and await resp.json() == {"x": 1}
        async with session.post(url, json={"answer": [1, 2]}) as resp:
            assert await resp.json() == [1, 2]
    # A returned OpenAI error is answered with its status, whether the runtime ended the job
    # FAILED (it does for a returned {"error": ...}) or not.
    client = stack.client()
    with pytest.raises(openai.UnprocessableEntityError) as info:
        await client.chat.completions.create(
            model="m", messages=[], extra_body={"answer": {"error": {"message": "bad dims", "status": 422}}}
        )
    assert info.value.body["message"] == "bad dims"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(
            model="m", messages=[], extra_body={"answer": oa.error("no", type="not_found_error")}
        )
    stream = await client.chat.completions.create(
        model="m", messages=[], stream=True, extra_body={"answer": {"error": {"message": "nope"}}}
    )
    async with stream:  # an error mid-stream must not leave the response open
        with pytest.raises(openai.APIError, match="nope"):
            async for _ in stream:
                pass
