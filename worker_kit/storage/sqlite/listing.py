"""`list_jobs` for the SQLite backend: pages of an endpoint's jobs, newest first (/requests).

Each page is one backwards walk of an index on (endpoint[, state], created_at, id) from the
cursor key, so it costs the same at a thousand or a million stored jobs. A filter on several
states walks one index range per state and merges them, which stays O(limit · states · log n)
where a single `state IN (...)` query would have to sort every matching row.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Collection
from typing import Any

from ...job import JobState
from .schema import RECORD_COLUMNS

#: RECORD_COLUMNS without the payloads a listing leaves out unless asked: the row keeps its
#: shape (NULLs in their place), and SQLite never reads the large blobs at the row's end.
_LIGHT_COLUMNS = RECORD_COLUMNS.replace("progress, output, input", "NULL, NULL, NULL")


def list_rows(
    conn: sqlite3.Connection,
    endpoint: str,
    *,
    limit: int,
    after: tuple[float, str] | None,
    states: Collection[JobState] | None,
    include_io: bool,
    now: float,
) -> tuple[list[tuple[Any, ...]], int, bool]:
    """(rows newest first, total matching, has_more), read in one snapshot."""
    columns = RECORD_COLUMNS if include_io else _LIGHT_COLUMNS
    conn.execute("BEGIN")
    try:
        if states is None:
            rows = _walk(conn, columns, endpoint, None, after, limit + 1, now)
        else:
            runs = [_walk(conn, columns, endpoint, s, after, limit + 1, now) for s in sorted(set(states))]
            # Each run is newest first already; merge on (created_at, id), descending.
            merged = heapq.merge(*runs, key=lambda row: (row[7], row[0]), reverse=True)
            rows = [row for _, row in zip(range(limit + 1), merged, strict=False)]
        total = _total(conn, endpoint, states)
    finally:
        conn.execute("COMMIT")
    return rows[:limit], total, len(rows) > limit


def _walk(
    conn: sqlite3.Connection,
    columns: str,
    endpoint: str,
    state: JobState | None,
    after: tuple[float, str] | None,
    n: int,
    now: float,
) -> list[tuple[Any, ...]]:
    where = ["endpoint = ?"]
    params: list[Any] = [endpoint]
    if state is not None:
        where.append("state = ?")
        params.append(state.value)
    if after is not None:
        where.append("(created_at, id) < (?, ?)")
        params += [after[0], after[1]]
    # Records past their retention wait for the sweep to delete them; a listing skips them
    # as /status does (few at any time, so the walk stays short).
    where.append("(expires_at IS NULL OR expires_at > ?)")
    params += [now, n]
    index = "jobs_recent" if state is None else "jobs_recent_state"
    sql = (
        f"SELECT {columns} FROM jobs INDEXED BY {index} WHERE {' AND '.join(where)} "
        "ORDER BY created_at DESC, id DESC LIMIT ?"
    )
    return conn.execute(sql, params).fetchall()


def _total(conn: sqlite3.Connection, endpoint: str, states: Collection[JobState] | None) -> int:
    counts = dict(conn.execute("SELECT state, n FROM job_counts WHERE endpoint = ?", (endpoint,)).fetchall())
    wanted = counts.keys() if states is None else {s.value for s in states}
    return sum(max(0, counts.get(s, 0)) for s in wanted)
