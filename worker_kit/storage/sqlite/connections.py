"""Opening the SQLite backend's connections: the writer's (which creates the schema) and the
others (readers, and the event loop's own)."""

from __future__ import annotations

import os
import sqlite3

from ...errors import ConfigError, StorageError
from .counting import Counts, WriteConnection
from .schema import DDL, SCHEMA_VERSION, SQLiteURL, add_missing_columns
from .shared import SHARED_DDL

BUSY_TIMEOUT_S = 10.0
#: The most payload bytes an operation reads or writes on the event loop (on_loop.py).
LOOP_BYTES = 64 * 1024


class LoopConnection(WriteConnection):
    """The event loop's write connection (on_loop.py). An operation that finds, before it
    writes, that it would carry more than LOOP_BYTES there calls `loop_bound`, which raises
    NotOnLoop: the batch is rolled back and runs on the writer thread instead."""


class NotOnLoop(Exception):
    """An operation too large to run on the event loop (see LoopConnection)."""


def loop_bound(conn: sqlite3.Connection, size: int) -> None:
    if size > LOOP_BYTES and isinstance(conn, LoopConnection):
        raise NotOnLoop(f"{size} bytes")


def connect(
    url: SQLiteURL, timeout: float = BUSY_TIMEOUT_S, factory: type[sqlite3.Connection] = sqlite3.Connection
) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/SAVEPOINT/COMMIT ourselves.
    return sqlite3.connect(
        url.path or ":memory:", timeout=timeout, isolation_level=None, check_same_thread=False,
        factory=factory,
    )  # fmt: skip


def open_writer(url: SQLiteURL, counts: Counts) -> sqlite3.Connection:
    """The writer's connection, in WAL mode, with the schema created or brought up to date,
    and `counts` counted from the rows in the same transaction."""
    if url.path is not None:
        parent = os.path.dirname(os.path.abspath(url.path))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the directory for {url.path!r}: {exc}") from None
    try:
        conn = connect(url, factory=WriteConnection)
    except sqlite3.Error as exc:  # a directory, a path without permission...
        raise StorageError(f"cannot open SQLite database {url.path!r}: {exc}") from None
    try:
        if url.path is not None:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"cannot put {url.path!r} in WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={url.synchronous.upper()}")
        # temp_store stays at its default (FILE): a statement journal then lives in one 64 KB
        # buffer (spilling to a file past it), where MEMORY keeps it in 1 KB chunks, one
        # malloc each, walked on every access: ~10 % of a submit's cost, and quadratic over
        # long operations with savepoints (docs/benchmarks.md, "Bounded maintenance").
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{url.path!r} has schema version {version}, newer than this worker_kit "
                f"understands ({SCHEMA_VERSION}); upgrade worker_kit"
            )
        conn.executescript(f"BEGIN IMMEDIATE; {DDL} {SHARED_DDL} PRAGMA user_version={SCHEMA_VERSION};")
        add_missing_columns(conn)
        counts.recount(conn)
        conn.execute("COMMIT")
        conn.counts = counts  # type: ignore[attr-defined]
    except sqlite3.Error as exc:
        conn.close()
        name = url.path or ":memory:"
        raise StorageError(f"cannot open SQLite database {name!r}: {exc}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def open_loop_writer(url: SQLiteURL, counts: Counts) -> sqlite3.Connection:
    """A second write connection, for the event loop's small batches: it never waits for a
    lock (busy timeout 0) and never checkpoints (that can take milliseconds: the writer
    thread does it)."""
    conn = connect(url, timeout=0.0, factory=LoopConnection)
    conn.counts = counts  # type: ignore[attr-defined]
    conn.execute(f"PRAGMA synchronous={url.synchronous.upper()}")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    return conn


def busy(exc: sqlite3.Error) -> bool:
    """Whether SQLite refused for now (another connection holds the lock), not for good."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
