"""The OpenAPI 3.1 description served at GET /openapi.json.

The worker routes' bodies and answers are generated from the message types of worker_kit.protocol
(openapi_schemas.py), the ones the routes decode with; the client routes' are written here.
tests/service/test_openapi_fuzz.py holds the document to what the service does.
"""

from __future__ import annotations

import functools
from typing import Any

from .. import __version__
from ..ids import ENDPOINT_ID_PATTERN, JOB_ID_PATTERN
from ..protocol import (
    API_PREFIX,
    MAX_POLL_MS,
    WORKER_CLAIM,
    WORKER_EXCHANGE,
    WORKER_FINISH,
    WORKER_HEARTBEAT,
    WORKER_OUTPUT,
    WORKER_RELEASE,
)
from ..protocol.status import STATES
from ..protocol.submit import MAX_POLICY_MS
from .client_api import RUNSYNC_MAX_WAIT_MS
from .openapi_dashboard import dashboard_paths
from .openapi_finish import REQUEST_SCHEMAS, finish_paths, with_portable_extras
from .openapi_hosted import hosted_paths
from .openapi_schemas import SCHEMAS, csv_pattern
from .sse import MAX_CURSOR

_ERROR = {"$ref": "#/components/schemas/Error"}
_ENDPOINT = {
    "name": "endpoint_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": ENDPOINT_ID_PATTERN},
}
_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": JOB_ID_PATTERN},
}
#: Answers any route may give besides its own: a body or path the service refuses before the
#: route runs (dot segments, an unknown Content-Encoding) and storage unreachable or full.
_ANY_ROUTE = (400, 413, 415, 503)


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}, "application/msgpack": {"schema": schema}}


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    errors: tuple[int, ...] = (400, 401, 403, 404, 429),
    tag: str = "client",
    security: str | None = "clientKey",
    text: bool = False,
    no_content: tuple[int, ...] = (),
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "OK",
            "content": {"text/plain": {"schema": {"type": "string"}}} if text else _json(ok),
        }
    }
    for code in sorted({*errors, *_ANY_ROUTE}):
        responses[str(code)] = {"description": _REASONS[code], "content": _json(_ERROR)}
    for code in no_content:
        responses[str(code)] = {"description": "Nothing to hand out before the long-poll ended"}
    op: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "parameters": params or [],
        "responses": responses,
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    if security is not None:
        op["security"] = [{security: []}, {}]
    return op


_REASONS = {
    400: "Bad request: malformed body, wrong types or out-of-range parameters",
    401: "An API key is required",
    403: "The API key is wrong or of the other kind (client vs worker)",
    404: "Unknown endpoint or job (or past its retention)",
    409: "The job's state or the lease token forbids this",
    413: "Body, chunk or result over its limit",
    415: "Content-Encoding not supported (send the body as is, gzip or deflate)",
    429: "Rate, concurrency or queue limit reached; see Retry-After",
    500: "Unexpected error (logged)",
    501: "Not available in this build",
    503: "Storage unreachable or full, or the service is shutting down; see Retry-After",
    504: "No answer in time",
}


def _q(name: str, description: str, maximum: int, minimum: int = 0) -> dict[str, Any]:
    # The bounds are the ones the route checks (query_int), from the same constants.
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum, "maximum": maximum}
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _paths() -> dict[str, Any]:
    ep, job = [_ENDPOINT], [_ENDPOINT, _JOB_ID]
    status_op = _op(
        "Status of a job; ?ttl= sets how long its result is kept from now",
        _ref("Status"),
        params=[*job, _q("ttl", "ms to keep the result from now", MAX_POLICY_MS)],
    )
    service = {"errors": (), "tag": "service", "security": None}
    return {
        "/health": {"get": _op("Liveness of the service", _ref("Liveness"), **service)},
        "/metrics": {"get": _op("Prometheus metrics", {}, text=True, **service)},
        "/openapi.json": {"get": _op("This document", {"type": "object"}, **service)},
        **_submit_paths(),
        **_client_paths(status_op),
        **dashboard_paths(_op, _ref, ep, job),
        **_query_paths(status_op),
        **_openai_paths(),
        **_worker_paths(),
        **hosted_paths(_op, _q, _ref, _ENDPOINT, _JOB_ID),
    }


