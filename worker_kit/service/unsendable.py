"""Claims whose reply cannot be built: fail the job that cannot be sent, hand out the others.

Values are checked at the door (worker_kit.portable), so this only matters for a job stored
before that check existed, or by a route that missed it. Without it, one such job would make
every claim that picks it up answer 500 while storage had claimed it and its neighbours, and all
of them would end FAILED "worker lost" without ever running.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..errors import JobNotFound, StaleLease
from ..job import JobRecord, JobState
from .state import ServiceState

log = logging.getLogger("worker_kit.service")


async def sendable(
    state: ServiceState,
    endpoint: str,
    jobs: list[JobRecord],
    wire: Callable[[JobRecord], Any],
    encode: Callable[[Any], bytes],
) -> list[Any]:
    """The wire forms of the `jobs` that `encode` can carry; each other job ends FAILED, saying why."""
    kept: list[Any] = []
    for job in jobs:
        form = wire(job)
        try:
            encode(form)
        except Exception as exc:  # RecursionError, UnicodeEncodeError, TypeError, ValueError...
            await _fail(state, endpoint, job, f"{type(exc).__name__}: {exc}")
            continue
        kept.append(form)
    return kept


async def _fail(state: ServiceState, endpoint: str, job: JobRecord, why: str) -> None:
    error = f"the job's input cannot be sent to a worker ({why[:300]}); submit it again in a portable form"
    log.error("job %s: %s", job.id, error, extra={"job_id": job.id, "endpoint": endpoint})
    if job.token is None:
        return
    try:
        ended = await state.storage.finish(endpoint, job.id, job.token, JobState.FAILED, error=error)
    except (StaleLease, JobNotFound):
        return  # it ended another way meanwhile
    state.job_ended(ended, "its input could not be sent to a worker")
