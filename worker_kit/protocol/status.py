"""The status answer: what /status, /runsync, /status-sync and a job's webhook carry, and what the
client and the CLI read: `{"id", "status", "delayTime", "executionTime", "output"?, "error"?,
"errorDetail"?, "retries"?, "workerId"?}` (DESIGN.md, the public client API).

Its encoder is `JobRecord.to_status()`: the job model sits below this package (job.py imports
nothing of the wire, so `import worker_kit` stays light), and the hot /status path calls it
directly. This module is its one description: /openapi.json's `Status` is generated from it,
and tests/test_protocol_messages.py holds `to_status()` to it for jobs in every state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from ..job import JobState
from .fields import Out, object_schema

if TYPE_CHECKING:
    from ..job import JobRecord

STATES = [state.value for state in JobState]


def _ms(description: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": 0, "description": description}


class StatusAnswer:
    """A job's status, as the client routes answer it."""

    FIELDS: ClassVar = (
        Out("id", {"type": "string"}, required=True),
        Out("status", {"enum": STATES}, required=True),
        Out("delayTime", _ms("ms spent in the queue"), required=True),
        Out("executionTime", _ms("ms spent running"), required=True),
        Out("output", {"description": "the result, or the latest progress update while IN_PROGRESS"}),
        Out("error", {"type": "string", "description": "why the job failed, timed out or was cancelled"}),
        Out("errorDetail", {"type": "object", "description": "{type, message, traceback} of the error"}),
        Out("retries", {"type": "integer", "minimum": 1, "description": "times /retry requeued the job"}),
        Out("workerId", {"type": "string", "description": "the worker that ran (or runs) it"}),
    )

    @staticmethod
    def encode(job: JobRecord) -> dict[str, Any]:
        return job.to_status()

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return object_schema(cls.FIELDS)
