"""The OpenAPI paths of the hosted worker protocol (hosted_api.py), for openapi.py; `_op`, `_q`
and `_ref` are openapi.py's builders, `_ENDPOINT` and `_JOB_ID` its path parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..protocol import MAX_POLL_MS
from .hosted_api import MAX_BATCH
from .openapi_schemas import PORTABLE_REF


def hosted_paths(
    _op: Callable[..., dict[str, Any]],
    _q: Callable[..., dict[str, Any]],
    _ref: Callable[[str], dict[str, Any]],
    _ENDPOINT: dict[str, Any],
    _JOB_ID: dict[str, Any],
) -> dict[str, Any]:
    """The hosted service's worker protocol, served for workers built with its SDK."""
    worker_id = {"type": "string", "minLength": 1, "maxLength": 256}
    worker = [_ENDPOINT, {"name": "worker_id", "in": "path", "required": True, "schema": worker_id}]
    job = [*worker, _JOB_ID]
    hold = _q("wait_ms", "how long to hold the long-poll (default 30000)", MAX_POLL_MS)
    common = {"tag": "hosted worker protocol", "security": "workerKey"}
    report = {
        "type": "object",
        "description": "JSON whatever the Content-Type says",
        "properties": {
            "output": PORTABLE_REF,
            "error": PORTABLE_REF,
            "status": {**PORTABLE_REF, "description": "IN_PROGRESS for a progress update"},
        },
    }
    return {
        "/v2/{endpoint_id}/job-take/{worker_id}": {
            "get": _op(
                "Take one job (long-poll; 204 when none)",
                _ref("HostedJob"),
                params=[*worker, hold],
                errors=(400, 401, 403, 404),
                no_content=(204,),
                **common,
            )
        },
        "/v2/{endpoint_id}/job-take-batch/{worker_id}": {
            "get": _op(
                "Take up to batch_size jobs (long-poll; 204 when none)",
                {"type": "array", "items": _ref("HostedJob")},
                params=[*worker, hold, _q("batch_size", "jobs wanted", MAX_BATCH, minimum=1)],
                errors=(400, 401, 403, 404),
                no_content=(204,),
                **common,
            )
        },
        "/v2/{endpoint_id}/job-stop/{worker_id}": {
            "get": _op(
                "Renew the worker's leases; long-poll for jobs to stop (204 when none)",
                {
                    "type": "object",
                    "properties": {"jobsToStop": {"type": "array", "items": {"type": "string"}}},
                },
                params=[*worker, hold],
                errors=(400, 401, 403, 404),
                no_content=(204,),
                **common,
            )
        },
        "/v2/{endpoint_id}/ping/{worker_id}": {
            "get": _op(
                "Heartbeat with the comma-separated job_id list",
                {"type": "object"},
                params=[
                    *worker,
                    {"name": "job_id", "in": "query", "required": False, "schema": {"type": "string"}},
                ],
                errors=(400, 401, 403, 404),
                **common,
            )
        },
        "/v2/{endpoint_id}/job-done/{worker_id}/{job_id}": {
            "post": _op(
                "Final result, or a progress update when status is IN_PROGRESS",
                {"type": "object"},
                params=job,
                body=report,
                errors=(400, 401, 403, 404, 409, 413),
                **common,
            )
        },
        "/v2/{endpoint_id}/job-stream/{worker_id}/{job_id}": {
            "post": _op(
                "One stream chunk {output}",
                {"type": "object"},
                params=job,
                body=report,
                errors=(400, 401, 403, 404, 409, 413),
                **common,
            )
        },
    }
