"""Slow handlers shared by the tests: a job that takes its time, and says when it began and
whether it was interrupted (cancelled, or timed out)."""

from __future__ import annotations

import asyncio
from typing import Any


class Sleeper:
    """An async handler that sleeps `seconds` (or the job input's "sleep", when it gives one),
    then returns `result` (default {"slept": seconds}).

    `began` is set when a job starts; `cancelled` when the sleep is interrupted (the
    CancelledError goes on, as a handler's should). One instance per test: the events are its.
    """

    def __init__(self, seconds: float = 60.0, result: Any = None) -> None:
        self.seconds = seconds
        self.result = result
        self.began = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, job: Any) -> Any:
        self.began.set()
        given = job.input.get("sleep") if isinstance(job.input, dict) else None
        seconds = self.seconds if given is None else given
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return {"slept": seconds} if self.result is None else self.result
