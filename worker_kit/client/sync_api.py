"""The blocking client: the asyncio client driven from a private event-loop thread.

Every `Endpoint` owns one thread running one loop, on which its aiohttp session lives.
Calls block the caller's thread only, so the client works the same in a plain script and
inside code that already runs an event loop (a notebook, an async web handler); it never
calls asyncio.run() in the caller's thread.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from ..job import Policy
from .async_api import AsyncEndpoint, AsyncJobHandle

T = TypeVar("T")


class _LoopThread:
    """An event loop in a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def started(self) -> bool:
        return self._loop is not None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._stopped:  # a call after close() must not start a thread nobody stops
                raise RuntimeError("this endpoint client is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="worker-kit-client", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            loop = self._ensure()
        except RuntimeError:
            coro.close()
            raise
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking client call cannot be made from the client's own loop thread")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # KeyboardInterrupt in the caller: stop the work on the loop too
            raise

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """A blocking iterator over an async iterator that runs on this loop."""
        try:
            while True:
                try:
                    yield self.call(anext(agen))  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None and self._loop is not None and not self._loop.is_closed():
                self.call(aclose())

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
            self._stopped = True
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join(timeout=5)
        if not loop.is_running():
            loop.close()


def _stop_quietly(runner: _LoopThread) -> None:
    runner.stop()


class Endpoint:
    """Blocking twin of AsyncEndpoint, with the same arguments and method names.

    `with Endpoint("http://127.0.0.1:8000", "my-endpoint") as ep: ep.run_sync({...})`
    """

    def __init__(
        self,
        base_url: str,
        endpoint_id: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        backoff_cap: float = 5.0,
        sse_read_timeout: float = 45.0,
    ) -> None:
        self._async = AsyncEndpoint(
            base_url,
            endpoint_id,
            api_key=api_key,
            timeout=timeout,
            retries=retries,
            backoff_cap=backoff_cap,
            sse_read_timeout=sse_read_timeout,
        )
        self.base_url, self.endpoint_id = self._async.base_url, self._async.endpoint_id
        self.url = self._async.url
        self._runner = _LoopThread()
        self._finalizer = weakref.finalize(self, _stop_quietly, self._runner)

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._finalizer.alive:
            if self._runner.started:
                self._runner.call(self._async.close())
            else:
                self._async._transport.mark_closed()  # no session was ever opened
            self._finalizer()

    def __repr__(self) -> str:
        return f"Endpoint({self.url!r})"

    def job(self, job_id: str) -> JobHandle:
        return JobHandle(self, self._async.job(job_id))

    def run(
        self, input: Any, *, webhook: str | None = None, policy: Policy | Mapping[str, Any] | None = None
    ) -> JobHandle:
        """Submit a job (POST /run) and return its handle."""
        return JobHandle(self, self._runner.call(self._async.run(input, webhook=webhook, policy=policy)))

    def run_sync(
        self,
        input: Any,
        *,
        timeout: float | None = None,
        webhook: str | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
    ) -> Any:
        """Submit and wait for the output; typed errors as AsyncEndpoint.run_sync."""
        return self._runner.call(self._async.run_sync(input, timeout=timeout, webhook=webhook, policy=policy))

    def submit_sync(
        self,
        input: Any,
        *,
        timeout: float | None = None,
        webhook: str | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
    ) -> JobHandle:
        coro = self._async.submit_sync(input, timeout=timeout, webhook=webhook, policy=policy)
        return JobHandle(self, self._runner.call(coro))

    def health(self) -> dict[str, Any]:
        return self._runner.call(self._async.health())

    def purge_queue(self) -> dict[str, Any]:
        return self._runner.call(self._async.purge_queue())

    def requests(
        self,
        *,
        limit: int = 50,
        status: str | Iterable[str] | None = None,
        cursor: str | None = None,
        include: Iterable[str] = (),
    ) -> dict[str, Any]:
        """One page of GET /requests, as AsyncEndpoint.requests."""
        coro = self._async.requests(limit=limit, status=status, cursor=cursor, include=include)
        return self._runner.call(coro)

    def iter_requests(
        self, *, status: str | Iterable[str] | None = None, include: Iterable[str] = (), page_size: int = 200
    ) -> Iterator[dict[str, Any]]:
        """Every job of the endpoint, newest first, page after page."""
        pages = self._async.iter_requests(status=status, include=include, page_size=page_size)
        return self._runner.iterate(pages)


class JobHandle:
    """Blocking twin of AsyncJobHandle."""

    def __init__(self, endpoint: Endpoint, handle: AsyncJobHandle) -> None:
        self.endpoint = endpoint
        self._handle = handle
        self.id = handle.id

    def __repr__(self) -> str:
        state = (self.last_status or {}).get("status", "?")
        return f"<JobHandle {self.id} {state}>"

    @property
    def last_status(self) -> dict[str, Any] | None:
        return self._handle.last_status

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.endpoint._runner.call(coro)

    def status(self, wait: float | None = None) -> dict[str, Any]:
        """GET /status; with `wait` seconds, /status-sync held until the job ends or `wait` passes."""
        return self._call(self._handle.status(wait=wait))

    def cancel(self) -> dict[str, Any]:
        return self._call(self._handle.cancel())

    def retry(self) -> dict[str, Any]:
        return self._call(self._handle.retry())

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        return self._call(self._handle.wait(timeout=timeout))

    def output(self, timeout: float | None = None) -> Any:
        return self._call(self._handle.output(timeout=timeout))

    def watch(self, *, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        return self.endpoint._runner.iterate(self._handle.watch(timeout=timeout))

    def stream(
        self, *, cursor: int = 0, on_status: Callable[[dict[str, Any]], None] | None = None
    ) -> Iterator[Any]:
        """Chunks as they arrive; `on_status` runs on the client's loop thread."""
        return self.endpoint._runner.iterate(self._handle.stream(cursor=cursor, on_status=on_status))
