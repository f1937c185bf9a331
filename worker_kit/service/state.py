"""The objects one service app shares between its routes and background tasks.

`ServiceState` lives under the `STATE` app key. `job_ended` is the single place every path that
ends a job (worker finish, cancel, sweep) goes through, so logs and metrics never miss one. Nothing
here is needed for correctness across replicas: webhooks, held leases, backpressure and the
sweeper's turn live in storage (docs/deploy.md).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import QueueFull
from ..ids import ENDPOINT_ID_RULE, valid_endpoint_id
from ..job import JobRecord, Policy
from ..storage.base import Storage
from .access import RateLimiter, check_key
from .activity import MinuteStats, activity_channel
from .config import EndpointConfig, ServiceConfig
from .http import ApiError, Shutdown
from .metrics import Metrics

if TYPE_CHECKING:
    from .webhooks import WebhookSender

log = logging.getLogger("worker_kit.service")

#: How many ended jobs are remembered so that a repeated report (an idempotent finish) is not
#: logged and counted twice by this replica. Webhooks do not depend on it: the outbox row is
#: written once, by the storage step that ended the job.
_FIRED_MEMORY = 10_000
#: /metrics reports at most this many endpoints (configured ones always).
MAX_TRACKED_ENDPOINTS = 1000


@dataclass(slots=True)
class ServiceState:
    config: ServiceConfig
    storage: Storage
    limiter: RateLimiter = field(default_factory=RateLimiter)
    metrics: Metrics = field(init=False)
    #: The dashboard's per-minute charts: the job endings this process handled.
    minute_stats: MinuteStats = field(default_factory=MinuteStats)
    shutdown: Shutdown = field(default_factory=Shutdown)
    webhooks: WebhookSender | None = None
    started_at: float = field(default_factory=time.time)
    #: This replica's id: the owner of its leader leases (the sweeper's turn), and in its logs.
    replica_id: str = field(default_factory=lambda: secrets.token_hex(6))
    #: Endpoints this process has served (and their settings): a cache of settings lookups, and
    #: the endpoints /metrics reports; bounded, since clients choose endpoint ids.
    known_endpoints: dict[str, EndpointConfig] = field(default_factory=dict)
    _fired: OrderedDict[tuple[str, int, str, float | None], None] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.config.endpoints, self.config.metrics_max_endpoints)
        self.limiter.on_refuse = self.metrics.refused

    def endpoint_config(self, endpoint_id: str) -> EndpointConfig:
        cfg = self.known_endpoints.get(endpoint_id)
        if cfg is not None:  # the common case: one dict lookup per request
            return cfg
        if not valid_endpoint_id(endpoint_id):
            raise ApiError(404, f"no such endpoint: {ENDPOINT_ID_RULE}")
        cfg = self.config.endpoint(endpoint_id)
        if cfg is None:
            raise ApiError(404, f"unknown endpoint {endpoint_id!r}")
        if len(self.known_endpoints) < MAX_TRACKED_ENDPOINTS:
            self.known_endpoints[endpoint_id] = cfg
        self.metrics.endpoint(endpoint_id)  # /metrics reports its store gauges while labels last
        return cfg

    # -- submits and backpressure ----------------------------------------------------------------
    async def submit(
        self, endpoint: str, cfg: EndpointConfig, job_input: Any, *, policy: Policy, webhook: str | None,
        retention_ms: int,
    ) -> JobRecord:  # fmt: skip
        """Store a new job, or answer 429 when the queue holds more than the endpoint's queue
        limit. The limit is checked by storage in the same atomic step as the insert, so
        replicas sharing a store agree and concurrent submits cannot overfill the queue."""
        try:
            return await self.storage.submit(
                endpoint, job_input, policy=policy, webhook=webhook, retention_ms=retention_ms,
                queue_limit=cfg.queue_limit if cfg.backpressure else None,
            )  # fmt: skip
        except QueueFull as exc:
            self.metrics.refused(endpoint, "run", "backpressure")
            raise ApiError(
                429,
                f"the queue of this endpoint holds {exc.depth} jobs, over its limit of {cfg.queue_limit} "
                f"(more than {cfg.queue_floor} and more than workers_max {cfg.workers_max} x "
                f"{cfg.queue_per_worker}); retry later",
                headers={"Retry-After": "5"},
                retry_after=5,
            ) from None

    # -- job endings -----------------------------------------------------------------------------
    def job_ended(self, job: JobRecord, how: str) -> None:
        """Log, count and fire the webhook for a job that just reached a terminal state."""
        key = (job.id, job.retries, job.state.value, job.finished_at)
        if key in self._fired:
            return
        self._fired[key] = None
        if len(self._fired) > _FIRED_MEMORY:
            self._fired.popitem(last=False)
        self.metrics.job_ended(job)
        self.minute_stats.job_ended(job)
        self.storage.notifier.publish(activity_channel(job.endpoint))
        if log.isEnabledFor(logging.INFO):  # else not even its arguments are worth making
            state = job.state.value
            log.info(
                "job %s %s (%s)%s", job.id, state, how, f": {job.error}" if job.error else "",
                extra={"job_id": job.id, "endpoint": job.endpoint, "state": state, "how": how},
            )  # fmt: skip
        if job.webhook and self.webhooks is not None:
            self.webhooks.kick()  # its outbox row was written with the ending; send it now

    async def webhook_stats(self) -> dict[str, int]:
        if self.webhooks is None:
            return {"delivered": 0, "failed": 0, "pending": await self.storage.webhooks_pending()}
        return await self.webhooks.stats()


STATE = web.AppKey("worker_kit_state", ServiceState)


def state_of(request: web.Request) -> ServiceState:
    return request.app[STATE]


def authorized(
    request: web.Request, kind: str, state: ServiceState | None = None
) -> tuple[ServiceState, str, EndpointConfig]:
    """The state, endpoint id and endpoint settings of a /v2/{endpoint_id} request, once its
    key of `kind` ("client" or "worker") checks out (401/403 otherwise). `state`: the app's,
    when the caller has it already (the guard hands it to routes: guard.TAKES_STATE)."""
    if state is None:
        state = request.app[STATE]
    endpoint = request.match_info["endpoint_id"]
    cfg = state.endpoint_config(endpoint)
    check_key(request, cfg, kind)
    return state, endpoint, cfg


def job_log(job: JobRecord, message: str, *args: Any) -> None:
    if log.isEnabledFor(logging.INFO):  # else not even its `extra` is worth making
        log.info(message, *args, extra={"job_id": job.id, "endpoint": job.endpoint, "state": job.state.value})
