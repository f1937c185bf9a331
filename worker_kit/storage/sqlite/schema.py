"""The SQLite backend's tables, indexes and row mapping, and its URL forms.

One row per job in `jobs`; stream chunks in `chunks`, a run of consecutive chunks per row,
keyed (job_id, idx of its first chunk) (see stream.py). Payloads (input, output, progress,
chunks, error_detail) are msgpack blobs so bytes survive.
Every query the service runs on a hot path has an index that makes it O(log n):
get by id (primary key), the sweep (partial indexes on the first time limit an active job
reaches, and on expiry), and both a claim (queued jobs in queue order) and a page of
/requests (one state's jobs, newest first) by one index on (endpoint, state, created_at,
qpos). Each index is a page more to rewrite in every transaction that changes it, so there
are no more of them.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from ...job import JobRecord, JobState, Policy, status_answer
from ...protocol import unpack

#: 2: a `chunks` row holds a run of chunks (schema 1: one chunk, which reads as a run of one,
#: so a schema-1 file opens as it is; an older build refuses a schema-2 file, not misreads it).
#: 3: no `job_counts` table nor its triggers (counting.py), one sweep index (DUE) for three, no
#: index for listings of all states; a schema-1 or -2 file is brought to it on open.
#: 4: one index in (endpoint, state, created_at, qpos) order serves the claim's queue order and the
#: listings, where schema 3 had one for each (jobs_queue, jobs_recent_state); built on open.
SCHEMA_VERSION = 4

# Small columns first, large blobs last: SQLite walks a row's overflow pages only to
# reach columns stored after a large value, so a lookup that stops before `input`
# never reads a multi-megabyte input.
_JOB_COLUMNS = """
    id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    state TEXT NOT NULL,
    qpos INTEGER NOT NULL,
    execution_timeout_ms INTEGER NOT NULL,
    timeout_explicit INTEGER NOT NULL DEFAULT 0,
    ttl_ms INTEGER NOT NULL,
    retention_ms INTEGER NOT NULL,
    created_at REAL NOT NULL,
    ttl_deadline REAL NOT NULL,
    started_at REAL,
    run_deadline REAL,
    finished_at REAL,
    expires_at REAL,
    attempt INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    worker_id TEXT,
    token TEXT,
    lease_until REAL,
    ended_by TEXT,
    next_seq INTEGER NOT NULL DEFAULT 0,
    stream_len INTEGER NOT NULL DEFAULT 0,
    read_cursor INTEGER NOT NULL DEFAULT 0,
    webhook TEXT,
    error TEXT,
    error_detail BLOB,
    progress BLOB,
    output BLOB,
    input BLOB NOT NULL
"""

#: The jobs the sweep's time limits apply to, and the first limit each reaches: a queued job
#: its time to live; a running one its execution deadline, its lease or its time to live. One
#: index on this (jobs_due) serves all three scans of the sweep (sweep.py); a claim, a finish and
#: a heartbeat each change one entry of it, where three indexes each had one to change.
ACTIVE = "state IN ('IN_QUEUE', 'IN_PROGRESS')"
DUE = (
    "CASE WHEN state = 'IN_QUEUE' THEN ttl_deadline "
    "ELSE min(ttl_deadline, coalesce(run_deadline, ttl_deadline), coalesce(lease_until, ttl_deadline)) END"
)

DDL = f"""
CREATE TABLE IF NOT EXISTS jobs ({_JOB_COLUMNS});

-- sweep: the first time limit an active job reaches (DUE), and retention
CREATE INDEX IF NOT EXISTS jobs_due ON jobs({DUE}) WHERE {ACTIVE};
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs(expires_at) WHERE expires_at IS NOT NULL;
-- claim: an endpoint's queued jobs in the order they were queued (created_at, then qpos: a
-- job put back after its worker was lost keeps both, so its place); list_jobs (/requests):
-- an endpoint's jobs of one state, newest first (listing.py). One index for both: each index
-- is a page more to write in every transaction that changes it.
CREATE INDEX IF NOT EXISTS jobs_state_order ON jobs(endpoint, state, created_at, qpos);
-- workers(): how many jobs a worker runs
CREATE INDEX IF NOT EXISTS jobs_worker ON jobs(endpoint, worker_id) WHERE state = 'IN_PROGRESS';

