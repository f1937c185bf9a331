"""The CLI's live status line: state, elapsed time and progress, redrawn in place on stderr."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
import time
from types import TracebackType
from typing import Any, TextIO

from ..job import JobState

_SPINNER = "|/-\\"


class LiveLine:
    """`async with LiveLine(job_id, enabled=stderr_is_a_tty) as line: line.update(status)`."""

    def __init__(
        self, job_id: str, *, enabled: bool, stream: TextIO | None = None, interval: float = 0.1
    ) -> None:
        self.job_id = job_id
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.interval = interval
        self.status: dict[str, Any] = {}
        self._started = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._ticks = 0

    async def __aenter__(self) -> LiveLine:
        if self.enabled:
            self._task = asyncio.create_task(self._redraw())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self.clear()

    def update(self, status: dict[str, Any]) -> None:
        self.status = status

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def render(self) -> str:
        state = self.status.get("status", "SUBMITTED")
        elapsed = time.monotonic() - self._started
        text = f"{_SPINNER[self._ticks % len(_SPINNER)]} job {self.job_id} {state} {elapsed:.1f}s"
        progress = self.status.get("output") if state == JobState.IN_PROGRESS else None
        if progress is not None:
            shown = progress if isinstance(progress, str) else json.dumps(progress, default=str)
            text += f"  progress: {shown}"
        width = shutil.get_terminal_size((80, 24)).columns - 1
        return text if len(text) <= width else text[: max(0, width - 1)] + "…"

    async def _redraw(self) -> None:
        while True:
            self._ticks += 1
            self.stream.write("\r\x1b[K" + self.render())
            self.stream.flush()
            await asyncio.sleep(self.interval)
