"""The official `openai` client against /v2/<endpoint>/openai/v1, served by a real worker
process running examples/openai_compatible.py (an echo "model")."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import pytest

from worker_kit.job import JobState

from .conftest import ENDPOINT, Stack

MESSAGES = [{"role": "user", "content": "the quick brown fox"}]


async def test_models_list(stack: Stack) -> None:
    models = await stack.client().models.list()
    assert [m.id for m in models.data] == ["worker-kit-echo"]


async def test_chat_completion_not_streamed(stack: Stack) -> None:
    answer = await stack.client().chat.completions.create(model="worker-kit-echo", messages=MESSAGES)
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.content == "echo: the quick brown fox"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens == 5


async def test_chat_completion_streamed_with_the_async_client(stack: Stack) -> None:
    stream = await stack.client().chat.completions.create(model="m", messages=MESSAGES, stream=True)
    pieces = [chunk.choices[0].delta.content async for chunk in stream]
    assert "".join(p for p in pieces if p) == "echo: the quick brown fox"
    assert pieces[-1] is None  # the finish_reason chunk


def _sync_stream(stack: Stack) -> list[Any]:
    with stack.sync_client().chat.completions.create(model="m", messages=MESSAGES, stream=True) as stream:
        return [chunk.choices[0] for chunk in stream]


async def test_chat_completion_streamed_with_the_sync_client(stack: Stack) -> None:
    choices = await asyncio.to_thread(_sync_stream, stack)
    assert "".join(c.delta.content or "" for c in choices) == "echo: the quick brown fox"
    assert choices[-1].finish_reason == "stop"


async def test_completions_streamed_and_not(stack: Stack) -> None:
    client = stack.client()
    whole = await client.completions.create(model="m", prompt="to be or not", max_tokens=3)
    assert whole.choices[0].text == "echo: to be"
    stream = await client.completions.create(model="m", prompt="to be or not", stream=True)
    assert "".join([c.choices[0].text async for c in stream]) == "echo: to be or not"


async def test_a_handler_that_raises_gives_an_api_error_with_its_message(stack: Stack) -> None:
    client = stack.client()
    with pytest.raises(openai.InternalServerError) as info:
        await client.chat.completions.create(model="m", messages=MESSAGES, extra_body={"fail": "on fire"})
    assert "on fire" in str(info.value)
    stream = await client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, extra_body={"fail": "model melted"}
    )
    with pytest.raises(openai.APIError) as streamed:
        async for _ in stream:
            pass
    assert "model melted" in streamed.value.message


async def test_an_unknown_path_is_answered_by_the_worker(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await stack.client().embeddings.create(model="m", input="hi")
    assert "unknown route /v1/embeddings" in str(info.value)


async def test_a_client_that_disconnects_mid_stream_cancels_the_job(stack: Stack) -> None:
    url = stack.base + "/chat/completions"
    body = {"model": "m", "messages": MESSAGES, "stream": True, "delay": 0.5}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body) as resp:
            assert resp.status == 200 and resp.content_type == "text/event-stream"
            job_id = resp.headers["X-Worker-Kit-Job-Id"]
            first = await resp.content.readline()
            assert first.startswith(b"data: ")
        # leaving the block closes the connection with the job still streaming
    storage = stack.service.storage
    async with asyncio.timeout(20):
        while (job := await storage.get(ENDPOINT, job_id)) is None or job.state is not JobState.CANCELLED:
            assert job is not None and job.state in (JobState.IN_PROGRESS, JobState.CANCELLED), job
            await asyncio.sleep(0.05)
