"""Webhook deliveries: POST a job's final status to the URL it was submitted with.

Deliveries run as background tasks on the service's loop, so ending a job never waits for
a receiver. Each delivery makes up to `attempts` POSTs, `interval_s` apart (longer when the
receiver answers 429/503 with Retry-After); any 2xx counts as delivered. A delivery that
runs out of attempts is logged at WARNING and counted as failed. With a secret, every POST
is signed (see worker_kit.client.signing; receivers call worker_kit.client.verify_webhook).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .. import __version__
from ..client.signing import ATTEMPT_HEADER, DELIVERY_HEADER, JOB_HEADER, SIGNATURE_HEADER, sign_webhook
from ..protocol import dumps_json

log = logging.getLogger("worker_kit.service.webhooks")

#: One POST may take this long before it counts as a failed attempt.
REQUEST_TIMEOUT_S = 10.0
#: On close, pending deliveries get this long to finish before they are abandoned.
CLOSE_GRACE_S = 3.0
MAX_RETRY_AFTER_S = 300.0
#: Bodies of pending deliveries held at most; beyond it a new delivery is refused (logged and
#: counted failed), so receivers that are down cannot make a busy service run out of memory.
MAX_PENDING_BYTES = 256 * 1024 * 1024


class WebhookSender:
    """Schedules and performs webhook deliveries; one per service app."""

    def __init__(
        self, *, close_grace_s: float = CLOSE_GRACE_S, max_pending_bytes: int = MAX_PENDING_BYTES
    ) -> None:
        self.close_grace_s = close_grace_s
        self.max_pending_bytes = max_pending_bytes
        self._pending_bytes = 0
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._delivered = 0
        self._failed = 0

    async def start(self) -> None:
        self._ensure_session()

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
                headers={"User-Agent": f"worker-kit-webhooks/{__version__}"},
            )
        return self._session

    async def close(self) -> None:
        self._closed = True
        pending = list(self._tasks)
        if pending:
            _, still = await asyncio.wait(pending, timeout=self.close_grace_s)
            for task in still:
                task.cancel()
            if still:
                await asyncio.gather(*still, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def stats(self) -> dict[str, int]:
        return {"delivered": self._delivered, "failed": self._failed, "pending": len(self._tasks)}

    def job_ended(
        self,
        status: dict[str, Any],
        url: str,
        *,
        secret: str | None,
        attempts: int = 3,
        interval_s: float = 10.0,
    ) -> None:
        """Schedule the delivery of `status` to `url`; returns at once."""
        job_id = str(status.get("id"))
        problem = _check_url(url)
        if problem is None and self._closed:
            problem = "the service is shutting down"
        if problem is not None:
            self._failed += 1
            log.warning("webhook for job %s to %s not sent: %s", job_id, url, problem)
            return
        body = dumps_json(status).encode()
        if self._tasks and self._pending_bytes + len(body) > self.max_pending_bytes:
            self._failed += 1
            log.warning(
                "webhook for job %s to %s not sent: %d deliveries (%d MB) already pending; "
                "are the receivers down or slow?", job_id, url, len(self._tasks), self._pending_bytes >> 20,
            )
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._failed += 1
            log.warning("webhook for job %s to %s not sent: no running event loop", job_id, url)
            return
        task = loop.create_task(
            self._deliver(job_id, url, body, secret, max(1, attempts), max(0.0, interval_s)),
            name=f"webhook-{job_id}",
        )
        self._tasks.add(task)
        self._pending_bytes += len(body)

        def done(task: asyncio.Task[None], size: int = len(body)) -> None:
            self._tasks.discard(task)
            self._pending_bytes -= size

        task.add_done_callback(done)

    async def _deliver(
        self, job_id: str, url: str, body: bytes, secret: str | None, attempts: int, interval_s: float
    ) -> None:
        delivery = uuid.uuid4().hex  # the same on every attempt, so receivers can drop repeats
        problem = "no attempt made"
        try:
            for attempt in range(1, attempts + 1):
                headers = {
                    "Content-Type": "application/json",
                    DELIVERY_HEADER: delivery,
                    JOB_HEADER: job_id,
                    ATTEMPT_HEADER: str(attempt),
                }
                if secret:
                    headers[SIGNATURE_HEADER] = sign_webhook(secret, body)
                wait = interval_s
                try:
                    async with self._ensure_session().post(
                        url, data=body, headers=headers, allow_redirects=False
                    ) as resp:
                        await resp.read()
                        if 200 <= resp.status < 300:
                            self._delivered += 1
                            log.info("webhook for job %s delivered to %s (attempt %d)", job_id, url, attempt)
                            return
                        problem = f"answered HTTP {resp.status}"
                        wait = max(wait, _retry_after(resp.headers.get("Retry-After")))
                except (aiohttp.ClientError, TimeoutError) as exc:
                    problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if attempt < attempts:
                    log.info(
                        "webhook for job %s to %s %s (attempt %d of %d); retrying in %.1fs",
                        job_id, url, problem, attempt, attempts, wait,
                    )
                    await asyncio.sleep(wait)
            self._failed += 1
            log.warning(
                "webhook for job %s to %s failed after %d attempts: %s", job_id, url, attempts, problem
            )
        except asyncio.CancelledError:
            self._failed += 1
            log.warning("webhook for job %s to %s abandoned at shutdown (last: %s)", job_id, url, problem)
            raise


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
