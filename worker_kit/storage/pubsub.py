"""Wake-ups across service replicas through Redis PUBLISH/SUBSCRIBE.

`SharedNotifier` is the Notifier of a backend shared by several processes (Redis): a publish
wakes this process's waiters at once and is also sent, batched with whatever else was
published meanwhile, as one message on one Redis channel (`{prefix}notify`), which every
replica subscribes to and applies to its own waiters. A replica skips its own messages (it
woke its waiters already). Targeted channels (queue channels) carry their count, so a new job
wakes one waiting claim in each replica, not every idle worker's.

Notifications are hints, never data: a message lost while Redis is unreachable or a replica
is reconnecting costs latency only, since every long-poll re-reads storage at least every
couple of seconds (service/http.py, wait_until). The SQLite backend needs none of this: it is
one process by design and wakes its waiters in-process.

Usage by a backend (redis.asyncio client, already connected):

    self.notifier = SharedNotifier(client, prefix)
    await self.notifier.start()     # in open()
    await self.notifier.close()     # in close(), before the client closes
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from typing import Any

import msgpack

from .base import Notifier

log = logging.getLogger("worker_kit.storage.pubsub")

#: Reconnection back-off bounds, seconds.
_RETRY_MIN_S, _RETRY_MAX_S = 0.1, 5.0


class SharedNotifier(Notifier):
    def __init__(self, client: Any, prefix: str = "") -> None:
        super().__init__()
        self.client = client
        self.bus = f"{prefix}notify"
        self.origin = secrets.token_bytes(8)
        self._outgoing: Counter[str] = Counter()
        self._pending = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        #: Messages applied from other replicas and sent by this one (tests and diagnostics).
        self.received = 0
        self.sent = 0

    async def start(self) -> None:
        """Subscribe, and return once subscribed (so nothing published after this is missed)."""
        self._tasks = [
            asyncio.create_task(self._listen(), name="worker-kit-notify-listen"),
            asyncio.create_task(self._send(), name="worker-kit-notify-send"),
        ]
        listener = self._tasks[0]
        waiting = asyncio.ensure_future(self._subscribed.wait())
        done, _ = await asyncio.wait({waiting, listener}, return_when=asyncio.FIRST_COMPLETED)
        if waiting not in done:
            waiting.cancel()
            await self.close()
            listener.result()  # re-raise why subscribing failed
            raise RuntimeError("the notification listener stopped")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    def publish(self, channel: str, count: int = 1) -> None:
        super().publish(channel, count)
        self._outgoing[channel] += count
        self._pending.set()

    # -- sending --------------------------------------------------------------------------------
    async def _send(self) -> None:
        delay = _RETRY_MIN_S
        while True:
            await self._pending.wait()
            self._pending.clear()
            batch, self._outgoing = self._outgoing, Counter()
            payload = msgpack.packb([self.origin, list(batch.items())])
            try:
                await self.client.publish(self.bus, payload)
                self.sent += 1
                delay = _RETRY_MIN_S
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # dropped: waiters elsewhere find the change at their re-check
                log.debug("could not publish %d notification(s): %s", len(batch), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    # -- receiving -------------------------------------------------------------------------------
    async def _listen(self) -> None:
        delay = _RETRY_MIN_S
        first = True
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.bus)
                self._subscribed.set()
                if not first:
                    log.info("notifications from other replicas resumed")
                delay = _RETRY_MIN_S
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._apply(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if first and not self._subscribed.is_set():
                    raise  # start() reports it
                log.warning(
                    "lost the notification channel to other replicas (%s); reconnecting in %.1fs", exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            first = False

    def _apply(self, data: bytes) -> None:
        try:
            origin, items = msgpack.unpackb(data)
        except Exception:
            log.debug("ignored a malformed notification message")
            return
        if origin == self.origin:
            return
        self.received += 1
        for channel, count in items:
            Notifier.publish(self, channel, count)
