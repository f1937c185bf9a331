"""Declarative input validation for handlers: `@handler(input_schema={...})`.

A schema maps field names to a `Field`, a bare type, or a nested schema (a dict). `validate()`
returns the input with defaults applied and *every* problem it found, so a client fixes a
request in one round trip. Unlike the hosted SDK's validator, constraints are checked on
defaulted values too, and a malformed schema is refused once, by `compile_schema()`, when the
handler is decorated rather than on every job.
"""

from __future__ import annotations

import copy
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = ["MISSING", "Field", "compile_schema", "validate"]


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


# --- compiling (schema errors are the handler author's, raised once as ConfigError) -------------


def compile_schema(schema: Any) -> dict[str, Field]:
    """Check a schema and normalise it to `{name: Field}`; raise ConfigError if it is malformed.

    The result is itself a valid schema for `validate()`, and validating with it skips the
    checks done here.
    """
    return _compile(schema, "")


def _compile(schema: Any, prefix: str) -> dict[str, Field]:
    if not isinstance(schema, Mapping):
        raise ConfigError(
            f"input_schema{' for ' + prefix if prefix else ''} must be a dict of field name -> Field, "
            f"not {type(schema).__name__}"
        )
    compiled: dict[str, Field] = {}
    for name, spec in schema.items():
        if not isinstance(name, str):
            raise ConfigError(f"input_schema field names must be strings, not {name!r}")
        compiled[name] = _compile_field(spec, prefix + name)
    return compiled


def _compile_field(spec: Any, path: str) -> Field:
    if isinstance(spec, Field) and spec._compiled is not None:
        return spec
    if not isinstance(spec, Field):
        if isinstance(spec, Mapping) or _is_type_spec(spec):
            spec = Field(type=spec)
        else:
            raise ConfigError(
                f"input_schema field {path!r}: expected a Field, a type or a nested dict, got {spec!r}"
            )
    kind = _compile_type(spec.type, path)
    regex = None
    if spec.pattern is not None:
        if not isinstance(spec.pattern, str):
            raise ConfigError(f"input_schema field {path!r}: pattern must be a string")
        try:
            regex = re.compile(spec.pattern)
        except re.error as exc:
            raise ConfigError(f"input_schema field {path!r}: bad pattern {spec.pattern!r}: {exc}") from None
        if not _may_be(kind, str):
            raise ConfigError(f"input_schema field {path!r}: pattern applies only to str fields")
    for bound in ("min", "max"):
        value = getattr(spec, bound)
        if value is None:
            continue
        if not isinstance(value, _NUMBER_TYPES) or isinstance(value, bool):
            raise ConfigError(f"input_schema field {path!r}: {bound} must be a number, got {value!r}")
        if not _may_be(kind, int) and not _may_be(kind, float):
            raise ConfigError(
                f"input_schema field {path!r}: {bound} applies to numbers; "
                f"use {bound}_length for strings and lists"
            )
    if spec.min is not None and spec.max is not None and spec.min > spec.max:
        raise ConfigError(f"input_schema field {path!r}: min ({spec.min}) is greater than max ({spec.max})")
    for bound in ("min_length", "max_length"):
        value = getattr(spec, bound)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"input_schema field {path!r}: {bound} must be a non-negative integer")
        if not any(_may_be(kind, t) for t in _SIZED_TYPES):
            raise ConfigError(f"input_schema field {path!r}: {bound} applies to strings, lists and objects")
    if spec.min_length is not None and spec.max_length is not None and spec.min_length > spec.max_length:
        raise ConfigError(f"input_schema field {path!r}: min_length is greater than max_length")
    choices = spec.choices
    if choices is not None:
        if isinstance(choices, str | bytes) or not isinstance(choices, typing.Iterable):
            raise ConfigError(f"input_schema field {path!r}: choices must be a list of allowed values")
        choices = tuple(choices)
        if not choices:
            raise ConfigError(f"input_schema field {path!r}: choices is empty, so no value could pass")
    if spec.check is not None and not callable(spec.check):
        raise ConfigError(f"input_schema field {path!r}: check must be callable")
    if not isinstance(spec.required, bool):
        raise ConfigError(f"input_schema field {path!r}: required must be True or False")
    compiled = Field(
        type=spec.type,
        required=spec.required,
        default=spec.default,
        min=spec.min,
        max=spec.max,
        choices=choices,
        pattern=spec.pattern,
        min_length=spec.min_length,
        max_length=spec.max_length,
        check=spec.check,
        description=spec.description,
        _compiled=kind,
        _regex=regex,
    )
    if spec.default is not MISSING and spec.default is not None:
        # A default is checked like any value: a default that could never pass is the author's bug.
        problems: list[str] = []
        _check_value(compiled, copy.deepcopy(spec.default), path, problems)
        if problems:
            raise ConfigError(
                f"input_schema field {path!r}: default {spec.default!r} is invalid: "
                f"{problems[0].split(': ', 1)[-1]}"
            )
    return compiled


