"""The fields of the worker wire's messages. Each reads one body field, refusing a bad value with
the service's 400 and its reason, and states its JSON Schema: a message lists its fields once, its
decoder reads them, and /openapi.json is generated from the same list (`object_schema`), so the
document cannot drift from what the routes accept (tests/test_protocol_messages.py).

Fields are plain objects with a `read(body)` method: a message's decoder calls them one by one, as
hand-written checks would, with no validation framework between the body and the route. They are
plain classes, not dataclasses, so that importing the protocol stays cheap (a worker's cold start).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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


class Int:
    """An optional integer; null means absent. Values above `cap` are lowered to it, values
    outside minimum..maximum refused."""

    __slots__ = ("cap", "default", "description", "maximum", "minimum", "name")
    required = False

    def __init__(
        self,
        name: str,
        default: int | None,
        minimum: int = 0,
        maximum: int | None = None,
        cap: int | None = None,
        description: str | None = None,
    ) -> None:
        self.name, self.default, self.minimum, self.maximum = name, default, minimum, maximum
        self.cap, self.description = cap, description

    def read(self, body: dict[str, Any]) -> Any:
        value = integral(body.get(self.name, self.default))
        if value is None:
            return self.default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ApiError(400, f"{self.name} must be an integer, not {value!r}")
        # Without a maximum of its own, the largest integer the wire carries is the bound, as
        # the schema says: a capped field is lowered only from values the wire could hold.
        top = self.maximum if self.maximum is not None else MAX_WIRE_INT
        if value < self.minimum or value > top:
            raise ApiError(400, f"{self.name} must be between {self.minimum} and {top}, not {value}")
        return value if self.cap is None or value <= self.cap else self.cap

    def schema(self) -> dict[str, Any]:
        top = self.maximum if self.maximum is not None else MAX_WIRE_INT
        schema: dict[str, Any] = {"type": ["integer", "null"], "minimum": self.minimum, "maximum": top}
        capped = f"capped at {self.cap}" if self.cap is not None else None
        notes = [n for n in (self.description, capped) if n]
        if notes:
            schema["description"] = "; ".join(notes)
        return schema


class Text:
    """A non-empty string of at most `max_len` characters of valid text (an id, a token)."""

    __slots__ = ("max_len", "name", "required")

    def __init__(self, name: str, required: bool = True, max_len: int = MAX_FIELD_CHARS) -> None:
        self.name, self.required, self.max_len = name, required, max_len

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


class Checked:
    """A field whose value passes `test` (or is absent, unless required), else a 400 with `reason`;
    `json_schema` says the same to /openapi.json."""

    __slots__ = ("default", "json_schema", "name", "reason", "required", "test")

    def __init__(
        self,
        name: str,
        test: Callable[[Any], bool],
        reason: str,
        json_schema: dict[str, Any],
        required: bool = False,
        default: Any = None,
    ) -> None:
        self.name, self.test, self.reason, self.json_schema = name, test, reason, json_schema
        self.required, self.default = required, default

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


class Value:
    """Any portable value (the body as a whole is checked by the route)."""

    __slots__ = ("description", "name")
    required = False

    def __init__(self, name: str, description: str | None = None) -> None:
        self.name, self.description = name, description

    def read(self, body: dict[str, Any]) -> Any:
        return body.get(self.name)

    def schema(self) -> dict[str, Any]:
        return {**PORTABLE_REF, "description": self.description} if self.description else PORTABLE_REF


class Out:
    """A field of an answer (service to worker): its schema only; workers read answers leniently."""

    __slots__ = ("json_schema", "name", "required")

    def __init__(self, name: str, json_schema: dict[str, Any], required: bool = False) -> None:
        self.name, self.json_schema, self.required = name, json_schema, required

    def schema(self) -> dict[str, Any]:
        return self.json_schema


class Message:
    """The base of the wire's message types: slots, and equality and a repr by field, as a
    dataclass would give them (a dataclass costs a millisecond of import time each, which a
    worker's cold start pays). Each message lists its fields in `__slots__`, in order."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass with eq

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


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