def _submit_paths() -> dict[str, Any]:
    """/run and /runsync (docs/service.md)."""
    ep = [_ENDPOINT]
    return {
        "/v2/{endpoint_id}/run": {
            "post": _op(
                "Submit a job; answers at once",
                _ref("Submitted"),
                params=ep,
                body=_ref("SubmitRequest"),
                errors=(400, 401, 403, 404, 413, 429),
            )
        },
        "/v2/{endpoint_id}/runsync": {
            "post": _op(
                "Submit a job and wait until it ends or ?wait= ms pass (then the current status)",
                _ref("Status"),
                params=[*ep, _q("wait", "ms to wait (default 90000)", RUNSYNC_MAX_WAIT_MS)],
                body=_ref("SubmitRequest"),
                errors=(400, 401, 403, 404, 413, 429),
            )
        },
    }


def _client_paths(status_op: dict[str, Any]) -> dict[str, Any]:
    """The client routes of DESIGN.md's table but submits (docs/service.md)."""
    ep, job = [_ENDPOINT], [_ENDPOINT, _JOB_ID]
    stream_op = _op(
        "Stream chunks not yet read (consumed), or from ?cursor= (nothing consumed); "
        "Server-Sent Events with Accept: text/event-stream",
        _ref("Stream"),
        params=[
            *job,
            _q("cursor", "read from this chunk index, consuming nothing", MAX_CURSOR),
            _q("wait", "hold up to this many ms for a chunk", MAX_POLL_MS),
        ],
        errors=(400, 401, 403, 404, 429, 501),
    )
    return {
        "/v2/{endpoint_id}/status/{job_id}": {"get": status_op, "post": status_op},
        "/v2/{endpoint_id}/stream/{job_id}": {"get": stream_op, "post": stream_op},
        "/v2/{endpoint_id}/cancel/{job_id}": {
            "post": _op(
                "Cancel a queued or running job (an ended job answers how it ended)",
                _ref("JobStatus"),
                params=job,
            )
        },
        "/v2/{endpoint_id}/retry/{job_id}": {
            "post": _op(
                "Requeue a FAILED or TIMED_OUT job",
                _ref("Submitted"),
                params=job,
                errors=(400, 401, 403, 404, 409, 429),
            )
        },
        "/v2/{endpoint_id}/purge-queue": {
            "post": _op(
                "Remove every queued job",
                _ref("Purged"),
                params=ep,
            )
        },
        "/v2/{endpoint_id}/health": {
            "get": _op(
                "Job and worker counts of the endpoint", _ref("Health"), params=ep, errors=(401, 403, 404)
            )
        },
    }


def _worker_paths() -> dict[str, Any]:
    """The native worker routes; their bodies are the message types of worker_kit.protocol."""
    ep, job = [_ENDPOINT], [_ENDPOINT, _JOB_ID]
    stale = (400, 401, 403, 404, 409, 413)
    routes = [  # (route, summary, answer, request, params, errors)
        (WORKER_CLAIM, "Long-poll claim of up to max jobs", "ClaimAnswer", "ClaimRequest", ep,
         (400, 401, 403, 404)),
        (WORKER_EXCHANGE, "Protocol 2: finish jobs and claim the next ones in one request", "ExchangeAnswer",
         "ExchangeRequest", ep, (400, 401, 403, 404, 413)),
        (WORKER_HEARTBEAT, "Renew leases; long-poll for stop signals", "HeartbeatAnswer", "HeartbeatRequest",
         ep, (400, 401, 403, 404)),
        (WORKER_OUTPUT, "Ordered, idempotent stream chunks and progress", "OutputAnswer", "OutputRequest",
         job, stale),
        (WORKER_FINISH, "End a job with its result", "FinishAnswer", "FinishRequest", job, stale),
        (WORKER_RELEASE, "Hand a running job back to the queue", "Submitted", "ReleaseRequest", job,
         (400, 401, 403, 404, 409)),
    ]  # fmt: skip
    return {
        API_PREFIX + route: {
            "post": _op(summary, _ref(answer), params=params, body=_ref(request), errors=errors, tag="worker",
                        security="workerKey")
        }
        for route, summary, answer, request, params, errors in routes
    }  # fmt: skip


