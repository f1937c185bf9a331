"""The embedded SQLite backend: durable, no server to install (docs/storage.md).

`SQLiteStorage.from_url("sqlite:///worker-kit.db")`. Writes go through one writer thread
that commits every operation waiting at that moment in one transaction (group commit);
reads run on their own WAL connections and never wait for the writer. See
engine.py for the threading, ops.py for the transitions and
schema.py for the tables.

One service process per database file: the writer thread is the only writer it expects.
"""

from __future__ import annotations

import functools
import operator
import sqlite3
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from ...errors import JobNotFound
from ...job import WORKER_FINAL_STATES, JobRecord, JobState, Policy, new_job_id
from ...protocol import OutputItem, Packed, pack, unpack_all
from .. import rules
from ..base import MAX_PAGE, Finish, JobPage, StopSignal, Storage, SweepResult, WorkerInfo
from ..rules import Clock
from . import claims, engine, listing, ops, small_reads, stream
from . import sweep as sqlite_sweep
from .engine import NOT_INLINE, SQLiteEngine
from .schema import SQLiteURL, record_from_row, status_from_row
from .shared import SQLiteSharedState

T = TypeVar("T")


#: A submit whose input packs to at most this many bytes may be committed by the event loop
#: itself (engine.write's `small`); so may a heartbeat of at most SMALL_HEARTBEAT leases.
SMALL_WRITE = 64 * 1024
SMALL_HEARTBEAT = 64
#: A claim of at most this many jobs, and a finish carrying at most SMALL_WRITE bytes, may run
#: on the event loop when alone (engine.LOOP_IF_ALONE), if the inputs they read are small too.
SMALL_CLAIM = 4
#: An exchange of at most this many finishes (SMALL_WRITE bytes in all) and claimed jobs may run
#: on the event loop when alone: a busy worker's exchanges carry a few each, and applying them
#: there rather than handing them to the writer thread and back kept the service busy 80 % of the
#: time instead of 72 % with one worker at concurrency 16 (12-15 % more jobs/s; docs/benchmarks.md).
#: At this bound an exchange holds the loop about as long as 64 small submits do.
SMALL_EXCHANGE = 32
#: A cursor read of stream chunks bounded to at most this many bytes is made on the event
#: loop's thread when the database is free at once (an SSE stream reads in such pieces: what
#: a token batch brought, a few kilobytes, without a hand-over to a reader thread and back).
INLINE_STREAM_BYTES = 64 * 1024

#: A packed item's bytes, for sizes summed in C (a token stream's batch holds thousands).
_BLOB_OF = operator.itemgetter(2)


#: The states a worker may end a job in, by member or by value (a StrEnum member hashes as its value).
_WORKER_FINAL = {state.value: state for state in WORKER_FINAL_STATES}


def _finish_args(order: Finish) -> tuple[dict[str, Any], int]:
    """ops.finish's arguments for `order` (payloads packed), and the bytes it carries. Every
    finish passes here (8 per exchange of a worker at concurrency 16): no call it can do without."""
    state = _WORKER_FINAL.get(order.state)
    if state is None:
        raise ValueError(f"a worker can finish a job only as COMPLETED, FAILED or TIMED_OUT, "
                         f"not {order.state}")  # fmt: skip
    output = None if order.output is None else pack(order.output)
    detail = None if order.error_detail is None else pack(order.error_detail)
    items = _pack_items(order.items) if order.items else []
    carried = (0 if output is None else len(output)) + (0 if detail is None else len(detail))
    if order.error is not None:
        carried += len(order.error)
    if items:
        carried += sum(map(len, map(_BLOB_OF, items)))
    args = {"job_id": order.job_id, "token": order.token, "state": state, "output": output,
            "error": order.error, "error_detail": detail, "items": items}  # fmt: skip
    return args, carried


def _pack_items(items: list[OutputItem] | None) -> list[ops.PackedItem]:
    # The service hands items over packed already (one per token in a stream): no call then.
    return [
        (item.seq, item.kind, item.data if type(item.data) is Packed else pack(item.data))
        for item in items or ()
    ]


