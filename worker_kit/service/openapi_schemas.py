"""The body schemas of /openapi.json (components.schemas); the paths are in openapi.py."""

from __future__ import annotations

from typing import Any


def _ms(description: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": 0, "description": description}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
        "additionalProperties": True,
    },
    "Policy": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "executionTimeout": {"type": "integer", "minimum": 1, "description": "ms the run may take"},
            "ttl": {
                "type": "integer",
                "minimum": 1,
                "description": "ms the job may live, queue time included",
            },
            "lowPriority": {"type": "boolean", "description": "accepted for compatibility; ignored"},
        },
    },
    "SubmitRequest": {
        "type": "object",
        "required": ["input"],
        "properties": {
            "input": {"description": "any JSON value, handed to the handler"},
            "webhook": {
                "type": "string",
                "format": "uri",
                "description": "POSTed the final status when the job ends",
            },
            "policy": {"$ref": "#/components/schemas/Policy"},
        },
    },
    "Submitted": {
        "type": "object",
        "required": ["id", "status"],
        "properties": {"id": {"type": "string"}, "status": {"const": "IN_QUEUE"}},
    },
    "Status": {
        "type": "object",
        "required": ["id", "status", "delayTime", "executionTime"],
        "properties": {
            "id": {"type": "string"},
            "status": {"enum": ["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"]},
            "delayTime": _ms("ms spent in the queue"),
            "executionTime": _ms("ms spent running"),
            "output": {"description": "the result, or the latest progress update while IN_PROGRESS"},
            "error": {"type": "string"},
            "errorDetail": {"type": "object"},
            "retries": {"type": "integer"},
            "workerId": {"type": "string"},
        },
    },
    "Stream": {
        "type": "object",
        "required": ["status", "stream"],
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string"},
            "stream": {"type": "array", "items": {"type": "object", "properties": {"output": {}}}},
            "cursor": {"type": "integer", "description": "pass as ?cursor= to read on from here"},
        },
    },
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
    "Health": {
        "type": "object",
        "properties": {
            "jobs": {
                "type": "object",
                "properties": {
                    k: {"type": "integer"}
                    for k in (
                        "completed",
                        "failed",
                        "inProgress",
                        "inQueue",
                        "retried",
                        "timedOut",
                        "cancelled",
                    )
                },
            },
            "workers": {
                "type": "object",
                "properties": {"idle": {"type": "integer"}, "running": {"type": "integer"}},
            },
            "webhooks": {
                "type": "object",
                "properties": {k: {"type": "integer"} for k in ("delivered", "failed", "pending")},
            },
        },
    },
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
    "HostedJob": {
        "type": "object",
        "required": ["id", "input"],
        "properties": {"id": {"type": "string"}, "input": {}, "webhook": {"type": "string"}},
    },
    "OutputItem": {
        "type": "object",
        "required": ["seq", "kind"],
        "properties": {
            "seq": {"type": "integer", "minimum": 0},
            "kind": {"enum": ["chunk", "progress"]},
            "data": {},
        },
    },
    "ClaimRequest": {
        "type": "object",
        "required": ["worker_id"],
        "properties": {
            "worker_id": {"type": "string"},
            "max": {"type": "integer", "minimum": 1, "maximum": 100},
            "wait_ms": {"type": "integer", "minimum": 0, "description": "capped at 60000"},
            "concurrency": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
        },
    },
    "ClaimedJob": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "input": {},
            "token": {"type": "string"},
            "attempt": {"type": "integer"},
            "policy": {"$ref": "#/components/schemas/Policy"},
            "deadline_ms": {"type": "integer"},
            "webhook": {"type": "string"},
        },
    },
    "ExchangeRequest": {
        "type": "object",
        "required": ["worker_id"],
        "properties": {
            "worker_id": {"type": "string"},
            "finish": {
                "type": "array",
                "maxItems": 100,
                "items": {
                    "allOf": [
                        {"$ref": "#/components/schemas/FinishRequest"},
                        {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
                    ]
                },
            },
            "max": {"type": "integer", "minimum": 0, "maximum": 100},
            "wait_ms": {"type": "integer", "minimum": 0, "description": "capped at 60000; 0 with finishes"},
            "concurrency": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
        },
    },
    "HeartbeatRequest": {
        "type": "object",
        "required": ["worker_id"],
        "properties": {
            "worker_id": {"type": "string"},
            "jobs": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "job id → token",
            },
            "wait_ms": {"type": "integer", "minimum": 0},
            "concurrency": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
            "running": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
        },
    },
    "OutputRequest": {
        "type": "object",
        "required": ["token", "items"],
        "properties": {
            "token": {"type": "string"},
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/OutputItem"}},
        },
    },
    "FinishRequest": {
        "type": "object",
        "required": ["token", "state"],
        "properties": {
            "token": {"type": "string"},
            "state": {"enum": ["COMPLETED", "FAILED", "TIMED_OUT"]},
            "output": {},
            "error": {"type": "string"},
            "error_detail": {"type": "object"},
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/OutputItem"}},
        },
    },
}
