"""worker_kit.validation: every problem reported, defaults applied and checked, bad schemas refused."""

from __future__ import annotations

import re

import pytest

from worker_kit.errors import ConfigError
from worker_kit.validation import Field, compile_schema, validate

SCHEMA = {
    "prompt": Field(str, min_length=1, max_length=50),
    "steps": Field(int, default=20, min=1, max=100),
    "mode": Field(str, default="fast", choices=["fast", "slow"]),
    "temperature": Field(float, required=False, min=0, max=2),
    "name": Field(str, required=False, pattern=r"[a-z]+"),
    "seed": Field(int, default=None),
}


def test_valid_input_gets_defaults_and_is_not_mutated() -> None:
    data = {"prompt": "hello"}
    result, problems = validate(SCHEMA, data)
    assert problems == []
    assert result == {"prompt": "hello", "steps": 20, "mode": "fast", "seed": None}
    assert data == {"prompt": "hello"}


def test_every_problem_is_listed_at_once() -> None:
    data = {"steps": 0, "mode": "medium", "temperature": "hot", "name": "Bob", "extra": 1}
    _, problems = validate(SCHEMA, data)
    assert problems == [
        "prompt: required field is missing",
        "steps: must be >= 1; got 0",
        "mode: must be one of 'fast', 'slow'; got 'medium'",
        "temperature: expected number, got string",
        "name: must match the pattern '[a-z]+'; got 'Bob'",
        "extra: unknown field (expected one of: prompt, steps, mode, temperature, name, seed)",
    ]


def test_bool_is_not_an_integer_nor_a_number() -> None:
    _, problems = validate({"n": int, "x": float}, {"n": True, "x": False})
    assert problems == ["n: expected integer, got boolean", "x: expected number, got boolean"]


def test_int_is_accepted_as_float_and_converted() -> None:
    result, problems = validate({"x": float}, {"x": 2})
    assert problems == [] and result == {"x": 2.0} and isinstance(result["x"], float)


def test_nan_fails_numeric_bounds() -> None:
    # The service's JSON parser accepts NaN and Infinity; a bounded field must not let them through.
    schema = {"x": Field(float, min=0, max=1)}
    _, problems = validate(schema, {"x": float("nan")})
    assert problems == ["x: must be >= 0; got nan", "x: must be <= 1; got nan"]
    assert validate(schema, {"x": float("inf")})[1] == ["x: must be <= 1; got inf"]
    assert validate(schema, {"x": 0.5})[1] == []


def test_null_is_a_wrong_type_unless_allowed() -> None:
    _, problems = validate({"n": int}, {"n": None})
    assert problems == ["n: expected integer, got null"]
    result, problems = validate({"n": int | None}, {"n": None})
    assert problems == [] and result == {"n": None}


def test_bool_does_not_match_an_integer_choice() -> None:
    _, problems = validate({"n": Field(int | bool, choices=[1, 2])}, {"n": True})
    assert problems == ["n: must be one of 1, 2; got True"]


def test_length_bounds_on_strings_and_lists() -> None:
    schema = {"s": Field(str, max_length=3), "items": Field(list, min_length=2)}
    _, problems = validate(schema, {"s": "abcd", "items": [1]})
    assert problems == [
        "s: must have at most 3 characters; got 4",
        "items: must have at least 2 items; got 1",
    ]


def test_pattern_must_match_the_whole_string() -> None:
    schema = {"code": Field(str, pattern=r"[A-Z]{3}")}
    assert validate(schema, {"code": "ABC"})[1] == []
    assert validate(schema, {"code": "ABCD"})[1] == ["code: must match the pattern '[A-Z]{3}'; got 'ABCD'"]


def test_check_returning_false_message_or_raising() -> None:
    def even(value: int) -> bool:
        return value % 2 == 0

    def not_bob(value: str) -> str | None:
        return "Bob is not allowed" if value == "Bob" else None

    def explode(value: object) -> bool:
        raise ValueError("cannot parse the date")

    schema = {
        "n": Field(int, check=even),
        "who": Field(str, check=not_bob),
        "when": Field(str, check=explode),
    }
    _, problems = validate(schema, {"n": 3, "who": "Bob", "when": "x"})
    assert problems == [
        "n: failed the check 'even'; got 3",
        "who: Bob is not allowed",
        "when: cannot parse the date",
    ]
    assert validate({"n": Field(int, check=even)}, {"n": 4})[1] == []

    def silent(value: object) -> bool:
        raise ValueError

    assert validate({"x": Field(check=silent)}, {"x": 1})[1] == ["x: ValueError"]


