"""`list_jobs` for the SQLite backend: pages of an endpoint's jobs, newest first (/requests).

Each page walks the index on (endpoint, state, created_at, qpos) backwards from the cursor key,
one range per state asked for (every state when none is), and merges the ranges: it costs
O(limit · states · log n), the same at a thousand or a million stored jobs, where a single
`state IN (...)` query would have to sort every matching row. (Schema 2 had a second index,
without the state, for a listing of all states: one more index to update on every submit.)
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
) -> tuple[list[tuple[Any, ...]], bool]:
    """(rows newest first, has_more), read in one snapshot."""
    columns = RECORD_COLUMNS if include_io else _LIGHT_COLUMNS
    conn.execute("BEGIN")
    try:
        wanted = sorted(set(JobState if states is None else states))
        runs = [_walk(conn, columns, endpoint, state, after, limit + 1, now) for state in wanted]
    finally:
        conn.execute("COMMIT")
    # Each run is newest first already; merge on (created_at, id), descending.
    merged = heapq.merge(*runs, key=lambda row: (row[7], row[0]), reverse=True)
    rows = [row for _, row in zip(range(limit + 1), merged, strict=False)]
    return rows[:limit], len(rows) > limit


def _walk(
    conn: sqlite3.Connection,
    columns: str,
    endpoint: str,
    state: JobState,
    after: tuple[float, str] | None,
    n: int,
    now: float,
) -> list[tuple[Any, ...]]:
    where = ["endpoint = ?", "state = ?"]
    params: list[Any] = [endpoint, state.value]
    if after is not None:
        where.append("(created_at, id) < (?, ?)")
        params += [after[0], after[1]]
    # Records past their retention wait for the sweep to delete them; a listing skips them
    # as /status does (few at any time, so the walk stays short).
    where.append("(expires_at IS NULL OR expires_at > ?)")
    params += [now, n]
    sql = (
        f"SELECT {columns} FROM jobs INDEXED BY jobs_state_order WHERE {' AND '.join(where)} "
        "ORDER BY created_at DESC, id DESC LIMIT ?"
    )
    return conn.execute(sql, params).fetchall()


def total(counts: dict[str, int], states: Collection[JobState] | None) -> int:
    """Jobs in `states` (all when None), from the endpoint's counts (counting.Counts.of)."""
    wanted = [s.value for s in JobState] if states is None else {s.value for s in states}
    return sum(max(0, counts.get(s, 0)) for s in wanted)