class SQLiteStorage(SQLiteSharedState, Storage):
    def __init__(self, url: SQLiteURL, *, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self.url = url
        # One process holds the file, so publishing is waking this process's waiters: the engine
        # calls the notifier itself (an exchange of 16 jobs publishes 16 channels).
        self._engine = SQLiteEngine(url, self.notifier.publish)

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None) -> SQLiteStorage:
        """`sqlite:///relative.db`, `sqlite:////abs/path.db` or `sqlite://:memory:`,
        with an optional `?synchronous=full` for durability across power loss."""
        return cls(SQLiteURL.parse(url), clock=clock)

    async def _write(self, op: Callable[..., T], *, small: bool = False, alone: bool = False,
                     **kwargs: Any) -> T:  # fmt: skip
        """Run an ops.py transition in the next group commit, at the clock's current time.
        `small`: a few statements over rows of at most SMALL_WRITE bytes, which the event loop
        may commit in batches; `alone`: likewise, but only in a batch of one or two (a claim, a
        finish; the operation calls connections.loop_bound on what it reads). engine.write."""
        where = engine.LOOP if small else engine.LOOP_IF_ALONE if alone else engine.THREAD
        return await self._engine.write(functools.partial(op, now=self.clock(), **kwargs), where=where)

    def __repr__(self) -> str:
        return f"SQLiteStorage({self.url.path or ':memory:'!r}, synchronous={self.url.synchronous})"

    async def open(self) -> None:
        await self._engine.start()

    async def close(self) -> None:
        await self._engine.close()

    def stats(self) -> dict[str, int]:
        """Committed write transactions and the operations they carried (group commit at work)."""
        return {"transactions": self._engine.transactions, "operations": self._engine.operations}

    # -- client side ------------------------------------------------------------------------------
    async def submit(
        self,
        endpoint: str,
        input: Any,
        *,
        policy: Policy,
        webhook: str | None = None,
        retention_ms: int,
        queue_limit: int | None = None,
    ) -> JobRecord:
        job_id = new_job_id()
        input_blob = pack(input)
        # self._write(ops.submit, small=...) written out: a coroutine less on every /run.
        op = functools.partial(
            ops.submit,
            now=self.clock(),
            job_id=job_id,
            endpoint=endpoint,
            input_blob=input_blob,
            execution_timeout_ms=policy.execution_timeout_ms,
            timeout_explicit=policy.execution_timeout_explicit,
            ttl_ms=policy.ttl_ms,
            webhook=webhook,
            retention_ms=retention_ms,
            queue_limit=queue_limit,
        )
        where = engine.LOOP if len(input_blob) <= SMALL_WRITE else engine.THREAD
        created_at = await self._engine.write(op, where=where, single=True)
        # By position (schema.record_from_row says why): every /run builds one.
        return JobRecord(job_id, endpoint, input, JobState.IN_QUEUE, policy, webhook, retention_ms,
                         created_at)  # fmt: skip

    async def get(self, endpoint: str, job_id: str) -> JobRecord | None:
        now = self.clock()
        # A small record is read on this thread; a large one, or a busy database, on the pool.
        row = self._engine.read_inline(lambda conn: small_reads.record(conn, endpoint, job_id, now))
        if row is NOT_INLINE or row is small_reads.TOO_LARGE:
            row = await self._engine.read(lambda conn: ops.read_record(conn, endpoint, job_id, now))
        return None if row is None else record_from_row(row)

    async def status(self, endpoint: str, job_id: str) -> dict[str, Any] | None:
        now = self.clock()
        # As `get`, from half the columns; larger payloads, or a busy database: the whole record.
        row = self._engine.read_inline(lambda conn: small_reads.status(conn, endpoint, job_id, now))
        if row is NOT_INLINE or row is small_reads.TOO_LARGE:  # straight to the pool, as `get` would go
            full = await self._engine.read(lambda conn: ops.read_record(conn, endpoint, job_id, now))
            return None if full is None else record_from_row(full).to_status()
        return None if row is None else status_from_row(row)

    async def set_retention(self, endpoint: str, job_id: str, ttl_ms: int) -> JobRecord | None:
        row = await self._write(ops.set_retention, endpoint=endpoint, job_id=job_id, ttl_ms=ttl_ms)
        return None if row is None else record_from_row(row)

    async def cancel(self, endpoint: str, job_id: str) -> JobRecord | None:
        row = await self._write(ops.cancel, endpoint=endpoint, job_id=job_id)
        return None if row is None else record_from_row(row)

    async def retry(self, endpoint: str, job_id: str) -> JobRecord:
        row = await self._write(ops.retry, endpoint=endpoint, job_id=job_id)
        return record_from_row(row)

    async def purge(self, endpoint: str, *, limit: int = rules.BATCH) -> list[JobRecord]:
        rows = await self._write(ops.purge, endpoint=endpoint, limit=max(1, limit))
        return [record_from_row(row) for row in rows]

    async def read_stream(
        self, endpoint: str, job_id: str, cursor: int | None = None, *, max_bytes: int | None = None
    ) -> tuple[JobRecord, list[Any], int]:
        if cursor is None:
            # Decoded here, not on the writer thread (the one writer is the scarce resource).
            row, blobs, next_cursor = await self._write(
                ops.consume_stream, endpoint=endpoint, job_id=job_id, max_bytes=max_bytes
            )
            return record_from_row(row), unpack_all(blobs), next_cursor
        start, now = max(0, cursor), self.clock()
        if max_bytes is not None and max_bytes <= INLINE_STREAM_BYTES:
            got = self._engine.read_inline(
                lambda conn: _read_chunks(conn, endpoint, job_id, start, max_bytes, now, small=True)
            )
            if got is not NOT_INLINE and got is not small_reads.TOO_LARGE:
                row, chunks = got
                return record_from_row(row), chunks, start + len(chunks)
        # Decoded on the reader thread, off the event loop.
        row, chunks = await self._engine.read(
            lambda conn: _read_chunks(conn, endpoint, job_id, start, max_bytes, now)
        )
        return record_from_row(row), chunks, start + len(chunks)

    async def counts(self, endpoint: str) -> dict[str, int]:
        return self._engine.counted(endpoint)

    async def list_jobs(
        self,
        endpoint: str,
        *,
        limit: int,
        after: tuple[float, str] | None = None,
        states: Collection[JobState] | None = None,
        include_io: bool = False,
    ) -> JobPage:
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
        now = self.clock()
        rows, has_more = await self._engine.read(
            functools.partial(listing.list_rows, endpoint=endpoint, limit=limit, after=after, states=states,
                              include_io=include_io, now=now)
        )  # fmt: skip
        total = listing.total(self._engine.counted(endpoint), states)
        return JobPage(jobs=[record_from_row(row) for row in rows], total=total, has_more=has_more)

    # -- worker side --------------------------------------------------------------------------------
    async def claim(
        self,
        endpoint: str,
        worker_id: str,
        max_jobs: int,
        lease_ms: int,
        *,
        concurrency: int | None = None,
        max_bytes: int | None = None,
    ) -> list[JobRecord]:
        if max_jobs < 1:
            return []
        rows = await self._write(claims.claim, endpoint=endpoint, worker_id=worker_id, max_jobs=max_jobs,
                                 lease_ms=lease_ms, concurrency=concurrency, max_bytes=max_bytes,
                                 alone=max_jobs <= SMALL_CLAIM)  # fmt: skip
        return [record_from_row(row) for row in rows]

    async def heartbeat(
        self,
        endpoint: str,
        worker_id: str,
        leases: dict[str, str],
        lease_ms: int,
        *,
        concurrency: int | None = None,
        running: int | None = None,
    ) -> list[StopSignal]:
        return await self._write(claims.heartbeat, endpoint=endpoint, worker_id=worker_id,
                                 leases=dict(leases), lease_ms=lease_ms, concurrency=concurrency,
                                 running=running, small=len(leases) <= SMALL_HEARTBEAT)  # fmt: skip

    async def append_output(self, endpoint: str, job_id: str, token: str, items: list[OutputItem]) -> int:
        packed = _pack_items(items)
        # A token stream's batch is a few kilobytes: the event loop may commit it itself.
        small = sum(map(len, map(_BLOB_OF, packed))) <= SMALL_WRITE
        return await self._write(ops.append_output, small=small, endpoint=endpoint, job_id=job_id,
                                 token=token, items=packed)  # fmt: skip

    async def finish(
        self,
        endpoint: str,
        job_id: str,
        token: str,
        state: JobState,
        *,
        output: Any = None,
        error: str | None = None,
        error_detail: dict[str, Any] | None = None,
        items: list[OutputItem] | None = None,
    ) -> JobRecord:
        args, carried = _finish_args(Finish(job_id, token, state, output, error, error_detail, items))
        row = await self._write(ops.finish, endpoint=endpoint, **args, alone=carried <= SMALL_WRITE)
        return record_from_row(row)

    async def exchange(
        self,
        endpoint: str,
        finishes: list[Finish],
        worker_id: str,
        max_jobs: int,
        lease_ms: int,
        *,
        concurrency: int | None = None,
        max_bytes: int | None = None,
    ) -> tuple[list[JobRecord | Exception], list[JobRecord]]:
        # One operation for the lot: one transaction, one future, one hand-over (claims.exchange).
        orders, carried = [], 0
        for order in finishes:
            args, size = _finish_args(order)
            orders.append(args)
            carried += size
        small = carried <= SMALL_WRITE and len(orders) <= SMALL_EXCHANGE and max_jobs <= SMALL_EXCHANGE
        results, rows = await self._write(
            claims.exchange, endpoint=endpoint, finishes=orders, worker_id=worker_id, max_jobs=max_jobs,
            lease_ms=lease_ms, concurrency=concurrency, max_bytes=max_bytes, alone=small,
        )  # fmt: skip
        ended = [r if isinstance(r, Exception) else record_from_row(r) for r in results]
        return ended, [record_from_row(row) for row in rows]

    async def release(self, endpoint: str, job_id: str, token: str) -> bool:
        return await self._write(ops.release, endpoint=endpoint, job_id=job_id, token=token)

    async def workers(self, endpoint: str, seen_within_s: float) -> list[WorkerInfo]:
        since = self.clock() - seen_within_s
        # `running` is counted from the jobs a worker holds (an index lookup per worker), not
        # taken from its last request: a job that ends frees its worker at once.
        rows = await self._engine.read(
            lambda conn: conn.execute(
                "SELECT w.worker_id, (SELECT count(*) FROM jobs j WHERE j.endpoint = w.endpoint "
                "AND j.worker_id = w.worker_id AND j.state = 'IN_PROGRESS'), w.concurrency, w.seen_at "
                "FROM workers w WHERE w.endpoint = ? AND w.seen_at >= ? ORDER BY w.worker_id",
                (endpoint, since),
            ).fetchall()
        )
        return [WorkerInfo(worker_id=w, running=r, concurrency=c, seen_at=s) for w, r, c, s in rows]

    # -- housekeeping ---------------------------------------------------------------------------
    async def sweep(
        self, max_attempts: int, deadline_grace_ms: int, *, expire_leases: bool = True
    ) -> SweepResult:
        result = SweepResult()
        # Each batch is its own write operation: requests queued meanwhile run between batches.
        for _ in range(self.sweep_batches):
            ended, requeued, deleted, more = await self._write(
                sqlite_sweep.sweep, max_attempts=max_attempts, deadline_grace_ms=deadline_grace_ms,
                expire_leases=expire_leases, limit=self.batch_size,
            )  # fmt: skip
            result.ended += [record_from_row(row) for row in ended]
            result.requeued += requeued
            result.deleted += deleted
            result.more = more
            if not more:
                break
        return result


def _read_chunks(
    conn: sqlite3.Connection, endpoint: str, job_id: str, start: int, max_bytes: int | None, now: float,
    *, small: bool = False,
) -> Any:  # fmt: skip
    """(record row, chunks); with `small` (on the event loop), small_reads.TOO_LARGE instead when the
    record's payloads are large."""
    # One read transaction, so the record and its chunks are from the same snapshot.
    conn.execute("BEGIN")
    try:
        row = (small_reads.record if small else ops.read_record)(conn, endpoint, job_id, now)
        if row is None:
            raise JobNotFound(f"job {job_id} not found")
        if row is small_reads.TOO_LARGE:
            return row
        chunks = stream.chunks_from(conn, job_id, start, max_bytes)
    finally:
        conn.execute("COMMIT")
    return row, chunks


__all__ = ["SQLiteStorage"]
