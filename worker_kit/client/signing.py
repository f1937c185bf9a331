"""Webhook signatures: the service signs each delivery, receivers verify it.

Header `X-Worker-Kit-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`.
The timestamp is inside the signed text so a captured delivery cannot be replayed later
than `tolerance_s`; the raw body bytes are signed, so verify before parsing the JSON.
This module uses only the standard library, so a receiver without worker_kit can copy it as is.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

SIGNATURE_HEADER = "X-Worker-Kit-Signature"
DELIVERY_HEADER = "X-Worker-Kit-Delivery"
JOB_HEADER = "X-Worker-Kit-Job-Id"
ATTEMPT_HEADER = "X-Worker-Kit-Attempt"
DEFAULT_TOLERANCE_S = 300.0


def _digest(secret: str | bytes, timestamp: str, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def sign_webhook(secret: str | bytes, body: bytes, timestamp: int | None = None) -> str:
    """The value of the signature header for `body`, signed at `timestamp` (default: now)."""
    ts = str(int(time.time()) if timestamp is None else int(timestamp))
    return f"t={ts},v1={_digest(secret, ts, body)}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Frameworks differ in header casing (aiohttp's CIMultiDict, WSGI's HTTP_X_..., plain dicts).
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    wsgi = "HTTP_" + name.upper().replace("-", "_")
    for key, val in headers.items():
        if key.lower() == lowered or key == wsgi:
            return val
    return None


def verify_webhook(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True when `body` carries a valid signature by `secret`, made within `tolerance_s`.

    `headers` is the request's header mapping; `body` the raw request body, unparsed.
    """
    value = _header(headers, SIGNATURE_HEADER)
    if not value:
        return False
    parts: dict[str, list[str]] = {}
    for item in value.split(","):
        key, sep, val = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(val)
    timestamps = parts.get("t")
    if not timestamps or not timestamps[0].isdigit():
        return False
    ts = timestamps[0]
    current = time.time() if now is None else now
    if abs(current - int(ts)) > tolerance_s:
        return False
    raw = body.encode() if isinstance(body, str) else bytes(body)
    expected = _digest(secret, ts, raw)
    return any(hmac.compare_digest(expected, sig) for sig in parts.get("v1", ()))
