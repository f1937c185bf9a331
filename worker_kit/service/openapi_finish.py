"""The last touches on /openapi.json's paths (openapi.py): operation ids, links from a submit to
the routes that take its job id, and request schemas that bound the values of undeclared keys."""

from __future__ import annotations

from typing import Any

from .openapi_schemas import PORTABLE_REF, SCHEMAS


def with_portable_extras(schema: Any) -> Any:
    """A request schema whose objects say what their undeclared keys may hold: a portable value
    (the routes ignore unknown keys, but refuse one holding, say, an integer wider than 64 bits)."""
    if isinstance(schema, list):
        return [with_portable_extras(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: with_portable_extras(v) for k, v in schema.items()}
    kind = out.get("type")
    is_object = kind == "object" or (isinstance(kind, list) and "object" in kind)
    if is_object and "additionalProperties" not in out:
        out["additionalProperties"] = PORTABLE_REF
    return out


REQUEST_SCHEMAS = frozenset(
    name for name in SCHEMAS if name.endswith("Request") or name in ("OutputItem", "Policy", "HostedReport")
)


def _operation_id(method: str, path: str) -> str:
    scope = "" if path.startswith("/v2/{endpoint_id}") else "service"
    words = [w.strip("{}") for w in path.removeprefix("/v2/{endpoint_id}").split("/") if w]
    names = [w.replace("-", "_").replace(".", "_") for w in words]
    return "_".join([method, *([scope] if scope else []), *names])


#: Links from a submit's answer to the routes that take its job id (schemathesis follows them).
_JOB_ROUTES = ("get_status_job_id", "post_status_job_id", "get_stream_job_id", "post_stream_job_id",
               "post_cancel_job_id", "post_retry_job_id")  # fmt: skip


def finish_paths(paths: dict[str, Any]) -> dict[str, Any]:
    for path, methods in paths.items():
        for method, op in methods.items():
            op = methods[method] = dict(op)
            op["operationId"] = _operation_id(method, path)
            body = op.get("requestBody")
            if body is not None:
                op["requestBody"] = with_portable_extras(body)
    for path in ("/v2/{endpoint_id}/run", "/v2/{endpoint_id}/runsync"):
        ok = paths[path]["post"]["responses"]["200"] = dict(paths[path]["post"]["responses"]["200"])
        ok["links"] = {
            target: {
                "operationId": target,
                "parameters": {"endpoint_id": "$request.path.endpoint_id", "job_id": "$response.body#/id"},
            }
            for target in _JOB_ROUTES
        }
    return paths
