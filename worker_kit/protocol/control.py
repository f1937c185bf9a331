"""The control channel: `POST /worker/heartbeat` renews a worker's leases and answers the stops
(`StopSignal`) of its jobs that were cancelled, timed out or lost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .codecs import pack
from .constants import MAX_POLL_MS, MAX_SLOTS, STOP_REASONS
from .fields import Int, Message, Out, Text, object_schema
from .refusals import ApiError


@dataclass(slots=True)
class StopSignal:
    """A job the worker must abandon, and why."""

    job_id: str
    reason: str  # protocol.STOP_CANCELLED | STOP_TIMED_OUT | STOP_LOST
    #: The token the stop is about (protocol 2): the one the worker listed for the job.
    token: str | None = None


class _Leases:
    """A heartbeat's `jobs`: {job id: lease token}."""

    name = "jobs"
    required = False

    def read(self, body: dict[str, Any]) -> dict[str, str]:
        leases = body.get(self.name, {})
        if not isinstance(leases, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in leases.items()
        ):
            raise ApiError(400, "jobs must be an object mapping job id to lease token (both strings)")
        return leases

    def schema(self) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": {"type": "string"}, "description": "job id → token"}


_WORKER_ID = Text("worker_id")
_LEASES = _Leases()
_WAIT_MS = Int("wait_ms", default=0, minimum=0, cap=MAX_POLL_MS)
_CONCURRENCY = Int("concurrency", default=None, minimum=0, maximum=MAX_SLOTS)
_RUNNING = Int("running", default=None, minimum=0, maximum=MAX_SLOTS)


class HeartbeatRequest(Message):
    """`POST /worker/heartbeat`: the leases the worker holds, renewed; held up to `wait_ms`
    until a stop arises."""

    __slots__ = ("concurrency", "jobs", "running", "wait_ms", "worker_id")

    def __init__(
        self,
        worker_id: str,
        jobs: dict[str, str],
        wait_ms: int = 0,
        concurrency: int | None = None,
        running: int | None = None,
    ) -> None:
        self.worker_id, self.jobs, self.wait_ms = worker_id, jobs, wait_ms
        self.concurrency, self.running = concurrency, running

    FIELDS: ClassVar = (_WORKER_ID, _LEASES, _WAIT_MS, _CONCURRENCY, _RUNNING)

    @classmethod
    def decode(cls, body: dict[str, Any]) -> HeartbeatRequest:
        return cls(_WORKER_ID.read(body), _LEASES.read(body), _WAIT_MS.read(body),
                   _CONCURRENCY.read(body), _RUNNING.read(body))  # fmt: skip

    def pack(self) -> bytes:
        return pack({"worker_id": self.worker_id, "jobs": self.jobs, "wait_ms": self.wait_ms,
                     "concurrency": self.concurrency, "running": self.running})  # fmt: skip


_STOP = {
    "type": "object",
    "required": ["id", "reason"],
    "properties": {
        "id": {"type": "string"},
        "reason": {"enum": list(STOP_REASONS)},
        "token": {"type": ["string", "null"], "description": "the stopped token (protocol 2)"},
    },
}


class HeartbeatAnswer:
    """The heartbeat's answer: `{"stop": [{"id", "reason", "token"}], "lease_ms"}`."""

    FIELDS: ClassVar = (Out("stop", {"type": "array", "items": _STOP}, required=True),
                        Out("lease_ms", {"type": "integer"}, required=True))  # fmt: skip

    @staticmethod
    def encode(stops: list[StopSignal], leases: dict[str, str], lease_ms: int) -> dict[str, Any]:
        # Each stop names the token it is about, so a worker that (briefly) runs two attempts of
        # one job knows which attempt must stop (docs/protocol.md).
        return {"stop": [{"id": s.job_id, "reason": s.reason, "token": leases.get(s.job_id)} for s in stops],
                "lease_ms": lease_ms}  # fmt: skip

    @staticmethod
    def decode(reply: dict[str, Any]) -> tuple[list[StopSignal], Any]:
        """(stops, lease_ms) of an answer, read leniently: an entry without an id is skipped."""
        stops = [
            StopSignal(str(s["id"]), str(s.get("reason")), s.get("token"))
            for s in reply.get("stop") or []
            if isinstance(s, dict) and s.get("id")
        ]
        return stops, reply.get("lease_ms")

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return object_schema(cls.FIELDS)
