"""Test a handler end to end in a few lines: the real service and worker, in-process.

    from worker_kit.testing import local_endpoint

    async def test_echo():
        async with local_endpoint(echo) as ep:        # an AsyncEndpoint client
            assert await ep.run_sync({"x": 1}) == ...

Or as a pytest fixture, declared in your conftest.py:

    from worker_kit.testing import endpoint_fixture
    echo_endpoint = endpoint_fixture(echo, concurrency=2)

    async def test_echo(echo_endpoint):
        job = await echo_endpoint.run({"x": 1})
        assert await job.output(timeout=10) == {"x": 1}

Tests without asyncio use `local_endpoint_sync(echo)` (a blocking `Endpoint`) or
`endpoint_fixture(echo, sync=True)`. Each stack listens on a free loopback port with in-memory
storage and is torn down after use.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import AsyncEndpoint, Endpoint
    from .service.runner import RunningService
    from .worker.loop import Worker
    from .worker.registry import Handler

__all__ = [
    "LocalStack",
    "endpoint_fixture",
    "local_endpoint",
    "local_endpoint_sync",
    "local_stack",
    "resolve_handler",
]

#: Short leases and sweeps so that lost-worker and timeout paths resolve quickly in tests.
TEST_SERVICE_DEFAULTS: dict[str, Any] = {"lease_ms": 2000, "sweep_interval_s": 0.1, "deadline_grace_ms": 500}


#: The endpoint id of local stacks: http://HOST:PORT/v2/local
LOCAL_ENDPOINT = "local"


@dataclass(slots=True)
class LocalStack:
    """A running service and worker. `url` is the endpoint's base URL (…/v2/local)."""

    service: RunningService
    worker: Worker
    worker_task: asyncio.Task[int]
    url: str
    endpoint_id: str

    def client(self, **options: Any) -> AsyncEndpoint:
        from .client import AsyncEndpoint

        return AsyncEndpoint(self.url, **options)


@contextlib.asynccontextmanager
async def local_stack(
    handler: Any = None,
    *,
    concurrency: Any = 1,
    host: str = "127.0.0.1",
    port: int = 0,
    storage: str = "sqlite://:memory:",
    endpoint_id: str = LOCAL_ENDPOINT,
    grace_s: float = 5.0,
    worker_options: dict[str, Any] | None = None,
    **service_options: Any,
) -> AsyncIterator[LocalStack]:
    """Start the service (port 0 = a free port) and a worker for `handler`; stop both on exit.

    `handler` is what `local_endpoint` takes: a decorated or plain function, a registered name, a
    `Handler`, or None for the only registered one. `service_options` are ServiceConfig fields
    (lease_ms, insecure, ...); `worker_options` are extra Worker keyword arguments.
    """
    from .service.config import ServiceConfig
    from .service.runner import run_service
    from .service.webhook_guard import LOOPBACK_ALLOW
    from .worker.loop import Worker

    resolved = resolve_handler(handler)  # before anything starts: a bad handler fails at once
    # The local harness delivers webhooks to receivers on this machine (webhook_guard.py).
    service_options.setdefault("webhook_allow", LOOPBACK_ALLOW)
    config = ServiceConfig(host=host, port=port, storage=storage, **service_options)
    async with run_service(config) as svc:
        url = svc.endpoint_url(endpoint_id)
        worker = Worker(resolved, url, concurrency=concurrency, **(worker_options or {}))
        task = asyncio.create_task(worker.run(), name="worker_kit.local.worker")
        try:
            yield LocalStack(service=svc, worker=worker, worker_task=task, url=url, endpoint_id=endpoint_id)
        finally:
            if not task.done():
                await worker.stop(grace_s=grace_s)
            # The worker's own failure (if any) surfaces here rather than vanishing.
            with contextlib.suppress(asyncio.CancelledError):
                await task


def resolve_handler(handler: Any = None) -> Handler:
    """A registry Handler from a Handler, a handler function (decorated or not), a
    registered name, or None (the only registered handler)."""
    from .worker.registry import get_handler

    return get_handler(handler)