def test_check_runs_only_after_declared_constraints_pass() -> None:
    calls: list[object] = []
    schema = {"n": Field(int, min=0, check=lambda v: calls.append(v) or True)}
    assert validate(schema, {"n": -1})[1] == ["n: must be >= 0; got -1"]
    assert calls == []


def test_nested_schema_dicts_with_paths_and_nested_defaults() -> None:
    schema = {
        "options": {"size": Field(int, default=512, min=64), "style": Field(str, choices=["a", "b"])},
        "extra": Field({"flag": Field(bool, default=False)}, default={}),
    }
    result, problems = validate(schema, {"options": {"style": "a"}})
    assert problems == []
    assert result == {"options": {"size": 512, "style": "a"}, "extra": {"flag": False}}
    _, problems = validate(schema, {"options": {"size": 1, "style": "c", "what": 0}})
    assert problems == [
        "options.size: must be >= 64; got 1",
        "options.style: must be one of 'a', 'b'; got 'c'",
        "options.what: unknown field (expected one of: size, style)",
    ]
    _, problems = validate(schema, {"options": [1]})
    assert problems == ["options: expected an object, got array"]


def test_typed_lists_report_each_bad_item() -> None:
    point = {"x": int}
    schema = {"tags": list[str], "points": list[point]}  # type: ignore[valid-type]
    _, problems = validate(schema, {"tags": ["a", 2, "c", None], "points": [{"x": 1}, {"x": "2"}]})
    assert problems == [
        "tags[1]: expected string, got integer",
        "tags[3]: expected string, got null",
        "points[1].x: expected integer, got string",
    ]


def test_input_that_is_not_an_object() -> None:
    assert validate({"a": int}, [1, 2])[1] == ["input: expected an object, got array"]
    assert validate({"a": int}, None)[1] == ["input: expected an object, got null"]


def test_defaults_are_copied_not_shared() -> None:
    schema = {"tags": Field(list, default=[])}
    first, _ = validate(schema, {})
    first["tags"].append("x")
    second, _ = validate(schema, {})
    assert second == {"tags": []}


def test_bare_types_are_required_fields() -> None:
    assert validate({"a": int}, {})[1] == ["a: required field is missing"]
    assert validate({"a": Field(int, required=False)}, {}) == ({}, [])


def test_any_type_accepts_everything() -> None:
    assert validate({"a": Field()}, {"a": [1, {"b": None}]})[1] == []


def test_compiled_schema_is_reusable_and_equivalent() -> None:
    compiled = compile_schema(SCHEMA)
    data = {"prompt": "", "steps": 500}
    assert validate(compiled, data) == validate(SCHEMA, data)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ([1, 2], "must be a dict"),
        ({1: int}, "field names must be strings"),
        ({"a": 5}, "expected a Field, a type or a nested dict"),
        ({"a": Field(int, default=0, min=1)}, "default 0 is invalid: must be >= 1"),
        ({"a": Field(str, default=3)}, "default 3 is invalid: expected string, got integer"),
        ({"a": Field(str, default="c", choices=["a", "b"])}, "default 'c' is invalid"),
        ({"a": Field(int, min=5, max=1)}, "min (5) is greater than max (1)"),
        ({"a": Field(str, min=1)}, "min applies to numbers; use min_length"),
        ({"a": Field(int, pattern="[0-9]")}, "pattern applies only to str fields"),
        ({"a": Field(str, pattern="(")}, "bad pattern"),
        ({"a": Field(int, max_length=3)}, "max_length applies to strings, lists and objects"),
        ({"a": Field(str, min_length=-1)}, "min_length must be a non-negative integer"),
        ({"a": Field(str, choices=[])}, "choices is empty"),
        ({"a": Field(str, choices="abc")}, "choices must be a list"),
        ({"a": Field(str, check="nope")}, "check must be callable"),  # type: ignore[arg-type]
        ({"a": Field(dict[str, int])}, "is not supported"),
        ({"a": {"b": Field(int, min="x")}}, "field 'a.b': min must be a number"),  # type: ignore[arg-type]
    ],
)
def test_malformed_schema_raises_config_error(schema: object, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        compile_schema(schema)
    with pytest.raises(ConfigError):
        validate(schema, {})


def test_a_malformed_schema_fails_at_decoration_time() -> None:
    from worker_kit.worker.registry import handler

    def fn(job: object) -> None:
        return None

    with pytest.raises(ConfigError, match="field 'n': min applies to numbers"):
        handler(input_schema={"n": Field(str, min=1)})(fn)
