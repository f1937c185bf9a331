"""The simple answers of the client routes (the status answer is status.py's): what `/run`,
`/retry`, `/cancel`, `/purge-queue`, `/stream`, an endpoint's `/health` and the service's
`/health` answer. Each type's `encode` builds the answer the route sends and its `schema` is
/openapi.json's, generated from the same field list (tests/service/test_openapi_client_wire.py
validates a real service's answers against the served document).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..job import JobState
from .fields import Out, object_schema
from .status import STATES, StatusAnswer

_COUNT = {"type": "integer", "minimum": 0}


def _counts(names: tuple[str, ...], description: str) -> dict[str, Any]:
    return {"type": "object", "description": description, "required": list(names),
            "properties": {name: _COUNT for name in names}}  # fmt: skip


class JobAnswer:
    """`{"id", "status"}`: what /run and /retry answer (the job queued), /cancel (the state the
    job is in afterwards, or how it had ended) and a worker's release."""

    FIELDS: ClassVar = StatusAnswer.FIELDS[:2]
    #: A job just queued: /run, /retry and release answer it.
    QUEUED_FIELDS: ClassVar = (FIELDS[0], Out("status", {"const": JobState.IN_QUEUE.value}, required=True))

    @staticmethod
    def encode(job_id: str, state: JobState) -> dict[str, Any]:
        return {"id": job_id, "status": state.value}

    @classmethod
    def schema(cls, queued: bool = False) -> dict[str, Any]:
        return object_schema(cls.QUEUED_FIELDS if queued else cls.FIELDS)


class StreamAnswer:
    """`GET /stream/{id}`: the chunks read, and the cursor that reads on from them."""

    FIELDS: ClassVar = (
        Out("id", {"type": "string"}, required=True),
        Out("status", {"enum": STATES}, required=True),
        Out("stream", {"type": "array", "items": {"type": "object", "required": ["output"],
                                                  "properties": {"output": {"description": "one chunk"}}}},
            required=True),
        Out("cursor", {**_COUNT, "description": "pass as ?cursor= to read on from here"}, required=True),
    )  # fmt: skip

    @staticmethod
    def encode(job_id: str, state: JobState, chunks: list[Any], cursor: int) -> dict[str, Any]:
        stream = [{"output": chunk} for chunk in chunks]
        return {"id": job_id, "status": state.value, "stream": stream, "cursor": cursor}

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return object_schema(cls.FIELDS)


class PurgeAnswer:
    """`POST /purge-queue`: how many queued jobs it removed."""

    FIELDS: ClassVar = (Out("removed", {**_COUNT, "description": "queued jobs removed"}, required=True),
                        Out("status", {"const": "completed"}, required=True))  # fmt: skip

    @staticmethod
    def encode(removed: int) -> dict[str, Any]:
        return {"removed": removed, "status": "completed"}

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return object_schema(cls.FIELDS)


class HealthAnswer:
    """An endpoint's `GET /health`: its jobs by state, its workers, its webhook deliveries."""

    #: The state counts storage gives (JobState values, and "retried") -> the answer's keys.
    JOB_KEYS: ClassVar = {
        JobState.COMPLETED.value: "completed",
        JobState.FAILED.value: "failed",
        JobState.IN_PROGRESS.value: "inProgress",
        JobState.IN_QUEUE.value: "inQueue",
        "retried": "retried",
        JobState.TIMED_OUT.value: "timedOut",
        JobState.CANCELLED.value: "cancelled",
    }
    WEBHOOK_KEYS: ClassVar = ("delivered", "failed", "pending")
    FIELDS: ClassVar = (
        Out("jobs", _counts(tuple(JOB_KEYS.values()), "jobs by state (retried: jobs /retry requeued)"),
            required=True),
        Out("workers", _counts(("idle", "running"), "workers seen lately, by whether they hold a job"),
            required=True),
        Out("webhooks", _counts(WEBHOOK_KEYS, "deliveries made and given up by this replica; pending: "
                                "the outbox"), required=True),
    )  # fmt: skip

    @classmethod
    def encode(
        cls, counts: dict[str, int], idle: int, running: int, webhooks: dict[str, int]
    ) -> dict[str, Any]:
        return {
            "jobs": {name: counts.get(key, 0) for key, name in cls.JOB_KEYS.items()},
            "workers": {"idle": idle, "running": running},
            "webhooks": {name: webhooks.get(name, 0) for name in cls.WEBHOOK_KEYS},
        }

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return object_schema(cls.FIELDS)


class LivenessAnswer:
    """The service's own `GET /health`: it is up, which version, since when."""

    FIELDS: ClassVar = (Out("status", {"const": "ok"}, required=True),
                        Out("version", {"type": "string"}, required=True),
                        Out("uptime_s", {"type": "number", "minimum": 0, "description": "seconds up"},
                            required=True))  # fmt: skip

    @staticmethod
    def encode(version: str, uptime_s: float) -> dict[str, Any]:
        return {"status": "ok", "version": version, "uptime_s": round(max(0.0, uptime_s), 3)}

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return object_schema(cls.FIELDS)
