"""What the SQLite backend does on the event loop's own thread: short reads, small writes.

Handing work to a thread and back costs tens of microseconds of CPU in wake-ups and GIL
hand-overs: more than a job read by its primary key, or a commit of a few small writes,
costs itself. Neither ever makes the loop wait: these connections have a busy timeout of 0
and are taken only when free, so whenever SQLite or another thread holds what is needed,
the caller hands the work to the threads after all (NOT_NOW, False).

Small writes run here only where a commit does not wait for the disk (synchronous=normal
with a database file: a commit is a write to the WAL, not an fsync), and this connection
never checkpoints (the writer thread does: engine.CHECKPOINT_PAGES).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from typing import Any, TypeVar

from ...errors import StorageError
from .connections import NotOnLoop, busy, connect, open_loop_writer
from .counting import Counts
from .schema import SQLiteURL
from .transactions import Pending, fail_all, run_alone, run_batch

T = TypeVar("T")

#: What `read` returns when it could not read at once (the caller uses the reader pool).
NOT_NOW: Any = object()


class OnLoop:
    def __init__(self, url: SQLiteURL, counts: Counts) -> None:
        self.url = url
        self._counts = counts
        #: One thread at a time on these connections (several event loops may share a backend).
        self._lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        #: Whether small writes may run here at all (see the module's docstring).
        self.writes = url.path is not None and url.synchronous == "normal"
        #: Transactions committed here.
        self.commits = 0

    def read(self, op: Any, shared: sqlite3.Connection | None, shared_lock: threading.Lock) -> Any:
        """op(connection), or NOT_NOW. In memory (`shared`), reads share the writer's
        connection, so they run here only while no batch holds it."""
        if not self._lock.acquire(blocking=False):
            return NOT_NOW
        try:
            if shared is not None:
                if not shared_lock.acquire(blocking=False):
                    return NOT_NOW
                try:
                    return op(shared)
                finally:
                    shared_lock.release()
            if self._reader is None:
                self._reader = connect(self.url, timeout=0.0)
                self._reader.execute("PRAGMA query_only=ON")
            return op(self._reader)
        except sqlite3.Error as exc:
            if busy(exc):
                return NOT_NOW
            raise StorageError(f"SQLite read failed: {exc}") from exc
        finally:
            self._lock.release()

    def write(self, batch: list[Pending]) -> bool | None:
        """Run the batch in one transaction here: whether it committed (each Pending holds
        its result or error), or None, having run nothing, when the write lock is not free
        at once (the caller hands the batch to the writer thread)."""
        if not self.writes or not self._lock.acquire(blocking=False):
            return None
        try:
            if len(batch) == 1 and batch[0].single:
                return self._write_alone(batch[0])
            try:
                conn = self._writer_conn()
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error:
                return None  # busy, or something the writer thread will report in full
            try:
                committed = run_batch(conn, batch, begun=True)
            except NotOnLoop:  # one of them would carry too much here: all go to the thread
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                fail_all(batch, StorageError("not run"))  # cleared: the thread runs them afresh
                return None
            self.commits += 1
            return committed
        finally:
            self._lock.release()

    def _write_alone(self, pending: Pending) -> bool | None:
        """A lone `single` operation (transactions.run_alone), holding this object's lock."""
        try:
            run_alone(self._writer_conn(), pending)
        except NotOnLoop:
            return None
        except sqlite3.Error as exc:
            if self._writer is None or busy(exc):
                return None  # nothing ran: the writer thread runs it (and reports in full)
            pending.ok, pending.value, pending.notes = False, StorageError(f"SQLite write failed: {exc}"), []
            return False
        self.commits += 1
        return True

    def _writer_conn(self) -> sqlite3.Connection:
        """This loop's write connection, opened on first use (holding this object's lock)."""
        if self._writer is None:
            self._writer = open_loop_writer(self.url, self._counts)
        return self._writer

    def close(self) -> None:
        with self._lock:
            for conn in (self._reader, self._writer):
                if conn is not None:
                    conn.close()
            self._reader = self._writer = None
