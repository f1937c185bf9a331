"""The test input of `--test-input`, `test_input.json` and the dev banner: where it is found and
how it is checked (worker_kit.harness runs it)."""

from __future__ import annotations

import contextlib
import inspect
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .protocol import dumps_json

if TYPE_CHECKING:
    from .worker.registry import Handler

TEST_INPUT_FILE = "test_input.json"
#: Keys a test input may hold; "id" is accepted for files written for the hosted SDK (ids are
#: assigned by the service, so it is ignored).
TEST_INPUT_KEYS = frozenset({"input", "policy", "webhook", "id"})
#: `--test-input` given without a value: read test_input.json.
FROM_FILE = "\0file"


class UsageError(Exception):
    """Bad flags or test input: one line for stderr, exit code 2."""


# --- test input ---------------------------------------------------------------------------------


def load_test_input(value: str | None, handler: Handler | None = None) -> dict[str, Any]:
    """The test request from the flag (JSON or @file), else test_input.json in the current
    directory, else beside the handler's file. Raises UsageError saying how to fix it."""
    if value is not None and value != FROM_FILE:
        if value.startswith("@"):
            return parse_test_input(read_text_file(Path(value[1:])), value[1:])
        return parse_test_input(value, "--test-input")
    path = find_test_input_file(handler)
    if path is not None:
        return parse_test_input(read_text_file(path), str(path))
    raise UsageError(
        f"no test input: pass --test-input '{{\"input\": ...}}' or create {TEST_INPUT_FILE} "
        "in the current directory or beside the handler file"
    )


def find_test_input_file(handler: Handler | None = None) -> Path | None:
    """test_input.json in the current directory, else beside the handler's file, if any."""
    candidates = [Path.cwd() / TEST_INPUT_FILE]
    source = _handler_file(handler)
    if source is not None:
        candidates.append(source.parent / TEST_INPUT_FILE)
    return next((path for path in candidates if path.is_file()), None)


def read_text_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read test input {str(path)!r}: {exc.strerror or exc}") from None


def parse_test_input(text: str, source: str) -> dict[str, Any]:
    try:
        request = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{source} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            'expected an object like {"input": {...}}'
        ) from None
    if not isinstance(request, dict):
        raise UsageError(
            f'{source} must be a JSON object like {{"input": {{...}}}}, not {type(request).__name__}'
        )
    if "input" not in request:
        raise UsageError(
            f'{source} has no "input" key; wrap the job input: {{"input": {dumps_json(request)}}}'
        )
    unknown = sorted(set(request) - TEST_INPUT_KEYS)
    if unknown:
        raise UsageError(f"{source} has unknown keys {unknown}; allowed: input, policy, webhook")
    return request


def _handler_file(handler: Handler | None) -> Path | None:
    fn = getattr(handler, "fn", None)
    for obj in (fn, getattr(fn, "func", None)):  # functools.partial keeps the function in .func
        if obj is None:
            continue
        with contextlib.suppress(TypeError, OSError):
            source = inspect.getsourcefile(obj) or inspect.getfile(obj)
            if source:
                return Path(source).resolve()
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return Path(main_file).resolve() if main_file else None
