"""The `page_stack` fixture: the working directory (and live service, if the page asks for one)
of the page a docs test belongs to. See tests/docs/README.md for the conventions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .markdown import Page
from .stack import PageStack


class _Stacks:
    """One page's stack at a time: blocks run page by page, so starting a page stops the last."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.current: PageStack | None = None

    def get(self, page: Page) -> PageStack:
        if self.current is not None and self.current.page.name == page.name:
            return self.current
        self.close()
        stack = PageStack(page, self.root / page.name.replace("/", "_").removesuffix(".md"))
        self.current = stack
        stack.start()
        return stack

    def close(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None


@pytest.fixture(scope="session")
def page_stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Page], PageStack]]:
    stacks = _Stacks(tmp_path_factory.mktemp("docs"))
    try:
        yield stacks.get
    finally:
        stacks.close()
