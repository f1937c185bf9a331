"""Redis for tests: the shared server at REDIS_URL (default redis://127.0.0.1:6379/15), used
under a key prefix unique to each test, whose keys (and only those) are deleted afterwards.

Without a reachable Redis the test skips; under CI=true it fails, so CI never passes
without having run the Redis tests.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"Redis is required under CI=true: {reason}")
    pytest.skip(f"no Redis at {REDIS_URL}: {reason}")


async def delete_prefix(client: aioredis.Redis, prefix: str) -> None:
    """Delete every key under `prefix:` (SCAN, so the shared server is never blocked)."""
    batch = []
    async for key in client.scan_iter(match=f"{prefix}:*", count=500):
        batch.append(key)
        if len(batch) >= 500:
            await client.delete(*batch)
            batch = []
    if batch:
        await client.delete(*batch)


@asynccontextmanager
async def redis_prefix_url() -> AsyncIterator[str]:
    """A storage URL on the test Redis with a fresh key prefix; the prefix's keys go at exit."""
    client = aioredis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        _unavailable(str(exc))
    prefix = f"wktest-{secrets.token_hex(6)}"
    sep = "&" if "?" in REDIS_URL else "?"
    try:
        yield f"{REDIS_URL}{sep}prefix={prefix}"
    finally:
        await delete_prefix(client, prefix)
        await client.aclose()
