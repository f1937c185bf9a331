"""Declarative input validation for handlers: `@handler(input_schema={...})`.

A schema maps field names to a `Field`, a bare type, or a nested schema (a dict). `validate()`
returns the input with defaults applied and *every* problem it found, so a client fixes a
request in one round trip. Unlike the hosted SDK's validator, constraints are checked on
defaulted values too, and a malformed schema is refused once, by `compile_schema()`, when the
handler is decorated rather than on every job.
"""

from __future__ import annotations

from typing import Any

from .fields import MISSING, Field, Schema
from .schema import compile_schema
from .values import validate_object

__all__ = ["MISSING", "Field", "Schema", "compile_schema", "validate"]


def validate(schema: Any, data: Any) -> tuple[Any, list[str]]:
    """Validate `data` against `schema`.

    Returns `(validated, problems)`: the input with defaults applied (a new dict; `data` is not
    changed) and one message per problem, `"<field path>: <what is wrong>"`. An empty list means
    the input is valid. Raises ConfigError if the schema itself is malformed.
    """
    compiled = schema if _is_compiled(schema) else compile_schema(schema)
    problems: list[str] = []
    result = validate_object(compiled, data, "", problems)
    return result, problems


def _is_compiled(schema: Any) -> bool:
    return isinstance(schema, dict) and all(
        isinstance(f, Field) and f._compiled is not None for f in schema.values()
    )
