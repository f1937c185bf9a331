"""Checking values against a compiled schema; every problem is collected, none raised (they are
the client's to fix, in one round trip)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .fields import _NUMBER_TYPES, _SIZED_TYPES, _TYPE_NAMES, MISSING, Field, name_of, plural, short


def validate_object(schema: dict[str, Field], data: Any, prefix: str, problems: list[str]) -> Any:
    if not isinstance(data, Mapping):
        where = prefix.rstrip(".") or "input"
        problems.append(f"{where}: expected an object, got {name_of(data)}")
        return data
    result: dict[str, Any] = {}
    for name, spec in schema.items():
        path = prefix + str(name)
        if name in data:
            result[name] = check_value(spec, data[name], path, problems)
        elif spec.default is None:
            result[name] = None  # "absent means None", whatever the declared type
        elif spec.default is not MISSING:
            result[name] = check_value(spec, copy.deepcopy(spec.default), path, problems)
        elif spec.required:
            problems.append(f"{path}: required field is missing")
    for name, value in data.items():
        if name not in schema:
            known = ", ".join(schema) or "none"
            problems.append(f"{prefix}{name}: unknown field (expected one of: {known})")
            result[name] = value
    return result


def check_value(spec: Field, value: Any, path: str, problems: list[str]) -> Any:
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
                f"{path}: must have at least {spec.min_length} {unit}{plural(spec.min_length)}; got {size}"
            )
        if spec.max_length is not None and size > spec.max_length:
            problems.append(
                f"{path}: must have at most {spec.max_length} {unit}{plural(spec.max_length)}; got {size}"
            )
    if spec._regex is not None and isinstance(value, str) and spec._regex.fullmatch(value) is None:
        problems.append(f"{path}: must match the pattern {spec.pattern!r}; got {short(value)}")
    # A custom check may rely on the declared constraints, so it runs only once they hold.
    if spec.check is not None and len(problems) == before:
        try:
            verdict = spec.check(value)
        except Exception as exc:
            problems.append(f"{path}: {str(exc) or type(exc).__name__}")  # `raise ValueError` has no text
        else:
            if verdict is False:
                name = getattr(spec.check, "__name__", "check")
                problems.append(f"{path}: failed the check {name!r}; got {short(value)}")
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
            problems.append(f"{path}: expected {expected}, got {name_of(value)}")
        return converted
    if tag == "object":
        return validate_object(kind[1], value, path + ".", problems)
    if tag == "list":
        if not isinstance(value, list | tuple):
            problems.append(f"{path}: expected array, got {name_of(value)}")
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
    problems.append(f"{path}: {name_of(value)} matches none of the allowed types")
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