-- A row holds a run of chunks (one output request's), up to megabytes, so they live in a rowid
-- table (WITHOUT ROWID suits small rows only).
CREATE TABLE IF NOT EXISTS chunks (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, idx)
);

CREATE TABLE IF NOT EXISTS endpoint_stats (
    endpoint TEXT PRIMARY KEY,
    retried INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS workers (
    endpoint TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    -- the worker's own last count, kept for diagnosis; workers() counts the jobs it holds
    running INTEGER NOT NULL,
    concurrency INTEGER NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (endpoint, worker_id)
) WITHOUT ROWID;

-- A job's chunks go with it (the sweep deletes jobs past their retention).
CREATE TRIGGER IF NOT EXISTS jobs_delete_chunks AFTER DELETE ON jobs BEGIN
    DELETE FROM chunks WHERE job_id = OLD.id;
END;

-- Schema 2 kept counts per state in a table, by triggers on every change of state; they are
-- kept in memory now (counting.py). Its three sweep indexes are jobs_due now, and a listing of
-- all states merges the states' ranges of jobs_recent_state (each index is one more page to
-- rewrite in every transaction that changes it). Schema 4 replaced jobs_queue and
-- jobs_recent_state by jobs_state_order.
DROP INDEX IF EXISTS jobs_run_deadline;
DROP INDEX IF EXISTS jobs_lease;
DROP INDEX IF EXISTS jobs_ttl;
DROP INDEX IF EXISTS jobs_recent;
DROP INDEX IF EXISTS jobs_queue;
DROP INDEX IF EXISTS jobs_recent_state;
DROP TRIGGER IF EXISTS jobs_after_insert;
DROP TRIGGER IF EXISTS jobs_after_state;
DROP TRIGGER IF EXISTS jobs_after_delete;
DROP TABLE IF EXISTS job_counts;
"""

#: The columns a JobRecord is built from, in `record_from_row` order.
RECORD_COLUMNS = (
    "id, endpoint, state, execution_timeout_ms, timeout_explicit, ttl_ms, retention_ms, created_at, "
    "started_at, finished_at, expires_at, attempt, retries, worker_id, token, lease_until, next_seq, "
    "stream_len, read_cursor, webhook, error, error_detail, progress, output, input"
)

#: What a job's status is made of (status_from_row), payloads last.
STATUS_COLUMNS = (
    "id, state, created_at, started_at, finished_at, retries, worker_id, error, "
    "error_detail, progress, output"
)

#: Columns added to schema 1 after some databases were created; (table, column, definition).
_ADDED_COLUMNS = (("jobs", "timeout_explicit", "INTEGER NOT NULL DEFAULT 0"),)


def add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a database made by an earlier build (schema 1) up to date, in place."""
    for table, column, definition in _ADDED_COLUMNS:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


# A record is built on every /status: a dict lookup instead of JobState(...) (an enum call),
# and one Policy per distinct policy (frozen, so shared) instead of one per record.
_STATES = {state.value: state for state in JobState}
_POLICIES: dict[tuple[int, int, bool], Policy] = {}
_MAX_POLICIES = 1024


def _policy(exec_ms: int, ttl_ms: int, explicit: bool) -> Policy:
    key = (exec_ms, ttl_ms, explicit)
    policy = _POLICIES.get(key)
    if policy is None:
        if len(_POLICIES) >= _MAX_POLICIES:
            _POLICIES.clear()  # clients choose policies: keep the cache bounded
        policy = _POLICIES[key] = Policy(exec_ms, ttl_ms, explicit)
    return policy


