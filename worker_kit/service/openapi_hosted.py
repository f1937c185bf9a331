"""The OpenAPI paths of the hosted worker protocol (hosted_api.py), for openapi.py; `_op`, `_q`
and `_ref` are openapi.py's builders, `_ENDPOINT` and `_JOB_ID` its path parameters. The bodies
are the message types of worker_kit.protocol.hosted (components HostedJob, HostedReport, StopList)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..protocol import MAX_FIELD_CHARS, MAX_POLL_MS
from ..protocol.hosted import BATCH_SIZE, JOB_IDS, WAIT_MS
from .hosted_api import MAX_BATCH

_NONE_YET = (204,)
_TAKE_ERRORS = (400, 401, 403, 404)
_REPORT_ERRORS = (400, 401, 403, 404, 409, 413)


def hosted_paths(
    _op: Callable[..., dict[str, Any]],
    _q: Callable[..., dict[str, Any]],
    _ref: Callable[[str], dict[str, Any]],
    _ENDPOINT: dict[str, Any],
    _JOB_ID: dict[str, Any],
) -> dict[str, Any]:
    """The hosted service's worker protocol, served for workers built with its SDK."""
    worker_id = {"type": "string", "minLength": 1, "maxLength": MAX_FIELD_CHARS}
    worker = [_ENDPOINT, {"name": "worker_id", "in": "path", "required": True, "schema": worker_id}]
    job = [*worker, _JOB_ID]
    hold = _q(WAIT_MS, "how long to hold the long-poll (default 30000)", MAX_POLL_MS)
    listed = {"name": JOB_IDS, "in": "query", "required": False, "schema": {"type": "string"}}
    routes = [  # (method, route, summary, answer, params, body, errors, no content)
        ("get", "/job-take/{worker_id}", "Take one job (long-poll; 204 when none)", _ref("HostedJob"),
         [*worker, hold], None, _TAKE_ERRORS, _NONE_YET),
        ("get", "/job-take-batch/{worker_id}", "Take up to batch_size jobs (long-poll; 204 when none)",
         {"type": "array", "items": _ref("HostedJob")},
         [*worker, hold, _q(BATCH_SIZE, "jobs wanted", MAX_BATCH, minimum=1)], None, _TAKE_ERRORS,
         _NONE_YET),
        ("get", "/job-stop/{worker_id}",
         "Renew the worker's leases; long-poll for jobs to stop (204 when none)", _ref("StopList"),
         [*worker, hold], None, _TAKE_ERRORS, _NONE_YET),
        ("get", "/ping/{worker_id}", "Heartbeat with the comma-separated job_id list", {"type": "object"},
         [*worker, listed], None, _TAKE_ERRORS, ()),
        ("post", "/job-done/{worker_id}/{job_id}",
         "Final result, or a progress update when status is IN_PROGRESS", {"type": "object"}, job,
         _ref("HostedReport"), _REPORT_ERRORS, ()),
        ("post", "/job-stream/{worker_id}/{job_id}", "One stream chunk {output}", {"type": "object"}, job,
         _ref("HostedReport"), _REPORT_ERRORS, ()),
    ]  # fmt: skip
    return {
        "/v2/{endpoint_id}" + route: {
            method: _op(summary, answer, params=params, body=body, errors=errors, no_content=no_content,
                        tag="hosted worker protocol", security="workerKey")
        }
        for method, route, summary, answer, params, body, errors, no_content in routes
    }  # fmt: skip
