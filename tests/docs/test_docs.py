"""Every fenced block of README.md and docs/*.md, run as written (conventions: tests/docs/README.md).

A changed page is a changed test: the blocks are read from the files at collection time, and each
becomes one test named after its page and line (`tests/docs/test_docs.py::test_block[README.md:17]`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from .background import run_background
from .expect import Script, arrow_script, console_script, matches
from .markdown import PARSE_LANGS, RUN_LANGS, TEXT_LANGS, Block, Page, all_pages
from .stack import DOC_PORT, PORT_IN_TEXT, PageStack, block_env

PAGES = all_pages()
BLOCKS = [(page, block) for page in PAGES for block in page.blocks if block.lang in RUN_LANGS | PARSE_LANGS]
RUNNER = Path(__file__).with_name("pyblock.py")
BLOCK_TIMEOUT_S = 120.0


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_follows_the_conventions(page: Page) -> None:
    """Markers are well formed and every fence names its language (`text` for shown text), so no
    command can hide in an unlabelled block."""
    problems = list(page.errors)
    known = RUN_LANGS | PARSE_LANGS | TEXT_LANGS
    for block in page.blocks:
        if block.lang not in known:
            problems.append(
                f"{block.test_id}: fenced block with language {block.lang or '(none)'!r}; "
                f"name one of {sorted(known)} (`text` for output, logs and wire formats)"
            )
    assert not problems, "\n".join(problems)


def _script(block: Block, stack: PageStack) -> tuple[list[str], Script]:
    """The command line that runs the block in the page's directory, and what it must print."""
    text = stack.localize(block.text)
    scratch = stack.workdir / ".docs-test"
    scratch.mkdir(exist_ok=True)
    if block.lang == "console":
        script = console_script(text)
    else:
        script = arrow_script(text)
    if block.lang == "python":
        if block.file_name and Path(block.file_name).name.startswith("test_"):
            return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", block.file_name], script
        if block.file_name:  # a module the page's other blocks use: it must import cleanly
            return [sys.executable, str(RUNNER), "--import", block.file_name], script
        path = scratch / f"block-{block.line}.py"
        path.write_text(script.program, encoding="utf-8")
        return [sys.executable, str(RUNNER), str(path)], script
    path = scratch / f"block-{block.line}.sh"
    path.write_text(script.program, encoding="utf-8")
    return ["bash", "-eo", "pipefail", str(path)], script


def _run(argv: list[str], stack: PageStack) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        argv,
        cwd=stack.workdir,
        env=block_env(stack.workdir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(
            f"block still running after {BLOCK_TIMEOUT_S:.0f} s (a server? mark it skip)\n{out}\n{err}"
        )
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@pytest.mark.parametrize("page,block", BLOCKS, ids=[b.test_id for _, b in BLOCKS])
def test_block(page: Page, block: Block, page_stacks: Callable[[Page], PageStack]) -> None:
    if block.skip is not None:
        pytest.skip(f"{block.test_id}: {block.skip}")
    if block.lang == "toml":
        tomllib.loads(block.text)
        return
    if block.lang == "json":
        json.loads(block.text)
        return
    if block.background:
        run_background(block, page_stacks(page))
        return
    if not page.service and PORT_IN_TEXT.search(block.text):
        pytest.fail(
            f"{block.test_id} talks to port {DOC_PORT}, but {page.name} has no live service: add "
            "<!-- docs-test: service --> or <!-- docs-test: workers endpoint=file ... --> to the page "
            "(tests/docs/README.md), or a skip marker with the reason"
        )
    stack = page_stacks(page)
    argv, script = _script(block, stack)
    done = _run(argv, stack)
    context = (
        f"{block.test_id} ({block.lang}) in {stack.workdir}\n--- stdout ---\n{done.stdout}"
        f"--- stderr ---\n{done.stderr}\n{stack.logs()}"
    )
    assert done.returncode == 0, f"exit code {done.returncode}\n{context}"
    if argv[1:3] == ["-m", "pytest"]:  # a test file of the page: every test in it ran and passed
        assert " passed" in done.stdout and " skipped" not in done.stdout, context
    if script.expected is not None:
        shown = "\n".join(script.expected)
        assert matches(script.expected, done.stdout), (
            f"output differs from the page\n--- shown ---\n{shown}\n{context}"
        )
