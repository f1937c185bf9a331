"""Group commit and concurrent reads over one SQLite database.

Writes: a single writer thread owns the write connection. Callers queue operations
(plain functions of a connection); the thread takes every operation waiting at that
moment, runs them in ONE transaction, COMMITs once, and only then resolves each caller's
future (transactions.py). N concurrent submits therefore cost one commit (one fsync with
synchronous=FULL), not N. The operations one event-loop iteration queues are handed over
together (one thread wake-up), not one each. When they are all small and the commit does
not wait for the disk, the loop runs and commits them itself instead, in one transaction
as well, saving the hand-over (on_loop.py); it does so only while the writer thread has
nothing in hand, so the two never compete for the write lock.

Reads: a small thread pool, each thread with its own connection. In WAL mode a reader
sees the last committed state and never waits for the writer. A caller's write has
committed before its future resolves, so a read issued afterwards sees it
(read-your-writes). A short read (a job by its primary key) runs on the event loop's own
thread instead (`read_inline`, on_loop.py).

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
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ...errors import StorageError
from .connections import connect, open_writer
from .counting import Counts
from .on_loop import NOT_NOW, OnLoop
from .schema import SQLiteURL
from .transactions import Pending, WriteOp, fail_all, run_batch

log = logging.getLogger("worker_kit.storage.sqlite")

T = TypeVar("T")
ReadOp = Callable[[sqlite3.Connection], T]

#: What `read_inline` returns when it could not read on the calling thread (use `read`).
NOT_INLINE: Any = NOT_NOW
#: Upper bound on operations per transaction, so one commit never holds back a caller for long.
MAX_BATCH = 512
#: Where an operation may run (`write`'s `where`): on the writer thread only; on the event loop
#: when it is alone or nearly (a claim, a finish: at high concurrency the loop is the busy
#: one, and the thread's SQL runs beside it); on the event loop in batches of up to 64.
THREAD, LOOP_IF_ALONE, LOOP = 0, 1, 2
#: The most operations the event loop commits itself in one go, by their `where`.
LOOP_BATCH = (0, 2, 64)
#: Iterations of the event loop in a row with one write each, after which a write alone in its
#: iteration commits at once (_hand_over).
QUIET_AFTER = 3
#: Whether a busy loop's writes wait a turn more before their commit (_hand_over, _may_wait).
WAIT_A_TURN = True
#: The writer thread checkpoints the WAL once about this many pages were written to it since
#: the last checkpoint: its own connection by SQLite's wal_autocheckpoint, the event loop's
#: commits (whose connection never checkpoints: that can take milliseconds) by a count of them
#: that each checkpoint adjusts from the pages it found. A checkpoint costs two fdatasync calls
#: whatever it copies, and copies a page written many times once: every 100 small commits
#: (~450 pages) these were ~1.5 % of a `POST /run`'s CPU. The WAL file grows to about this
#: many pages (8 MB of 4 KB pages), then is written again from its start.
CHECKPOINT_PAGES = 2000
#: Commits made on the event loop before the first checkpoint, and the bounds of that count.
CHECKPOINT_EVERY = 100
CHECKPOINT_EVERY_BOUNDS = (10, 2000)
READER_THREADS = 4
#: Queued to the writer thread to make it checkpoint.
_CHECKPOINT: Any = object()


def _may_wait(batch: list[Pending]) -> bool:
    """Whether a busy loop's outbox may wait a turn more for writes to join it: only small
    writes that the loop commits itself (LOOP), while more of them still could. A claim or an
    exchange (LOOP_IF_ALONE) runs on the loop only in a batch of one or two, and a batch for
    the thread gathers while the thread works anyway."""
    if not WAIT_A_TURN or len(batch) >= LOOP_BATCH[LOOP]:
        return False
    for pending in batch:
        if pending.where != LOOP:
            return False
    return True


class SQLiteEngine:
    def __init__(self, url: SQLiteURL, publish: Callable[[str, int], None]) -> None:
        self.url = url
        self._publish = publish
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        #: Operations queued in this event-loop iteration, per loop, not yet handed over.
        self._outboxes: dict[asyncio.AbstractEventLoop, list[Pending]] = {}
        #: Per loop, its last iterations that wrote, in a row, that wrote once; and the loops
        #: whose iteration in progress has committed its first write already (_hand_over).
        self._alone: dict[asyncio.AbstractEventLoop, int] = {}
        self._ran_here: set[asyncio.AbstractEventLoop] = set()
        #: Loops whose outbox has waited its one turn more (_hand_over).
        self._waited: set[asyncio.AbstractEventLoop] = set()
        self._writer: threading.Thread | None = None
        self._closed = False
        self._stopping = False
        #: True while the writer thread takes operations (cheaper to ask than Thread.is_alive).
        self._writing = False
        #: Work handed to the writer thread, and work it has done: equal when it is idle.
        self._handed = 0
        self._handed_lock = threading.Lock()
        self._done = 0
        # In-memory: one connection shared by writer and readers, serialised by this lock.
        self._shared: sqlite3.Connection | None = None
        self._shared_lock = threading.Lock()
        self._readers: concurrent.futures.ThreadPoolExecutor | None = None
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_local = threading.local()
        self._reader_lock = threading.Lock()
        #: Jobs per endpoint and state as committed (counting.py).
        self.counts = Counts()
        self._on_loop = OnLoop(url, self.counts)
        #: Commits on the event loop between checkpoints (_checkpoint adjusts it); the count of
        #: them when the last checkpoint was asked for, and how many came since the one before.
        self.checkpoint_every = CHECKPOINT_EVERY
        self._checkpoint_asked = 0
        self._checkpoint_span = CHECKPOINT_EVERY
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
        self._on_loop.close()  # first, so that the writer's connection is the last to close
        if self._writer is not None:
            self._queue.put(None)  # operations queued before this still run and commit
            await asyncio.to_thread(self._writer.join)
        if self._readers is not None:
            await asyncio.to_thread(self._readers.shutdown, True)
        for conn in self._reader_conns:
            conn.close()
        self._reader_conns.clear()
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    # -- calls --------------------------------------------------------------------------------
    async def write(self, op: WriteOp[T], *, where: int = THREAD, single: bool = False) -> T:
        """Run `op` in the next group-commit transaction; returns after COMMIT.

        `where` LOOP or LOOP_IF_ALONE: the operation is a few statements over small rows
        (one that finds otherwise calls connections.loop_bound), so the event loop may run
        it itself (see the module's docstring). `single`: its one write is one statement,
        the last thing it does (transactions.run_alone)."""
        if self._closed or not self._writing:
            raise StorageError("SQLite storage is not open")
        loop = asyncio.get_running_loop()
        pending = Pending(op, loop, loop.create_future(), where, single)
        outbox = self._outboxes.get(loop)
        if outbox is None:
            outbox = self._outboxes[loop] = []
            loop.call_soon(self._hand_over, loop)
            if where != THREAD and self._alone.get(loop, 0) >= QUIET_AFTER:
                # The first write of this iteration, after writes that came one per iteration:
                # it commits now, without waiting for the iteration's end (see _hand_over).
                if self._run_here([pending]):
                    self._ran_here.add(loop)
                    return pending.future.result()  # type: ignore[no-any-return]
                pending.where = THREAD  # it could not run here (too large, or a lock): not twice
        outbox.append(pending)
        return await pending.future  # type: ignore[no-any-return]

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run, or give the writer, every operation `loop` queued since the last hand-over.

        After QUIET_AFTER iterations in a row that wrote once each, the loop is quiet: the
        next iteration's first write commits as it is made (`write`), saving its caller a
        suspension and a wake-up. Any later write of that iteration still waits for this
        hand-over, grouped with the others, and an iteration of several writes ends the quiet:
        while writes come several at a time, each waits for the iteration's end and they commit
        together (the streak keeps a busy loop's odd lone write from costing a commit more)."""
        batch = self._outboxes.get(loop)
        if batch and loop not in self._waited and self._alone.get(loop, 0) == 0 and _may_wait(batch):
            # A busy loop: wait one turn more, so the writes of the requests it reads meanwhile
            # share this commit (at 8 /run in flight, 3 per commit instead of 2: WAIT_A_TURN).
            self._waited.add(loop)
            loop.call_soon(self._hand_over, loop)
            return
        self._waited.discard(loop)
        batch = self._outboxes.pop(loop, None)
        writes = (loop in self._ran_here) + len(batch or ())
        self._ran_here.discard(loop)
        self._alone[loop] = self._alone.get(loop, 0) + 1 if writes == 1 else 0
        if not batch:
            return
        if self._stopping:  # the writer has been told to stop: nothing would run these
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(StorageError("SQLite storage is not open"))
            return
        if not self._run_here(batch):
            self._to_thread(batch, len(batch))

    def _run_here(self, batch: list[Pending]) -> bool:
        """Commit the batch on this thread and resolve its callers, or False, having run nothing:
        the writer thread must (it holds work, the batch is too large, or the loop's connection
        cannot write now)."""
        if self._handed != self._done:  # the writer thread holds work: let it keep the order
            return False
        if len(batch) > min(LOOP_BATCH[pending.where] for pending in batch):
            return False
        committed = self._on_loop.write(batch)
        if committed is None:
            return False
        if committed:
            self._count(batch)
        self._resolve(batch)
        commits = self._on_loop.commits
        if commits - self._checkpoint_asked >= self.checkpoint_every:
            self._checkpoint_span, self._checkpoint_asked = commits - self._checkpoint_asked, commits
            self._to_thread(_CHECKPOINT, 1)
        return True

    def _to_thread(self, item: Any, size: int) -> None:
        with self._handed_lock:
            self._handed += size
        self._queue.put(item)

    async def read(self, op: ReadOp[T]) -> T:
        """Run `op` on a reader connection (autocommit: each statement sees the latest commit)."""
        if self._closed or self._readers is None:
            raise StorageError("SQLite storage is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, op)

    def counted(self, endpoint: str) -> dict[str, int]:
        """The endpoint's committed counts per state (counting.Counts.of); no read of the file."""
        if self._closed or self._readers is None:
            raise StorageError("SQLite storage is not open")
        return self.counts.of(endpoint)

    def read_inline(self, op: ReadOp[T]) -> T:
        """Run a short read `op` on the calling thread, or return NOT_INLINE when it cannot run
        at once (the database or its connection is busy): the caller then uses `read`.

        Only for reads bounded to a few microseconds (a primary-key lookup whose payloads are
        capped): the event loop does nothing else meanwhile."""
        if self._closed or self._readers is None:
            raise StorageError("SQLite storage is not open")
        return self._on_loop.read(op, self._shared, self._shared_lock)  # type: ignore[no-any-return]

    # -- reader threads -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        if self._shared is not None:
            with self._shared_lock:
                yield self._shared
            return
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = connect(self.url)
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
            conn = open_writer(self.url, self.counts)
            conn.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
        except BaseException as exc:
            ready.set_exception(exc)
            return
        if self.url.path is None:
            self._shared = conn
        self._writing = True
        ready.set_result(None)
        try:
            for batch in self._batches():
                if batch is _CHECKPOINT:
                    self._checkpoint(conn)
                    self._done += 1
                    continue
                lock = self._shared_lock if self._shared is not None else contextlib.nullcontext()
                try:
                    with lock:
                        if run_batch(conn, batch):
                            self._count(batch)
                except Exception as exc:
                    # A bug here must not kill the thread and leave every later caller waiting forever.
                    log.exception("SQLite writer failed on a batch of %d operations", len(batch))
                    with contextlib.suppress(sqlite3.Error):
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                    fail_all(batch, StorageError(f"SQLite writer failed: {exc!r}"))
                self._done += len(batch)
                self._deliver(batch)
        finally:
            self._writing = False
            if self._shared is None:
                conn.close()

    def _batches(self) -> Iterator[Any]:
        """Batches of at most MAX_BATCH operations: everything waiting when the last one
        ended; until close, then what was queued before it. A checkpoint request comes
        through on its own."""
        waiting: list[Pending] = []
        stopping = checkpoint = False
        while waiting or checkpoint or not stopping:
            if checkpoint and not waiting:
                checkpoint = False
                yield _CHECKPOINT
                continue
            if not waiting:
                item = self._queue.get()
                if item is None:
                    return
                if item is _CHECKPOINT:
                    checkpoint = True
                    continue
                waiting = item
            while len(waiting) < MAX_BATCH and not stopping:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                elif item is _CHECKPOINT:
                    checkpoint = True
                else:
                    waiting += item
            batch, waiting = waiting[:MAX_BATCH], waiting[MAX_BATCH:]
            yield batch

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        # PASSIVE: copies what it can without waiting for readers or the loop's writes.
        try:
            _, pages, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("SQLite checkpoint failed (the next one will try again): %s", exc)
            return
        if pages > 0:
            # The pages the WAL holds: those of the loop's commits since the last checkpoint, which
            # began the WAL again (and the thread's own). Where it could not begin it again (a
            # reader held it), more pages show, and the next checkpoint comes sooner.
            low, high = CHECKPOINT_EVERY_BOUNDS
            self.checkpoint_every = min(max(CHECKPOINT_PAGES * self._checkpoint_span // pages, low), high)

    def _count(self, batch: list[Pending]) -> None:
        self.transactions += 1
        self.operations += len(batch)

    def _deliver(self, batch: list[Pending]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Pending]] = {}
        for pending in batch:
            by_loop.setdefault(pending.loop, []).append(pending)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the caller's loop is already closed
                loop.call_soon_threadsafe(self._resolve, items)

    def _resolve(self, items: list[Pending]) -> None:
        publish = self._publish
        for pending in items:
            if pending.ok:
                notes = pending.notes
                # Publishing a channel n times wakes what publishing it once for n does, so the
                # counting is only to save calls where one channel comes many times.
                if len(notes) < 3 or len(set(notes)) == len(notes):
                    for channel in notes:  # a job changed; an exchange's jobs, each its own
                        publish(channel, 1)
                else:  # a channel named n times by one operation (n jobs requeued) wakes n claims
                    for channel, times in collections.Counter(notes).items():
                        publish(channel, times)
                if not pending.future.done():
                    pending.future.set_result(pending.value)
            elif not pending.future.done():
                pending.future.set_exception(pending.value)