@contextlib.asynccontextmanager
async def local_endpoint(
    handler: Any = None,
    *,
    concurrency: int = 1,
    endpoint_id: str = LOCAL_ENDPOINT,
    client_options: dict[str, Any] | None = None,
    worker_options: dict[str, Any] | None = None,
    **service_options: Any,
) -> AsyncIterator[AsyncEndpoint]:
    """An AsyncEndpoint client on a fresh local service + worker running `handler`.

    `service_options` override ServiceConfig fields (defaults: TEST_SERVICE_DEFAULTS, in-memory
    storage, a free port). The client's `stack` attribute is the LocalStack (service, worker).
    """
    options = {**TEST_SERVICE_DEFAULTS, **service_options}
    async with local_stack(
        resolve_handler(handler),
        concurrency=concurrency,
        endpoint_id=endpoint_id,
        worker_options=worker_options,
        grace_s=options.pop("grace_s", 2.0),
        **options,
    ) as stack:
        ep = stack.client(**(client_options or {}))
        ep.stack = stack  # type: ignore[attr-defined]
        async with ep:
            yield ep


@contextlib.contextmanager
def local_endpoint_sync(
    handler: Any = None,
    *,
    concurrency: int = 1,
    endpoint_id: str = LOCAL_ENDPOINT,
    client_options: dict[str, Any] | None = None,
    worker_options: dict[str, Any] | None = None,
    **service_options: Any,
) -> Iterator[Endpoint]:
    """`local_endpoint` for tests without asyncio: the stack runs on an event loop in a
    background thread and a blocking `Endpoint` client is yielded."""
    from .client import Endpoint

    resolved = resolve_handler(handler)
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        options = {**TEST_SERVICE_DEFAULTS, **service_options}
        async with local_stack(
            resolved,
            concurrency=concurrency,
            endpoint_id=endpoint_id,
            worker_options=worker_options,
            grace_s=options.pop("grace_s", 2.0),
            **options,
        ) as stack:
            box["stack"], box["loop"], box["stop"] = stack, asyncio.get_running_loop(), asyncio.Event()
            ready.set()
            await box["stop"].wait()

    def thread_main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # handed to the test's thread below
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=thread_main, name="worker_kit.testing", daemon=True)
    thread.start()
    ready.wait()
    if "stack" not in box:
        thread.join()
        raise RuntimeError(f"the local stack did not start: {box.get('error')!r}") from box.get("error")
    ep = Endpoint(box["stack"].url, **(client_options or {}))
    ep.stack = box["stack"]  # type: ignore[attr-defined]
    try:
        yield ep
    finally:
        ep.close()
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join()
        if "error" in box:
            raise box["error"]


def endpoint_fixture(
    handler: Any = None, *, concurrency: int = 1, name: str | None = None, sync: bool = False, **options: Any
) -> Callable[..., Any]:
    """A pytest fixture (function scope) yielding `local_endpoint(handler, ...)`, or with
    `sync=True` a blocking client from `local_endpoint_sync` for tests without asyncio.

    Assign it to a name in a conftest.py or test module; that name is the fixture's name
    unless `name` is given.
    """
    import pytest

    if sync:

        def _sync_endpoint() -> Iterator[Endpoint]:
            with local_endpoint_sync(handler, concurrency=concurrency, **options) as ep:
                yield ep

        return pytest.fixture(name=name)(_sync_endpoint) if name else pytest.fixture(_sync_endpoint)

    try:
        import pytest_asyncio

        fixture = pytest_asyncio.fixture
    except ImportError:  # pytest-asyncio in auto mode also accepts plain async fixtures
        fixture = pytest.fixture

    async def _endpoint() -> AsyncIterator[AsyncEndpoint]:
        async with local_endpoint(handler, concurrency=concurrency, **options) as ep:
            yield ep

    return fixture(name=name)(_endpoint) if name else fixture(_endpoint)
