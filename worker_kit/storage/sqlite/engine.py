"""Group commit and concurrent reads over one SQLite database.

Writes: a single writer thread owns the write connection. Callers queue operations
(plain functions of a connection); the thread takes every operation waiting at that
moment, runs them in ONE transaction, COMMITs once, and only then resolves each caller's
future. N concurrent submits therefore cost one commit (one fsync with
synchronous=FULL), not N. The operations one event-loop iteration queues reach the thread
together, in one hand-over (one thread wake-up), not one each.

A failing operation is rolled back alone. Nearly all of them fail before they write (a
stale token, a job in another state), and those need nothing undone; so operations run
bare, and only when one fails after writing is the batch rolled back and run again with
each operation inside its own SAVEPOINT (a savepoint per operation costs more than the
operation's own statement, and grows quadratically over long operations with temp files
in memory). An operation must therefore be safe to run again: a plain function of the
connection and its arguments, with no effect outside the database.

Reads: a small thread pool, each thread with its own connection. In WAL mode a reader
sees the last committed state and never waits for the writer. A caller's write has
committed before its future resolves, so a read issued afterwards sees it
(read-your-writes). A short read (a job by its primary key) runs on the caller's own
thread instead (`read_inline`): it costs a few microseconds there, where a hop to the pool
and back costs tens, in thread wake-ups and GIL hand-overs. Its connection never waits for
a lock (busy timeout 0): when SQLite says busy, the read goes to the pool after all.

An in-memory database cannot be shared between connections in WAL mode, so there the
writer and the readers share one connection under a lock, and reads wait for the
batch in progress.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ...errors import ConfigError, StorageError
from .schema import DDL, SCHEMA_VERSION, SQLiteURL, add_missing_columns
from .shared import SHARED_DDL

log = logging.getLogger("worker_kit.storage.sqlite")

T = TypeVar("T")
#: A write operation: runs on the writer thread inside a savepoint; appends the
#: notification channels to publish once its transaction has committed.
WriteOp = Callable[[sqlite3.Connection, list[str]], T]
ReadOp = Callable[[sqlite3.Connection], T]

#: What `read_inline` returns when it could not read on the calling thread (use `read`).
NOT_INLINE: Any = object()
#: Upper bound on operations per transaction, so one commit never holds back a caller for long.
MAX_BATCH = 512
BUSY_TIMEOUT_S = 10.0
READER_THREADS = 4


@dataclass(slots=True)
class _Pending:
    op: WriteOp[Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    ok: bool = False
    value: Any = None
    notes: list[str] = field(default_factory=list)


class SQLiteEngine:
    def __init__(self, url: SQLiteURL, publish: Callable[[str, int], None]) -> None:
        self.url = url
        self._publish = publish
        self._queue: queue.SimpleQueue[list[_Pending] | None] = queue.SimpleQueue()
        #: Operations queued in this event-loop iteration, per loop, not yet handed over.
        self._outboxes: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
        self._writer: threading.Thread | None = None
        self._closed = False
        self._stopping = False
        #: True while the writer thread takes operations (cheaper to ask than Thread.is_alive).
        self._writing = False
        # In-memory: one connection shared by writer and readers, serialised by this lock.
        self._shared: sqlite3.Connection | None = None
        self._shared_lock = threading.Lock()
        self._readers: concurrent.futures.ThreadPoolExecutor | None = None
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_local = threading.local()
        self._reader_lock = threading.Lock()
        #: The connection of `read_inline`, and the lock that keeps two threads off it at once.
        self._inline: sqlite3.Connection | None = None
        self._inline_lock = threading.Lock()
        #: Committed transactions and operations, for tests and the benchmark.
        self.transactions = 0
        self.operations = 0

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._writer is not None:
            return
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._writer = threading.Thread(target=self._writer_main, args=(ready,), name="wk-sqlite-writer")
        self._writer.daemon = True
        self._writer.start()
        try:
            await asyncio.wrap_future(ready)
        except BaseException:
            self._queue.put(None)  # if the thread did open (we were cancelled), let it end
            self._writer.join()
            self._writer, self._queue = None, queue.SimpleQueue()
            raise
        self._readers = concurrent.futures.ThreadPoolExecutor(
            max_workers=1 if self.url.path is None else READER_THREADS, thread_name_prefix="wk-sqlite-read"
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._hand_over(asyncio.get_running_loop())  # queued before close: they still run
        self._stopping = True
        if self._writer is not None:
            self._queue.put(None)  # operations queued before this still run and commit
            await asyncio.to_thread(self._writer.join)
        if self._readers is not None:
            await asyncio.to_thread(self._readers.shutdown, True)
        for conn in self._reader_conns:
            conn.close()
        self._reader_conns.clear()
        with self._inline_lock:
            if self._inline is not None:
                self._inline.close()
                self._inline = None
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    # -- calls --------------------------------------------------------------------------------
    async def write(self, op: WriteOp[T]) -> T:
        """Run `op` in the next group-commit transaction; returns after COMMIT."""
        if self._closed or not self._writing:
            raise StorageError("SQLite storage is not open")
        loop = asyncio.get_running_loop()
        pending = _Pending(op, loop, loop.create_future())
        outbox = self._outboxes.get(loop)
        if outbox is None:
            outbox = self._outboxes[loop] = []
            loop.call_soon(self._hand_over, loop)
        outbox.append(pending)
        return await pending.future  # type: ignore[no-any-return]

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """Give the writer every operation `loop` queued since the last hand-over."""
        batch = self._outboxes.pop(loop, None)
        if not batch:
            return
        if self._stopping:  # the writer has been told to stop: nothing would run these
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(StorageError("SQLite storage is not open"))
            return
        self._queue.put(batch)

    async def read(self, op: ReadOp[T]) -> T:
        """Run `op` on a reader connection (autocommit: each statement sees the latest commit)."""
        if self._closed or self._readers is None:
            raise StorageError("SQLite storage is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, op)

    def read_inline(self, op: ReadOp[T]) -> T:
        """Run a short read `op` on the calling thread, or return NOT_INLINE when it cannot run
        at once (the database or its connection is busy): the caller then uses `read`.

        Only for reads bounded to a few microseconds (a primary-key lookup whose payloads are
        capped): the event loop does nothing else meanwhile."""
        if self._closed or self._readers is None:
            raise StorageError("SQLite storage is not open")
        if not self._inline_lock.acquire(blocking=False):
            return NOT_INLINE  # another thread is using it
        try:
            if self._shared is not None:  # in-memory: the writer's connection, if it is free
                if not self._shared_lock.acquire(blocking=False):
                    return NOT_INLINE
                try:
                    return op(self._shared)
                finally:
                    self._shared_lock.release()
            if self._inline is None:
                self._inline = self._connect(timeout=0.0)
                self._inline.execute("PRAGMA query_only=ON")
            return op(self._inline)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return NOT_INLINE
            raise StorageError(f"SQLite read failed: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite read failed: {exc}") from exc
        finally:
            self._inline_lock.release()

    # -- connections --------------------------------------------------------------------------
    def _connect(self, timeout: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/SAVEPOINT/COMMIT ourselves.
        conn = sqlite3.connect(
            self.url.path or ":memory:",
            timeout=timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        return conn

    def _open_writer(self) -> sqlite3.Connection:
        if self.url.path is not None:
            parent = os.path.dirname(os.path.abspath(self.url.path))
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create the directory for {self.url.path!r}: {exc}") from None
        try:
            conn = self._connect()
        except sqlite3.Error as exc:  # a directory, a path without permission...
            raise StorageError(f"cannot open SQLite database {self.url.path!r}: {exc}") from None
        try:
            if self.url.path is not None:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StorageError(f"cannot put {self.url.path!r} in WAL mode (got {mode!r})")
            conn.execute(f"PRAGMA synchronous={self.url.synchronous.upper()}")
            conn.execute("PRAGMA temp_store=MEMORY")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"{self.url.path!r} has schema version {version}, newer than this worker_kit "
                    f"understands ({SCHEMA_VERSION}); upgrade worker_kit"
                )
            conn.executescript(
                f"BEGIN IMMEDIATE; {DDL} {SHARED_DDL} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
            )
            add_missing_columns(conn)
        except sqlite3.Error as exc:
            conn.close()
            name = self.url.path or ":memory:"
            raise StorageError(f"cannot open SQLite database {name!r}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        if self._shared is not None:
            with self._shared_lock:
                yield self._shared
            return
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._reader_local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        yield conn

    def _run_read(self, op: ReadOp[T]) -> T:
        try:
            with self._reader() as conn:
                return op(conn)
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite read failed: {exc}") from exc

    # -- the writer thread --------------------------------------------------------------------
    def _writer_main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            conn = self._open_writer()
        except BaseException as exc:
            ready.set_exception(exc)
            return
        if self.url.path is None:
            self._shared = conn
        self._writing = True
        ready.set_result(None)
        try:
            for batch in self._batches():
                lock = self._shared_lock if self._shared is not None else contextlib.nullcontext()
                try:
                    with lock:
                        self._run_batch(conn, batch)
                except Exception as exc:
                    # A bug here must not kill the thread and leave every later caller waiting forever.
                    log.exception("SQLite writer failed on a batch of %d operations", len(batch))
                    with contextlib.suppress(sqlite3.Error):
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                    self._fail_all(batch, StorageError(f"SQLite writer failed: {exc!r}"))
                self._deliver(batch)
        finally:
            self._writing = False
            if self._shared is None:
                conn.close()

    def _batches(self) -> Iterator[list[_Pending]]:
        """Batches of at most MAX_BATCH operations: everything waiting when the last one
        ended; until close, then what was queued before it."""
        waiting: list[_Pending] = []
        stopping = False
        while waiting or not stopping:
            if not waiting:
                item = self._queue.get()
                if item is None:
                    return
                waiting = item
            while len(waiting) < MAX_BATCH and not stopping:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                else:
                    waiting += item
            batch, waiting = waiting[:MAX_BATCH], waiting[MAX_BATCH:]
            yield batch

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._fail_all(batch, StorageError(f"SQLite could not start a write transaction: {exc}"))
            return
        try:
            if not self._run_ops(conn, batch, savepoints=False):
                # One failed after writing: undo them all, and run them again, each inside its own
                # savepoint this time, so that one alone is rolled back.
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                self._run_ops(conn, batch, savepoints=True)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("SQLite transaction of %d operations failed: %s", len(batch), exc)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._fail_all(batch, StorageError(f"SQLite commit failed: {exc}"))
            return
        self.transactions += 1
        self.operations += len(batch)

    @staticmethod
    def _run_ops(conn: sqlite3.Connection, batch: list[_Pending], *, savepoints: bool) -> bool:
        """Run each operation of the batch; False (without running the rest) when one failed
        after writing something and there is no savepoint to undo it alone."""
        for n, pending in enumerate(batch):
            pending.notes = []
            if savepoints:
                conn.execute(f"SAVEPOINT op{n}")
            changes = conn.total_changes
            try:
                pending.value = pending.op(conn, pending.notes)
                pending.ok = True
            except Exception as exc:
                if not conn.in_transaction:
                    raise  # SQLite rolled the whole transaction back (a full disk...): all fail
                if savepoints:
                    conn.execute(f"ROLLBACK TO op{n}")
                elif conn.total_changes != changes:
                    return False
                pending.ok, pending.notes = False, []
                pending.value = (
                    StorageError(f"SQLite write failed: {exc}") if isinstance(exc, sqlite3.Error) else exc
                )
            if savepoints:
                conn.execute(f"RELEASE op{n}")
        return True

    @staticmethod
    def _fail_all(batch: list[_Pending], exc: Exception) -> None:
        for pending in batch:
            pending.ok, pending.value, pending.notes = False, exc, []

    def _deliver(self, batch: list[_Pending]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
        for pending in batch:
            by_loop.setdefault(pending.loop, []).append(pending)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the caller's loop is already closed
                loop.call_soon_threadsafe(self._resolve, items)

    def _resolve(self, items: list[_Pending]) -> None:
        for pending in items:
            if pending.ok:
                notes = pending.notes
                if len(notes) == 1:  # the common case: one job changed
                    self._publish(notes[0], 1)
                else:  # a channel named n times by one operation (n jobs requeued) wakes n claims
                    for channel, times in collections.Counter(notes).items():
                        self._publish(channel, times)
                if not pending.future.done():
                    pending.future.set_result(pending.value)
            elif not pending.future.done():
                pending.future.set_exception(pending.value)
