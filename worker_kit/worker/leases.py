"""The leases a worker holds and the heartbeat loop that renews them (and hears of cancels,
timeouts and lost leases). Split from worker.py, which runs the jobs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .. import protocol
from ..errors import RateLimited, ServiceUnavailable
from ..retrying import Backoff
from .transport import Transport

log = logging.getLogger("worker_kit.worker")

#: A job is first listed in a heartbeat this long after its claim (the claim's lease is
#: fresh); long enough that short jobs never cost a heartbeat, short for cancel latency.
HEARTBEAT_DELAY_S = 0.25


class Leases:
    """Job id -> lease token of the jobs this worker holds. `run()` renews them with one
    long-polling heartbeat at a time, sent again at once when a newly held job is due, and
    calls `on_stop(job_id, reason, token)` for each job the service says must stop.
    `load()` gives (concurrency, running) for the heartbeat's report."""

    def __init__(self, transport: Transport, on_stop: Callable[[str, str, str], None],
                 load: Callable[[], tuple[int, int]]) -> None:
        self.transport, self._on_stop, self._load = transport, on_stop, load
        self.lease_ms = protocol.DEFAULT_LEASE_MS
        self._held: dict[str, tuple[str, float]] = {}  # job id -> (token, held since)
        self._wake = asyncio.Event()
        self._inflight: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None  # the next `_check_due`

    def set_lease(self, lease_ms: Any) -> None:
        # A lease the service states wrongly (not a positive number) is ignored, not fatal.
        if isinstance(lease_ms, int | float) and not isinstance(lease_ms, bool) and lease_ms >= 1:
            self.lease_ms = int(min(lease_ms, 86_400_000))

    def hold(self, job_id: str, token: str) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._held[job_id] = (token, now)
        if self._timer is None:
            self._timer = loop.call_at(now + HEARTBEAT_DELAY_S, self._check_due)

    def unhold(self, job_id: str, token: str) -> None:
        """Stop renewing this lease; a newer lease of the same job (another token) stays."""
        held = self._held.get(job_id)
        if held is not None and held[0] == token:
            del self._held[job_id]

    def _check_due(self) -> None:
        """Wake the heartbeat loop for held jobs that became due and are not in the heartbeat
        in flight; then wait for the next one due. One timer for all jobs, not one per job:
        short jobs end long before they are due, and then cost nothing here."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time() + 0.001  # a timer may fire up to a clock tick early
        next_due: float | None = None
        for job_id, (_, since) in self._held.items():
            due = since + HEARTBEAT_DELAY_S
            if due <= now:
                if job_id not in self._inflight:
                    self._wake.set()
            elif next_due is None or due < next_due:
                next_due = due
        if next_due is not None:
            self._timer = loop.call_at(next_due, self._check_due)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff()
        while True:
            backoff.cap = min(10.0, max(0.2, self.lease_ms / 3000))  # retry within a third of a lease
            now = loop.time()
            leases = {j: tok for j, (tok, since) in self._held.items() if now - since >= HEARTBEAT_DELAY_S}
            self._wake.clear()
            if not leases:
                await self._wake.wait()
                continue
            self._inflight = set(leases)
            concurrency, running = self._load()
            req = loop.create_task(self.transport.heartbeat(
                leases, max(0, self.lease_ms // 3), concurrency=concurrency, running=running))
            wake = loop.create_task(self._wake.wait())
            try:
                await asyncio.wait({req, wake}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                wake.cancel()
                self._inflight = set()
                if not req.done():
                    req.cancel()  # a newer job must be listed: ask again
            await asyncio.wait({req})
            if req.cancelled():
                continue
            try:
                stops, lease_ms = req.result()
            except (ServiceUnavailable, RateLimited) as exc:
                await backoff.sleep(getattr(exc, "retry_after", None) or 0.0, what="heartbeat")
                continue
            except Exception as exc:
                log.error("heartbeat failed: %s", exc)
                await backoff.sleep()
                continue
            backoff.reset()
            self.set_lease(lease_ms)
            for job_id, reason in stops:
                held = self._held.get(job_id)
                if held is not None and held[0] == leases.get(job_id):
                    self._on_stop(job_id, reason, held[0])
