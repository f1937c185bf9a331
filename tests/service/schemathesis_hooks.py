"""Schemathesis hooks for tests/service/test_openapi_fuzz.py (loaded via SCHEMATHESIS_HOOKS).

Long-polls are held at most 200 ms, so one run fits CI; msgpack answers are decoded so that
their schemas are checked like the JSON ones.

Two things the hooks must not do, or a failure is reported that is theirs: turn a request built
to break the schema into a valid one (a hold above its maximum lowered into range would then be
"a schema-violating request accepted"), so the holds of negative cases are only filled in where
missing; and send numbers JSON Schema cannot classify as the service does. An integral float
beyond 64 bits (`2.3e98`) is an integer to JSON Schema, so out of range for the `Value` schema,
while the service reads it as the float it is and accepts it; an integer literal that large is
refused. The schema cannot tell the two apart, so bodies holding such floats are not generated.
"""

from __future__ import annotations

from typing import Any

import msgpack
import schemathesis

_MAX_HOLD_MS = 200


def _clamp(values: Any, names: tuple[str, ...], negative: bool) -> None:
    """Hold at most _MAX_HOLD_MS: a missing hold (the route's default is long) or, in a case meant
    to fit the schema, a longer one is lowered; a value that is not a number is left for the route
    to refuse."""
    if not isinstance(values, dict):
        return
    for name in names:
        value = values.get(name)
        if negative:
            if value is None:
                values[name] = _MAX_HOLD_MS
            continue
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if value is None or (number and value > _MAX_HOLD_MS):
            values[name] = _MAX_HOLD_MS


_QUERY_HOLDS = {"/runsync": "wait", "/stream/{job_id}": "wait", "/status-sync/{job_id}": "wait",
                "/openai/{path}": "wait", "/job-take/{worker_id}": "wait_ms",
                "/job-take-batch/{worker_id}": "wait_ms", "/job-stop/{worker_id}": "wait_ms"}  # fmt: skip


def _is_negative(case: Any) -> bool:
    mode = getattr(getattr(getattr(case, "meta", None), "generation", None), "mode", None)
    return bool(getattr(mode, "is_negative", False))


_INT_RANGE = (-(2**63), 2**64 - 1)


def _has_ambiguous_number(value: Any) -> bool:
    if isinstance(value, float):
        return value.is_integer() and not _INT_RANGE[0] <= value <= _INT_RANGE[1]
    if isinstance(value, dict):
        return any(_has_ambiguous_number(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_ambiguous_number(item) for item in value)
    return False


@schemathesis.hook
def filter_body(context: Any, body: Any) -> bool:
    return not _has_ambiguous_number(body)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    path = case.operation.path
    negative = _is_negative(case)
    for suffix, name in _QUERY_HOLDS.items():
        if path.endswith(suffix):
            if case.query is None:
                case.query = {}
            _clamp(case.query, (name,), negative)
    if path.endswith(("/worker/claim", "/worker/heartbeat", "/worker/exchange")):
        _clamp(case.body, ("wait_ms",), negative)
    if path.endswith("/requests") and isinstance(case.query, dict):
        # The cursor is opaque: only one a /requests answer gave out means anything.
        case.query.pop("cursor", None)


@schemathesis.deserializer("application/msgpack")
def msgpack_answer(ctx: Any, response: Any) -> Any:
    return msgpack.unpackb(response.content, raw=False, strict_map_key=False)
