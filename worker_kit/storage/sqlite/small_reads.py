"""The reads of one job the event loop makes itself (engine.read_inline): a record, or a status,
by the job's primary key, with payloads of at most SMALL_PAYLOADS bytes together, so the loop
never copies megabytes. A larger job answers TOO_LARGE, and the caller reads it on the pool.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .schema import RECORD_COLUMNS, STATUS_COLUMNS

Row = tuple[Any, ...]

#: The most payload bytes a read here hands back.
SMALL_PAYLOADS = 64 * 1024
#: What a read here returns for a job with larger payloads.
TOO_LARGE: Any = object()


def _select(columns: str, payloads: tuple[str, ...]) -> str:
    """SELECT endpoint, expires_at, whether the payloads fit, then `columns` (payloads last), each
    payload read only when they fit: length() of a blob reads its size from the row header, so a
    large payload is never loaded."""
    fits = " + ".join(f"coalesce(length({c}), 0)" for c in payloads) + f" <= {SMALL_PAYLOADS}"
    assert columns.endswith(", ".join(payloads))
    plain = columns.rsplit(f", {payloads[0]}", 1)[0]
    guarded = "".join(f", CASE WHEN {fits} THEN {c} END" for c in payloads)
    return f"SELECT endpoint, expires_at, {fits}, {plain}{guarded} FROM jobs WHERE id = ?"


_RECORD = _select(RECORD_COLUMNS, ("error_detail", "progress", "output", "input"))
#: A status has half the columns of a record, and sqlite3 spends about 1 k instructions on each
#: column of a result (its name, its value): /status reads only these.
_STATUS = _select(STATUS_COLUMNS, ("error_detail", "progress", "output"))


def record(conn: sqlite3.Connection, endpoint: str, job_id: str, now: float) -> Row | None:
    """ops.read_record's row, None as it would say, or TOO_LARGE."""
    return _read(conn, _RECORD, endpoint, job_id, now)


def status(conn: sqlite3.Connection, endpoint: str, job_id: str, now: float) -> Row | None:
    """The job's STATUS_COLUMNS (schema.status_from_row), None as ops.read_record would say, or TOO_LARGE."""
    return _read(conn, _STATUS, endpoint, job_id, now)


def _read(conn: sqlite3.Connection, select: str, endpoint: str, job_id: str, now: float) -> Row | None:
    row = conn.execute(select, (job_id,)).fetchone()
    if row is None or row[0] != endpoint or (row[1] is not None and row[1] <= now):
        return None  # unknown, of another endpoint, or past its retention (ops.live)
    return tuple(row[3:]) if row[2] else TOO_LARGE
