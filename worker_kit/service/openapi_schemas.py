"""The body schemas of /openapi.json (components.schemas); the paths are in openapi.py."""

from __future__ import annotations

from typing import Any

from ..protocol import (
    MAX_WIRE_INT,
    ClaimAnswer,
    ClaimedJob,
    ClaimRequest,
    ExchangeRequest,
    FinishAnswer,
    FinishReport,
    HeartbeatAnswer,
    HeartbeatRequest,
    HostedJob,
    HostedReport,
    OutputAnswer,
    OutputItem,
    OutputRequest,
    ReleaseRequest,
    StopList,
)
from ..protocol.answers import HealthAnswer, JobAnswer, LivenessAnswer, PurgeAnswer, StreamAnswer
from ..protocol.fields import PORTABLE_REF, object_schema
from ..protocol.status import StatusAnswer
from ..protocol.submit import SubmitRequest


def _ms(description: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": 0, "description": description}


def csv_pattern(words: list[str], *, any_case: bool = False) -> str:
    """The pattern of a comma-separated query list of `words`, as the routes split it: parts are
    stripped, empty parts skipped, and (with `any_case`) read in any case."""

    def word(w: str) -> str:
        return "".join(f"[{c.upper()}{c.lower()}]" if any_case and c.isalpha() else c for c in w)

    one = r"\s*(" + "|".join(word(w) for w in words) + r")?\s*"
    return f"^{one}(,{one})*$"


SCHEMAS: dict[str, Any] = {
    "Value": {
        "description": "any JSON value whose integers fit in 64 bits (msgpack carries every body)",
        "anyOf": [
            {"type": ["string", "boolean", "null"]},
            {"type": "integer", "minimum": -(2**63), "maximum": MAX_WIRE_INT},
            {"type": "number", "not": {"type": "integer"}},
            {"type": "array", "items": PORTABLE_REF},
            {"type": "object", "additionalProperties": PORTABLE_REF},
        ],
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
        "additionalProperties": True,
    },
    # The client routes' bodies: generated from the message types the routes decode with.
    "Policy": SubmitRequest.policy_schema(),
    "SubmitRequest": SubmitRequest.schema(),
    "Submitted": JobAnswer.schema(queued=True),
    "JobStatus": JobAnswer.schema(),
    "Status": StatusAnswer.schema(),
    "Stream": StreamAnswer.schema(),
    "Purged": PurgeAnswer.schema(),
    "Liveness": LivenessAnswer.schema(),
    "Scaling": {
        "type": "object",
        "required": ["inQueue", "inProgress", "workersLive", "workersBusy", "workersMax", "desiredWorkers"],
        "properties": {
            "endpoint": {"type": "string"},
            "inQueue": {"type": "integer", "description": "jobs waiting for a worker"},
            "inProgress": {"type": "integer", "description": "jobs a worker is running"},
            "workersLive": {"type": "integer", "description": "workers seen within the last minute"},
            "workersBusy": {"type": "integer", "description": "live workers holding at least one job"},
            "workersIdle": {"type": "integer"},
            "slots": {"type": "integer", "description": "job slots the live workers declare in all"},
            "slotsPerWorker": {"type": "integer", "description": "mean slots of a live worker (1 if none)"},
            "workersMax": {"type": "integer", "description": "the endpoint's workers_max setting"},
            "desiredWorkers": {
                "type": "integer",
                "description": "ceil((inQueue + inProgress) / slotsPerWorker) up to workersMax; 0 if idle",
            },
        },
    },
    "JobDetail": {
        "type": "object",
        "required": ["id", "status"],
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string"},
            "createdAt": {"type": "integer", "description": "epoch ms"},
            "startedAt": {"type": ["integer", "null"]},
            "completedAt": {"type": ["integer", "null"]},
            "delayTime": {"type": "integer"},
            "executionTime": {"type": "integer"},
            "workerId": {"type": ["string", "null"]},
            "attempt": {"type": "integer"},
            "retries": {"type": "integer"},
            "error": {"type": ["string", "null"]},
            "errorDetail": {"type": ["object", "null"]},
            "policy": {"type": "object"},
            "streamLength": {"type": "integer"},
            "webhook": {"type": "boolean", "description": "whether the job has a webhook"},
            "input": {},
            "inputPreview": {"type": "string", "description": "the input as JSON text, cut (large inputs)"},
            "inputHidden": {"type": "boolean"},
            "progress": {},
            "progressPreview": {"type": "string"},
            "output": {},
            "outputPreview": {"type": "string"},
        },
    },
    "Health": HealthAnswer.schema(),
    "RequestsPage": {
        "type": "object",
        "required": ["requests", "total", "hasMore", "cursor"],
        "properties": {
            "requests": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "status": {"type": "string"},
                        "createdAt": _ms("epoch ms"),
                        "startedAt": {"type": ["integer", "null"], "description": "epoch ms"},
                        "completedAt": {"type": ["integer", "null"], "description": "epoch ms"},
                        "delayTime": _ms("ms queued"),
                        "executionTime": _ms("ms running"),
                        "workerId": {"type": ["string", "null"]},
                        "attempt": {"type": "integer"},
                        "retries": {"type": "integer"},
                        "error": {"type": "string"},
                        "input": {"description": "with ?include=input"},
                        "output": {"description": "with ?include=output, for ended jobs"},
                    },
                },
            },
            "total": {"type": "integer", "description": "jobs matching the status filter"},
            "hasMore": {"type": "boolean"},
            "cursor": {"type": ["string", "null"], "description": "pass as ?cursor= for the next page"},
        },
    },
    "OpenAIError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {},
                    "code": {},
                },
            }
        },
    },
    # The worker wire: generated from the message types the routes decode with (worker_kit.protocol).
    "OutputItem": OutputItem.schema(),
    "ClaimRequest": object_schema(ClaimRequest.FIELDS),
    "ClaimedJob": ClaimedJob.schema(),
    "ClaimAnswer": ClaimAnswer.schema(),
    "ExchangeRequest": object_schema(ExchangeRequest.FIELDS),
    "ExchangeAnswer": ClaimAnswer.schema(exchange=True),
    "HeartbeatRequest": object_schema(HeartbeatRequest.FIELDS),
    "HeartbeatAnswer": HeartbeatAnswer.schema(),
    "OutputRequest": object_schema(OutputRequest.FIELDS),
    "FinishRequest": FinishReport.schema(),
    "FinishAnswer": FinishAnswer.schema(),
    "OutputAnswer": OutputAnswer.schema(),
    "ReleaseRequest": object_schema(ReleaseRequest.FIELDS),
    # The hosted service's worker protocol (hosted_api.py), likewise.
    "HostedJob": HostedJob.schema(),
    "HostedReport": HostedReport.schema(),
    "StopList": StopList.schema(),
}
