"""What several service replicas on one store share besides the jobs themselves.

A service replica keeps nothing that another replica needs: these methods hold, in storage,
what used to live in one process's memory (docs/deploy.md, "Several replicas"):

- the hosted worker protocol's held leases: which jobs a hosted-SDK worker took, with their
  tokens, so its job-stop/ping may reach any replica and still renew them;
- the webhook outbox: one row per job ending that must be POSTed somewhere, written in the
  same atomic step that ends the job, leased to one replica at a time while it delivers;
- named leader leases: "the sweeper" runs in one replica at a time.

Every backend implements them (tests/storage/test_conformance_shared.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(slots=True)
class WebhookDelivery:
    """One pending webhook: POST the final status of job `job_id` (as of its ending number
    `retries`) to `url`. `id` is stable across attempts and replicas (receivers drop repeats
    by it); `attempts` is how many POSTs were already made; `body` is the status JSON once the
    first attempt rendered it (None before), so every attempt sends the same bytes."""

    id: str
    endpoint: str
    job_id: str
    retries: int
    url: str
    attempts: int
    body: bytes | None
    created_at: float


class SharedState(ABC):
    """The replica-shared half of the Storage interface (see the module docstring)."""

    # -- hosted-protocol held leases --------------------------------------------------------------
    @abstractmethod
    async def hold_leases(self, endpoint: str, worker_id: str, leases: dict[str, str]) -> None:
        """Record that hosted worker `worker_id` holds {job_id: token}; replaces an earlier
        token of the same job. Entries go with their job's record (retention, purge)."""

    @abstractmethod
    async def held_leases(self, endpoint: str, worker_id: str) -> dict[str, str]:
        """{job_id: token} of every job recorded as held by the worker and not dropped."""

    @abstractmethod
    async def drop_leases(self, endpoint: str, worker_id: str, job_ids: list[str]) -> None:
        """Forget the listed jobs for the worker (it was told to stop them, or reported them)."""

    # -- webhook outbox -----------------------------------------------------------------------------
    @abstractmethod
    async def take_webhooks(self, limit: int, lease_ms: int) -> list[WebhookDelivery]:
        """Up to `limit` deliveries that are due (oldest first) and not leased by another caller
        right now, each leased to the caller for `lease_ms` (so no other replica sends it
        meanwhile; a replica that dies loses the lease and another one takes it over)."""

    @abstractmethod
    async def webhook_done(self, delivery_id: str) -> None:
        """Remove a delivery: sent, or given up on."""

    @abstractmethod
    async def webhook_later(self, delivery_id: str, *, attempts: int, delay_ms: int, body: bytes) -> None:
        """Record a failed attempt: `attempts` POSTs made so far, due again `delay_ms` from now,
        with the rendered `body`; the caller's lease ends."""

    @abstractmethod
    async def webhooks_pending(self) -> int:
        """How many deliveries the outbox holds (due or waiting for a retry)."""

    # -- leader leases ------------------------------------------------------------------------------
    @abstractmethod
    async def lead(self, name: str, owner: str, ttl_ms: int) -> bool:
        """Take or renew the lease called `name` for `owner` for `ttl_ms`: True when `owner`
        holds it now (it was free, expired, or already `owner`'s), False when another
        owner's lease is still running."""

    @abstractmethod
    async def resign(self, name: str, owner: str) -> None:
        """Give up the lease if `owner` holds it (a replica shutting down), so another replica
        can take over at once instead of after the lease's time."""