def record_from_row(row: tuple[Any, ...]) -> JobRecord:
    """Build a JobRecord from a row selected with RECORD_COLUMNS (runs off the writer thread).

    The fields go by position, in JobRecord's order (tests/storage/test_sqlite_records.py holds
    the two together): a class called with keywords gets them as a dict, built and taken apart
    again, which made a record cost 4.0 µs where it costs 1.5 µs so, and an exchange of 8 finishes
    and 8 claims builds 16. A payload is unpacked in place (None stays None), not in a call each."""
    (job_id, endpoint, state, exec_ms, explicit, ttl_ms, retention_ms, created_at, started_at, finished_at,
     expires_at, attempt, retries, worker_id, token, lease_until, next_seq, stream_len, read_cursor,
     webhook, error, error_detail, progress, output, input_blob) = row  # fmt: skip
    return JobRecord(
        job_id,
        endpoint,
        None if input_blob is None else unpack(input_blob),  # NULL only where payloads were left out
        _STATES[state],
        _policy(exec_ms, ttl_ms, bool(explicit)),
        webhook,
        retention_ms,
        created_at,
        started_at,
        finished_at,
        expires_at,
        None if output is None else unpack(output),
        error,
        None if error_detail is None else unpack(error_detail),
        None if progress is None else unpack(progress),
        attempt,
        retries,
        worker_id,
        token,
        lease_until,
        next_seq,
        stream_len,
        read_cursor,
    )


SYNCHRONOUS_MODES = ("normal", "full")


@dataclass(frozen=True, slots=True)
class SQLiteURL:
    """A parsed `sqlite://` URL. `path` is None for an in-memory database."""

    path: str | None
    synchronous: str = "normal"

    @classmethod
    def parse(cls, url: str) -> SQLiteURL:
        """`sqlite:///relative.db`, `sqlite:////abs/path.db`, `sqlite://:memory:`,
        each optionally followed by `?synchronous=normal|full`."""
        prefix = "sqlite://"
        if not url.startswith(prefix):
            raise ConfigError(f"not a SQLite URL: {url!r} (expected sqlite:///PATH)")
        rest, _, query = url[len(prefix) :].partition("?")
        path: str | None
        if rest in (":memory:", "/:memory:"):
            path = None
        elif rest.startswith("/") and len(rest) > 1:
            # sqlite:///rel.db -> "rel.db"; sqlite:////abs.db -> "/abs.db"
            path = urllib.parse.unquote(rest[1:])
        else:
            raise ConfigError(
                f"bad SQLite URL {url!r}: use sqlite:///relative/path.db, sqlite:////absolute/path.db "
                "or sqlite://:memory:"
            )
        synchronous = "normal"
        for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            if key != "synchronous":
                raise ConfigError(
                    f"unknown SQLite URL option {key!r} in {url!r}: only 'synchronous' is known"
                )
            if value.lower() not in SYNCHRONOUS_MODES:
                raise ConfigError(f"synchronous={value!r} in {url!r}: use 'normal' or 'full'")
            synchronous = value.lower()
        if path is not None:
            path = os.path.expanduser(path)
        return cls(path=path, synchronous=synchronous)


def status_from_row(row: tuple[Any, ...]) -> dict[str, Any]:
    """`JobRecord.to_status()` of a row selected with STATUS_COLUMNS, without the record: the
    payloads a status does not show (the progress of a job that ended, say) stay packed."""
    (job_id, state, created_at, started_at, finished_at, retries, worker_id, error, error_detail, progress,
     output) = row  # fmt: skip
    if state == "IN_PROGRESS":
        output = None
    else:
        progress = None
    return status_answer(
        job_id, state, created_at, started_at, finished_at, retries, worker_id, error,
        None if error_detail is None else unpack(error_detail),
        None if progress is None else unpack(progress),
        None if output is None else unpack(output),
    )  # fmt: skip
