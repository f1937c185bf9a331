"""The one rule for values the service accepts: each must be re-encodable in every format it answers in.

Bodies arrive as JSON or msgpack and leave as JSON, msgpack or Server-Sent Events, possibly to a
different client in a different format (a msgpack input claimed by a JSON worker). A value is
*portable* when every one of those encoders can carry it; `problem()` names the first part that
is not, so the service refuses it at the door (docs/reliability.md, "What the service refuses"):

- nesting: at most `MAX_DEPTH` arrays/objects deep, counting the body itself. Encoders recurse,
  so a deeper value could be stored and then fail every answer that carries it.
- text: no lone UTF-16 surrogates (`"\\ud800"` is valid JSON but not UTF-8), in strings or keys.
- numbers: NaN and ±Infinity only where `finite=False` (worker reports: Python's `json.dumps`
  writes NaN); JSON answers carry them as `null` (`protocol.dumps_json`).
- types: what JSON or msgpack decode to (JSON answers carry bytes as base64, a msgpack timestamp
  as seconds, an extension as `[code, base64]`); map keys are strings, numbers, booleans, null or bytes.

The walk is iterative, so a hostile value cannot exhaust the stack here either.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

import msgpack

__all__ = ["MAX_DEPTH", "problem"]

#: The deepest nesting of arrays and objects a request body may have, the body itself included.
#: Answers add at most a few levels of their own (e.g. `{"stream": [{"output": chunk}]}`), which
#: every encoder carries: msgpack's own limit is 511 levels, JSON's is Python's stack.
MAX_DEPTH = 128

_SURROGATE = re.compile("[\ud800-\udfff]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
_SCALARS = (type(None), bool, int, bytes, msgpack.Timestamp, msgpack.ExtType)
_KEY_TYPES = (str, int, float, bool, type(None), bytes)


def problem(value: Any, *, finite: bool = True, where: str = "body") -> str | None:
    """None when `value` is portable, else a one-line reason naming where the first problem is."""
    if type(value) is str and value.isascii():
        return None  # an id or a token, checked on every request: no walk, no call
    if type(value) is dict and _plain_map(value, 1):
        return None  # a small body of text, integers and objects: the common case
    bad = _scalar_problem(value, finite)
    if bad is not None:
        return f"{where}: {bad}"
    # Only containers are pushed, with their path (a tuple of keys) and depth; scalars are
    # checked in place, so a long list of numbers costs one type test per item.
    stack: list[tuple[Any, tuple[Any, ...], int]] = [(value, (), 1)] if type(value) in _CONTAINERS else []
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"{_path(where, path)}: nested deeper than {MAX_DEPTH} levels of arrays and objects"
        if type(item) is list:
            kinds = set(map(type, item))
            if kinds <= _UNCHECKED:
                continue  # only integers, booleans, nulls, bytes: nothing to look at (the common case)
            if kinds == _MAPS and depth < MAX_DEPTH and _flat_maps_fine(item, finite):
                continue  # maps of portable scalars, checked in bulk (a report's output items)
            if kinds == _TEXTS and not _SURROGATE.search("".join(item)):
                continue  # text only (a streamed result's aggregate): one search over all of it
            pairs: Any = enumerate(item)
            keyed = False
        else:
            pairs = item.items()
            keyed = True
        for key, child in pairs:
            # The common keys and values (ASCII text, integers, null) are passed here, without
            # a call each: a small body's walk is mostly these.
            if keyed and not (type(key) is str and key.isascii()):
                bad = _key_problem(key, finite)
                if bad is not None:
                    return f"{_path(where, path)}: key {_short(key)} {bad}"
            kind = type(child)
            if (kind is str and child.isascii()) or kind is int or child is None:
                continue
            if kind in _CONTAINERS:
                stack.append((child, (*path, key), depth + 1))
                continue
            bad = _scalar_problem(child, finite)
            if bad is not None:
                return f"{_path(where, (*path, key))}: {bad}"
    return None


_CONTAINERS = (dict, list)
#: How deep _plain_map looks before leaving a value to the full walk.
_PLAIN_DEPTH = 8


def _plain_map(value: dict[Any, Any], depth: int) -> bool:
    """True when `value` holds only ASCII text keys and ASCII text, integers, booleans, nulls
    and such maps (up to _PLAIN_DEPTH deep): portable, with no path to keep. False means
    "walk it" (a list, a float, non-ASCII text...), never "refused"."""
    for key, child in value.items():
        if type(key) is not str or not key.isascii():
            return False
        kind = type(child)
        if kind is str:
            if not child.isascii():
                return False
        elif kind is dict:
            if depth >= _PLAIN_DEPTH or not _plain_map(child, depth + 1):
                return False
        elif not (kind is int or child is None or kind is bool):
            return False
    return True
_MAPS = frozenset({dict})
_TEXTS = frozenset({str})


def _flat_maps_fine(maps: list[dict[Any, Any]], finite: bool) -> bool:
    """True when no map holds a container or anything that is not portable: a list of many
    small maps (a worker's output items, one per streamed token) is then checked with a few
    C-level passes instead of a look at each value. False means "look one by one" (the walk
    finds the problem and names it, or finds a container to walk into), never "refused"."""
    if any(_key_problem(key, finite) is not None for key in set().union(*maps)):
        return False
    values = list(itertools.chain.from_iterable(map(dict.values, maps)))
    kinds = set(map(type, values))
    if not kinds.isdisjoint(_CONTAINERS):
        return False
    if str in kinds:
        text = "".join([v for v in values if type(v) is str])
        if not text.isascii() and _SURROGATE.search(text):
            return False
    if float in kinds and finite and not all(math.isfinite(v) for v in values if type(v) is float):
        return False
    return all(kind in (str, float) or issubclass(kind, _SCALARS) for kind in kinds)
#: Item types that are portable whatever their value: a list holding only these needs no walk
#: (any other type, one no decoder makes included, is looked at one by one and named).
_UNCHECKED = frozenset({int, bool, type(None), bytes, msgpack.Timestamp, msgpack.ExtType})


def _scalar_problem(item: Any, finite: bool) -> str | None:
    kind = type(item)
    if kind is str:
        if not item.isascii() and _SURROGATE.search(item):
            return _SURROGATE_TEXT
    elif kind is float:
        if finite and not math.isfinite(item):
            return f"{item!r} is not a finite number (JSON has no NaN or Infinity)"
    elif kind not in _CONTAINERS and not isinstance(item, _SCALARS):
        return f"a value of type {_type_name(item)} cannot be carried as JSON and msgpack"
    return None


_SURROGATE_TEXT = (
    "text holds a lone UTF-16 surrogate (such as \\ud800), which has no UTF-8 form; "
    "send valid Unicode text, or bytes"
)


def _key_problem(key: Any, finite: bool) -> str | None:
    if not isinstance(key, _KEY_TYPES):
        return f"is a {_type_name(key)}; map keys must be strings, numbers, booleans, null or bytes"
    if type(key) is str and not key.isascii() and _SURROGATE.search(key):
        return f"is invalid: {_SURROGATE_TEXT}"
    if type(key) is float and finite and not math.isfinite(key):
        return "is not a finite number"
    return None


def _type_name(value: Any) -> str:
    return type(value).__name__


def _short(key: Any) -> str:
    text = ascii(key)
    return text if len(text) <= 40 else text[:37] + "..."


def _path(where: str, path: tuple[Any, ...]) -> str:
    parts = [where]
    for i, key in enumerate(path):
        if i >= 8:
            parts.append("...")
            break
        if isinstance(key, str) and _NAME.fullmatch(key):
            parts.append(f".{key}")
        else:
            parts.append(f"[{_short(key)}]")
    return "".join(parts)
