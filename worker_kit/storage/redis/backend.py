"""The Redis backend: job state in Redis, every change one Lua script (scripts/, by concern).

`RedisStorage.from_url("redis://127.0.0.1:6379/0?prefix=wk")`. Several service processes
share one Redis; their waiters are woken across processes by pub/sub (wakeups.py).
The rules the scripts apply are storage/rules.py's; the key layout is keys.py's.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import secrets
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

from ...errors import JobNotFound, MissingDependency, SequenceGap, StorageError, StoreUnavailable
from ...job import WORKER_FINAL_STATES, JobRecord, JobState, Policy, new_job_id
from ...protocol import OutputItem, pack, unpack_all
from .. import rules
from ..base import MAX_PAGE, JobPage, StopSignal, Storage, SweepResult, WorkerInfo
from ..rules import Clock
from . import scripts
from .keys import Keys, RedisURL
from .records import item_args, record_from_hash, unpack_reply
from .shared import RedisSharedState
from .sweep import sweep_endpoint
from .wakeups import SAFETY_WAKE_S, Wakeups

try:
    import redis.asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError:  # pragma: no cover - the extra is installed in the test environment
    aioredis = None  # type: ignore[assignment]
    RedisError = RedisConnectionError = RedisTimeoutError = Exception  # type: ignore[assignment,misc]

_SCRIPTS = ("SUBMIT", "CLAIM", "HEARTBEAT", "APPEND", "FINISH", "CANCEL", "RETRY", "RELEASE", "PURGE",
            "SET_RETENTION", "READ_STREAM", "SWEEP_COLLECT", "SWEEP_APPLY", "SWEEP_EXPIRE",
            "LIST", "TAKE_HOOKS", "HOOK_LATER", "HOOK_DONE")  # fmt: skip
#: Scripts on keys outside any endpoint: no prelude.
_PLAIN_SCRIPTS = ("LEAD", "RESIGN")


T = TypeVar("T")

#: Connections to Redis per storage instance (one is the pub/sub listener's).
MAX_CONNECTIONS = 32
POOL_WAIT_S = 30.0


def _opt(value: Any) -> Any:
    return "" if value is None else value


class RedisStorage(RedisSharedState, Storage):
    def __init__(self, url: RedisURL, *, clock: Clock | None = None) -> None:
        super().__init__(clock)
        if aioredis is None:
            raise MissingDependency(
                "the Redis backend needs the redis package: pip install 'worker-kit[redis]'"
            )
        self.url = url
        self.keys = Keys(url.prefix)
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._known: set[str] = set()
        self._wakeups: Wakeups | None = None
        #: How often job waiters re-read storage in case a cross-replica wake-up was lost.
        self.safety_wake_s = SAFETY_WAKE_S

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None) -> RedisStorage:
        return cls(RedisURL.parse(url), clock=clock)

    def __repr__(self) -> str:
        return f"RedisStorage(prefix={self.url.prefix!r})"

    async def open(self) -> None:
        # A blocking pool: a burst of requests waits for a free connection instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url.connect_url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT_S,
            # CLIENT LIST then tells which prefix (deployment) each connection serves.
            client_name=f"worker-kit:{self.url.prefix}",
        )
        self._client = aioredis.Redis(connection_pool=pool, decode_responses=False)
        try:
            await self._client.ping()
        except RedisError as exc:
            await self._client.aclose(close_connection_pool=True)
            self._client = None
            raise StorageError(f"cannot reach Redis: {exc}") from None
        self._scripts = {
            name: self._client.register_script(scripts.PRELUDE + getattr(scripts, name)) for name in _SCRIPTS
        }
        for name in _PLAIN_SCRIPTS:
            self._scripts[name] = self._client.register_script(getattr(scripts, name))
        self._wakeups = Wakeups(self._client, self.keys.wakeups, self.notifier, self.safety_wake_s)
        await self._wakeups.start()

    async def close(self) -> None:
        if self._wakeups is not None:
            await self._wakeups.close()
            self._wakeups = None
        if self._client is not None:
            await self._client.aclose(close_connection_pool=True)  # the pool is ours
            self._client = None

    def publish(self, channel: str, count: int = 1) -> None:
        self.notifier.publish(channel, count)
        if self._wakeups is not None:
            self._wakeups.send(channel, count)

    async def run(self, name: str, endpoint: str, *args: Any, now: float | None = None) -> Any:
        """Run one script on the endpoint's keys, at `now` (default: the clock's current time),
        which every script takes as its first argument."""
        at = self.clock() if now is None else now
        return await self._call(
            name.lower(), lambda: self._scripts[name](keys=[self.keys.base(endpoint)], args=[repr(at), *args])
        )

    async def _call(self, what: str, command: Callable[[], Awaitable[T]]) -> T:
        """Run a Redis command: its errors become StorageError, and a cancellation of the calling
        task always propagates (redis-py can return normally from a command whose task was
        cancelled meanwhile, which would leave e.g. the sweeper running after its cancel)."""
        if self._client is None:
            raise StorageError("Redis storage is not open")
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            result = await command()
        except RedisError as exc:
            if task is not None and task.cancelling() > cancels:
                raise asyncio.CancelledError from exc
            if isinstance(exc, RedisConnectionError | RedisTimeoutError):
                # Unreachable, not broken: the service answers 503 saying so, and retries later.
                raise StoreUnavailable(f"Redis unreachable during {what}: {exc}") from exc
            raise StorageError(f"Redis {what} failed: {exc}") from exc
        if task is not None and task.cancelling() > cancels:
            raise asyncio.CancelledError
        return result

    def _notify(self, channels: list[str]) -> None:
        for channel, times in collections.Counter(channels).items():
            self.publish(channel, times)

    # -- client side ------------------------------------------------------------------------------
    async def submit(
        self, endpoint: str, input: Any, *, policy: Policy, webhook: str | None = None, retention_ms: int,
        queue_limit: int | None = None,
    ) -> JobRecord:  # fmt: skip
        if endpoint not in self._known:  # the sweep finds endpoints here (a key outside the endpoint's slot)
            await self._call("submit", lambda: self._client.sadd(self.keys.endpoints, endpoint))
            self._known.add(endpoint)
        job_id = new_job_id()
        now = self.clock()
        ttl_deadline = now + policy.ttl_ms / 1000.0
        reply = await self.run("SUBMIT", endpoint, job_id, repr(ttl_deadline), policy.execution_timeout_ms,
                               int(policy.execution_timeout_explicit), policy.ttl_ms, retention_ms,
                               _opt(webhook), pack(input), _opt(queue_limit), now=now)  # fmt: skip
        if reply[0] == b"FULL":
            rules.check_queue(endpoint, int(reply[1]), queue_limit)
        self._notify(rules.submitted(endpoint))
        return JobRecord(id=job_id, endpoint=endpoint, input=input, policy=policy, webhook=webhook,
                         retention_ms=retention_ms, created_at=now)  # fmt: skip

    async def get(self, endpoint: str, job_id: str) -> JobRecord | None:
        key = self.keys.base(endpoint) + "job:" + job_id
        reply = await self._call("get", lambda: self._client.hgetall(key))
        if not reply or b"id" not in reply:
            return None
        record = record_from_hash(endpoint, reply)
        if record.expires_at is not None and record.expires_at <= self.clock():
            return None
        return record

    async def set_retention(self, endpoint: str, job_id: str, ttl_ms: int) -> JobRecord | None:
        reply = await self.run("SET_RETENTION", endpoint, job_id, ttl_ms)
        if reply[0] == b"NOTFOUND":
            return None
        self._notify(rules.changed(job_id))
        return record_from_hash(endpoint, reply[1])

    async def cancel(self, endpoint: str, job_id: str) -> JobRecord | None:
        reply = await self.run("CANCEL", endpoint, job_id)
        if reply[0] == b"NOTFOUND":
            return None
        record = record_from_hash(endpoint, reply[1])
        worker = reply[2].decode() or None
        if reply[3]:  # this call ended it
            self._notify(rules.stopped(endpoint, job_id, worker, worker is not None))
        return record

    async def retry(self, endpoint: str, job_id: str) -> JobRecord:
        reply = await self.run("RETRY", endpoint, job_id)
        if reply[0] == b"NOTFOUND":
            raise JobNotFound(f"job {job_id} not found")
        if reply[0] == b"CONFLICT":
            rules.check_retry(job_id, JobState(reply[1].decode()))
        self._notify(rules.claimable(endpoint, job_id))
        return record_from_hash(endpoint, reply[1])

    async def purge(self, endpoint: str, *, limit: int = rules.BATCH) -> list[JobRecord]:
        reply = unpack_reply(await self.run("PURGE", endpoint, max(1, limit), rules.PURGED_ERROR))
        records = [record_from_hash(endpoint, h) for h in reply]
        for record in records:
            self._notify(rules.changed(record.id))
        return records

    async def read_stream(
        self, endpoint: str, job_id: str, cursor: int | None = None, *, max_bytes: int | None = None
    ) -> tuple[JobRecord, list[Any], int]:
        start = "" if cursor is None else max(0, cursor)
        reply = await self.run("READ_STREAM", endpoint, job_id, start, _opt(max_bytes))
        if reply[0] == b"NOTFOUND":
            raise JobNotFound(f"job {job_id} not found")
        return record_from_hash(endpoint, reply[1]), unpack_all(reply[3]), int(reply[2])

    async def counts(self, endpoint: str) -> dict[str, int]:
        stored = await self._call("counts", lambda: self._client.hgetall(self.keys.base(endpoint) + "counts"))
        counts = {state.value: 0 for state in JobState}
        counts["retried"] = 0
        for key, value in stored.items():
            counts[key.decode()] = int(value)
        return counts

    async def list_jobs(
        self, endpoint: str, *, limit: int, after: tuple[float, str] | None = None,
        states: Collection[JobState] | None = None, include_io: bool = False,
    ) -> JobPage:  # fmt: skip
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
        wanted = None if states is None else sorted({JobState(s).value for s in states})
        indexes = ["recent"] if wanted is None else [f"recent:{s}" for s in wanted]
        score, after_id = ("", "") if after is None else (repr(float(after[0])), after[1])
        runs = await self.run("LIST", endpoint, limit + 1, score, after_id, int(include_io), *indexes)
        records = [[record_from_hash(endpoint, h) for h in run] for run in runs]
        # Each run is newest first already; merge on (created_at, id), descending.
        merged = heapq.merge(*records, key=lambda r: (r.created_at, r.id), reverse=True)
        page = [r for _, r in zip(range(limit + 1), merged, strict=False)]
        counts = await self.counts(endpoint)
        total = sum(max(0, n) for key, n in counts.items()
                    if key != "retried" and (wanted is None or key in wanted))  # fmt: skip
        return JobPage(jobs=page[:limit], total=total, has_more=len(page) > limit)

    # -- worker side --------------------------------------------------------------------------------
    async def claim(
        self, endpoint: str, worker_id: str, max_jobs: int, lease_ms: int, *,
        concurrency: int | None = None, max_bytes: int | None = None,
    ) -> list[JobRecord]:  # fmt: skip
        if max_jobs < 1:
            return []
        lease_until = self.clock() + lease_ms / 1000.0
        tokens = [secrets.token_hex(16) for _ in range(max_jobs)]
        reply = await self.run("CLAIM", endpoint, worker_id, max_jobs, repr(lease_until), _opt(concurrency),
                               _opt(max_bytes), *tokens)  # fmt: skip
        records = [record_from_hash(endpoint, h) for h in reply]
        for record in records:
            self._notify(rules.changed(record.id))
        return records

    async def heartbeat(
        self, endpoint: str, worker_id: str, leases: dict[str, str], lease_ms: int, *,
        concurrency: int | None = None, running: int | None = None,
    ) -> list[StopSignal]:  # fmt: skip
        lease_until = self.clock() + lease_ms / 1000.0
        pairs = [part for job_id, token in leases.items() for part in (job_id, token)]
        reply = await self.run("HEARTBEAT", endpoint, worker_id, repr(lease_until), _opt(concurrency),
                               _opt(running), *pairs)  # fmt: skip
        stops = []
        for (job_id, token), (state, current, ended_by) in zip(leases.items(), reply, strict=True):
            stop = rules.heartbeat_stop(rules.as_state(state or None), current.decode() or None,
                                        ended_by.decode() or None, token)  # fmt: skip
            if stop:
                stops.append(StopSignal(job_id, stop))
        return stops

    def _refused(self, reply: list[Any], job_id: str, token: str, items: list[OutputItem] | None) -> None:
        """Raise the rules' error for a script's refusal."""
        if reply[0] == b"NOTFOUND":
            raise JobNotFound(f"job {job_id} not found")
        if reply[0] == b"STALE":
            rules.check_report(job_id, JobState(reply[1].decode()), reply[2].decode() or None, token)
        if reply[0] == b"GAP":
            rules.fresh_items(int(reply[1]), items or [], lambda item: item.seq)
            raise SequenceGap(f"output items do not continue from seq {int(reply[1])}", int(reply[1]))

    async def append_output(self, endpoint: str, job_id: str, token: str, items: list[OutputItem]) -> int:
        reply = await self.run("APPEND", endpoint, job_id, token, *item_args(items))
        if reply[0] != b"OK":
            self._refused(reply, job_id, token, items)
        if reply[2]:
            self._notify(rules.changed(job_id))
        return int(reply[1])

    async def finish(
        self, endpoint: str, job_id: str, token: str, state: JobState, *, output: Any = None,
        error: str | None = None, error_detail: dict[str, Any] | None = None,
        items: list[OutputItem] | None = None,
    ) -> JobRecord:  # fmt: skip
        state = JobState(state)
        if state not in WORKER_FINAL_STATES:
            raise ValueError(f"a worker can finish a job only as COMPLETED, FAILED or TIMED_OUT, not {state}")
        reply = await self.run(
            "FINISH", endpoint, job_id, token, state.value,
            int(output is not None), b"" if output is None else pack(output),
            int(error is not None), _opt(error),
            int(error_detail is not None), b"" if error_detail is None else pack(error_detail),
            *item_args(items),
        )  # fmt: skip
        if reply[0] != b"OK":
            self._refused(reply, job_id, token, items)
        if reply[2]:
            self._notify(rules.changed(job_id))
        return record_from_hash(endpoint, reply[1])

    async def release(self, endpoint: str, job_id: str, token: str) -> bool:
        released = bool(await self.run("RELEASE", endpoint, job_id, token))
        if released:
            self._notify(rules.claimable(endpoint, job_id))
        return released

    async def workers(self, endpoint: str, seen_within_s: float) -> list[WorkerInfo]:
        base = self.keys.base(endpoint)
        stored, held = await self._call(
            "workers", lambda: self._client.pipeline(transaction=True).hgetall(base + "workers")
            .hgetall(base + "held").execute()
        )  # fmt: skip
        since = self.clock() - seen_within_s
        found = []
        for worker, value in stored.items():
            concurrency, _, seen_at = value.decode().split(" ")
            if float(seen_at) >= since:
                found.append(WorkerInfo(worker_id=worker.decode(), running=int(held.get(worker, 0)),
                                        concurrency=int(concurrency), seen_at=float(seen_at)))  # fmt: skip
        return sorted(found, key=lambda w: w.worker_id)

    # -- housekeeping ---------------------------------------------------------------------------
    async def sweep(
        self, max_attempts: int, deadline_grace_ms: int, *, expire_leases: bool = True
    ) -> SweepResult:
        members = await self._call("sweep", lambda: self._client.smembers(self.keys.endpoints))
        endpoints = sorted(m.decode() for m in members)
        result = SweepResult()
        for endpoint in endpoints:
            await sweep_endpoint(self, endpoint, result, max_attempts, deadline_grace_ms, expire_leases)
        return result


__all__ = ["RedisStorage"]
