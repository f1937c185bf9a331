"""How every part of worker_kit waits before trying again: one backoff, one reading of Retry-After.

The worker runtime, the client and the service's webhook sender all retry over the network; they
share this so their behaviour (and its tuning) cannot drift apart.
"""

from __future__ import annotations

import asyncio
import logging
import random

log = logging.getLogger("worker_kit.retrying")


class Backoff:
    """Exponential backoff with jitter: `base` doubling up to `cap`, each delay scaled by 0.5-1.0.

    The jitter keeps many workers or clients that failed together from retrying together.
    """

    def __init__(self, base: float = 0.1, cap: float = 10.0) -> None:
        self.base, self.cap, self.failures = base, cap, 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * (2**self.failures))
        self.failures = min(self.failures + 1, 30)  # 2**30 * base is past any cap; no overflow
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0

    async def sleep(self, at_least: float = 0.0, wake: asyncio.Event | None = None, what: str = "") -> None:
        """Wait the next delay (at least `at_least`, e.g. a Retry-After), or until `wake` is set;
        `what` names the retried request in a debug line, so a backoff can be seen in the logs."""
        delay = max(at_least, self.next_delay())
        if what:
            log.debug("retrying %s in %.2f s", what, delay)
        if wake is None:
            await asyncio.sleep(delay)
            return
        try:
            async with asyncio.timeout(delay):
                await wake.wait()
        except TimeoutError:
            pass


def retry_after_seconds(value: str | None, cap: float) -> float | None:
    """A Retry-After header in seconds, clamped to [0, cap]; None when absent or an HTTP-date
    (rare enough that the caller's own backoff is the better answer)."""
    if value is None:
        return None
    try:
        return max(0.0, min(float(value), cap))
    except ValueError:
        return None
