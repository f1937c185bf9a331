"""What this process saw happen, kept briefly and bounded, for the dashboard's charts.

`MinuteStats` counts job endings per endpoint and minute, with delay and execution samples for
percentiles. It is bounded (minutes, samples per minute, endpoints), since clients choose endpoint
ids. With several replicas each one counts the endings it handled.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..job import JobRecord, JobState


def activity_channel(endpoint: str) -> str:
    """Published in this process (not through storage) when a request changed something of
    `endpoint`; the dashboard's feed wakes on it."""
    return f"dashboard:{endpoint}"

#: Endpoints remembered at most.
MAX_ENDPOINTS = 1000
#: Minutes the charts cover, and samples kept per minute for the percentiles.
CHART_MINUTES = 15
SAMPLES_PER_MINUTE = 2000


def _bounded_get(table: OrderedDict[str, Any], key: str, make: Any) -> Any:
    value = table.get(key)
    if value is None:
        if len(table) >= MAX_ENDPOINTS:
            table.popitem(last=False)  # clients choose endpoint ids: forget the oldest
        value = table[key] = make()
    else:
        table.move_to_end(key)
    return value


@dataclass(slots=True)
class _Minute:
    completed: int = 0
    failed: int = 0
    delays: list[float] = field(default_factory=list)
    executions: list[float] = field(default_factory=list)


class MinuteStats:
    """Job endings per endpoint and minute, for the last CHART_MINUTES minutes."""

    def __init__(self) -> None:
        self._minutes: OrderedDict[str, dict[int, _Minute]] = OrderedDict()

    def job_ended(self, job: JobRecord) -> None:
        minutes = _bounded_get(self._minutes, job.endpoint, dict)
        now_minute = int(time.time() // 60)
        bucket = minutes.get(now_minute)
        if bucket is None:  # a new minute (once a minute per endpoint): forget the old ones
            for old in [m for m in minutes if m <= now_minute - CHART_MINUTES]:
                del minutes[old]
            bucket = minutes[now_minute] = _Minute()
        if job.state is JobState.COMPLETED:
            bucket.completed += 1
        elif job.state in (JobState.FAILED, JobState.TIMED_OUT):
            bucket.failed += 1
        if job.started_at is not None and len(bucket.delays) < SAMPLES_PER_MINUTE:
            bucket.delays.append(job.delay_ms)
            bucket.executions.append(job.execution_ms)

    def series(self, endpoint: str) -> dict[str, list[Any]]:
        """One entry per minute, oldest first, the current (partial) minute last."""
        minutes = self._minutes.get(endpoint, {})
        now_minute = int(time.time() // 60)
        out: dict[str, list[Any]] = {
            k: [] for k in ("minute", "completed", "failed", "delayP50", "delayP95", "execP50", "execP95")
        }
        for m in range(now_minute - CHART_MINUTES + 1, now_minute + 1):
            b = minutes.get(m) or _Minute()
            out["minute"].append(m * 60_000)
            out["completed"].append(b.completed)
            out["failed"].append(b.failed)
            out["delayP50"].append(percentile(b.delays, 50))
            out["delayP95"].append(percentile(b.delays, 95))
            out["execP50"].append(percentile(b.executions, 50))
            out["execP95"].append(percentile(b.executions, 95))
        return out


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]
