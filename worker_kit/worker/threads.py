"""Threads that run sync handlers: reused across jobs, and interruptible at their next
Python bytecode (how a sync handler is cancelled or timed out)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable


def raise_in_thread(ident: int, exc_type: type[BaseException] | None) -> None:
    """Raise `exc_type` in thread `ident` at its next bytecode; None clears a pending one."""
    import ctypes  # here, not at import: a worker with only async handlers never needs it
    exc = ctypes.py_object(exc_type) if exc_type is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), exc)


class ThreadPool:
    """Threads reused across sync jobs: starting a thread per job costs more than a small
    job. Each thread runs one job at a time; a thread stuck in a job is simply not reused."""

    def __init__(self) -> None:
        self._idle: list[queue.SimpleQueue[Callable[[], None]]] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], None]) -> None:
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name="worker_kit-job", daemon=True).start()
        inbox.put(fn)

    def _serve(self, inbox: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            fn = inbox.get()
            with contextlib.suppress(BaseException):  # fn reports its own outcome
                fn()
            with self._lock:
                self._idle.append(inbox)


threads = ThreadPool()
