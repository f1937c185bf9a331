"""docs/reliability.md names, for each promise, the test that proves it: every name must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_named_in_reliability_md_exists() -> None:
    text = (ROOT / "docs" / "reliability.md").read_text()
    named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", text)
    assert len(named) > 20
    for path, test in named:
        source = ROOT / path
        assert source.is_file(), path
        if test:
            assert re.search(rf"^(async )?def {test}\(", source.read_text(), re.M), f"{path}::{test}"
