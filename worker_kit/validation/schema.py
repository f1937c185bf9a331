"""Compiling a schema: checked once, when the handler is decorated; a malformed schema is the
handler author's bug, raised as ConfigError, never a job's."""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .fields import _NUMBER_TYPES, _SIZED_TYPES, MISSING, Field
from .values import check_value


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
    regex = _compile_pattern(spec, kind, path)
    _check_bounds(spec, kind, path)
    choices = _compile_choices(spec.choices, path)
    if spec.check is not None and not callable(spec.check):
        raise ConfigError(f"input_schema field {path!r}: check must be callable")
    if not isinstance(spec.required, bool):
        raise ConfigError(f"input_schema field {path!r}: required must be True or False")
    compiled = dataclasses.replace(spec, choices=choices, _compiled=kind, _regex=regex)
    if spec.default is not MISSING and spec.default is not None:
        # A default is checked like any value: a default that could never pass is the author's bug.
        problems: list[str] = []
        check_value(compiled, copy.deepcopy(spec.default), path, problems)
        if problems:
            raise ConfigError(
                f"input_schema field {path!r}: default {spec.default!r} is invalid: "
                f"{problems[0].split(': ', 1)[-1]}"
            )
    return compiled


def _compile_pattern(spec: Field, kind: tuple[Any, ...], path: str) -> re.Pattern[str] | None:
    if spec.pattern is None:
        return None
    if not isinstance(spec.pattern, str):
        raise ConfigError(f"input_schema field {path!r}: pattern must be a string")
    try:
        regex = re.compile(spec.pattern)
    except re.error as exc:
        raise ConfigError(f"input_schema field {path!r}: bad pattern {spec.pattern!r}: {exc}") from None
    if not _may_be(kind, str):
        raise ConfigError(f"input_schema field {path!r}: pattern applies only to str fields")
    return regex


def _check_bounds(spec: Field, kind: tuple[Any, ...], path: str) -> None:
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


def _compile_choices(choices: Any, path: str) -> tuple[Any, ...] | None:
    if choices is None:
        return None
    if isinstance(choices, str | bytes) or not isinstance(choices, typing.Iterable):
        raise ConfigError(f"input_schema field {path!r}: choices must be a list of allowed values")
    choices = tuple(choices)
    if not choices:
        raise ConfigError(f"input_schema field {path!r}: choices is empty, so no value could pass")
    return choices


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
