"""Fixtures shared by every test directory: a real queue service on 127.0.0.1.

    async def test_x(service):                      # defaults below
        url = service.endpoint_url("ep")

    async def test_y(service_factory):
        svc = await service_factory(lease_ms=500, max_attempts=2)

    async def test_z(service, api, api_at):         # the public API as raw HTTP (tests/support/api.py)
        job_id = await api.run({"x": 1})            # on endpoint "ep" of `service`
        other = api_at(service.endpoint_url("b"))   # on any endpoint of any service

The service runs in the test's event loop on a free port, with a SQLite file in tmp_path,
short leases and a fast sweep, and stops at teardown.

With WORKER_KIT_TEST_STORAGE=redis, each service keeps its jobs in the test Redis instead
(tests/redis_support.py: a key prefix of its own, deleted at teardown), so the same tests run
end to end on the Redis backend (.ci/run does this for a subset).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.api import Api
from worker_kit.service.config import EndpointConfig, ServiceConfig
from worker_kit.service.runner import RunningService, run_service

#: Overrides every test service starts from: short enough to keep tests fast, long enough for 2 slow cores.
TEST_DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 0,
    "lease_ms": 2000,
    "sweep_interval_s": 0.1,
    "deadline_grace_ms": 500,
    "shutdown_timeout_s": 2.0,
    # Test receivers listen on loopback, which the service refuses by default.
    "webhook_allow": ("localhost", "127.0.0.0/8", "::1/128"),
}

ServiceFactory = Callable[..., Awaitable[RunningService]]
#: "sqlite" (default) or "redis": the backend services started by service_factory use.
TEST_STORAGE = os.environ.get("WORKER_KIT_TEST_STORAGE", "sqlite")


@pytest.fixture
async def service_factory(tmp_path: Path) -> AsyncIterator[ServiceFactory]:
    """`await service_factory(**overrides)` -> a running service, stopped at teardown.

    Overrides are ServiceConfig fields; `default=EndpointConfig(...)` or `endpoints={...}` set
    endpoint settings, and `config=ServiceConfig(...)` replaces the base config entirely.
    Several services may be started; each gets its own SQLite file unless `storage` is given.
    """
    async with AsyncExitStack() as stack:
        count = 0

        async def start(config: ServiceConfig | None = None, **overrides: Any) -> RunningService:
            nonlocal count
            count += 1
            if config is None:
                if TEST_STORAGE == "redis" and "storage" not in overrides:
                    from tests.redis_support import redis_prefix_url

                    storage = await stack.enter_async_context(redis_prefix_url())
                else:
                    storage = f"sqlite:///{tmp_path / f'service-{count}.db'}"
                fields = {**TEST_DEFAULTS, "storage": storage, **overrides}
                config = ServiceConfig(**fields)
            elif overrides:
                config = dataclasses.replace(config, **overrides)
            return await stack.enter_async_context(run_service(config))

        yield start


@pytest.fixture
async def service(service_factory: ServiceFactory) -> RunningService:
    """A running service with the test defaults."""
    return await service_factory()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


@pytest.fixture
def api_at(session: aiohttp.ClientSession) -> Callable[[str], Api]:
    """`api_at(endpoint_url)` -> an Api on that endpoint, on the test's one session."""
    return lambda url: Api(session, url)


@pytest.fixture
def api(service: RunningService, api_at: Callable[[str], Api]) -> Api:
    """The Api of endpoint "ep" of `service`."""
    return api_at(service.endpoint_url("ep"))


__all__ = ["TEST_DEFAULTS", "Api", "EndpointConfig", "ServiceFactory", "api", "api_at", "service",
           "service_factory", "session"]