def _query_paths(status_op: dict[str, Any]) -> dict[str, Any]:
    """/status-sync and /requests (docs/service.md)."""
    ep = [_ENDPOINT]
    sync = _op(
        "Status of a job, held until it ends or ?wait= ms pass; then exactly what /status answers",
        _ref("Status"),
        params=[*status_op["parameters"], _q("wait", "ms to hold (default 60000)", 300000)],
    )
    text = {"name": "status", "in": "query", "required": False, "schema": {"type": "string"}}
    listing = _op(
        "The endpoint's jobs, newest first, paged by ?cursor=",
        _ref("RequestsPage"),
        params=[
            *ep,
            _q("limit", "jobs per page (1-1000, default 50)", 1000, minimum=1),
            {**text, "name": "cursor", "description": "the cursor of the previous page"},
            {
                **text,
                "schema": {"type": "string", "pattern": csv_pattern(STATES, any_case=True)},
                "description": "comma-separated states to keep, e.g. FAILED,TIMED_OUT",
            },
            {
                **text,
                "name": "include",
                "schema": {"type": "string", "pattern": csv_pattern(["input", "output"])},
                "description": "input and/or output, comma-separated",
            },
        ],
    )
    return {
        "/v2/{endpoint_id}/status-sync/{job_id}": {"get": sync, "post": sync},
        "/v2/{endpoint_id}/requests": {"get": listing},
    }


def _openai_paths() -> dict[str, Any]:
    """The OpenAI-compatible passthrough (docs/openai.md)."""
    ep = [_ENDPOINT]
    openai_params = [
        *ep,
        {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}},
        _q("wait", "ms to hold a non-streamed request (default and max 300000)", 300000, minimum=1),
    ]
    openai = {
        "summary": "OpenAI-compatible passthrough: the request becomes a job with input "
        '{"openai_route": "/<path>", "openai_input": body}; "stream": true answers '
        "text/event-stream relayed from the job's stream, otherwise the job's output is the body",
        "tags": ["openai"],
        "parameters": openai_params,
        "responses": {
            "200": {
                "description": "The worker's answer (JSON), or Server-Sent Events when streaming",
                "content": {
                    "application/json": {"schema": {}},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            },
            **{
                str(code): {"description": _REASONS.get(code, "Error"), "content": _json(_ref("OpenAIError"))}
                for code in (400, 401, 403, 404, 413, 429, 500, 503, 504)
            },
        },
        "security": [{"clientKey": []}, {}],
    }
    return {
        "/v2/{endpoint_id}/openai/{path}": {
            "get": openai,
            "post": {
                **openai,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
            },
        },
    }


@functools.cache
def openapi_spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "worker_kit queue service",
            "version": __version__,
            "description": "Client API (path-compatible with the hosted serverless API) and the native "
            'worker API (docs/protocol.md). Errors answer {"error": reason}.',
        },
        "paths": finish_paths(_paths()),
        "components": {
            "schemas": {
                name: with_portable_extras(schema) if name in REQUEST_SCHEMAS else schema
                for name, schema in SCHEMAS.items()
            },
            "securitySchemes": {
                "clientKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a client key of the endpoint",
                },
                "workerKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a worker key of the endpoint",
                },
            },
        },
    }
