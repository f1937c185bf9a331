"""The worker wire's refusals, both ways: `ApiError` is any answer other than 2xx,
`{"error": reason, **fields}`, as the service raises it; `refusal` is what a worker makes of one.

The service's error middleware renders an ApiError (service/app.py); message decoders in this
package raise it, so a bad body gets the same 400 with the same reason on every route.
"""

from __future__ import annotations

from typing import Any

from ..errors import JobNotFound, SequenceGap, ServiceUnavailable, StaleLease, error_for_status
from ..job import MAX_CHUNK_BYTES
from ..retrying import retry_after_seconds

#: Longest Retry-After the worker honours: a longer one is a misconfigured proxy, not a plan.
MAX_RETRY_AFTER_S = 300.0


class ApiError(Exception):
    """An answer other than 2xx: `{"error": message, **fields}` with `status`."""

    def __init__(
        self, http_status: int, message: str, *, headers: dict[str, str] | None = None, **fields: Any
    ) -> None:
        super().__init__(message)
        self.status = http_status
        self.message = message
        self.headers = headers or {}
        self.fields = fields

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.fields}

    def entry(self, job_id: Any) -> dict[str, Any]:
        """This refusal as one finish's answer in an exchange: `{"id", "code", "error", ...}`."""
        return {"id": job_id, "code": self.status, **self.body()}


def stale(job_id: str, reason: StaleLease | JobNotFound | str, state: str | None = None) -> ApiError:
    """The 409 of a report that no longer counts, `{"error", "state", "stale": true}`: the job is
    gone, its token is not current, or it ended another way. The worker drops the job."""
    if isinstance(reason, JobNotFound):
        reason, state = f"job {job_id} no longer exists (purged or past its retention); drop it", None
    elif isinstance(reason, StaleLease):
        reason, state = str(reason) or f"the lease token of job {job_id} is not current", reason.state
    return ApiError(409, reason, state=state, stale=True)


def check_chunk(size: int, seq: int | None = None) -> None:
    """Refuse (413) a stream chunk whose packed payload is over the 1 MB cap: the one check of
    the cap, for the native and the hosted routes."""
    if size > MAX_CHUNK_BYTES:
        which = "" if seq is None else f" seq {seq}"
        raise ApiError(
            413,
            f"stream chunk{which} is {size} bytes, over the limit of {MAX_CHUNK_BYTES}; "
            "split it into smaller chunks",
            limit=MAX_CHUNK_BYTES,
        )


def entry_refusal(answer: Any) -> Exception | None:
    """The exception of one finish's answer in an exchange (`ApiError.entry`); None when it was applied."""
    code = answer.get("code") if isinstance(answer, dict) else None
    return refusal(code, answer, None) if isinstance(code, int) and code != 200 else None


def refusal(status: int, payload: Any, retry_after: str | None) -> Exception:
    """The worker_kit.errors exception for a non-2xx answer (or a refused report in an exchange)."""
    body_info = payload if isinstance(payload, dict) else {}
    message = str(body_info.get("error") or f"HTTP {status}")
    if status >= 500:
        return ServiceUnavailable(f"HTTP {status}: {message}")
    if status == 409 and body_info.get("stale"):
        return StaleLease(message, state=body_info.get("state"))
    if status == 409 and isinstance(body_info.get("expected"), int):
        return SequenceGap(message, expected=body_info["expected"])
    return error_for_status(
        status, message, payload, retry_after=retry_after_seconds(retry_after, MAX_RETRY_AFTER_S)
    )
