"""Noticing that the client of a held request has gone away, for every held request at once.

aiohttp does not cancel a handler whose client left (handler cancellation is off), so a held
long-poll or SSE stream would otherwise go on holding its slot, and acting for nobody, until
its next write. Looking at each request's connection from its own timer costs a task wake-up
per request several times a second (thousands per second with 1 000 open streams); here one
task per event loop looks at all of them, four times a second, and sets an Event for each
request whose connection closed. The task ends when nothing is watched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

from aiohttp import web

#: How often the connections of held requests are looked at.
POLL_S = 0.25


def client_gone(request: web.Request) -> bool:
    """The client closed its connection."""
    return request.transport is None or request.transport.is_closing()


class _Watcher:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.watched: dict[int, tuple[Callable[[], bool], asyncio.Event]] = {}
        self.task: asyncio.Task[None] | None = None
        self._next = 0

    def add(self, gone: Callable[[], bool]) -> tuple[int, asyncio.Event]:
        self._next += 1
        event = asyncio.Event()
        self.watched[self._next] = (gone, event)
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run())
        return self._next, event

    async def _run(self) -> None:
        while self.watched:
            await asyncio.sleep(POLL_S)
            for gone, event in list(self.watched.values()):
                if not event.is_set() and gone():
                    event.set()
        _watchers.pop(self.loop, None)


_watchers: dict[asyncio.AbstractEventLoop, _Watcher] = {}


@contextlib.contextmanager
def watch(gone: Callable[[], bool]) -> Iterator[asyncio.Event]:
    """An Event set soon after `gone()` turns true, while the block runs."""
    loop = asyncio.get_running_loop()
    watcher = _watchers.get(loop)
    if watcher is None:
        watcher = _watchers[loop] = _Watcher(loop)
    key, event = watcher.add(gone)
    try:
        yield event
    finally:
        watcher.watched.pop(key, None)


def watch_request(request: web.Request) -> contextlib.AbstractContextManager[asyncio.Event]:
    return watch(lambda: client_gone(request))
