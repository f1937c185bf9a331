"""How a worker talks to its queue service: the native protocol of docs/protocol.md.

`Transport` is what the worker loop needs from a service; `NativeTransport` speaks
worker_kit's own HTTP+msgpack protocol. Another protocol (the hosted service's) would be a
second `Transport` subclass. What is sent for one job, and the retries, live in
worker_kit/worker/reporting.py.

Requests go through the worker's own HTTP client (worker_kit/worker/http_client.py), imported when
a transport opens: no aiohttp on a worker's path (cold start).
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from .. import protocol
from ..errors import ServiceError, ServiceUnavailable
from ..protocol import (
    ClaimAnswer,
    ClaimedJob,
    ClaimRequest,
    ExchangeRequest,
    Final,
    FinishReport,
    HeartbeatAnswer,
    HeartbeatRequest,
    OutputAnswer,
    OutputRequest,
    ReleaseRequest,
    entry_refusal,
    pack_item,
    refusal,
)
from .outbox import GATHER_TURNS, FinishOutbox, Report, fail

if TYPE_CHECKING:
    from .http_client import HttpClient

# The messages live in worker_kit.protocol; the runtime's modules import them from here.
__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_ITEMS", "ClaimedJob", "Final", "Link", "NativeTransport",
           "Transport", "pack_item", "refusal"]  # fmt: skip

log = logging.getLogger("worker_kit.worker")
_T = TypeVar("_T")

#: Most bytes of output items in one request: the service takes output and finish bodies up to
#: its result limit + 4 MB, so items stay under 4 MB whatever an endpoint's result limit is.
MAX_BATCH_BYTES = 3 * 1024 * 1024
MAX_BATCH_ITEMS = 5000
class Link:
    """Logs one line when the service goes away and one when it is back, not one per attempt."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.down_since: float | None = None

    def ok(self) -> None:
        if self.down_since is not None:
            down_s = time.monotonic() - self.down_since
            log.info("service at %s reachable again after %.1f s", self.url, down_s)
            self.down_since = None

    def failed(self, reason: str) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("service at %s unreachable (%s); retrying with backoff", self.url, reason)


class Transport(ABC):
    """The worker side of a queue service. Errors are raised as worker_kit.errors types:
    ServiceUnavailable (retry later), RateLimited, StaleLease, SequenceGap,
    PayloadTooLarge, AuthError, ServiceError."""

    worker_id: str

    @property
    def max_claims(self) -> int:
        """How many claims a worker may keep in flight at once (loop.py). 1 unless a transport
        can tell a claim that holds a long-poll from one that does not (`holding`): two claims
        both holding on an empty queue would double the service's idle load."""
        return 1

    @property
    def holding(self) -> bool:
        """Whether one of this transport's claims holds a long-poll now (or may: True when unknown)."""
        return True

    async def open(self) -> None:  # noqa: B027 - optional hook
        pass

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    async def claim(
        self, max_jobs: int, wait_ms: int, *, concurrency: int, running: int
    ) -> tuple[list[ClaimedJob], int | None]:
        """Long-poll for up to `max_jobs` jobs: (jobs, lease_ms)."""

    @abstractmethod
    async def heartbeat(
        self, leases: dict[str, str], wait_ms: int, *, concurrency: int, running: int
    ) -> tuple[list[tuple[str, str]], int | None]:
        """Renew leases; returns ([(job_id, stop_reason)], lease_ms)."""

    @abstractmethod
    async def output(self, job_id: str, token: str, items: list[bytes]) -> int:
        """Send packed output items (see `pack_item`); returns the service's next_seq."""

    @abstractmethod
    async def finish(self, job_id: str, token: str, final: Final, items: list[bytes]) -> None:
        """End the job, after applying the trailing packed output `items`."""

    @abstractmethod
    async def release(self, job_id: str, token: str) -> None:
        """Hand the job back to the queue."""


