"""The fields of the worker wire's messages. Each reads one body field, refusing a bad value with
the service's 400 and its reason, and states its JSON Schema: a message lists its fields once, its
decoder reads them, and /openapi.json is generated from the same list (`object_schema`), so the
document cannot drift from what the routes accept (tests/test_protocol_messages.py).

Fields are plain objects with a `read(body)` method: a message's decoder calls them one by one, as
hand-written checks would, with no validation framework between the body and the route.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..portable import problem
from .constants import MAX_FIELD_CHARS, MAX_WIRE_INT
from .refusals import ApiError

#: A value the service accepts inside a body (worker_kit.portable): JSON with integers of at most
#: 64 bits. Nesting (at most 128 levels) and lone surrogates are beyond what a schema says well.
PORTABLE_REF: dict[str, Any] = {"$ref": "#/components/schemas/Value"}


def integral(value: Any) -> Any:
    """`value`, with a float that holds a whole number (`1000.0`) as an int: JSON Schema counts
    it an integer, and JSON encoders in some languages write every number that way."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


@dataclass(frozen=True, slots=True)
class Int:
    """An optional integer; null means absent. Values above `cap` are lowered to it, values
    outside minimum..maximum refused."""

    name: str
    default: int | None
    minimum: int = 0
    maximum: int | None = None
    cap: int | None = None
    description: str | None = None
    required = False

    def read(self, body: dict[str, Any]) -> Any:
        value = integral(body.get(self.name, self.default))
        if value is None:
            return self.default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ApiError(400, f"{self.name} must be an integer, not {value!r}")
        if value < self.minimum or (self.maximum is not None and value > self.maximum):
            bound = f"between {self.minimum} and {self.maximum}" if self.maximum is not None else (
                f"at least {self.minimum}")
            raise ApiError(400, f"{self.name} must be {bound}, not {value}")
        return value if self.cap is None or value <= self.cap else self.cap

    def schema(self) -> dict[str, Any]:
        top = self.maximum if self.maximum is not None else MAX_WIRE_INT
        schema: dict[str, Any] = {"type": ["integer", "null"], "minimum": self.minimum, "maximum": top}
        capped = f"capped at {self.cap}" if self.cap is not None else None
        notes = [n for n in (self.description, capped) if n]
        if notes:
            schema["description"] = "; ".join(notes)
        return schema


@dataclass(frozen=True, slots=True)
class Text:
    """A non-empty string of at most `max_len` characters of valid text (an id, a token)."""

    name: str
    required: bool = True
    max_len: int = MAX_FIELD_CHARS

    def read(self, body: dict[str, Any]) -> Any:
        value = body.get(self.name)
        if value is None:
            if self.required:
                raise ApiError(400, f"{self.name} is required")
            return None
        if not isinstance(value, str) or not value:
            raise ApiError(400, f"{self.name} must be a non-empty string")
        if len(value) > self.max_len:
            raise ApiError(400, f"{self.name} is longer than {self.max_len} characters")
        bad = problem(value, where=self.name)
        if bad is not None:
            raise ApiError(400, bad)
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "maxLength": self.max_len}


@dataclass(frozen=True, slots=True)
class Checked:
    """A field whose value passes `test` (or is absent, unless required), else a 400 with `reason`;
    `schema` says the same to /openapi.json."""

    name: str
    test: Any  # Callable[[Any], bool]
    reason: str
    json_schema: dict[str, Any]
    required: bool = False
    default: Any = None

    def read(self, body: dict[str, Any]) -> Any:
        value = body.get(self.name)
        if value is None:
            if self.required:
                raise ApiError(400, self.reason)
            return self.default
        if not self.test(value):
            raise ApiError(400, self.reason)
        return value

    def schema(self) -> dict[str, Any]:
        return self.json_schema


@dataclass(frozen=True, slots=True)
class Value:
    """Any portable value (the body as a whole is checked by the route)."""

    name: str
    description: str | None = None
    required = False

    def read(self, body: dict[str, Any]) -> Any:
        return body.get(self.name)

    def schema(self) -> dict[str, Any]:
        return {**PORTABLE_REF, "description": self.description} if self.description else PORTABLE_REF


@dataclass(frozen=True, slots=True)
class Out:
    """A field of an answer (service to worker): its schema only; workers read answers leniently."""

    name: str
    json_schema: dict[str, Any]
    required: bool = False

    def schema(self) -> dict[str, Any]:
        return self.json_schema


def object_schema(fields: Iterable[Any], description: str | None = None) -> dict[str, Any]:
    """The JSON Schema of a message whose body holds `fields` (each with name, required, schema())."""
    fields = list(fields)
    schema: dict[str, Any] = {"type": "object"}
    if description:
        schema["description"] = description
    required = [f.name for f in fields if f.required]
    if required:
        schema["required"] = required
    schema["properties"] = {f.name: f.schema() for f in fields}
    return schema
