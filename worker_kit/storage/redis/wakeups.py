"""Wake-ups across service replicas: each replica's notifications also go out on one Redis
pub/sub channel, and every replica wakes its local waiters for what the others publish.

Names published in the same event-loop turn go out together in one PUBLISH. A notification
carries no data (waiters re-read storage), so one lost while Redis is unreachable costs
latency, never correctness: every waiter also has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from ..base import Notifier

log = logging.getLogger("worker_kit.storage.redis")


class Wakeups:
    def __init__(self, client: Any, channel: str, notifier: Notifier) -> None:
        self._client = client
        self._channel = channel
        self._notifier = notifier
        self._origin = secrets.token_hex(6).encode()
        self._pending: dict[str, None] = {}
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._closing = False

    async def start(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._channel)
        self._task = asyncio.create_task(self._listen(pubsub), name="worker-kit-redis-wakeups")

    async def close(self) -> None:
        self._closing = True  # also ends the listener should redis-py swallow its cancellation
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._sends):
            with contextlib.suppress(Exception):
                await task

    def send(self, channel: str) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending[channel] = None

    def _flush(self) -> None:
        names, self._pending = list(self._pending), {}
        payload = self._origin + b" " + "\n".join(names).encode()
        task = asyncio.create_task(self._publish(payload))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _publish(self, payload: bytes) -> None:
        try:
            await self._client.publish(self._channel, payload)
        except Exception as exc:  # waiters elsewhere fall back to their timeouts
            log.warning("could not publish a wake-up to other replicas: %s", exc)

    async def _listen(self, pubsub: Any) -> None:
        try:
            while not self._closing:
                try:
                    message = await pubsub.get_message(timeout=1.0)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("wake-ups from other replicas interrupted: %s; resubscribing", exc)
                    await asyncio.sleep(1.0)
                    with contextlib.suppress(Exception):
                        await pubsub.subscribe(self._channel)
                    continue
                if message is None or message.get("type") != "message":
                    continue
                origin, _, names = message["data"].partition(b" ")
                if origin == self._origin:
                    continue  # local waiters were woken when it was published
                for name in names.decode().split("\n"):
                    self._notifier.publish(name)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
