"""The hosted serverless service's worker protocol (job-take, job-take-batch, job-stop, ping,
job-done, job-stream; /work/shared/reference/runpod-worker-protocol.md §1), as this service serves
it (service/hosted_api.py) and as the runtime speaks it on that service (worker/hosted_transport.py).

The protocol has no fencing tokens or sequence numbers, and its bodies are JSON whatever their
Content-Type says. Its messages:

- `HostedJob`: a job handed out by job-take (one) or job-take-batch (a list);
- `HostedReport`: the body of job-done (a result, an error, or a progress update) and of
  job-stream (one chunk);
- `StopList`: job-stop's answer, the jobs to stop.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from ..job import JobState
from .claims import ClaimedJob
from .fields import PORTABLE_REF, Message, Out, object_schema

if TYPE_CHECKING:
    from ..job import JobRecord

log = logging.getLogger("worker_kit.worker")

#: A job-done body with this status is a progress update, not the job's end.
PROGRESS_STATUS = JobState.IN_PROGRESS.value

# Query parameters: the hosted SDK appends the first three to its URL templates; the last two are
# this service's (a take or job-stop long-poll's hold, and the jobs a ping lists).
BATCH_SIZE = "batch_size"  # job-take-batch: jobs wanted
JOB_IN_PROGRESS = "job_in_progress"  # job-take: 1 while the worker runs a job
IS_STREAM = "isStream"  # job-done: true when the job streamed chunks
WAIT_MS = "wait_ms"
JOB_IDS = "job_id"  # ping: the comma-separated jobs in progress


def take_query(busy: bool, batch: int | None = None) -> str:
    """The parameters a job-take (or, with `batch`, job-take-batch) URL ends with."""
    wanted = "" if batch is None else f"&{BATCH_SIZE}={batch}"
    return f"{wanted}&{JOB_IN_PROGRESS}={1 if busy else 0}"


def ping_query(job_ids: list[str]) -> str:
    return f"&{JOB_IDS}={','.join(job_ids)}" if job_ids else ""


def listed_jobs(value: str) -> list[str]:
    """The job ids of a ping's `job_id` parameter."""
    return [job_id for job_id in value.split(",") if job_id]


def hold_query(wait_ms: int) -> str:
    return f"&{WAIT_MS}={wait_ms}"


def report_query(streamed: bool) -> str:
    return f"&{IS_STREAM}={'true' if streamed else 'false'}"


class HostedJob(Message):
    """A job as job-take hands it out: `{"id", "input", "webhook"?}` (and `policy`, which the
    hosted service may add; kept as it came)."""

    __slots__ = ("id", "input", "policy", "webhook")

    def __init__(
        self, id: str, input: Any, webhook: str | None = None, policy: dict[str, Any] | None = None
    ) -> None:
        self.id, self.input, self.webhook, self.policy = id, input, webhook, policy

    FIELDS: ClassVar = (
        Out("id", {"type": "string"}, required=True),
        Out("input", {"description": "the job's input, as the client gave it"}, required=True),
        Out("webhook", {"type": "string"}),
    )

    @staticmethod
    def encode_record(job: JobRecord) -> dict[str, Any]:
        body: dict[str, Any] = {"id": job.id, "input": job.input}
        if job.webhook:
            body["webhook"] = job.webhook
        return body

    @classmethod
    def decode(cls, raw: Any) -> HostedJob | None:
        """The job of a take's answer, or None (logged) for one without an id and input."""
        if not (isinstance(raw, dict) and isinstance(raw.get("id"), str) and "input" in raw):
            log.error("job-take answered a job without id and input, skipped: %.200r", raw)
            return None
        policy = raw.get("policy")
        return cls(raw["id"], raw["input"], raw.get("webhook"), policy if isinstance(policy, dict) else None)

    def claimed(self) -> ClaimedJob:
        # No fencing token on this wire: the job id stands in for it.
        return ClaimedJob(self.id, self.id, self.input, policy=self.policy or {}, webhook=self.webhook)

    @classmethod
    def decode_take(cls, payload: Any) -> list[HostedJob]:
        """The jobs of a job-take (one job) or job-take-batch (a list) answer."""
        raws = payload if isinstance(payload, list) else [payload]
        return [job for job in (cls.decode(raw) for raw in raws) if job is not None]

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return object_schema(cls.FIELDS)


class HostedReport(Message):
    """A job-done or job-stream body: `{"output"?, "error"?, "status"?}`.

    job-done: a result (`output`), a failure (`error`: the SDK sends a handler's exception as
    the JSON text of {error_type, error_message, error_traceback}), or, with `status`
    IN_PROGRESS, a progress update. job-stream: one chunk (`output`)."""

    __slots__ = ("error", "output", "status")

    def __init__(self, output: Any = None, error: Any = None, status: Any = None) -> None:
        self.output, self.error, self.status = output, error, status

    FIELDS: ClassVar = (
        Out("output", PORTABLE_REF),
        Out("error", PORTABLE_REF),
        Out("status", {**PORTABLE_REF, "description": f"{PROGRESS_STATUS} for a progress update"}),
    )

    @property
    def is_progress(self) -> bool:
        return self.status == PROGRESS_STATUS

    @classmethod
    def decode(cls, body: dict[str, Any]) -> HostedReport:
        return cls(body.get("output"), body.get("error"), body.get("status"))

    @staticmethod
    def result(output: Any) -> dict[str, Any]:
        return {"output": output}

    @staticmethod
    def chunk(data: Any) -> dict[str, Any]:
        return {"output": data}

    @staticmethod
    def failure(error: str) -> dict[str, Any]:
        return {"error": error}

    @staticmethod
    def progress(update: Any) -> dict[str, Any]:
        return {"status": PROGRESS_STATUS, "output": update}

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return object_schema(cls.FIELDS, "JSON whatever the Content-Type says")


class StopList:
    """job-stop's answer: `{"jobsToStop": [job id, ...]}` (no answer body, 204, when none)."""

    FIELDS: ClassVar = (Out("jobsToStop", {"type": "array", "items": {"type": "string"}}, required=True),)

    @staticmethod
    def encode(job_ids: list[str]) -> dict[str, Any]:
        return {"jobsToStop": job_ids}

    @staticmethod
    def decode(payload: Any) -> list[str]:
        stops = payload.get("jobsToStop") if isinstance(payload, dict) else None
        return [s for s in stops if isinstance(s, str)] if isinstance(stops, list) else []

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return object_schema(cls.FIELDS)