# A compiled type is one of:
#   ("any",)                     anything
#   ("types", (t1, t2, ...))     isinstance check against plain types
#   ("object", {name: Field})    nested schema
#   ("list", item_kind | None)   list whose items match item_kind
#   ("union", (kind, kind, ...)) any of several compiled kinds
def _compile_type(tp: Any, path: str) -> tuple[Any, ...]:
    if tp is object or tp is Any:
        return ("any",)
    if tp is None or tp is type(None):
        return ("types", (type(None),))
    if isinstance(tp, Mapping):
        return ("object", _compile(tp, path + "."))
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union) or isinstance(tp, tuple):
        members = typing.get_args(tp) if origin is not None else tp
        if not members:
            raise ConfigError(f"input_schema field {path!r}: empty type tuple")
        kinds = [_compile_type(m, path) for m in members]
        if all(k[0] == "types" for k in kinds):
            return ("types", tuple(t for k in kinds for t in k[1]))
        return ("union", tuple(kinds))
    if origin is list:
        args = typing.get_args(tp)
        return ("list", _compile_type(args[0], path + "[]") if args else None)
    if origin is not None:
        raise ConfigError(
            f"input_schema field {path!r}: type {tp!r} is not supported; "
            "use a plain type, a union, list[T] or a nested dict"
        )
    if isinstance(tp, type):
        return ("types", (tp,))
    raise ConfigError(
        f"input_schema field {path!r}: type must be a type, a union, list[T] or a dict, not {tp!r}"
    )


def _is_type_spec(spec: Any) -> bool:
    return (
        isinstance(spec, type | tuple | types.UnionType) or spec is Any or typing.get_origin(spec) is not None
    )


def _may_be(kind: tuple[Any, ...], tp: type) -> bool:
    """Whether values of type `tp` can pass this compiled type (for constraint sanity checks)."""
    tag = kind[0]
    if tag == "any":
        return True
    if tag == "types":
        return any(issubclass(tp, t) or (t is float and tp is int) for t in kind[1])
    if tag == "object":
        return tp is dict
    if tag == "list":
        return tp is list
    return any(_may_be(k, tp) for k in kind[1])


# --- validating (problems are the client's, returned as a list) -----------------------------------


def validate(schema: Any, data: Any) -> tuple[Any, list[str]]:
    """Validate `data` against `schema`.

    Returns `(validated, problems)`: the input with defaults applied (a new dict; `data` is not
    changed) and one message per problem, `"<field path>: <what is wrong>"`. An empty list means
    the input is valid. Raises ConfigError if the schema itself is malformed.
    """
    compiled = schema if _is_compiled(schema) else compile_schema(schema)
    problems: list[str] = []
    result = _validate_object(compiled, data, "", problems)
    return result, problems


def _is_compiled(schema: Any) -> bool:
    return isinstance(schema, dict) and all(
        isinstance(f, Field) and f._compiled is not None for f in schema.values()
    )


def _validate_object(schema: dict[str, Field], data: Any, prefix: str, problems: list[str]) -> Any:
    if not isinstance(data, Mapping):
        where = prefix.rstrip(".") or "input"
        problems.append(f"{where}: expected an object, got {_name_of(data)}")
        return data
    result: dict[str, Any] = {}
    for name, spec in schema.items():
        path = prefix + str(name)
        if name in data:
            result[name] = _check_value(spec, data[name], path, problems)
        elif spec.default is None:
            result[name] = None  # "absent means None", whatever the declared type
        elif spec.default is not MISSING:
            result[name] = _check_value(spec, copy.deepcopy(spec.default), path, problems)
        elif spec.required:
            problems.append(f"{path}: required field is missing")
    for name, value in data.items():
        if name not in schema:
            known = ", ".join(schema) or "none"
            problems.append(f"{prefix}{name}: unknown field (expected one of: {known})")
            result[name] = value
    return result