class NativeTransport(Transport):
    _holds = 0  # claims holding a long-poll now
    _answered = False  # the service has answered an exchange: it speaks protocol 2

    def __init__(self, url: str, *, worker_id: str, api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.worker_id = worker_id
        self._headers = {"Content-Type": protocol.MSGPACK, "Accept": protocol.MSGPACK}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self.link = Link(self.url)
        self._http: HttpClient | None = None
        self._outbox = FinishOutbox(self._send_reports)
        self._legacy = False  # the service speaks protocol 1 only (no /worker/exchange)

    async def open(self) -> None:
        from .http_client import HttpClient

        self._http = HttpClient(self._headers)

    async def close(self) -> None:
        self._outbox.close(ServiceUnavailable("the worker's transport closed"))
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _post(self, path: str, body: bytes, timeout_s: float) -> Any:
        if self._http is None:
            raise ServiceUnavailable("the worker's transport is not open")
        try:
            resp = await self._http.request("POST", self.url + path, body, timeout_s)
        except (OSError, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
            self.link.failed(reason)
            raise ServiceUnavailable(reason) from None
        status, raw = resp.status, resp.body
        if status >= 500:
            self.link.failed(f"HTTP {status}")
            raise ServiceUnavailable(f"HTTP {status} from {path}")
        if self.link.down_since is not None:
            self.link.ok()
        try:
            payload = protocol.decode(raw, resp.content_type) if raw else {}
        except ValueError:
            payload = {"error": raw[:200].decode("utf-8", "replace")}
        if status == 200:
            if not isinstance(payload, dict):
                raise ServiceError(status, f"{path} answered {type(payload).__name__}, not an object")
            return payload
        raise refusal(status, payload, resp.headers.get("retry-after"))

    @property
    def max_claims(self) -> int:
        # Protocol 1 has no request that both finishes and claims: its claims hold whenever
        # the queue is empty, so a worker keeps one in flight, as it always did. Until the
        # first exchange is answered the protocol is unknown: one claim finds out.
        return 2 if self._answered and not self._legacy else 1

    @property
    def holding(self) -> bool:
        return self._holds > 0

    async def claim(
        self, max_jobs: int, wait_ms: int, *, concurrency: int, running: int
    ) -> tuple[list[ClaimedJob], int | None]:
        if self._legacy:
            answer = await self._held(self._claim_v1(max_jobs, wait_ms, concurrency), wait_ms)
            return answer.jobs, answer.lease_ms
        with self._outbox.claiming() as claiming:
            for _ in range(GATHER_TURNS):
                if self._outbox.queued:
                    break
                await asyncio.sleep(0)  # a job that just freed this slot queues its finish now
            batch = self._outbox.take()
            hold = 0 if batch else wait_ms  # the service never holds a request that carries finishes
            if not hold:
                answer = await self._exchange(batch, max_jobs, hold, concurrency)
            else:
                claiming.hold()
                answer = await self._held(self._exchange(batch, max_jobs, hold, concurrency), hold)
        if answer is None:  # the service speaks protocol 1 only
            answer = await self._held(self._claim_v1(max_jobs, wait_ms, concurrency), wait_ms)
        return answer.jobs, answer.lease_ms

    async def _held(self, request: Awaitable[_T], wait_ms: int) -> _T:
        """`request`, counted in `holding` while it may hold a long-poll (`wait_ms` > 0)."""
        if wait_ms <= 0:
            return await request
        self._holds += 1
        try:
            return await request
        finally:
            self._holds -= 1

    async def _claim_v1(self, max_jobs: int, wait_ms: int, concurrency: int) -> ClaimAnswer:
        body = ClaimRequest(self.worker_id, max_jobs, wait_ms, concurrency).pack()
        return ClaimAnswer.decode(await self._post(protocol.WORKER_CLAIM, body, wait_ms / 1000 + 10))

    async def _exchange(
        self, batch: list[Report], max_jobs: int, wait_ms: int, concurrency: int | None
    ) -> ClaimAnswer | None:
        """One /worker/exchange: deliver `batch` (answering each report's future) and claim.

        Returns the answer, or None when the service has no such route (protocol 1): the
        batch is then delivered by the protocol-1 finish route, and the worker keeps to it."""
        body = ExchangeRequest(self.worker_id, [r.body for r in batch], max_jobs, wait_ms, concurrency).pack()
        timeout_s = wait_ms / 1000 + 10 if not batch else 300
        try:
            reply = await self._post(protocol.WORKER_EXCHANGE, body, timeout_s)
        except ServiceError as exc:
            if exc.status not in (404, 405) or self._legacy:
                fail(batch, exc)
                raise
            log.info("the service at %s speaks worker protocol 1 (no %s); using claim and finish",
                     self.url, protocol.WORKER_EXCHANGE)
            self._legacy = True
            await asyncio.gather(*(self._finish_v1(r) for r in batch))
            return None
        except BaseException as exc:
            fail(batch, exc if isinstance(exc, Exception) else ServiceUnavailable("request interrupted"))
            raise
        answers = ClaimAnswer.decode(reply)
        self._answered = True
        for report, answer in zip(batch, answers.finished, strict=False):
            if report.future.done():
                continue
            refused = entry_refusal(answer)
            if refused is not None:
                report.future.set_exception(refused)
            else:
                report.future.set_result(None)
        if len(answers.finished) < len(batch):
            fail(batch, ServiceError(200, "the service answered no result for this finish"))
        return answers

    async def _finish_v1(self, report: Report) -> None:
        try:
            await self._post(protocol.WORKER_FINISH.format(job_id=report.job_id), report.body, 300)
        except Exception as exc:
            fail([report], exc)
        else:
            if not report.future.done():
                report.future.set_result(None)

    async def heartbeat(
        self, leases: dict[str, str], wait_ms: int, *, concurrency: int, running: int
    ) -> tuple[list[tuple[str, str]], int | None]:
        body = HeartbeatRequest(self.worker_id, leases, wait_ms, concurrency, running).pack()
        reply = await self._post(protocol.WORKER_HEARTBEAT, body, wait_ms / 1000 + 10)
        stops, lease_ms = HeartbeatAnswer.decode(reply)
        return [(s.job_id, s.reason) for s in stops], lease_ms

    async def output(self, job_id: str, token: str, items: list[bytes]) -> int:
        body = OutputRequest(token, items).pack()
        reply = await self._post(protocol.WORKER_OUTPUT.format(job_id=job_id), body, 120)
        return OutputAnswer.decode(reply)

    async def finish(self, job_id: str, token: str, final: Final, items: list[bytes]) -> None:
        body = FinishReport(token, final, items, id=job_id).pack()
        if self._legacy:
            report = Report(job_id, body, asyncio.get_running_loop().create_future())
            await self._finish_v1(report)
            return await report.future
        # Queued: it rides with the next claim, or goes with other finishes on its own.
        await self._outbox.put(job_id, body)

    async def _send_reports(self, batch: list[Report]) -> None:
        if self._legacy:
            await asyncio.gather(*(self._finish_v1(r) for r in batch))
        else:
            await self._exchange(batch, 0, 0, None)

    async def release(self, job_id: str, token: str) -> None:
        body = ReleaseRequest(token).pack()
        await self._post(protocol.WORKER_RELEASE.format(job_id=job_id), body, 30)

