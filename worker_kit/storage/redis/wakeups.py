"""Wake-ups across service replicas: each replica's notifications also go out on one Redis
pub/sub channel, and every replica wakes its local waiters for what the others publish.

Names published in the same event-loop turn go out together in one PUBLISH, and only while
another replica listens: each replica counts the channel's subscribers once a second (PUBSUB
NUMSUB), so a single replica spends no Redis work on wake-ups; a replica that starts says so
on the channel at once, so the others publish for it from then on. A notification carries no
data (waiters re-read storage), so one lost costs latency, never correctness. Pub/sub is at most
once: a message published while a replica's subscription is down never reaches it. So after
re-subscribing, and every SAFETY_WAKE_S in any case, a replica wakes all its local waiters on job
channels to re-read storage: a lost notification delays a `/runsync`, `/status-sync` or SSE
reader by at most that long, instead of its whole wait (an SSE stream has none).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from ..base import Notifier

log = logging.getLogger("worker_kit.storage.redis")

#: Longer than the SSE keep-alive period (15 s), so an idle stream's keep-alives still go out.
SAFETY_WAKE_S = 20.0


class Wakeups:
    def __init__(
        self, client: Any, channel: str, notifier: Notifier, safety_wake_s: float = SAFETY_WAKE_S
    ) -> None:
        self._client = client
        self._channel = channel
        self._notifier = notifier
        self._origin = secrets.token_hex(6).encode()
        self._pending: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._closing = False
        #: Other replicas listening, as last counted (assume some until counted).
        self._others = 1
        self._counter: asyncio.Task[None] | None = None
        self._safety: asyncio.Task[None] | None = None
        self._safety_wake_s = safety_wake_s

    async def start(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._channel)
        self._task = asyncio.create_task(self._listen(pubsub), name="worker-kit-redis-wakeups")
        self._counter = asyncio.create_task(self._count_others(), name="worker-kit-redis-replicas")
        self._safety = asyncio.create_task(self._wake_periodically(), name="worker-kit-redis-safety-wake")
        await self._publish(self._origin + b" ")  # a hello: the others start publishing for us

    async def close(self) -> None:
        self._closing = True  # also ends the loops should redis-py swallow their cancellation
        for task in (self._task, self._counter, self._safety):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for task in list(self._sends):
            with contextlib.suppress(Exception):
                await task

    async def _count_others(self) -> None:
        while not self._closing:
            try:
                ((_, listening),) = await self._client.pubsub_numsub(self._channel)
                self._others = max(0, int(listening) - 1)  # minus this replica's own listener
            except asyncio.CancelledError:
                raise
            except Exception:
                self._others = 1  # unknown: keep publishing
            await asyncio.sleep(1.0)

    async def _wake_periodically(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._safety_wake_s)
            self._notifier.wake_all()

    def send(self, channel: str, count: int = 1) -> None:
        """Tell the other replicas; `count` is how many waiters a targeted channel wakes."""
        if self._others == 0:
            return  # no other replica to wake; local waiters were woken already
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending[channel] = self._pending.get(channel, 0) + count

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        payload = self._origin + b" " + "\n".join(f"{name}\t{n}" for name, n in pending.items()).encode()
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
                    # What the others published meanwhile is lost: let every waiter look again.
                    self._notifier.wake_all()
                    continue
                if message is None or message.get("type") != "message":
                    continue
                origin, _, names = message["data"].partition(b" ")
                if origin == self._origin:
                    continue  # local waiters were woken when it was published
                self._others = max(self._others, 1)  # another replica is there, whatever the last count said
                for line in filter(None, names.decode().split("\n")):
                    name, _, count = line.partition("\t")
                    self._notifier.publish(name, int(count or 1))
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
