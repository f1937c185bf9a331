"""The OpenAPI paths of /scaling and the dashboard (scaling.py, dashboard.py), for openapi.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..job import JobState
from .openapi_schemas import csv_pattern


def _html(summary: str, params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "summary": summary,
        "tags": ["dashboard"],
        "parameters": params or [],
        "responses": {"200": {"description": "OK", "content": {"text/html": {"schema": {"type": "string"}}}}},
    }


def _assets(params: list[dict[str, Any]]) -> dict[str, Any]:
    text = {"schema": {"type": "string"}}
    error = {"schema": {"$ref": "#/components/schemas/Error"}}
    return {
        "summary": "The dashboard's script, style sheet and icon",
        "tags": ["dashboard"],
        "parameters": params,
        "responses": {
            "200": {
                "description": "OK",
                "content": {"text/javascript": text, "text/css": text, "image/svg+xml": text},
            },
            "404": {"description": "No such file", "content": {"application/json": error}},
            "400": {"description": "A '.' or '..' path segment", "content": {"application/json": error}},
        },
    }


_TEXT = {"type": "string"}


def dashboard_paths(
    op: Callable[..., dict[str, Any]],
    ref: Callable[[str], dict[str, Any]],
    ep: list[dict[str, Any]],
    job: list[dict[str, Any]],
) -> dict[str, Any]:
    """The paths of /scaling and the dashboard; `op` and `ref` are openapi.py's builders."""
    files = ["dashboard.js", "dashboard.css", "favicon.svg"]
    asset = {"name": "asset", "in": "path", "required": True, "schema": {"enum": files}}
    state = {
        "name": "state",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "pattern": csv_pattern([s.value for s in JobState])},
        "description": "comma-separated job states the request list keeps (default: all)",
    }
    feed = op(
        "The dashboard's push feed: Server-Sent Events, one `snapshot` event per change",
        {},
        params=[*ep, state],
        errors=(400, 401, 403, 404, 429),
        tag="dashboard",
    )
    event = {"type": "object", "properties": {"event": {"type": "string"}, "data": {"type": "string"}}}
    feed["responses"]["200"]["content"] = {
        "text/event-stream": {"schema": event, "example": "event: snapshot\ndata: {...}\n\n"}
    }
    return {
        "/v2/{endpoint_id}/scaling": {
            "get": op(
                "What an autoscaler needs: queued and running jobs, live workers, desiredWorkers",
                ref("Scaling"),
                params=ep,
                errors=(401, 403, 404),
            )
        },
        "/": {"get": _html("Links to the dashboard, this document, metrics and liveness")},
        "/dashboard": {"get": _html("The live dashboard page")},
        "/dashboard/endpoints": {
            "get": op(
                "Endpoint ids the page suggests: configured ones, then those this process served",
                {"type": "object", "properties": {"endpoints": {"type": "array", "items": _TEXT}}},
                errors=(),
                tag="dashboard",
                security=None,
            )
        },
        "/dashboard/{asset}": {"get": _assets([asset])},
        "/v2/{endpoint_id}/dashboard/feed": {"get": feed},
        "/v2/{endpoint_id}/dashboard/jobs/{job_id}": {
            "get": op(
                "One job for the dashboard: times, attempts, input (unless dashboard_inputs is off), "
                "progress, output or error",
                ref("JobDetail"),
                params=job,
                errors=(401, 403, 404, 429),
                tag="dashboard",
            )
        },
    }
