"""Stream chunks in SQLite, stored as runs: one row per output request, not one per chunk.

A row of `chunks` holds a run: the msgpack encodings of consecutive chunks of one job,
concatenated (a msgpack value delimits itself), keyed by (job_id, idx of the run's first
chunk). A token stream thus writes and reads one row per batch of tokens its worker sent,
instead of one row per token. The next row's idx (or the job's stream_len, for the last
row) is where a run ends. Rows written by earlier builds hold one chunk each: runs of one,
read the same way.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgpack

#: The row holding chunk `start` (the last run beginning at or before it), and every later row.
_FROM = (
    "SELECT idx, data FROM chunks WHERE job_id = ?1 AND idx >= coalesce("
    "(SELECT idx FROM chunks WHERE job_id = ?1 AND idx <= ?2 ORDER BY idx DESC LIMIT 1), ?2) "
    "ORDER BY idx"
)


def insert_run(conn: sqlite3.Connection, job_id: str, first: int, chunks: list[bytes]) -> None:
    """Store packed `chunks` as the job's chunks first, first + 1, ..."""
    conn.execute(
        "INSERT INTO chunks (job_id, idx, data) VALUES (?, ?, ?)", (job_id, first, b"".join(chunks))
    )


def _reader(run: bytes) -> msgpack.Unpacker:
    # The options of protocol.unpack: a chunk decodes the same from a run as on its own.
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(run), 1024))
    unpacker.feed(run)
    return unpacker


def chunks_from(
    conn: sqlite3.Connection, job_id: str, start: int, max_bytes: int | None, *, decode: bool = True
) -> list[Any]:
    """The job's chunks from index `start` on: decoded values, or their msgpack bytes when
    `decode` is False. With `max_bytes`, only the leading chunks whose packed sizes sum to at
    most that, but at least one when any is there; rows are read one at a time, so an
    answer never holds more than the bound plus one run."""
    out: list[Any] = []
    total = 0
    rows = conn.execute(_FROM, (job_id, start))
    try:
        for idx, run in rows:
            unpacker = _reader(run)
            try:
                for _ in range(start - idx):  # the run began before `start`
                    unpacker.skip()
            except msgpack.OutOfData:
                continue  # `start` is past this run's end (past the stream's end)
            pos = unpacker.tell()
            if decode and (max_bytes is None or total + len(run) - pos <= max_bytes):
                out += unpacker  # the rest of the run fits: decoded in one C-level pass
                total += len(run) - pos
                continue
            for value in unpacker:
                end = unpacker.tell()
                if max_bytes is not None:
                    total += end - pos
                    if out and total > max_bytes:
                        return out
                out.append(value if decode else run[pos:end])
                pos = end
    finally:
        rows.close()
    return out
