"""Client-only exceptions; the shared tree lives in worker_kit.errors."""

from __future__ import annotations

from typing import Any

from ..errors import NotFound, WorkerKitError

__all__ = ["NotFound", "WaitTimeout"]


class WaitTimeout(WorkerKitError, TimeoutError):
    """The caller's wait ran out while the job was still active; the job goes on.

    Not to be confused with JobTimedOut, which means the job itself ended TIMED_OUT.
    """

    def __init__(self, job_id: str | None, status: dict[str, Any] | None, waited_s: float) -> None:
        self.job_id = job_id
        self.status = status
        self.waited_s = waited_s
        state = (status or {}).get("status", "unknown state")
        super().__init__(f"job {job_id} still {state} after waiting {waited_s:g}s")
