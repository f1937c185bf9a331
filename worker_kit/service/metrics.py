"""Prometheus metrics for GET /metrics, built on `prometheus_client` (docs/operations.md).

Each service app owns one `Metrics`, with its own CollectorRegistry: tests run several services
in one process, and the library's global registry would mix them up.

Two kinds of series:
- events this process saw (submits, job endings, HTTP requests, refusals, storage calls): counters
  and histograms, summed across replicas by Prometheus;
- what the store holds (jobs by state, workers, desired workers): read from storage at scrape
  time by `StoreCollector`, so every replica reports the same values.

Clients choose endpoint ids, so the `endpoint` label is bounded by `EndpointLabels`.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import __version__
from ..job import JobRecord, JobState
from .loop_metrics import LoopCounter, LoopHistogram

#: The label every endpoint past the cap shares.
OTHER_ENDPOINT = "_other"
#: Job delay and execution times run from milliseconds to hours.
JOB_SECONDS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
)  # fmt: skip
#: HTTP answers and storage calls: from a fraction of a millisecond to a long-poll's minute.
FAST_SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class EndpointLabels:
    """The `endpoint` label of a metric: bounded, since any client can make up endpoint ids.

    Configured endpoints (the config file's [endpoints.<id>]) always keep their own label. Other
    ids get one while fewer than `cap` have one (first come, first served, for this process's
    life); every id after that is counted under `_other`. So 20 000 made-up ids cost at most
    `cap` series per metric, and a replica may give a late id its own label while another
    counts it under `_other` (the trade-off docs/operations.md describes).
    """

    def __init__(self, configured: Iterable[str], cap: int) -> None:
        self.configured = frozenset(configured)
        self.cap = cap
        self._extra: set[str] = set()

    def __call__(self, endpoint: str) -> str:
        if endpoint in self.configured or endpoint in self._extra:
            return endpoint
        if len(self._extra) < self.cap:
            self._extra.add(endpoint)
            return endpoint
        return OTHER_ENDPOINT

    def tracked(self) -> list[str]:
        """Every endpoint with its own label, configured ones first."""
        return sorted(self.configured) + sorted(self._extra - self.configured)


#: Labelled children kept per metric for the hot paths (a `.labels()` lookup costs more than
#: the update itself); past this many, children are looked up each time instead.
MAX_CACHED_CHILDREN = 4096


class _Children(dict[tuple[Any, ...], Any]):
    """`metric.labels(*key)`, remembered: `children[key]` is one dict lookup (in C, no call of a
    Python method) per update on a hot path."""

    def __init__(self, make: Callable[..., Any]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, key: tuple[Any, ...]) -> Any:
        child = self._make(*key)
        if len(self) < MAX_CACHED_CHILDREN:  # methods and routes come from clients
            self[key] = child
        return child


class Metrics:
    """The counters and histograms one service app updates as things happen."""

    def __init__(self, configured: Iterable[str] = (), max_endpoints: int = 100) -> None:
        """Declares every series /metrics exposes, in one list on purpose (past our usual 60
        lines): this is the place to read what the service reports."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.endpoint = EndpointLabels(configured, max_endpoints)
        r = self.registry
        # The labelled series are updated on the hot paths: lock-free ones (loop_metrics.py).
        self.submitted = LoopCounter(
            "worker_kit_jobs_submitted", "Jobs submitted through /run and /runsync.", ["endpoint"]
        )
        self.ended = LoopCounter(
            "worker_kit_jobs_ended",
            "Jobs that reached a terminal state, by outcome (COMPLETED, FAILED, TIMED_OUT, CANCELLED).",
            ["endpoint", "state"],
        )
        self.delay = LoopHistogram(
            "worker_kit_job_delay_seconds",
            "Time jobs waited in the queue before a worker started them (observed when they end).",
            ["endpoint"],
            JOB_SECONDS_BUCKETS,
        )
        self.execution = LoopHistogram(
            "worker_kit_job_execution_seconds",
            "Time from a worker starting a job to its end (observed when it ends).",
            ["endpoint", "state"],
            JOB_SECONDS_BUCKETS,
        )
        self.requests = LoopCounter(
            "worker_kit_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
        )
        self.request_seconds = LoopHistogram(
            "worker_kit_http_request_duration_seconds",
            "Time to answer an HTTP request (long-polls and streams included), by route template.",
            ["route", "method"],
            FAST_SECONDS_BUCKETS,
        )
        self.refusals = LoopCounter(
            "worker_kit_refusals",
            "Requests refused with 429: reason rate (rate limit), concurrency (too many in flight) "
            "or backpressure (queue full).",
            ["endpoint", "operation", "reason"],
        )
        self.storage_seconds = LoopHistogram(
            "worker_kit_storage_operation_duration_seconds",
            "Time a storage operation took, by operation.",
            ["operation"],
            FAST_SECONDS_BUCKETS,
        )
        self.storage_errors = LoopCounter(
            "worker_kit_storage_errors", "Storage operations that raised an unexpected error.", ["operation"]
        )
        for collector in (self.submitted, self.ended, self.delay, self.execution, self.requests,
                          self.request_seconds, self.refusals, self.storage_seconds, self.storage_errors):
            r.register(collector)  # fmt: skip
        self.sweeps = Counter("worker_kit_sweeps", "Background sweeps run.", registry=r)
        self.sweep_errors = Counter("worker_kit_sweep_errors", "Background sweeps that failed.", registry=r)
        self.requeued = Counter(
            "worker_kit_leases_expired", "Jobs requeued after their worker's lease expired.", registry=r
        )
        self.deleted = Counter(
            "worker_kit_jobs_deleted", "Job records deleted after their retention.", registry=r
        )
        info = Gauge("worker_kit_build_info", "The worker_kit version serving.", ["version"], registry=r)
        info.labels(version=__version__).set(1)
        started = Gauge("worker_kit_start_time_seconds", "When this service process started.", registry=r)
        started.set(time.time())
        self._ended_children = _Children(self._ended_series)
        # The endpoint's label is stable for the process's life (EndpointLabels), so it may be cached.
        self._submitted_children = _Children(lambda endpoint: self.submitted.labels(self.endpoint(endpoint)))
        self._storage_children: dict[str, Any] = {}
        self._request_children = _Children(
            lambda route, method, status: (
                self.requests.labels(route, method, str(status)),
                self.request_seconds.labels(route, method),
            )
        )
        self.store = StoreCollector()
        r.register(self.store)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    # -- events ------------------------------------------------------------------------------------
    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        count, duration = self._request_children[route, method, status]
        count.value += 1  # _CounterChild.inc() and observe(), without the calls: every request counts here
        duration.counts[bisect_left(duration.bounds, seconds)] += 1
        duration.sum += seconds

    def job_submitted(self, endpoint: str) -> None:
        self._submitted_children[endpoint,].value += 1

    def job_ended(self, job: JobRecord) -> None:
        started = job.started_at is not None
        ended, delay, execution = self._ended_children[job.endpoint, job.state, started]
        ended.inc()
        if started:
            delay.observe(job.delay_ms / 1000)
            execution.observe(job.execution_ms / 1000)

    def _ended_series(self, endpoint: str, state: JobState, started: bool) -> tuple[Any, Any, Any]:
        """The children a job ending updates; the timing ones only for a job that started, so a
        series appears once it has an observation, as before this was cached."""
        label = self.endpoint(endpoint)  # stable for the process's life, so it may be cached
        if not started:
            return self.ended.labels(label, state.value), None, None
        return (self.ended.labels(label, state.value), self.delay.labels(label),
                self.execution.labels(label, state.value))  # fmt: skip

    def refused(self, endpoint: str, operation: str, reason: str) -> None:
        self.refusals.labels(self.endpoint(endpoint), operation, reason).inc()

    def storage_call(self, operation: str, seconds: float, failed: bool) -> None:
        child = self._storage_children.get(operation)
        if child is None:  # operations are a fixed few (storage_timing.TIMED_OPERATIONS)
            child = self._storage_children[operation] = self.storage_seconds.labels(operation)
        child.counts[bisect_left(child.bounds, seconds)] += 1  # child.observe(seconds), without the call
        child.sum += seconds
        if failed:
            self.storage_errors.labels(operation).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every collector of this app."""
        return generate_latest(self.registry)


@dataclass(slots=True)
class EndpointSnapshot:
    """What storage holds for one endpoint, read just before a scrape renders."""

    counts: dict[str, int]
    idle: int
    busy: int
    slots: int
    desired: int


@dataclass(slots=True)
class StoreSnapshot:
    endpoints: dict[str, EndpointSnapshot] = field(default_factory=dict)
    webhooks: dict[str, int] = field(default_factory=dict)
    #: False when storage could not be read for this scrape.
    up: bool = True


class StoreCollector(Collector):
    """Gauges describing the store, from the snapshot the /metrics route reads before rendering.

    prometheus_client collects synchronously while storage is async, so the route awaits the
    reads (`StoreSnapshot`) and hands them over; nothing is read between scrapes.
    """

    def __init__(self) -> None:
        self.snapshot = StoreSnapshot()

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        jobs = GaugeMetricFamily(
            "worker_kit_jobs", "Jobs stored, by endpoint and state (from storage).",
            labels=["endpoint", "state"],
        )
        retried = CounterMetricFamily(
            "worker_kit_jobs_retried",
            "Jobs requeued by /retry or after a lost lease (from storage).",
            labels=["endpoint"],
        )
        workers = GaugeMetricFamily(
            "worker_kit_workers",
            "Workers seen recently, by state: idle or busy (holding at least one job).",
            labels=["endpoint", "state"],
        )
        slots = GaugeMetricFamily(
            "worker_kit_worker_slots", "Job slots (concurrency) the live workers declare.",
            labels=["endpoint"],
        )
        desired = GaugeMetricFamily(
            "worker_kit_desired_workers",
            "Workers needed for the queued and running jobs, capped at workers_max (as /scaling).",
            labels=["endpoint"],
        )
        for endpoint, ep in sorted(snap.endpoints.items()):
            for state in JobState:
                jobs.add_metric([endpoint, state.value], ep.counts.get(state.value, 0))
            retried.add_metric([endpoint], ep.counts.get("retried", 0))
            workers.add_metric([endpoint, "idle"], ep.idle)
            workers.add_metric([endpoint, "busy"], ep.busy)
            slots.add_metric([endpoint], ep.slots)
            desired.add_metric([endpoint], ep.desired)
        hooks = CounterMetricFamily(
            "worker_kit_webhook_deliveries",
            "Webhook deliveries this process made: delivered (a 2xx) or failed (out of attempts).",
            labels=["outcome"],
        )
        for outcome in ("delivered", "failed"):
            hooks.add_metric([outcome], snap.webhooks.get(outcome, 0))
        pending = GaugeMetricFamily(
            "worker_kit_webhooks_pending", "Webhook deliveries waiting in the shared outbox (from storage)."
        )
        pending.add_metric([], snap.webhooks.get("pending", 0))
        up = GaugeMetricFamily("worker_kit_store_up", "1 when this scrape could read the job store, else 0.")
        up.add_metric([], 1 if snap.up else 0)
        yield from (up, jobs, retried, workers, slots, desired, hooks, pending)
