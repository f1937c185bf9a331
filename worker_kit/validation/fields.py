"""The declaration side of input validation: `Field`, `MISSING`, and the names used in messages."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


#: The "no default" marker (None is a legitimate default).
MISSING: Any = _Missing()

_NUMBER_TYPES = (int, float)
_SIZED_TYPES = (str, bytes, list, tuple, dict)
# JSON names in messages: clients send JSON, not Python objects.
_TYPE_NAMES: dict[type, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    tuple: "array",
    dict: "object",
    type(None): "null",
    bytes: "bytes",
}


@dataclass(frozen=True, slots=True)
class Field:
    """One input field.

    `type` is a type (`int`, `str`, ...), a tuple or union of types (`int | None`), `list[T]`, a
    nested schema dict, or `object`/`typing.Any` for anything. A field with a `default` is
    optional; a required field without one must be present. `min`/`max` bound numbers,
    `min_length`/`max_length` bound strings, lists and objects, `pattern` must match a whole
    string (`re.fullmatch`), `choices` lists the allowed values, and `check(value)` returns True
    (or None) when the value is fine, False or an error string when it is not.
    `default=None` means "absent gives None" and is exempt from the type check; every other
    default must pass all the field's checks (refused at decoration time otherwise).
    """

    type: Any = object
    required: bool = True
    default: Any = MISSING
    min: float | None = None
    max: float | None = None
    choices: Any = None
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    check: Callable[[Any], bool | str | None] | None = None
    description: str | None = None
    # Filled in by compile_schema; not part of the public constructor.
    _compiled: Any = field(default=None, repr=False, compare=False)
    _regex: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    @property
    def optional(self) -> bool:
        return not self.required or self.default is not MISSING


Schema = Mapping[str, "Field | type | Mapping[str, Any]"]


def plural(count: int) -> str:
    return "" if count == 1 else "s"


def name_of(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
