"""Schemathesis hooks for tests/service/test_openapi_fuzz.py (loaded via SCHEMATHESIS_HOOKS).

Long-polls are held at most 200 ms, so one run fits CI; msgpack answers are decoded so that
their schemas are checked like the JSON ones.
"""

from __future__ import annotations

from typing import Any

import msgpack
import schemathesis

_MAX_HOLD_MS = 200


def _clamp(values: Any, names: tuple[str, ...]) -> None:
    """Hold at most _MAX_HOLD_MS: a missing hold (the route's default is long) or a longer one is
    lowered; a value that is not a number is left for the route to refuse."""
    if not isinstance(values, dict):
        return
    for name in names:
        value = values.get(name)
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if value is None or (number and value > _MAX_HOLD_MS):
            values[name] = _MAX_HOLD_MS


_QUERY_HOLDS = {"/runsync": "wait", "/stream/{job_id}": "wait", "/status-sync/{job_id}": "wait",
                "/openai/{path}": "wait", "/job-take/{worker_id}": "wait_ms",
                "/job-take-batch/{worker_id}": "wait_ms", "/job-stop/{worker_id}": "wait_ms"}  # fmt: skip


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    path = case.operation.path
    for suffix, name in _QUERY_HOLDS.items():
        if path.endswith(suffix):
            if case.query is None:
                case.query = {}
            _clamp(case.query, (name,))
    if path.endswith(("/worker/claim", "/worker/heartbeat", "/worker/exchange")):
        _clamp(case.body, ("wait_ms",))
    if path.endswith("/requests") and isinstance(case.query, dict):
        # The cursor is opaque: only one a /requests answer gave out means anything.
        case.query.pop("cursor", None)


@schemathesis.deserializer("application/msgpack")
def msgpack_answer(ctx: Any, response: Any) -> Any:
    return msgpack.unpackb(response.content, raw=False, strict_map_key=False)
