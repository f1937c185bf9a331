"""The Redis backend's replica-shared state (storage/coordination.py).

- Held hosted leases: a hash per (endpoint, worker), `PREFIX:{E}:hosted:WORKER` (job id -> token),
  and per job the set of its holders, `PREFIX:{E}:holders:JOB`, so the sweep drops a job's
  entries when it deletes the job's record.
- The webhook outbox: per endpoint, a sorted set `PREFIX:{E}:outbox` of delivery ids by due time
  and a hash per delivery `PREFIX:{E}:hook:ID`. The script that ends a job adds its delivery
  (scripts/prelude.py, `outbox_add`), so an ending is never stored without its webhook. Taking a delivery
  moves its due time to the end of the taker's lease.
- Leader leases: `PREFIX:lead:NAME`, a string holding the owner, with a Redis expiry.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..coordination import SharedState, WebhookDelivery
from .records import _flat

if TYPE_CHECKING:
    from .keys import Keys


class RedisSharedState(SharedState):
    """Mixed into RedisStorage, which supplies what is declared here."""

    keys: Keys
    clock: Callable[[], float]
    _client: Any
    _scripts: dict[str, Any]
    run: Callable[..., Awaitable[Any]]
    _call: Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]

    async def _endpoints(self) -> list[str]:
        members = await self._call("sweep", lambda: self._client.smembers(self.keys.endpoints))
        return sorted(m.decode() for m in members)

    # -- hosted-protocol held leases ------------------------------------------------------------------
    def _hosted(self, endpoint: str, worker_id: str) -> str:
        return f"{self.keys.base(endpoint)}hosted:{worker_id}"

    async def hold_leases(self, endpoint: str, worker_id: str, leases: dict[str, str]) -> None:
        if leases:
            base, key = self.keys.base(endpoint), self._hosted(endpoint, worker_id)

            async def hold() -> None:
                pipe = self._client.pipeline(transaction=True)
                pipe.hset(key, mapping=dict(leases))
                for job_id in leases:  # who holds a job: its record's deletion drops the entries
                    pipe.sadd(f"{base}holders:{job_id}", worker_id)
                await pipe.execute()

            await self._call("hold_leases", hold)

    async def held_leases(self, endpoint: str, worker_id: str) -> dict[str, str]:
        key = self._hosted(endpoint, worker_id)
        held = await self._call("held_leases", lambda: self._client.hgetall(key))
        return {job.decode(): token.decode() for job, token in held.items()}

    async def drop_leases(self, endpoint: str, worker_id: str, job_ids: list[str]) -> None:
        if job_ids:
            key = self._hosted(endpoint, worker_id)
            await self._call("drop_leases", lambda: self._client.hdel(key, *job_ids))

    # -- webhook outbox -------------------------------------------------------------------------------
    async def take_webhooks(self, limit: int, lease_ms: int) -> list[WebhookDelivery]:
        taken: list[WebhookDelivery] = []
        for endpoint in await self._endpoints():
            if len(taken) >= limit:
                break
            lease_until = self.clock() + lease_ms / 1000.0
            reply = await self.run("TAKE_HOOKS", endpoint, limit - len(taken), repr(lease_until))
            for raw in reply:
                h = _flat(raw)
                taken.append(WebhookDelivery(
                    id=h[b"id"].decode(), endpoint=endpoint, job_id=h[b"job_id"].decode(),
                    retries=int(h[b"retries"]), url=h[b"url"].decode(), attempts=int(h[b"attempts"]),
                    body=h.get(b"body"), created_at=float(h[b"created_at"]),
                ))  # fmt: skip
        return taken

    @staticmethod
    def _endpoint_of(delivery_id: str) -> str:
        return urllib.parse.unquote(delivery_id.split("|", 1)[0])

    async def webhook_done(self, delivery_id: str) -> None:
        await self.run("HOOK_DONE", self._endpoint_of(delivery_id), delivery_id)

    async def webhook_later(self, delivery_id: str, *, attempts: int, delay_ms: int, body: bytes) -> None:
        endpoint = self._endpoint_of(delivery_id)
        await self.run("HOOK_LATER", endpoint, delivery_id, attempts, delay_ms, body)

    async def webhooks_pending(self) -> int:
        endpoints = await self._endpoints()
        if not endpoints:
            return 0

        async def count() -> list[int]:
            pipe = self._client.pipeline(transaction=False)
            for endpoint in endpoints:
                pipe.zcard(self.keys.base(endpoint) + "outbox")
            return await pipe.execute()

        return sum(await self._call("webhooks_pending", count))

    # -- leader leases --------------------------------------------------------------------------------
    async def lead(self, name: str, owner: str, ttl_ms: int) -> bool:
        key = f"{self.keys.prefix}:lead:{name}"
        script = self._scripts["LEAD"]
        held = await self._call("lead", lambda: script(keys=[key], args=[owner, max(1, ttl_ms)]))
        return bool(held)

    async def resign(self, name: str, owner: str) -> None:
        key = f"{self.keys.prefix}:lead:{name}"
        script = self._scripts["RESIGN"]
        await self._call("resign", lambda: script(keys=[key], args=[owner]))
