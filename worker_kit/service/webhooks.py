"""Webhook deliveries: POST a job's final status to the URL it was submitted with.

Deliveries come from the durable outbox in storage (storage/coordination.py): the row is
written in the same atomic step that ends the job, so a delivery survives a restart or a
replica's death. Each replica runs one `WebhookSender`, which takes due deliveries from the
outbox under a lease (so one replica at a time sends a given delivery), makes one POST per
take, and either removes the delivery (any 2xx, or out of attempts) or puts it back due
`interval_s` later (longer when the receiver answers 429/503 with Retry-After). A delivery
that runs out of attempts is logged at WARNING and counted as failed. With a secret, every
POST is signed (see worker_kit.client.signing; receivers call worker_kit.client.verify_webhook).
The delivery id header is the outbox row's id: the same on every attempt, from any replica.

Ending a job never waits for a receiver: `kick()` only wakes the sender's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp

from .. import __version__
from ..client.signing import ATTEMPT_HEADER, DELIVERY_HEADER, JOB_HEADER, SIGNATURE_HEADER, sign_webhook
from ..protocol import dumps_json
from ..storage.coordination import WebhookDelivery
from .webhook_guard import GuardedResolver, WebhookGuard

if TYPE_CHECKING:
    from ..storage.base import Storage
    from .config import ServiceConfig

log = logging.getLogger("worker_kit.service.webhooks")

#: One POST may take this long before it counts as a failed attempt.
REQUEST_TIMEOUT_S = 10.0
#: On close, POSTs in flight get this long to finish; one cut short stays in the outbox and is
#: sent again by another replica (or this one after its restart) once its lease runs out.
CLOSE_GRACE_S = 3.0
MAX_RETRY_AFTER_S = 300.0
#: A taken delivery is this replica's for this long; it is longer than a POST may take, so
#: no other replica sends it meanwhile unless this one died.
TAKE_LEASE_MS = int(3 * REQUEST_TIMEOUT_S * 1000)
#: POSTs in flight at most per replica.
MAX_IN_FLIGHT = 64
#: The outbox is looked at this often without a kick: a retry coming due, a delivery left by a
#: replica that died. An ending in this replica kicks the loop at once.
POLL_S = 1.0


class WebhookSender:
    """Delivers the outbox's webhooks; one per service replica."""

    def __init__(
        self, storage: Storage, config: ServiceConfig, *, close_grace_s: float = CLOSE_GRACE_S,
        poll_s: float = POLL_S,
    ) -> None:  # fmt: skip
        self.storage = storage
        self.config = config
        self.close_grace_s = close_grace_s
        self.poll_s = poll_s
        self._session: aiohttp.ClientSession | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._delivered = 0
        self._failed = 0
        self._settling = 0  # deliveries between leaving the outbox and being counted
        self.guard = WebhookGuard(config.webhook_allow)

    async def start(self) -> None:
        # Every connection goes through the guard's resolver, so a name cannot resolve to a
        # refused address between the check in _attempt and the POST (webhook_guard.py).
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=GuardedResolver(self.guard)),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            headers={"User-Agent": f"worker-kit-webhooks/{__version__}"},
        )
        self._loop_task = asyncio.create_task(self._run(), name="worker-kit-webhooks")

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        pending = list(self._in_flight)
        if pending:
            _, still = await asyncio.wait(pending, timeout=self.close_grace_s)
            for task in still:
                task.cancel()
            if still:
                await asyncio.gather(*still, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def kick(self) -> None:
        """A job with a webhook just ended here: look at the outbox now."""
        self._wake.set()

    async def stats(self) -> dict[str, int]:
        """Deliveries this replica made and gave up on; `pending` is the shared outbox's size."""
        # A delivery leaves the outbox, then is counted: one that settles while the outbox's size
        # is read would show in both, or in neither. So the read counts only when no delivery
        # was settling and the counts did not move meanwhile (a few tries, then as it is).
        for _ in range(5):
            before = (self._delivered, self._failed, self._settling)
            pending = await self.storage.webhooks_pending()
            if before[2] == 0 and before == (self._delivered, self._failed, self._settling):
                break
            await asyncio.sleep(0.005)
        return {"delivered": self._delivered, "failed": self._failed, "pending": pending}

    async def _settle(self, delivery: WebhookDelivery, delivered: bool) -> None:
        """Take the delivery out of the outbox, then count it (`stats` reads around this)."""
        self._settling += 1
        try:
            await self.storage.webhook_done(delivery.id)
            if delivered:
                self._delivered += 1
            else:
                self._failed += 1
        finally:
            self._settling -= 1

    # -- the loop ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        delay = self.poll_s
        while True:
            try:
                room = MAX_IN_FLIGHT - len(self._in_flight)
                taken = await self.storage.take_webhooks(room, TAKE_LEASE_MS) if room > 0 else []
                for delivery in taken:
                    task = asyncio.create_task(self._attempt(delivery), name=f"webhook-{delivery.job_id}")
                    self._in_flight.add(task)
                    task.add_done_callback(self._finished)
                delay = self.poll_s
                if len(taken) == room > 0:
                    continue  # more may be due
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is down: keep the loop, try again later
                log.warning("cannot read the webhook outbox (%s); retrying in %.0fs", exc, delay)
                delay = min(delay * 2, 30.0)
            self._wake.clear()
            await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Most likely the store was unreachable while recording the outcome: the delivery
            # stays in the outbox and is taken again once its lease runs out.
            log.warning("webhook delivery step failed; it will be retried: %r", task.exception())
        if len(self._in_flight) == MAX_IN_FLIGHT - 1:
            self._wake.set()  # room again

    # -- one attempt -------------------------------------------------------------------------------
    async def _attempt(self, delivery: WebhookDelivery) -> None:
        cfg = self.config.endpoint(delivery.endpoint) or self.config.default
        attempts = max(1, cfg.webhook_attempts)
        what = f"webhook for job {delivery.job_id} to {delivery.url}"
        body = delivery.body if delivery.body is not None else await self._render(delivery)
        problem = _check_url(delivery.url) if body is not None else "the job's record is gone or was retried"
        if problem is None:
            problem = await self._destination_refusal(delivery.url)
        if problem is not None or body is None:
            await self._settle(delivery, delivered=False)
            log.warning("%s not sent: %s", what, problem)
            return
        attempt = delivery.attempts + 1
        ok, problem, retry_after = await self._post(delivery, body, attempt, cfg.webhook_secret)
        if ok:
            await self._settle(delivery, delivered=True)
            log.info("%s delivered (attempt %d)", what, attempt)
        elif attempt >= attempts:
            await self._settle(delivery, delivered=False)
            log.warning("%s failed after %d attempts: %s", what, attempts, problem)
        else:
            wait = max(max(0.0, cfg.webhook_interval_s), retry_after)
            log.info("%s %s (attempt %d of %d); retrying in %.1fs", what, problem, attempt, attempts, wait)
            delay_ms = int(wait * 1000)
            await self.storage.webhook_later(delivery.id, attempts=attempt, delay_ms=delay_ms, body=body)

    async def _destination_refusal(self, url: str) -> str | None:
        parts = urlsplit(url)
        assert parts.hostname is not None
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            return f"invalid URL: {exc}"
        why = await self.guard.refusal(parts.hostname, port)
        return None if why is None else f"refused: {why}"

    async def _render(self, delivery: WebhookDelivery) -> bytes | None:
        job = await self.storage.get(delivery.endpoint, delivery.job_id)
        if job is None or job.retries != delivery.retries or not job.state.is_terminal:
            return None
        return dumps_json(job.to_status()).encode()

    async def _post(
        self, delivery: WebhookDelivery, body: bytes, attempt: int, secret: str | None
    ) -> tuple[bool, str, float]:
        """(delivered, what went wrong, the receiver's Retry-After in seconds)."""
        headers = {
            "Content-Type": "application/json",
            DELIVERY_HEADER: delivery.id,
            JOB_HEADER: delivery.job_id,
            ATTEMPT_HEADER: str(attempt),
        }
        if secret:
            headers[SIGNATURE_HEADER] = sign_webhook(secret, body)
        assert self._session is not None
        try:
            post = self._session.post(delivery.url, data=body, headers=headers, allow_redirects=False)
            async with post as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return True, "", 0.0
                return False, f"answered HTTP {resp.status}", _retry_after(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return False, (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__), 0.0


def _check_url(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"invalid URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "the URL must be absolute http:// or https://"
    return None


def _retry_after(value: str | None) -> float:
    if value is None:
        return 0.0
    with contextlib.suppress(ValueError):
        return max(0.0, min(float(value), MAX_RETRY_AFTER_S))
    return 0.0
