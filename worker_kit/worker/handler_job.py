"""The `Job` a handler receives, and `JobInterrupted`, raised inside a handler that must stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..protocol import pack


class JobInterrupted(BaseException):
    """Raised inside a handler that was cancelled, timed out, or stopped by a shutdown.

    A BaseException so that a handler's `except Exception:` does not swallow it.
    """


class Job:
    """What a handler receives: `job.id`, `job.input`, `job.progress(value)`,
    `job.cancelled` / `job.check_cancelled()`, `job.openai_route` / `job.openai_input` for
    requests made through /openai/*; `job["input"]` and `job["id"]` also work, as in the
    hosted service's SDK."""

    __slots__ = ("_progress", "_stopped", "attempt", "id", "input", "policy", "webhook")

    def __init__(
        self,
        id: str,
        input: Any,
        *,
        attempt: int = 1,
        policy: dict[str, Any] | None = None,
        webhook: str | None = None,
    ) -> None:
        self.id = id
        self.input = input
        self.attempt = attempt
        self.policy = policy or {}
        self.webhook = webhook
        # A plain flag (set on the loop, read by the handler's thread): a threading.Event per
        # job cost more than a no-op job's whole run, and nothing waits on it.
        self._stopped = False
        self._progress: Callable[[Any], None] | None = None

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled, timed out or must stop for a shutdown."""
        return self._stopped

    def check_cancelled(self) -> None:
        """Raise JobInterrupted if the job must stop; call it between steps of long work."""
        if self._stopped:
            raise JobInterrupted(f"job {self.id} was stopped")

    @property
    def openai_route(self) -> str | None:
        """The OpenAI path (e.g. "/v1/chat/completions") of a request made through the service's
        /openai/* routes; None for an ordinary job."""
        value = self.input.get("openai_route") if isinstance(self.input, dict) else None
        return value if isinstance(value, str) else None

    @property
    def openai_input(self) -> dict[str, Any] | None:
        """The JSON body of an /openai/* request (None for a GET such as /v1/models, and for an
        ordinary job)."""
        if self.openai_route is None:
            return None
        value = self.input.get("openai_input")
        return value if isinstance(value, dict) else None

    def progress(self, value: Any) -> None:
        """Publish a progress update (shown as `output` by /status while the job runs).

        Safe from any thread; ordered with streamed chunks. Raises TypeError if `value`
        cannot be serialised.
        """
        packed = pack(value)
        if self._progress is not None:
            self._progress(packed)

    def _interrupt(self) -> None:
        self._stopped = True

    def _as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "input": self.input, "attempt": self.attempt, "policy": self.policy,
                "webhook": self.webhook}

    def __getitem__(self, key: str) -> Any:
        try:
            return self._as_dict()[key]
        except KeyError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return self._as_dict().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._as_dict()

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, attempt={self.attempt})"
