"""Taking jobs: `POST /worker/claim` (`ClaimRequest`), `POST /worker/exchange` (`ExchangeRequest`,
protocol 2: finishes and the next claim in one request), and their answer (`ClaimAnswer`), which
carries each claimed job as a `ClaimedJob`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .codecs import pack, pack_scalar
from .constants import (
    DEFAULT_CLAIM_WAIT_MS,
    MAX_CLAIM,
    MAX_FINISHES,
    MAX_POLL_MS,
    MAX_SLOTS,
    PROTOCOL_VERSION,
)
from .fields import PORTABLE_REF, Int, Message, Out, Text, object_schema
from .refusals import ApiError
from .reports import pack_array, pack_map

if TYPE_CHECKING:
    from ..job import JobRecord

log = logging.getLogger("worker_kit.worker")

_WORKER_ID = Text("worker_id")
_CONCURRENCY = Int("concurrency", default=None, minimum=0, maximum=MAX_SLOTS)


class ClaimRequest(Message):
    """`POST /worker/claim`: up to `max` jobs, held up to `wait_ms` for the first."""

    __slots__ = ("concurrency", "max", "wait_ms", "worker_id")

    def __init__(
        self,
        worker_id: str,
        max: int = 1,
        wait_ms: int = DEFAULT_CLAIM_WAIT_MS,
        concurrency: int | None = None,
    ) -> None:
        self.worker_id, self.max, self.wait_ms, self.concurrency = worker_id, max, wait_ms, concurrency

    FIELDS: ClassVar = (_WORKER_ID, Int("max", default=1, minimum=1, maximum=MAX_CLAIM),
                        Int("wait_ms", default=DEFAULT_CLAIM_WAIT_MS, minimum=0, cap=MAX_POLL_MS),
                        _CONCURRENCY)  # fmt: skip

    @classmethod
    def decode(cls, body: dict[str, Any]) -> ClaimRequest:
        worker_id, max_jobs, wait_ms, concurrency = cls.FIELDS
        return cls(worker_id.read(body), max_jobs.read(body), wait_ms.read(body), concurrency.read(body))

    def pack(self) -> bytes:
        return pack({"worker_id": self.worker_id, "max": self.max, "wait_ms": self.wait_ms,
                     "concurrency": self.concurrency})  # fmt: skip


class _Finishes:
    """An exchange's `finish`: the reports, each refused or answered on its own (so an entry is any
    value here: a malformed one gets its own refusal in the answer, not a 400 for the request)."""

    name = "finish"
    required = False

    def read(self, body: dict[str, Any]) -> list[Any]:
        finishes = body.get(self.name, [])
        if not isinstance(finishes, list):
            raise ApiError(400, "finish must be a list of {id, token, state, ...}")
        if len(finishes) > MAX_FINISHES:
            raise ApiError(400, f"finish carries {len(finishes)} reports; at most {MAX_FINISHES} per request")
        return finishes

    def schema(self) -> dict[str, Any]:
        entry = {**PORTABLE_REF, "description": "a FinishRequest with the job's id; a malformed entry "
                 "gets its own refusal in the answer"}  # fmt: skip
        return {"type": "array", "maxItems": MAX_FINISHES, "items": entry}


_FINISHES = _Finishes()
_MAX = Int("max", default=0, minimum=0, maximum=MAX_CLAIM)
_WAIT_MS = Int("wait_ms", default=DEFAULT_CLAIM_WAIT_MS, minimum=0, cap=MAX_POLL_MS,
               description="0 with finishes")  # fmt: skip


class ExchangeRequest(Message):
    """`POST /worker/exchange` (protocol 2): finish any number of jobs, then claim up to `max`.

    `finish` holds the reports: each a FinishReport's packed bytes when a worker builds the
    request, each as decoded (any value, checked one by one) when the service reads it."""

    __slots__ = ("concurrency", "finish", "max", "wait_ms", "worker_id")

    def __init__(
        self,
        worker_id: str,
        finish: list[Any] | None = None,
        max: int = 0,
        wait_ms: int = DEFAULT_CLAIM_WAIT_MS,
        concurrency: int | None = None,
    ) -> None:
        self.worker_id, self.finish, self.max = worker_id, [] if finish is None else finish, max
        self.wait_ms, self.concurrency = wait_ms, concurrency

    FIELDS: ClassVar = (_WORKER_ID, _FINISHES, _MAX, _WAIT_MS, _CONCURRENCY)

    @classmethod
    def decode(cls, body: dict[str, Any]) -> ExchangeRequest:
        return cls(_WORKER_ID.read(body), _FINISHES.read(body), _MAX.read(body), _WAIT_MS.read(body),
                   _CONCURRENCY.read(body))  # fmt: skip

    def pack(self) -> bytes:
        fields = [("worker_id", pack_scalar(self.worker_id)), ("finish", pack_array(self.finish)),
                  ("max", pack_scalar(self.max)), ("wait_ms", pack_scalar(self.wait_ms))]  # fmt: skip
        if self.concurrency is not None:
            fields.append(("concurrency", pack_scalar(self.concurrency)))
        return pack_map(fields)


_POLICY = {"$ref": "#/components/schemas/Policy"}


@dataclass(slots=True)
class ClaimedJob:
    """A job handed to a worker, with its fencing token."""

    id: str
    token: str
    input: Any
    attempt: int = 1
    policy: dict[str, Any] = field(default_factory=dict)
    #: ms from the claim until the service times the job out itself.
    deadline_ms: int | None = None
    webhook: str | None = None
    #: The endpoint's result limit in bytes, as the service states it (None: not stated).
    result_limit: int | None = None

    FIELDS: ClassVar = (
        Out("id", {"type": "string"}, required=True),
        Out("input", {"description": "the job's input, as the client gave it"}),
        Out("token", Text("token").schema(), required=True),
        Out("attempt", {"type": "integer", "minimum": 1, "description": "1 = the run's first claim"}),
        Out("policy", _POLICY),
        Out("deadline_ms", {"type": "integer", "minimum": 0,
                            "description": "ms from now until the service times the job out"}),
        Out("webhook", {"type": "string"}),
    )  # fmt: skip

    @staticmethod
    def encode_record(job: JobRecord, now: float) -> dict[str, Any]:
        """The wire form of a job the service just claimed (no ClaimedJob is built on the way)."""
        started = job.started_at or now
        policy = job.policy
        deadline = min(started + policy.execution_timeout_ms / 1000, job.created_at + policy.ttl_ms / 1000)
        # deadline_ms caps the run whether or not the policy names an executionTimeout.
        wire: dict[str, Any] = {
            "id": job.id,
            "input": job.input,
            "token": job.token,
            "attempt": job.attempt,
            "policy": policy.to_wire(),
            "deadline_ms": max(0, int((deadline - now) * 1000)),
        }
        if job.webhook:
            wire["webhook"] = job.webhook
        return wire

    @classmethod
    def decode(cls, raw: Any, result_limit: int | None = None) -> ClaimedJob | None:
        """The job of an answer, or None (logged) for one without an id and token: such a job
        cannot be run or handed back, and its lease brings it back."""
        job_id, token = (raw.get("id"), raw.get("token")) if isinstance(raw, dict) else (None, None)
        if not isinstance(job_id, str) or not isinstance(token, str):
            log.error("claim answered a malformed job (needs id and token), skipped: %.200r", raw)
            return None
        policy = raw.get("policy")
        attempt, deadline = raw.get("attempt"), raw.get("deadline_ms")
        return cls(
            job_id,
            token,
            raw.get("input"),
            attempt if isinstance(attempt, int) else 1,
            policy if isinstance(policy, dict) else {},
            deadline if isinstance(deadline, int | float) else None,
            raw.get("webhook"),
            result_limit,
        )

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return object_schema(cls.FIELDS)


_FINISHED = {
    "type": "array",
    "description": "one answer per finish, in order: {id, status}, or {id, code, error, ...} when "
    "that report was refused",
    "items": {"type": "object", "properties": {"id": {}, "status": {"type": "string"},
                                               "code": {"type": "integer"}, "error": {"type": "string"}}},
}  # fmt: skip


class ClaimAnswer(Message):
    """The answer of a claim or an exchange: `{"jobs", "lease_ms", "result_limit"}`, plus
    `"finished"` and `"protocol"` for an exchange."""

    __slots__ = ("finished", "jobs", "lease_ms", "protocol", "result_limit")

    def __init__(
        self,
        jobs: list[ClaimedJob],
        lease_ms: Any = None,
        result_limit: int | None = None,
        finished: list[Any] | None = None,
        protocol: int | None = None,
    ) -> None:
        self.jobs, self.lease_ms, self.result_limit = jobs, lease_ms, result_limit
        self.finished, self.protocol = [] if finished is None else finished, protocol

    CLAIM_FIELDS: ClassVar = (
        Out("jobs", {"type": "array", "items": {"$ref": "#/components/schemas/ClaimedJob"}}, required=True),
        Out("lease_ms", {"type": "integer"}, required=True),
        Out("result_limit", {"type": "integer", "description": "max bytes of a packed result"},
            required=True),
    )
    EXCHANGE_FIELDS: ClassVar = (
        Out("finished", _FINISHED, required=True),
        *CLAIM_FIELDS,
        Out("protocol", {"type": "integer", "const": PROTOCOL_VERSION}, required=True),
    )

    @staticmethod
    def encode(lease_ms: int, result_limit: int, finished: list[Any] | None = None) -> dict[str, Any]:
        """The answer without its jobs (the route adds `"jobs"`, the claimed jobs' wire forms)."""
        if finished is None:
            return {"lease_ms": lease_ms, "result_limit": result_limit}
        return {"finished": finished, "lease_ms": lease_ms, "result_limit": result_limit,
                "protocol": PROTOCOL_VERSION}  # fmt: skip

    @classmethod
    def decode(cls, reply: dict[str, Any]) -> ClaimAnswer:
        """An answer read leniently: malformed jobs are skipped (logged), a result limit that is
        not a positive integer counts as not stated."""
        limit = reply.get("result_limit")
        limit = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None
        claimed = (ClaimedJob.decode(raw, limit) for raw in reply.get("jobs") or [])
        jobs = [job for job in claimed if job is not None]
        finished = reply.get("finished")
        protocol = reply.get("protocol")
        return cls(jobs, reply.get("lease_ms"), limit, finished if isinstance(finished, list) else [],
                   protocol if isinstance(protocol, int) else None)  # fmt: skip

    @classmethod
    def schema(cls, exchange: bool = False) -> dict[str, Any]:
        return object_schema(cls.EXCHANGE_FIELDS if exchange else cls.CLAIM_FIELDS)

