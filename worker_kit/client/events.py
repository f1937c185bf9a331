"""A Server-Sent Events parser for aiohttp response bodies.

aiohttp's own readline() refuses lines over 128 KiB, and one SSE data line holds a
whole chunk (up to 1 MB before JSON and base64), so lines are split here. A token stream
brings thousands of small events per read, so each block of bytes is decoded once and its
lines are parsed in one plain loop, not one coroutine step per line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import NamedTuple

import aiohttp


class SSEEvent(NamedTuple):
    """One dispatched event (a named tuple: made for less than a frozen dataclass, and a token
    stream makes one per token)."""

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
        return self._lines(head.decode("utf-8", errors="replace"))

    def end(self) -> list[SSEEvent]:
        """The stream ended: a last line without a line break still counts."""
        rest = b"".join(self.partial)
        self.partial = []
        return self._lines(rest.decode("utf-8", errors="replace")) if rest else []

    def _lines(self, text: str) -> list[SSEEvent]:
        """The events that `text` (whole lines) completes. A token stream brings three lines per
        token, so this loop is a reader's per-token cost: one partition per field line, the
        event's fields in locals."""
        lines = text.split("\n")
        if "\r" in text:  # CRLF line ends: the CR is not part of the line
            lines = [line.rstrip("\r") for line in lines]
        events = []
        event, data, event_id = self.event, self.data, self.event_id
        for line in lines:
            if not line:  # a blank line dispatches the event
                if data or event:
                    text = data[0] if len(data) == 1 else "\n".join(data)
                    events.append(SSEEvent(event or "message", text, event_id))
                event, data, event_id = "", [], None
                continue
            name, _, value = line.partition(":")  # a comment line has no name: ignored below
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "id":
                event_id = value
            elif name == "event":
                event = value
        self.event, self.data, self.event_id = event, data, event_id
        return events


async def iter_sse(content: aiohttp.StreamReader) -> AsyncIterator[SSEEvent]:
    """Events as dispatched by the SSE spec: fields accumulate until a blank line.

    Comment lines (keep-alives) are skipped. An event cut off by a dropped connection
    (no closing blank line) is discarded, so a partial chunk is never delivered.
    """
    async for events in iter_sse_batches(content):
        for event in events:
            yield event


async def iter_sse_batches(content: aiohttp.StreamReader) -> AsyncIterator[list[SSEEvent]]:
    """iter_sse's events, in the lists that each block of bytes completes (never empty): a
    reader of a token stream then steps a coroutine once per block, not once per token."""
    parser = _Parser()
    async for block in content.iter_any():
        events = parser.feed(block)
        if events:
            yield events
    events = parser.end()
    if events:
        yield events
