"""Wake-ups across processes through Redis: two SharedNotifiers on one real Redis stand for two
service replicas (each with its own connection and a unique bus name, so tests never meet)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from worker_kit.storage.base import job_channel, queue_channel
from worker_kit.storage.pubsub import SharedNotifier

redis_asyncio = pytest.importorskip("redis.asyncio")
pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
Q = queue_channel("ep")

Factory = Callable[[], Awaitable[SharedNotifier]]


@pytest.fixture
async def replica() -> AsyncIterator[Factory]:
    prefix = f"wk-test-{secrets.token_hex(6)}:"
    made: list[tuple[SharedNotifier, object]] = []

    async def make() -> SharedNotifier:
        client = redis_asyncio.Redis.from_url(REDIS_URL)
        try:
            await client.ping()
        except Exception as exc:
            await client.aclose()
            if os.environ.get("CI") == "true":
                raise
            pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
        notifier = SharedNotifier(client, prefix)
        await notifier.start()
        made.append((notifier, client))
        return notifier

    yield make
    for notifier, client in made:
        await notifier.close()
        await client.aclose()  # type: ignore[attr-defined]


async def _waiters(notifier: SharedNotifier, channel: str, n: int) -> list[asyncio.Task[bool]]:
    tasks = [asyncio.create_task(notifier.wait(channel, 5)) for _ in range(n)]
    await asyncio.sleep(0.01)
    return tasks


async def _settle() -> None:
    await asyncio.sleep(0.2)  # a round trip through Redis, with room on a loaded machine


async def test_a_change_published_by_one_replica_wakes_waiters_on_another(replica: Factory) -> None:
    a, b = await replica(), await replica()
    waiting = await _waiters(b, job_channel("j1"), 3)
    a.publish(job_channel("j1"))
    done, _ = await asyncio.wait(waiting, timeout=5)
    assert len(done) == 3 and all(t.result() for t in done)
    assert b.received >= 1


async def test_a_new_job_wakes_one_claim_per_replica(replica: Factory) -> None:
    a, b = await replica(), await replica()
    on_a, on_b = await _waiters(a, Q, 3), await _waiters(b, Q, 3)
    a.publish(Q)
    await _settle()
    assert sum(t.done() for t in on_a) == 1  # woken locally, and not again by its own message
    assert sum(t.done() for t in on_b) == 1
    a.publish(Q, 2)
    await _settle()
    assert sum(t.done() for t in on_a) == 3 and sum(t.done() for t in on_b) == 3


async def test_publishes_in_a_burst_are_batched_and_none_lost(replica: Factory) -> None:
    a, b = await replica(), await replica()
    waiting = await _waiters(b, Q, 50)
    for _ in range(50):
        a.publish(Q)
    await _settle()
    assert all(t.done() for t in waiting)
    assert a.sent < 50  # fewer messages than publishes


async def test_start_fails_clearly_without_redis() -> None:
    client = redis_asyncio.Redis.from_url("redis://127.0.0.1:1/0")
    notifier = SharedNotifier(client, "nowhere:")
    try:
        with pytest.raises(Exception, match=r"(?i)connect"):
            await notifier.start()
    finally:
        await client.aclose()
