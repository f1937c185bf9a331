"""One batch of write operations in one transaction (group commit), wherever it runs: on the
writer thread, or on the event loop for a small batch (on_loop.py).

A failing operation is rolled back alone. Nearly all of them fail before they write (a
stale token, a job in another state), and those need nothing undone; so operations run
bare, and only when one fails after writing (seen in `total_changes`) is the batch rolled
back and run again with each operation inside its own SAVEPOINT (a savepoint per operation
costs more than a submit's own INSERT, and grows quadratically over long operations with
temp files in memory). An operation must therefore be safe to run again: a plain function
of the connection and its arguments, with no effect outside the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ...errors import StorageError
from .connections import NotOnLoop
from .counting import Counts, Move

log = logging.getLogger("worker_kit.storage.sqlite")

T = TypeVar("T")
#: A write operation: runs inside a transaction; appends the notification channels to
#: publish once its transaction has committed.
WriteOp = Callable[[sqlite3.Connection, list[str]], T]


@dataclass(slots=True)
class Pending:
    """One caller's write operation, and what came of it."""

    op: WriteOp[Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    #: Where the operation may run: engine.THREAD, LOOP_IF_ALONE or LOOP (engine.write).
    where: int = 0
    #: Its one write is one statement, its last step (run_alone).
    single: bool = False
    ok: bool = False
    value: Any = None
    notes: list[str] = field(default_factory=list)


def run_batch(conn: sqlite3.Connection, batch: list[Pending], *, begun: bool = False) -> bool:
    """Run the batch in one transaction and commit; each Pending holds its result or error.
    Returns whether it committed. `begun`: the caller has already said BEGIN IMMEDIATE.
    `conn` is a counting.WriteConnection: the counts take the batch's moves once it has committed."""
    if len(batch) == 1 and batch[0].single and not begun:
        try:
            run_alone(conn, batch[0])
        except sqlite3.Error as exc:
            fail_all(batch, StorageError(f"SQLite write failed: {exc}"))
            return False
        return True
    moves: list[Move] = conn.moves  # type: ignore[attr-defined]
    moves.clear()
    if not begun:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            fail_all(batch, StorageError(f"SQLite could not start a write transaction: {exc}"))
            return False
    try:
        if not _run_ops(conn, batch, moves, savepoints=False):
            # One failed after writing: undo them all, and run them again, each inside its own
            # savepoint this time, so that one alone is rolled back.
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            moves.clear()
            _run_ops(conn, batch, moves, savepoints=True)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        log.error("SQLite transaction of %d operations failed: %s", len(batch), exc)
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        moves.clear()
        fail_all(batch, StorageError(f"SQLite commit failed: {exc}"))
        return False
    _committed(conn, moves)
    return True


def _committed(conn: sqlite3.Connection, moves: list[Move]) -> None:
    """What a commit's moves do to the committed counts, once it has committed."""
    counts: Counts | None = conn.counts  # type: ignore[attr-defined]
    if counts is not None and moves:
        counts.apply(moves)
    moves.clear()


def run_alone(conn: sqlite3.Connection, pending: Pending) -> None:
    """Run a lone `single` operation with no BEGIN and COMMIT around it: SQLite makes its one
    statement a transaction of its own (two statements of three saved), and a statement that
    fails has changed nothing. Raises what `conn` raises before the statement wrote
    (sqlite3.Error, NotOnLoop): the caller decides whether that is the operation's failure."""
    moves: list[Move] = conn.moves  # type: ignore[attr-defined]
    moves.clear()
    pending.notes = []
    try:
        pending.value = pending.op(conn, pending.notes)
    except (sqlite3.Error, NotOnLoop):
        moves.clear()
        raise
    except Exception as exc:
        moves.clear()
        pending.ok, pending.value, pending.notes = False, exc, []
        return
    assert not conn.in_transaction, "a `single` operation left a transaction open"
    pending.ok = True
    _committed(conn, moves)


def _run_ops(conn: sqlite3.Connection, batch: list[Pending], moves: list[Move], *, savepoints: bool) -> bool:
    """Run each operation of the batch; False (without running the rest) when one failed
    after writing something and there is no savepoint to undo it alone."""
    for n, pending in enumerate(batch):
        pending.notes = []
        if savepoints:
            conn.execute(f"SAVEPOINT op{n}")
        changes, mark = conn.total_changes, len(moves)
        try:
            pending.value = pending.op(conn, pending.notes)
            pending.ok = True
        except NotOnLoop:
            raise  # the whole batch goes to the writer thread (OnLoop.write)
        except Exception as exc:
            if not conn.in_transaction:
                raise  # SQLite rolled the whole transaction back (a full disk...): all fail
            if savepoints:
                conn.execute(f"ROLLBACK TO op{n}")
            elif conn.total_changes != changes:
                return False
            del moves[mark:]  # what it moved is undone with it
            pending.ok, pending.notes = False, []
            pending.value = (
                StorageError(f"SQLite write failed: {exc}") if isinstance(exc, sqlite3.Error) else exc
            )
        if savepoints:
            conn.execute(f"RELEASE op{n}")
    return True


def fail_all(batch: list[Pending], exc: Exception) -> None:
    for pending in batch:
        pending.ok, pending.value, pending.notes = False, exc, []