def _check_value(spec: Field, value: Any, path: str, problems: list[str]) -> Any:
    before = len(problems)
    value = _check_type(spec._compiled, value, path, problems)
    if len(problems) > before:
        return value  # constraints on a value of the wrong type would only add noise
    if spec.choices is not None and not any(_same(value, c) for c in spec.choices):
        allowed = ", ".join(repr(c) for c in spec.choices)
        problems.append(f"{path}: must be one of {allowed}; got {value!r}")
    if isinstance(value, _NUMBER_TYPES) and not isinstance(value, bool):
        # Written as "not within" so that NaN (which Python's JSON parser accepts) fails a bound.
        if spec.min is not None and not value >= spec.min:
            problems.append(f"{path}: must be >= {spec.min}; got {value!r}")
        if spec.max is not None and not value <= spec.max:
            problems.append(f"{path}: must be <= {spec.max}; got {value!r}")
    if isinstance(value, _SIZED_TYPES):
        size = len(value)
        unit = "character" if isinstance(value, str) else "item"
        if spec.min_length is not None and size < spec.min_length:
            problems.append(
                f"{path}: must have at least {spec.min_length} {unit}{_s(spec.min_length)}; got {size}"
            )
        if spec.max_length is not None and size > spec.max_length:
            problems.append(
                f"{path}: must have at most {spec.max_length} {unit}{_s(spec.max_length)}; got {size}"
            )
    if spec._regex is not None and isinstance(value, str) and spec._regex.fullmatch(value) is None:
        problems.append(f"{path}: must match the pattern {spec.pattern!r}; got {_short(value)}")
    # A custom check may rely on the declared constraints, so it runs only once they hold.
    if spec.check is not None and len(problems) == before:
        try:
            verdict = spec.check(value)
        except Exception as exc:
            problems.append(f"{path}: {str(exc) or type(exc).__name__}")  # `raise ValueError` has no text
        else:
            if verdict is False:
                name = getattr(spec.check, "__name__", "check")
                problems.append(f"{path}: failed the check {name!r}; got {_short(value)}")
            elif isinstance(verdict, str):
                problems.append(f"{path}: {verdict}")
    return value


def _check_type(kind: tuple[Any, ...], value: Any, path: str, problems: list[str]) -> Any:
    tag = kind[0]
    if tag == "any":
        return value
    if tag == "types":
        ok, converted = _match_types(kind[1], value)
        if not ok:
            expected = " or ".join(dict.fromkeys(_TYPE_NAMES.get(t, t.__name__) for t in kind[1]))
            problems.append(f"{path}: expected {expected}, got {_name_of(value)}")
        return converted
    if tag == "object":
        return _validate_object(kind[1], value, path + ".", problems)
    if tag == "list":
        if not isinstance(value, list | tuple):
            problems.append(f"{path}: expected array, got {_name_of(value)}")
            return value
        if kind[1] is None:
            return list(value)
        return [_check_type(kind[1], item, f"{path}[{i}]", problems) for i, item in enumerate(value)]
    # union of composite kinds: the first that accepts the value wins
    for member in kind[1]:
        trial: list[str] = []
        converted = _check_type(member, value, path, trial)
        if not trial:
            return converted
    problems.append(f"{path}: {_name_of(value)} matches none of the allowed types")
    return value


def _match_types(allowed: tuple[type, ...], value: Any) -> tuple[bool, Any]:
    is_bool = isinstance(value, bool)
    for tp in allowed:
        if tp is bool:
            if is_bool:
                return True, value
        elif tp is int:
            # JSON has one number type and Python's bool is an int; neither should slip through.
            if isinstance(value, int) and not is_bool:
                return True, value
        elif tp is float:
            if isinstance(value, _NUMBER_TYPES) and not is_bool:
                return True, float(value)
        elif isinstance(value, tp):
            return True, value
    return False, value


def _same(value: Any, choice: Any) -> bool:
    # 1 == True in Python; a boolean must not satisfy an integer choice or the reverse.
    return value == choice and isinstance(value, bool) == isinstance(choice, bool)


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _name_of(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
