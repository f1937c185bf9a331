"""Reading README.md and docs/*.md into the blocks the docs tests run.

The conventions are described in tests/docs/README.md; this module only parses them:
fenced blocks with their language and first line, the `<!-- docs-test: ... -->` marker right
before a block, and the page-level `<!-- docs-test: workers ... -->` directive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Languages whose blocks are run.
RUN_LANGS = frozenset({"sh", "bash", "console", "python"})
#: Languages whose blocks are only parsed (a config or document a reader copies must at least be valid).
PARSE_LANGS = frozenset({"toml", "json"})
#: Languages that hold no program: shown text, logs, wire formats, Dockerfiles, HTTP exchanges.
TEXT_LANGS = frozenset(
    {
        "text",
        "http",
        "dockerfile",
        "yaml",
        "ini",
        "msgpack",
        "diff",
        "sse",
        "env",
        "nginx",
        "caddyfile",
        "promql",
    }
)

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")
FILE_COMMENT = re.compile(r"^#\s*(?P<name>[\w./-]+\.(?:py|txt|json|toml|cfg))\b")


class DocsSyntaxError(ValueError):
    """A page breaks the docs-test conventions (unknown marker, skip without a reason, ...)."""


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced block of a page. `line` is the 1-based line of its opening fence."""

    page: str
    line: int
    lang: str
    text: str
    skip: str | None = None
    #: For a python block whose first line is `# name.py`: the file it stands for.
    file_name: str | None = None
    #: Marked `<!-- docs-test: background -->`: each command is a server, started and then stopped.
    background: bool = False

    @property
    def test_id(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass(slots=True)
class Page:
    """A Markdown page: its blocks and its `workers` directive (endpoint id -> handler file)."""

    name: str
    blocks: list[Block] = field(default_factory=list)
    workers: dict[str, str] = field(default_factory=dict)
    #: True when the page needs a live service (`workers ...` or `service`).
    service: bool = False
    errors: list[str] = field(default_factory=list)


def pages(root: Path = ROOT) -> list[Path]:
    """The pages whose blocks are tested: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


#: What `_marker` answers for `<!-- docs-test: background -->`.
BACKGROUND = "\0background"


def _marker(body: str, where: str, page: Page) -> str | None:
    """The skip reason a block marker gives (BACKGROUND for that marker, None for a malformed one,
    which is recorded)."""
    if body == "background":
        return BACKGROUND
    skip = re.fullmatch(r"skip\s*\((?P<reason>.*)\)", body, re.S)
    if skip:
        reason = skip["reason"].strip()
        if not reason:
            page.errors.append(f"{where}: `docs-test: skip` needs a reason: skip (why it cannot run here)")
        return reason or "no reason given"
    page.errors.append(
        f"{where}: unknown docs-test marker {body!r}; before a block use "
        "<!-- docs-test: skip (reason) --> or <!-- docs-test: background -->, see tests/docs/README.md"
    )
    return None


def _workers(body: str, where: str, page: Page) -> bool:
    """Reads a `service` or `workers endpoint=file ...` directive into the page; False if it is not one."""
    if body == "service":
        page.service = True
        return True
    if not body.startswith("workers"):
        return False
    page.service = True
    pairs = body.split()[1:]
    if not pairs:
        page.errors.append(f"{where}: `docs-test: workers` needs endpoint=handler-file pairs")
    for pair in pairs:
        endpoint, eq, handler = pair.partition("=")
        if not eq or not endpoint or not handler:
            page.errors.append(f"{where}: bad workers entry {pair!r}; expected endpoint=handler-file")
        else:
            page.workers[endpoint] = handler
    return True


def parse_page(path: Path, root: Path = ROOT) -> Page:
    """Every fenced block of `path`, with the marker that precedes it."""
    name = path.relative_to(root).as_posix()
    page = Page(name)
    lines = path.read_text(encoding="utf-8").splitlines()
    pending: tuple[int, str | None] | None = None  # (line, skip reason) of a marker awaiting its block
    i = 0
    while i < len(lines):
        where = f"{name}:{i + 1}"
        marker = MARKER.match(lines[i])
        if marker:
            if not _workers(marker["body"], where, page):
                if pending is not None:
                    page.errors.append(f"{name}:{pending[0]}: docs-test marker not followed by a block")
                pending = (i + 1, _marker(marker["body"], where, page))
            i += 1
            continue
        fence = FENCE.match(lines[i])
        if not fence:
            if lines[i].strip() and pending is not None:
                page.errors.append(
                    f"{name}:{pending[0]}: docs-test marker must be right before a fenced block"
                )
                pending = None
            i += 1
            continue
        close = re.compile(rf"^ {{0,3}}{re.escape(fence['fence'][0])}{{{len(fence['fence'])},}}\s*$")
        lang = fence["info"].strip().split()[0].lower() if fence["info"].strip() else ""
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            body.append(
                lines[j][len(fence["indent"]) :] if lines[j].startswith(fence["indent"]) else lines[j]
            )
            j += 1
        if j == len(lines):
            page.errors.append(f"{where}: fenced block never closed")
        text = "\n".join(body) + "\n"
        file_match = FILE_COMMENT.match(body[0]) if body and lang in ("python", "toml") else None
        page.blocks.append(
            Block(
                page=name,
                line=i + 1,
                lang=lang,
                text=text,
                skip=pending[1] if pending and pending[1] != BACKGROUND else None,
                background=bool(pending and pending[1] == BACKGROUND),
                file_name=file_match["name"] if file_match else None,
            )
        )
        pending = None
        i = j + 1
    if pending is not None:
        page.errors.append(f"{name}:{pending[0]}: docs-test marker not followed by a block")
    return page


def all_pages(root: Path = ROOT) -> list[Page]:
    return [parse_page(path, root) for path in pages(root)]
