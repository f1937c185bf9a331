"""What a block shows as its output, and whether a run's stdout matches it.

- `console` blocks: lines starting with `$ ` are commands (a line ending in `\\` continues on the
  next); every other line up to the next command is output the command prints.
- `sh`, `bash` and `python` blocks: each `# → text` comment (a whole line, or at the end of a line
  of code) is one line of the block's output, in order.

In shown output, `…` stands for any text within a line, and a line holding only `…` for any
number of lines (none included). Everything else must match exactly, line for line (trailing
spaces ignored). A block that shows no output has its output not checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

ARROW = re.compile(r"#\s*→ ?(?P<text>.*)$")
ELLIPSIS = "…"


@dataclass(frozen=True, slots=True)
class Script:
    """A block turned into what runs: the program text and the stdout lines it must print."""

    program: str
    expected: list[str] | None  # None: output not checked


def console_script(text: str) -> Script:
    """Commands of a console block as one bash program, and the output lines shown after them."""
    commands: list[str] = []
    expected: list[str] = []
    continuing = False
    for line in text.splitlines():
        if continuing:
            commands[-1] += "\n" + line
            continuing = line.rstrip().endswith("\\")
        elif line.startswith("$ ") or line == "$":
            commands.append(line[2:])
            continuing = line.rstrip().endswith("\\")
        elif commands:
            expected.append(line)
        elif line.strip():
            raise ValueError(f"console block shows output before any `$ ` command: {line!r}")
    while expected and not expected[-1].strip():
        expected.pop()
    return Script("\n".join(commands) + "\n", expected or None)


def arrow_script(text: str) -> Script:
    """A sh/bash/python block as it is, with its `# →` lines as the expected output."""
    expected = [m["text"] for line in text.splitlines() if (m := ARROW.search(line))]
    return Script(text, expected or None)


def _line_pattern(line: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in line.rstrip().split(ELLIPSIS)]
    return re.compile(".*?".join(parts), re.S)


def matches(expected: list[str], actual: str) -> bool:
    """True when `actual` (a program's stdout) fits the shown `expected` lines."""
    got = [line.rstrip() for line in actual.splitlines()]
    while got and not got[-1]:
        got.pop()
    want = [line.rstrip() for line in expected]
    patterns = [None if line.strip() == ELLIPSIS else _line_pattern(line) for line in want]

    @cache
    def fit(i: int, j: int) -> bool:
        if i == len(want):
            return j == len(got)
        pattern = patterns[i]
        if pattern is None:  # any number of lines
            return any(fit(i + 1, k) for k in range(j, len(got) + 1))
        return j < len(got) and pattern.fullmatch(got[j]) is not None and fit(i + 1, j + 1)

    return fit(0, 0)
