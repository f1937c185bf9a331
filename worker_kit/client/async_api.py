"""The asyncio client: `AsyncEndpoint` submits jobs, `AsyncJobHandle` follows one.

Waiting uses push when the service offers it: Server-Sent Events on /stream (state changes,
chunks, then the final status), or /runsync's hold. Against a service without SSE it falls
back to polling with backoff. Stream reads always pass a cursor, so they consume nothing and
a dropped connection resumes exactly where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from ..errors import (
    JobCancelled,
    JobError,
    JobFailed,
    JobTimedOut,
    ServiceError,
)
from ..job import TERMINAL_STATES, JobState, Policy
from .errors import NotFound, WaitTimeout
from .push import NoPush, follow_job
from .queries import requests_params, status_sync
from .transport import ClientTransport, split_endpoint_url

_JOB_ERRORS: dict[JobState, type[JobError]] = {
    JobState.FAILED: JobFailed,
    JobState.TIMED_OUT: JobTimedOut,
    JobState.CANCELLED: JobCancelled,
}
#: /runsync holds at most this long (the service's cap); longer waits continue by push.
MAX_RUNSYNC_WAIT_MS = 300_000
MIN_RUNSYNC_WAIT_MS = 1_000
DEFAULT_RUNSYNC_WAIT_MS = 90_000


def is_terminal(status: Mapping[str, Any]) -> bool:
    return status.get("status") in TERMINAL_STATES


def result_of(status: dict[str, Any]) -> Any:
    """The output of a COMPLETED status; the typed JobError for any other final state."""
    state = status.get("status")
    if state == JobState.COMPLETED:
        return status.get("output")
    error_type = _JOB_ERRORS.get(state)  # type: ignore[call-overload]
    if error_type is None:
        raise ValueError(f"job {status.get('id')} has not ended (state {state})")
    raise error_type(status)


def _policy_wire(policy: Policy | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if policy is None:
        return None
    if isinstance(policy, Policy):
        return policy.to_wire()
    return dict(policy)


class AsyncEndpoint:
    """One endpoint of a worker_kit (or path-compatible) service.

    `AsyncEndpoint("http://127.0.0.1:8000", "my-endpoint", api_key=...)`, or
    `AsyncEndpoint("http://127.0.0.1:8000/v2/my-endpoint")`. Use `async with` or `await close()`.
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
        self.base_url, self.endpoint_id = split_endpoint_url(base_url, endpoint_id)
        self.url = f"{self.base_url}/v2/{self.endpoint_id}"
        self._transport = ClientTransport(
            self.url, api_key=api_key, timeout=timeout, retries=retries, backoff_cap=backoff_cap
        )
        # Keep-alive comments arrive every 15 s; silence beyond this means a dead connection.
        self.sse_read_timeout = sse_read_timeout
        #: None until known; False once the service answered /stream without SSE.
        self.push: bool | None = None

    async def __aenter__(self) -> AsyncEndpoint:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._transport.close()

    def __repr__(self) -> str:
        return f"AsyncEndpoint({self.url!r})"

    # -- endpoint operations ---------------------------------------------------------------
    def job(self, job_id: str) -> AsyncJobHandle:
        """A handle on an existing job by id."""
        return AsyncJobHandle(self, job_id)

    async def run(
        self,
        input: Any,
        *,
        webhook: str | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
    ) -> AsyncJobHandle:
        """Submit a job (POST /run) and return its handle. Never resent after a 5xx or a
        dropped connection, as the job may exist; a refused connection or 429 is retried."""
        answer = await self._transport.request(
            "POST", "/run", body=self._body(input, webhook, policy), idempotent=False
        )
        return AsyncJobHandle(self, _job_id(answer), answer)

    async def run_sync(
        self,
        input: Any,
        *,
        timeout: float | None = None,
        webhook: str | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
    ) -> Any:
        """Submit and wait for the output (POST /runsync, then push if the job outlives the hold).

        Raises JobFailed / JobTimedOut / JobCancelled when the job ends otherwise, and
        WaitTimeout when `timeout` seconds pass first (the job goes on).
        """
        handle = await self.submit_sync(input, timeout=timeout, webhook=webhook, policy=policy)
        return await handle.output()

    async def submit_sync(
        self,
        input: Any,
        *,
        timeout: float | None = None,
        webhook: str | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
    ) -> AsyncJobHandle:
        """POST /runsync and wait until the job ends or `timeout` passes; the handle holds the
        final status when it ended. WaitTimeout if it did not end within `timeout`."""
        started = time.monotonic()
        wait_ms = DEFAULT_RUNSYNC_WAIT_MS if timeout is None else int(timeout * 1000)
        wait_ms = max(MIN_RUNSYNC_WAIT_MS, min(MAX_RUNSYNC_WAIT_MS, wait_ms))
        answer = await self._transport.request(
            "POST",
            "/runsync",
            body=self._body(input, webhook, policy),
            params={"wait": str(wait_ms)},
            idempotent=False,
            timeout=wait_ms / 1000 + self._transport.timeout,
        )
        handle = AsyncJobHandle(self, _job_id(answer), answer)
        if not is_terminal(answer):
            remaining = None if timeout is None else timeout - (time.monotonic() - started)
            try:
                await handle.wait(timeout=remaining)
            except WaitTimeout as exc:
                raise WaitTimeout(handle.id, exc.status, timeout or 0.0) from None
        return handle

    async def health(self) -> dict[str, Any]:
        """GET /health: job counts and worker counts."""
        return await self._transport.request("GET", "/health", idempotent=True)

    async def purge_queue(self) -> dict[str, Any]:
        """POST /purge-queue: end every queued job CANCELLED (purged); running jobs go on.
        → {"removed": N, ...}"""
        return await self._transport.request("POST", "/purge-queue", idempotent=False)

    async def requests(
        self,
        *,
        limit: int = 50,
        status: str | Iterable[str] | None = None,
        cursor: str | None = None,
        include: Iterable[str] = (),
    ) -> dict[str, Any]:
        """GET /requests: one page of the endpoint's jobs, newest first, as
        `{"requests": [...], "total", "hasMore", "cursor"}`. Pass the answer's `cursor` for the
        next page; `status` keeps those states only; `include` may name "input" and "output"."""
        params = requests_params(limit, status, cursor, include)
        return await self._transport.request("GET", "/requests", params=params, idempotent=True)

    async def iter_requests(
        self, *, status: str | Iterable[str] | None = None, include: Iterable[str] = (), page_size: int = 200
    ) -> AsyncIterator[dict[str, Any]]:
        """Every job of the endpoint, newest first, page after page (jobs submitted meanwhile
        are not included; /requests' rate limit, 10 pages per 10 s, is waited out)."""
        cursor = None
        while True:
            page = await self.requests(limit=page_size, status=status, cursor=cursor, include=include)
            for entry in page["requests"]:
                yield entry
            cursor = page.get("cursor")
            if not page.get("hasMore") or not cursor:
                return

    @staticmethod
    def _body(input: Any, webhook: str | None, policy: Policy | Mapping[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {"input": input}
        if webhook is not None:
            body["webhook"] = webhook
        wire = _policy_wire(policy)
        if wire is not None:
            body["policy"] = wire
        return body

    # -- push ---------------------------------------------------------------------------------
    def follow(
        self, job_id: str, *, cursor: int = 0, chunks: bool = True
    ) -> AsyncIterator[tuple[str, Any, int]]:
        """Events of one job over SSE, reconnecting from the last cursor when dropped:
        ("update", status, cursor) on state/progress changes, ("chunk", data, cursor after
        it), and finally ("status", final status, cursor). Raises NoPush without SSE."""
        return follow_job(
            self._transport, job_id, read_timeout=self.sse_read_timeout, on_push=self._set_push,
            cursor=cursor, chunks=chunks,
        )  # fmt: skip

    def _set_push(self, offered: bool) -> None:
        self.push = offered


def _job_id(answer: Any) -> str:
    if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
        raise ServiceError(200, f"the service's answer has no job id: {answer!r}")
    return answer["id"]


class AsyncJobHandle:
    """One submitted job. `last_status` is the latest status seen (None until fetched)."""

    def __init__(self, endpoint: AsyncEndpoint, job_id: str, status: dict[str, Any] | None = None) -> None:
        self.endpoint = endpoint
        self.id = job_id
        self.last_status = status

    def __repr__(self) -> str:
        state = (self.last_status or {}).get("status", "?")
        return f"<AsyncJobHandle {self.id} {state}>"

    @property
    def _transport(self) -> ClientTransport:
        return self.endpoint._transport

    def _final(self) -> dict[str, Any] | None:
        if self.last_status is not None and is_terminal(self.last_status):
            return self.last_status
        return None

    async def status(self, wait: float | None = None) -> dict[str, Any]:
        """GET /status/{id}: the job's current status JSON. With `wait` (seconds), GET
        /status-sync/{id}: the service holds the answer until the job ends or `wait` passes."""
        if wait is not None:
            status = await status_sync(self._transport, self.id, wait)
            self.last_status = status
            return status
        status = await self._transport.request("GET", f"/status/{self.id}", idempotent=True)
        self.last_status = status
        return status

    async def cancel(self) -> dict[str, Any]:
        """POST /cancel/{id}: stop the job whether queued or running."""
        answer = await self._transport.request("POST", f"/cancel/{self.id}", idempotent=True)
        self.last_status = None
        return answer

    async def retry(self) -> dict[str, Any]:
        """POST /retry/{id}: requeue a FAILED or TIMED_OUT job under the same id."""
        answer = await self._transport.request("POST", f"/retry/{self.id}", idempotent=False)
        self.last_status = None
        return answer

    async def watch(self, *, timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """Status dicts as the job changes (state, progress), ending with the final one.

        Raises WaitTimeout when `timeout` seconds pass before the job ends.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        events = self._watch_events()
        seen = None
        try:
            while True:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    async with asyncio.timeout(remaining):
                        status = await anext(events)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise WaitTimeout(self.id, self.last_status, timeout or 0.0) from None
                self.last_status = status
                # A poll, or an SSE reconnect (which re-sends the current state), can repeat one.
                key = json.dumps([status.get("status"), status.get("output")], sort_keys=True, default=str)
                if key != seen:
                    seen = key
                    yield status
        finally:
            await events.aclose()

    async def _watch_events(self) -> AsyncIterator[dict[str, Any]]:
        final = self._final()
        if final is not None:
            yield final
            return
        if self.endpoint.push is not False:
            try:
                async for kind, data, _ in self.endpoint.follow(self.id, chunks=False):
                    if kind in ("update", "status"):
                        yield data
                return
            except NoPush:
                pass
        async for status in self._poll_status():
            yield status

    async def _poll_status(self) -> AsyncIterator[dict[str, Any]]:
        delay = 0.1
        while True:
            status = await self.status()
            yield status
            if is_terminal(status):
                return
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 1.5)

    async def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the job ends and return its final status (no exception for FAILED etc.)."""
        final = self.last_status
        async for status in self.watch(timeout=timeout):
            final = status
        assert final is not None
        return final

    async def output(self, timeout: float | None = None) -> Any:
        """Wait until the job ends; its output if COMPLETED, else JobFailed / JobTimedOut /
        JobCancelled carrying the service's error. WaitTimeout if `timeout` passes first."""
        return result_of(await self.wait(timeout=timeout))

    async def stream(
        self, *, cursor: int = 0, on_status: Callable[[dict[str, Any]], None] | None = None
    ) -> AsyncIterator[Any]:
        """The job's stream chunks from `cursor` on, as they are produced, consuming nothing.

        Ends when the job has ended and every chunk was delivered; then raises the typed
        JobError if the job did not complete. Resumes after a dropped connection.
        `on_status` is called with each status change seen on the way (push only).
        """
        if self.endpoint.push is not False:
            try:
                async for kind, data, position in self.endpoint.follow(self.id, cursor=cursor):
                    cursor = position  # where polling resumes should push go away mid-stream
                    if kind == "chunk":
                        yield data
                    else:
                        self.last_status = data
                        if on_status is not None:
                            on_status(data)
                final = self._final()
                if final is not None:
                    result_of(final)
                return
            except NoPush:
                pass
        async for chunk in self._poll_stream(cursor):
            yield chunk

    async def _poll_stream(self, cursor: int) -> AsyncIterator[Any]:
        delay = 0.05
        while True:
            answer = await self._transport.request(
                "GET", f"/stream/{self.id}", params={"cursor": str(cursor)}, idempotent=True
            )
            chunks = answer.get("stream") or []
            for item in chunks:
                cursor += 1
                yield item.get("output") if isinstance(item, dict) else item
            if isinstance(answer.get("cursor"), int):
                cursor = answer["cursor"]
            if answer.get("status") in TERMINAL_STATES and not chunks:
                try:
                    final = await self.status()
                except NotFound:
                    final = {"id": self.id, "status": answer["status"]}
                self.last_status = final
                result_of(final)
                return
            delay = 0.05 if chunks else min(1.0, delay * 1.5)
            await asyncio.sleep(delay)
