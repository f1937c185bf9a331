"""Who may call a route (API keys) and how often (rate and concurrency limits).

Limits are kept in this process's memory, per endpoint and operation: with several service
replicas each enforces its own share.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

from aiohttp import web

from .config import EndpointConfig, RateLimit
from .http import ApiError


def presented_key(request: web.Request) -> str | None:
    """The key in `Authorization`, with or without the `Bearer ` prefix (hosted SDKs send both)."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    header = header.strip()
    scheme, _, rest = header.partition(" ")
    if scheme.lower() == "bearer" and rest:
        return rest.strip()
    return header or None


def _matches(key: str, keys: tuple[str, ...]) -> bool:
    # Compare against every key so the time taken does not tell which one nearly matched.
    found = False
    for candidate in keys:
        found |= hmac.compare_digest(key.encode(), candidate.encode())
    return found


def check_key(request: web.Request, cfg: EndpointConfig, kind: str) -> None:
    """Raise 401/403 unless the request carries a key of `kind` ("client" or "worker").

    An endpoint with no keys of that kind configured is open to it.
    """
    keys, other = (
        (cfg.client_keys, cfg.worker_keys) if kind == "client" else (cfg.worker_keys, cfg.client_keys)
    )
    if not keys:
        return
    key = presented_key(request)
    if key is None:
        raise ApiError(
            401,
            f"this route needs a {kind} API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if _matches(key, keys):
        return
    if other and _matches(key, other):
        raise ApiError(
            403, f"this is a {'worker' if kind == 'client' else 'client'} key; this route needs a {kind} key"
        )
    raise ApiError(403, f"the API key is not a valid {kind} key for this endpoint")


#: What `RateLimiter.slot` returns when there is nothing to count: a caller may skip the `with`.
UNLIMITED = nullcontext()
#: Above this many (endpoint, operation) buckets, idle ones are dropped.
MAX_BUCKETS = 10_000
#: A bucket untouched for its whole window is full again, so dropping it changes nothing.
_MIN_IDLE_S = 60.0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    window_s: float
    in_flight: int = 0
    #: The most tokens the bucket holds (the limit's `requests`; 0 for a concurrency-only limit).
    capacity: float = 0.0

    def carries_nothing(self, now: float) -> bool:
        """Nothing in flight and full again: dropping it and making it anew changes nothing."""
        if self.in_flight:
            return False
        if self.capacity <= 0 or now - self.updated > max(self.window_s, _MIN_IDLE_S):
            return True
        refilled = self.tokens + (now - self.updated) * self.capacity / self.window_s
        return refilled >= self.capacity


class RateLimiter:
    """Token buckets (rate) and in-flight counters (concurrency) per (endpoint, operation)."""

    def __init__(self, on_refuse: Callable[[str, str, str], None] | None = None) -> None:
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self.refused = 0
        #: Told (endpoint, operation, "rate" | "concurrency") of every refusal, for the metrics.
        self.on_refuse = on_refuse

    def _refuse(self, endpoint: str, op: str, reason: str) -> None:
        self.refused += 1
        if self.on_refuse is not None:
            self.on_refuse(endpoint, op, reason)

    def _prune(self, now: float) -> None:
        # Clients choose endpoint ids, so buckets are dropped as soon as they are full again with
        # nothing in flight (after a burst on many made-up ids, that is nearly all of them).
        for key in [key for key, b in self._buckets.items() if b.carries_nothing(now)]:
            del self._buckets[key]

    def slot(self, endpoint: str, op: str, limit: RateLimit | None) -> AbstractContextManager[None]:
        """Hold one request slot, or raise 429 with Retry-After."""
        if limit is None or (limit.requests is None and limit.concurrent is None):
            return UNLIMITED  # nothing to count: no generator to make and run
        return self._limited(endpoint, op, limit)

    @contextmanager
    def _limited(self, endpoint: str, op: str, limit: RateLimit) -> Iterator[None]:
        key = (endpoint, op)
        bucket = self._buckets.get(key)
        now = time.monotonic()
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._prune(now)
            capacity = float(limit.requests or 0)
            bucket = self._buckets[key] = _Bucket(capacity, now, limit.window_s, capacity=capacity)
        if limit.concurrent is not None and bucket.in_flight >= limit.concurrent:
            self._refuse(endpoint, op, "concurrency")
            raise ApiError(
                429,
                f"too many concurrent {op} requests for this endpoint (limit {limit.concurrent})",
                headers={"Retry-After": "1"},
                retry_after=1,
            )
        if limit.requests is not None:
            rate = limit.requests / limit.window_s
            bucket.tokens = min(float(limit.requests), bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens < 1.0:
                wait = max(1, math.ceil((1.0 - bucket.tokens) / rate))
                self._refuse(endpoint, op, "rate")
                raise ApiError(
                    429,
                    f"rate limit of {limit.requests} {op} requests per {limit.window_s:g} s exceeded "
                    f"for this endpoint; retry in {wait} s",
                    headers={"Retry-After": str(wait)},
                    retry_after=wait,
                )
            bucket.tokens -= 1.0
        bucket.in_flight += 1
        try:
            yield
        finally:
            bucket.in_flight -= 1
