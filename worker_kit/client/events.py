"""A Server-Sent Events parser for aiohttp response bodies.

aiohttp's own readline() refuses lines over 128 KiB, and one SSE data line holds a
whole chunk (up to 1 MB before JSON and base64), so lines are split here.
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


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    buf = bytearray()
    async for data in content.iter_any():
        start = len(buf)
        buf.extend(data)
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(buf[:nl])
            del buf[: nl + 1]
            start = 0
            yield line.rstrip(b"\r").decode("utf-8", errors="replace")
    if buf:
        yield bytes(buf).rstrip(b"\r").decode("utf-8", errors="replace")


async def iter_sse(content: aiohttp.StreamReader) -> AsyncIterator[SSEEvent]:
    """Events as dispatched by the SSE spec: fields accumulate until a blank line.

    Comment lines (keep-alives) are skipped. An event cut off by a dropped connection
    (no closing blank line) is discarded, so a partial chunk is never delivered.
    """
    event, data, event_id = "", [], None
    async for line in _lines(content):
        if not line:
            if data or event:
                yield SSEEvent(event or "message", "\n".join(data), event_id)
            event, data, event_id = "", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            event_id = value
