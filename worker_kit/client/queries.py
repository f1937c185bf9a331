"""The client side of /status-sync and /requests (the methods live on AsyncEndpoint/AsyncJobHandle)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ..job import TERMINAL_STATES
from .transport import ClientTransport

#: The service holds one /status-sync at most this long; longer waits make more requests.
MAX_STATUS_SYNC_WAIT_MS = 300_000


async def status_sync(transport: ClientTransport, job_id: str, wait: float) -> dict[str, Any]:
    """GET /status-sync/{id}, held by the service until the job ends or `wait` seconds pass,
    repeated while a wait longer than one hold goes on (`math.inf`: until the job ends).
    Answers what /status would."""
    if wait < 0:
        raise ValueError(f"wait must be a number of seconds >= 0, not {wait!r}")
    deadline = time.monotonic() + wait
    while True:
        hold_ms = int(min(MAX_STATUS_SYNC_WAIT_MS, max(0.0, (deadline - time.monotonic()) * 1000)))
        status: dict[str, Any] = await transport.request(
            "GET",
            f"/status-sync/{job_id}",
            params={"wait": str(hold_ms)},
            idempotent=True,
            timeout=hold_ms / 1000 + transport.timeout,
        )
        if status.get("status") in TERMINAL_STATES or time.monotonic() >= deadline:
            return status


def requests_params(
    limit: int, status: str | Iterable[str] | None, cursor: str | None, include: Iterable[str]
) -> dict[str, str]:
    if not 1 <= limit <= 1000:
        raise ValueError(f"limit must be between 1 and 1000, not {limit!r}")
    params = {"limit": str(limit)}
    if status is not None:
        states = [status] if isinstance(status, str) else list(status)
        params["status"] = ",".join(s.upper() for s in states)
    if cursor:
        params["cursor"] = cursor
    fields = sorted(set(include))
    if fields:
        params["include"] = ",".join(fields)
    return params
