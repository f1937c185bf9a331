"""portable.problem() on lists of flat maps (a worker's output items: one map per streamed
token), which it checks in bulk: the same answers, naming the same place, as a look at each."""

from __future__ import annotations

from typing import Any

from worker_kit.portable import MAX_DEPTH, problem


def items(n: int, **at: Any) -> list[dict[Any, Any]]:
    out: list[dict[Any, Any]] = [{"seq": i, "kind": "chunk", "data": f"tok{i} é"} for i in range(n)]
    for index, value in at.items():
        out[int(index[1:])]["data"] = value
    return out


def test_maps_of_scalars_are_portable() -> None:
    assert problem({"token": "t", "items": items(1000)}, finite=False) is None
    mixed = items(10, i1=None, i2=b"\x00", i3=True, i4=2**63, i5=1.5, i6="")
    assert problem(mixed) is None


def test_a_bad_value_among_many_maps_is_named_where_it_is() -> None:
    bad = problem({"items": items(1000, i500="ok\ud800")}, finite=False)
    assert bad is not None and bad.startswith("body.items[500].data: text holds a lone UTF-16 surrogate")
    assert problem(items(5, i3=object())) == (
        "body[3].data: a value of type object cannot be carried as JSON and msgpack"
    )
    nan = items(5, i2=float("nan"))
    assert problem(nan, finite=False) is None
    assert problem(nan) == "body[2].data: nan is not a finite number (JSON has no NaN or Infinity)"


def test_a_bad_key_among_many_maps_is_named() -> None:
    maps = items(5)
    maps[4]["k\ud800"] = 1
    bad = problem(maps)
    assert bad is not None and bad.startswith("body[4]: key 'k\\ud800' is invalid")
    maps = items(5)
    maps[1][float("inf")] = 1
    assert problem(maps, finite=False) is None
    assert problem(maps) == "body[1]: key inf is not a finite number"


def test_maps_holding_containers_are_still_walked() -> None:
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH):
        deep = [deep]
    bad = problem(items(5, i2=deep))
    assert bad is not None and "nested deeper than" in bad
    assert problem(items(5, i2=[["x\ud800"]])) is not None
    assert problem(items(5, i2={"a": [1, 2]})) is None


def test_flat_maps_at_the_depth_limit() -> None:
    value: Any = [{"a": 1}]  # the maps are at depth 2
    for _ in range(MAX_DEPTH - 2):
        value = [value]
    assert problem(value) is None  # maps at depth MAX_DEPTH
    bad = problem([value])
    assert bad is not None and f"nested deeper than {MAX_DEPTH}" in bad


def test_a_list_of_text_is_checked_as_a_whole() -> None:
    tokens = [f"tok{i} é" for i in range(1000)]
    assert problem({"output": tokens}) is None
    tokens[700] = "a\udfffb"
    bad = problem({"output": tokens})
    assert bad is not None and bad.startswith("body.output[700]: text holds a lone UTF-16 surrogate")
    # Joining cannot make a surrogate pair of two halves: each half is still named.
    assert problem(["x\ud83d", "\ude00y"]) is not None


def test_plain_objects_pass_and_anything_else_is_still_looked_at() -> None:
    """Objects of ASCII text, integers, booleans and nulls pass without the full walk; a float,
    non-ASCII text or a list inside one is walked, and found out, as before."""
    assert problem({"input": {"prompt": "hello", "n": 3, "ok": True, "x": None}}) is None
    assert problem({"input": {"prompt": "h\ud800"}}) == (
        "body.input.prompt: text holds a lone UTF-16 surrogate (such as \\ud800), which has no UTF-8 "
        "form; send valid Unicode text, or bytes"
    )
    assert problem({"a": {"b": float("nan")}}) == (
        "body.a.b: nan is not a finite number (JSON has no NaN or Infinity)"
    )
    assert problem({"a": {"b": float("nan")}}, finite=False) is None
    assert problem({"a": {"\ud800": 1}}) is not None
    assert problem({"a": {"b": [1.5, float("inf")]}}) == (
        "body.a.b[1]: inf is not a finite number (JSON has no NaN or Infinity)"
    )
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(MAX_DEPTH):  # deeper than the quick look goes: the walk counts the levels
        inner["k"] = {}
        inner = inner["k"]
    reason = f"nested deeper than {MAX_DEPTH} levels of arrays and objects"
    assert problem(deep) == f"body.k.k.k.k.k.k.k.k...: {reason}"


def test_a_value_of_an_unknown_type_inside_a_list_is_named() -> None:
    # No decoder makes one, but a caller may hand problem() any Python value.
    assert problem([1, object()]) == "body[1]: a value of type object cannot be carried as JSON and msgpack"
    assert problem({"a": [None, {1, 2}]}) is not None
    assert problem([1, True, None, b"x"]) is None
