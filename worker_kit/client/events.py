"""A Server-Sent Events parser for aiohttp response bodies.

aiohttp's own readline() refuses lines over 128 KiB, and one SSE data line holds a
whole chunk (up to 1 MB before JSON and base64), so lines are split here. A token stream
brings thousands of small events per read, so each block of bytes is decoded once and its
lines are parsed in one plain loop, not one coroutine step per line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str
    id: str | None


class _Parser:
    """The SSE spec's parsing state across blocks of bytes: the unfinished line, and the
    fields of the event being built (they accumulate until a blank line)."""

    def __init__(self) -> None:
        self.partial: list[bytes] = []  # bytes after the last line break, in pieces
        self.event = ""
        self.data: list[str] = []
        self.event_id: str | None = None

    def feed(self, block: bytes) -> list[SSEEvent]:
        cut = block.rfind(b"\n")
        if cut < 0:
            self.partial.append(block)  # joined once its line ends: linear in a long line
            return []
        head = block[:cut]
        if self.partial:
            head = b"".join([*self.partial, head])
        self.partial = [block[cut + 1 :]] if cut + 1 < len(block) else []
        # Whole lines only, so a UTF-8 sequence is never cut by the decode.
        return self._lines(head.decode("utf-8", errors="replace").split("\n"))

    def end(self) -> list[SSEEvent]:
        """The stream ended: a last line without a line break still counts."""
        rest = b"".join(self.partial)
        self.partial = []
        return self._lines([rest.decode("utf-8", errors="replace")]) if rest else []

    def _lines(self, lines: list[str]) -> list[SSEEvent]:
        events = []
        for line in lines:
            line = line.rstrip("\r")
            if not line:
                if self.data or self.event:
                    events.append(SSEEvent(self.event or "message", "\n".join(self.data), self.event_id))
                self.event, self.data, self.event_id = "", [], None
                continue
            if line[0] == ":":
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                self.data.append(value)
            elif name == "event":
                self.event = value
            elif name == "id":
                self.event_id = value
        return events


async def iter_sse(content: aiohttp.StreamReader) -> AsyncIterator[SSEEvent]:
    """Events as dispatched by the SSE spec: fields accumulate until a blank line.

    Comment lines (keep-alives) are skipped. An event cut off by a dropped connection
    (no closing blank line) is discarded, so a partial chunk is never delivered.
    """
    parser = _Parser()
    async for block in content.iter_any():
        for event in parser.feed(block):
            yield event
    for event in parser.end():
        yield event
