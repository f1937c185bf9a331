"""The claims a worker keeps in flight: two at once at concurrency above 1 (pipelining).

With one claim at a time a busy worker and its service take turns: the service answers, the
worker runs the jobs and reports them with its next claim, then waits while the service applies
the reports and claims again, and each side idles while the other works. With two claims in
flight the service works on one while the worker runs the jobs of the other. What keeps this
correct and cheap:

- A claim asks only for slots that neither a running job nor another claim in flight holds, so
  a worker never holds more jobs than its concurrency.
- A claim asks for at most half the slots, so a busy worker's jobs come in two batches that
  alternate rather than in one that all ends at once and leaves nothing to overlap with.
- Only a claim sent while no other is in flight may hold a long-poll; the second is sent with
  `wait_ms` 0 (it looks at the queue once). Once an answer came back short (the queue ran out),
  no second claim goes until a slot frees (its report rides with it) or an answer fills its ask,
  so an idle worker holds one long-poll and sends nothing else.
- Each claim's own task takes its answer and launches its jobs, even once the worker is stopping
  (they are then handed straight back, rather than waiting out their lease); stop cuts only a
  claim that holds a long-poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from .transport import ClaimedJob, Transport


@dataclass(slots=True, eq=False)
class Claim:
    asked: int
    may_hold: bool  # sent with the worker's long-poll wait
    task: asyncio.Task[None] | None = None


class Claims:
    """The claims in flight. `accept(jobs, lease_ms)` takes each answer (launches its jobs);
    `wake()` runs when a claim ends, answered or not; a claim that failed leaves its error in
    `failed` for the claim loop to act on (back off, or stop)."""

    def __init__(self, transport: Transport, accept: Callable[[list[ClaimedJob], int | None], None],
                 wake: Callable[[], None]) -> None:
        self.transport, self._accept, self._wake = transport, accept, wake
        self.inflight: list[Claim] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.asked = 0  # jobs the claims in flight asked for: slots promised to them
        self.dry = False  # the latest answer was short: the queue ran out
        self.failed: list[Exception] = []

    def room(self, capacity: int) -> int:
        """How many jobs the next claim may ask for now (0: it must wait)."""
        limit = self.transport.max_claims
        if len(self.inflight) >= limit or (self.inflight and self.dry):
            return 0
        return -(-capacity // limit)

    def start(self, ask: int, wait_ms: int, capacity: int, running: int) -> None:
        claim = Claim(ask, not self.inflight)
        self.inflight.append(claim)
        self.asked += ask
        wait_ms = wait_ms if claim.may_hold else 0
        run = self._run(claim, wait_ms, capacity, running)
        task = claim.task = asyncio.get_running_loop().create_task(run)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, claim: Claim, wait_ms: int, capacity: int, running: int) -> None:
        try:
            jobs, lease_ms = await self.transport.claim(claim.asked, wait_ms, concurrency=capacity,
                                                        running=running)
        except Exception as exc:
            self.failed.append(exc)
            return
        finally:
            # No await from here to the jobs' launch: the slots go from promised to busy at once.
            self.inflight.remove(claim)
            self.asked -= claim.asked
            self._wake()
        self.dry = len(jobs) < claim.asked
        self._accept(jobs, lease_ms)

    def answering(self) -> set[asyncio.Task[None]]:
        """The claims in flight that never hold (sent with `wait_ms` 0): they answer soon, and a
        drain waits for them so that their jobs are handed back at once."""
        return {c.task for c in self.inflight if not c.may_hold and c.task is not None}

    def cut_holds(self) -> None:
        """Stopping: cut a claim that holds a long-poll (it would hold for up to its wait; jobs
        the service may still hand it come back by lease). One that carries reports answers
        soon: its jobs' tasks, waiting for those reports, keep a drain waiting for it."""
        for claim in self.inflight:
            if claim.may_hold and claim.task is not None and self.transport.holding:
                claim.task.cancel()
