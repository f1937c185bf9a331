"""HTTP plumbing of the client: one aiohttp session, typed errors, retries with backoff.

What may be retried is decided per request by the caller (`idempotent`):
- a refused connection never reached the service, so any request may be sent again;
- 429 means the service turned the request away before acting on it, so any request may be
  sent again after Retry-After;
- a 5xx, a timeout or a connection dropped mid-request may have had its effect, so only
  requests safe to repeat (status, cursor stream reads, health, cancel) are retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .. import __version__
from ..errors import ConfigError, RateLimited, ServiceError, ServiceUnavailable, error_for_status
from ..protocol import dumps_json
from ..retrying import Backoff, retry_after_seconds

log = logging.getLogger("worker_kit.client")

USER_AGENT = f"worker-kit-client/{__version__}"
_V2_URL = re.compile(r"^(?P<root>.*?)/v2/(?P<endpoint>[^/?#]+)$")
#: Connections one endpoint object may hold open at once.
MAX_CONNECTIONS = 1000
#: Longest Retry-After honoured, so a misbehaving proxy cannot park a client for hours.
MAX_RETRY_AFTER_S = 60.0


def split_endpoint_url(base_url: str, endpoint_id: str | None) -> tuple[str, str]:
    """(service root, endpoint id) from a base URL and an optional endpoint id.

    Accepts "http://host:port" with an endpoint id, "http://host:port/v2" with one, or a
    full "http://host:port/v2/<id>" with the id omitted (or equal).
    """
    url = (base_url or "").strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the service URL must start with http:// or https://, got {base_url!r}")
    try:  # refused here, so a typo reads as a bad URL and not as an unreachable service
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError("no host")
        parts.port  # noqa: B018 - raises ValueError when out of range
    except ValueError as exc:
        raise ConfigError(f"invalid service URL {base_url!r}: {exc}") from None
    match = _V2_URL.match(url)
    if match:
        if endpoint_id is not None and endpoint_id != match["endpoint"]:
            raise ConfigError(
                f"the URL names endpoint {match['endpoint']!r} but endpoint_id is {endpoint_id!r}"
            )
        return match["root"], match["endpoint"]
    if endpoint_id is None:
        raise ConfigError(
            f"no endpoint id: pass endpoint_id, or a URL ending in /v2/<endpoint_id> (got {base_url!r})"
        )
    if not endpoint_id or "/" in endpoint_id:
        raise ConfigError(f"invalid endpoint id {endpoint_id!r}")
    if url.endswith("/v2"):
        url = url[: -len("/v2")]
    return url, endpoint_id


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> ServiceError:
    """The typed exception for an HTTP error answer, carrying the service's reason."""
    parsed: Any = None
    try:
        parsed = json.loads(body) if body else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        message = parsed["error"]
    else:
        text = body[:200].decode("utf-8", errors="replace").strip()
        message = text or f"HTTP {status}"
    retry_after = retry_after_seconds(headers.get("Retry-After"), MAX_RETRY_AFTER_S)
    return error_for_status(status, message, parsed, retry_after=retry_after)


class ClientTransport:
    """Requests to one endpoint's base URL through one lazily created aiohttp session."""

    def __init__(
        self,
        endpoint_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        backoff_cap: float = 5.0,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.timeout = timeout
        self.retries = retries
        self.backoff_cap = backoff_cap
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        api_key = (api_key or "").strip()  # a key read from a file often ends in a newline
        if any(ord(c) < 32 or ord(c) == 127 for c in api_key):
            raise ConfigError("the API key holds a control character (a newline?); pass the key alone")
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this endpoint client is closed")
        if self._session is None:
            # Created on first use, inside the event loop that will run the requests. Push
            # waits hold a connection each for as long as they wait, so aiohttp's default pool
            # of 100 would make the 101st concurrent wait (and every plain request after it)
            # queue behind them.
            connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS)
            self._session = aiohttp.ClientSession(headers=self._headers, connector=connector)
        return self._session

    def mark_closed(self) -> None:
        self._closed = True

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path: str) -> str:
        return self.endpoint_url + path

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        idempotent: bool,
        timeout: float | None = None,
    ) -> Any:
        """Send a request and return its decoded JSON answer, or raise a typed error."""
        data = dumps_json(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else None
        client_timeout = aiohttp.ClientTimeout(total=timeout or self.timeout)
        backoff = Backoff(cap=self.backoff_cap)
        tries = 0
        while True:
            tries += 1
            error: Exception
            retry_after: float | None = None
            try:
                async with self.session.request(
                    method, self.url(path), data=data, params=params, headers=headers, timeout=client_timeout
                ) as resp:
                    raw = await resp.read()
                    if resp.status < 400:
                        return _decode_ok(resp.status, raw)
                    error = error_from_response(resp.status, raw, resp.headers)
                    if isinstance(error, RateLimited):
                        retry_after, may_retry = error.retry_after, True
                    else:
                        may_retry = resp.status >= 500 and idempotent
            except aiohttp.ClientConnectorError as exc:
                error = ServiceUnavailable(f"cannot reach the service at {self.endpoint_url}: {_reason(exc)}")
                may_retry = True  # nothing was sent
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = ServiceUnavailable(f"request to {self.url(path)} failed: {_reason(exc)}")
                may_retry = idempotent
            if not may_retry or tries > self.retries:
                raise error
            delay = retry_after if retry_after is not None else backoff.next_delay()
            # A rate-limit wait can last a minute: say so (the CLI shows INFO), so it is no silent hang.
            level = logging.INFO if isinstance(error, RateLimited) else logging.DEBUG
            log.log(level, "%s %s: %s; retrying in %.1fs", method, path, error, delay)
            await asyncio.sleep(delay)


def _decode_ok(status: int, raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        snippet = raw[:200].decode("utf-8", errors="replace")
        raise ServiceError(status, f"the service answered something other than JSON: {snippet!r}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return str(exc.os_error.strerror or exc.os_error) if exc.os_error else str(exc)
    return str(exc) or type(exc).__name__
