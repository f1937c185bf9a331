"""Finish reports waiting to share a request with the next claim (protocol 2, /worker/exchange).

A finished job's report is queued here. The next claim takes every queued report with it,
so a busy worker spends one round trip per job and, at concurrency above 1, the finishes of
several jobs share one request. When no claim is about to go (the claim loop is waiting for
a free slot, or holding a long-poll), the outbox sends its reports on its own, batched the
same way. A worker may have two claims in flight (loop.py, pipelining): reports wait while
either of them carries reports, since the claim sent when it answers takes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

#: Loop turns a claim (and the outbox's own flush) yields before it takes the queued
#: reports: a job whose handler just ended frees its slot (waking the claim loop) a turn or
#: two before its report is queued, and the report should ride with that claim.
GATHER_TURNS = 3
#: Most reports, and most of their bytes, one request carries: a finish request's body is
#: bounded by the endpoint's result limit + 4 MB, so a large result always travels alone.
MAX_REPORTS = 100
MAX_REPORT_BYTES = 3 * 1024 * 1024


@dataclass(slots=True, eq=False)
class Report:
    """One job's packed finish report (a msgpack map with its `id`) and who waits for its answer."""

    job_id: str
    body: bytes
    future: asyncio.Future[None]


class FinishOutbox:
    """Queued finish reports; `send(batch)` delivers a batch on its own (no claim)."""

    def __init__(self, send: Callable[[list[Report]], Awaitable[None]]) -> None:
        self._send = send
        self._queue: list[Report] = []
        self._claims = 0  # claims being built, or in flight with reports
        self._kicked = False  # a flusher start is scheduled
        self._flusher: asyncio.Task[None] | None = None

    def put(self, job_id: str, body: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(Report(job_id, body, future))
        self.kick()
        return future

    def take(self) -> list[Report]:
        """The oldest reports that fit in one request (at least one when any is queued)."""
        batch: list[Report] = []
        size = 0
        for report in self._queue:
            if batch and (len(batch) >= MAX_REPORTS or size + len(report.body) > MAX_REPORT_BYTES):
                break
            batch.append(report)
            size += len(report.body)
        del self._queue[: len(batch)]
        return batch

    def claiming(self) -> Claiming:
        """`with outbox.claiming() as claim`: while a claim is being built or a claim that carries
        reports is in flight, a claim takes the queued reports; call `claim.hold()` before a
        claim that long-polls. (A class, not a generator: one per claim.)"""
        self._claims += 1
        return Claiming(self)

    def _end_claim(self) -> None:
        self._claims -= 1
        self.kick()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def kick(self) -> None:
        # Callbacks first, not a task: the claim that usually follows a job's report within a
        # turn or two takes it, and then no flusher is needed at all.
        if self._queue and not self._claims and not self._kicked:
            self._kicked = True
            asyncio.get_running_loop().call_soon(self._start_flusher, GATHER_TURNS)

    def _start_flusher(self, turns: int) -> None:
        if not self._queue or self._claims:  # a claim took them, or takes them
            self._kicked = False
            return
        if turns > 0:  # a claim about to go takes these reports instead
            asyncio.get_running_loop().call_soon(self._start_flusher, turns - 1)
            return
        self._kicked = False
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._queue and not self._claims:
            batch = self.take()
            try:
                await self._send(batch)
            except Exception as exc:  # the reporters waiting on these reports retry
                fail(batch, exc)

    def close(self, exc: BaseException) -> None:
        fail(self._queue, exc)
        self._queue.clear()
        if self._flusher is not None:
            self._flusher.cancel()


class Claiming:
    """One claim's hold on the outbox (`FinishOutbox.claiming`)."""

    __slots__ = ("_outbox",)

    def __init__(self, outbox: FinishOutbox) -> None:
        self._outbox: FinishOutbox | None = outbox

    def __enter__(self) -> Claiming:
        return self

    def __exit__(self, *exc: object) -> None:
        self.hold()

    def hold(self) -> None:
        """The claim is about to hold a long-poll (or has ended): reports queued from now on go
        on their own unless another claim takes them."""
        if self._outbox is not None:
            outbox, self._outbox = self._outbox, None
            outbox._end_claim()


def fail(batch: list[Report], exc: BaseException) -> None:
    """Every report of `batch` not answered yet gets `exc` (its reporter decides whether to retry)."""
    for report in batch:
        if not report.future.done():
            report.future.set_exception(exc)
