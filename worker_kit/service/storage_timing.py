"""Time every storage call for `worker_kit_storage_operation_duration_seconds`.

The storage object's coroutine methods are wrapped once, in place, when an app starts, so no
route has to time its own calls and a backend added later is timed without changes. A storage
shared by several apps in one process (tests, the harness) is wrapped once and reports to each
of them. `wait`, `publish`, `open` and `close` are left alone: waiting is not work.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import JobConflict, JobNotFound, QueueFull, SequenceGap, StaleLease
from ..storage.base import Storage

Observer = Callable[[str, float, bool], None]

#: Calls that do work in the store; anything a backend adds beyond these is not timed.
TIMED_OPERATIONS = (
    "submit", "get", "status", "set_retention", "cancel", "retry", "purge", "read_stream", "counts",
    "list_jobs", "claim", "heartbeat", "append_output", "finish", "exchange", "release", "workers", "sweep",
)  # fmt: skip

_OBSERVERS = "_worker_kit_storage_observers"
#: Errors that are answers (unknown job, stale lease...), not failures of the store.
_ANSWERS = (JobNotFound, StaleLease, JobConflict, SequenceGap, QueueFull)


def time_storage(storage: Storage, observer: Observer) -> Callable[[], None]:
    """Report each timed call of `storage` to `observer(operation, seconds, failed)`.

    Returns a function that stops reporting to this observer.
    """
    observers: list[Observer] | None = storage.__dict__.get(_OBSERVERS)
    if observers is None:
        observers = []
        setattr(storage, _OBSERVERS, observers)
        for name in TIMED_OPERATIONS:
            method = getattr(storage, name, None)
            if method is not None and inspect.iscoroutinefunction(method):
                setattr(storage, name, _timed(name, method, observers))
    observers.append(observer)
    return lambda: observers.remove(observer) if observer in observers else None


def _timed(name: str, method: Callable[..., Awaitable[Any]], observers: list[Observer]) -> Any:
    perf_counter = time.perf_counter  # every storage call reads the clock twice

    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        started = perf_counter()
        failed = False
        try:
            return await method(*args, **kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failed = not isinstance(exc, _ANSWERS)
            raise
        finally:
            elapsed = perf_counter() - started
            if len(observers) == 1:  # one app: its one observer
                observers[0](name, elapsed, failed)
            else:
                for observer in list(observers):
                    observer(name, elapsed, failed)

    return call
