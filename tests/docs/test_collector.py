"""The docs collector itself: markers, shown-output matching, and that a wrong page fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from .expect import arrow_script, console_script, matches
from .markdown import parse_page


def _page(tmp_path: Path, text: str):
    (tmp_path / "docs").mkdir(exist_ok=True)
    path = tmp_path / "docs" / "page.md"
    path.write_text(text, encoding="utf-8")
    return parse_page(path, tmp_path)


def test_blocks_markers_and_files_are_read(tmp_path: Path) -> None:
    page = _page(
        tmp_path,
        "<!-- docs-test: workers local=handler.py other=examples/echo.py -->\n"
        "```python\n# handler.py\nimport worker_kit\n```\n\n"
        "<!-- docs-test: skip (needs a GPU) -->\n\n"
        "```sh\nnvidia-smi\n```\n"
        "```text\nshown\n```\n",
    )
    assert page.errors == []
    assert page.workers == {"local": "handler.py", "other": "examples/echo.py"} and page.service
    first, second, third = page.blocks
    assert (first.lang, first.file_name, first.skip, first.line) == ("python", "handler.py", None, 2)
    assert (second.lang, second.skip, second.test_id) == ("sh", "needs a GPU", "docs/page.md:9")
    assert third.lang == "text"


@pytest.mark.parametrize(
    "text, error",
    [
        ("<!-- docs-test: skip () -->\n```sh\nx\n```\n", "needs a reason"),
        ("<!-- docs-test: skipp (typo) -->\n```sh\nx\n```\n", "unknown docs-test marker"),
        ("<!-- docs-test: skip (why) -->\nsome prose\n```sh\nx\n```\n", "right before a fenced block"),
        ("<!-- docs-test: skip (why) -->\n", "not followed by a block"),
        ("<!-- docs-test: workers local -->\n", "bad workers entry"),
        ("```sh\nnever closed\n", "never closed"),
    ],
)
def test_malformed_markers_are_errors_not_silent_skips(tmp_path: Path, text: str, error: str) -> None:
    assert any(error in e for e in _page(tmp_path, text).errors)


def test_console_blocks_split_commands_from_output() -> None:
    script = console_script("$ echo a \\\n  b\na b\n$ export X=1\n$ echo $X\n1\n\n")
    assert script.program == "echo a \\\n  b\nexport X=1\necho $X\n"
    assert script.expected == ["a b", "1"]
    assert console_script("$ true\n").expected is None


def test_arrow_comments_are_the_expected_output() -> None:
    script = arrow_script('print(1)  # → 1\n# → two\nx = 3  # not output\n')
    assert script.expected == ["1", "two"]
    assert arrow_script("print(1)\n").expected is None


@pytest.mark.parametrize(
    "expected, actual, ok",
    [
        (["a", "b"], "a\nb\n\n", True),
        (["a", "b"], "a\nb\nc\n", False),  # an extra line is a difference
        (["a"], "a\nb\n", False),
        (['{"id":"…","n":1}'], '{"id":"3f0f","n":1}', True),
        (['{"id":"…","n":1}'], '{"id":"3f0f","n":2}', False),
        (["first", "…", "last"], "first\nx\ny\nlast", True),
        (["first", "…", "last"], "first\nlast", True),
        (["first", "…", "last"], "first\nx", False),
        (["a.b"], "aXb", False),  # no regex meaning in shown text
    ],
)
def test_shown_output_matching(expected: list[str], actual: str, ok: bool) -> None:
    assert matches(expected, actual) is ok
