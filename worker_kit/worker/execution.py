"""Running one job's handler: `Run` calls the handler, recognises what it returned,
streams what it yields and can stop it.

A handler's kind is read from what it RETURNS, not from how it is defined, so callable
objects, functools.partial and decorated wrappers work: a coroutine is awaited, an async
generator iterated on the loop, a generator iterated in a thread, anything else is the
result. Plain functions run in a pooled thread (threads.py) so the event loop (heartbeats,
claims, cancels) stays live; such a thread can be interrupted at its next Python bytecode.
The handler-facing `Job` is in handler_job.py (re-exported here).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..job import JobState
from ..protocol import dumps_json, pack_text
from .handler_job import Job, JobInterrupted
from .registry import Handler
from .reporting import PIECE_BYTES, pack_chunk
from .threads import raise_in_thread, threads

__all__ = ["Job", "JobInterrupted", "Outcome", "Run", "Sink", "failure", "value_outcome"]

#: A producer thread checks for backpressure after handing over this many bytes.
SYNC_BYTES = 1024 * 1024
#: A stream's list is kept for the output, when not asked for, up to this many packed bytes (the
#: default result limit); a longer stream would fail the job as "result too large".
AGGREGATE_AUTO_MAX_BYTES = 20 * 1024 * 1024
#: A str of at most this many characters packs to one piece under the chunk cap (4 UTF-8
#: bytes a character at most), as pack_chunk would pack it: a token takes that short path.
SHORT_TEXT = PIECE_BYTES // 4

log = logging.getLogger("worker_kit.worker")


class Sink(Protocol):
    """Where a running job's output items go (worker_kit.worker.reporting.JobReporter)."""

    buffered: int

    def add(self, kind: str, packed_data: bytes) -> None: ...

    async def wait_room(self) -> None: ...


@dataclass(slots=True)
class Outcome:
    #: COMPLETED or FAILED (the worker adds TIMED_OUT); None when the handler was interrupted
    #: (cancel, timeout, shutdown), so the job's end is the worker's to decide.
    state: JobState | None
    output: Any = None
    error: str | None = None
    error_detail: dict[str, Any] | None = None
    #: The output is the stream's list by default (not asked for): the worker leaves it out,
    #: rather than fail the job, when it is over the result limit.
    output_optional: bool = False


def failure(exc: BaseException) -> Outcome:
    kind, message = type(exc).__name__, str(exc)
    tb = "".join(traceback.format_exception(exc))
    return Outcome(
        JobState.FAILED,
        error=f"{kind}: {message}" if message else kind,
        error_detail={"type": kind, "message": message, "traceback": tb[-65536:]},
    )


def value_outcome(value: Any) -> Outcome:
    # The hosted SDK's convention: a returned {"error": ...} means the job failed.
    if isinstance(value, dict) and value.get("error"):
        err = value["error"]
        if not isinstance(err, str):
            try:
                err = dumps_json(err)
            except (TypeError, ValueError):
                err = repr(err)
        return Outcome(JobState.FAILED, error=err)
    return Outcome(JobState.COMPLETED, value)  # every job that returns: no keywords (a dict each)


#: Results that are neither awaitables nor streams: a handler's usual return value is one.
_PLAIN = frozenset({type(None), dict, list, str, bytes, int, float, bool, tuple})
#: The handler function last looked at and whether it is async (a worker runs one handler).
_kind_seen: tuple[Any, bool] = (None, False)


def _is_async_callable(fn: Any) -> bool:
    global _kind_seen
    seen, is_async = _kind_seen
    if fn is seen:
        return is_async
    is_async = _async_kind(fn)
    _kind_seen = (fn, is_async)
    return is_async


def _async_kind(fn: Any) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        return True
    if inspect.isfunction(fn) or inspect.ismethod(fn):
        return False
    call = type(fn).__call__  # a callable object: look at its __call__
    return inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)


class Run:
    """One execution of a handler for one job.

    `result` resolves with the handler's Outcome; `settled` once no code of the handler
    runs any more (a thread stuck in C may never settle). `interrupt()` stops it: async
    handlers are cancelled, a thread gets JobInterrupted at its next Python bytecode.
    """

    def __init__(
        self, handler: Handler, job: Job, sink: Sink, validate: Callable[[Any, Any], Any] | None = None
    ) -> None:
        self.handler, self.job, self.sink = handler, job, sink
        self._validate = validate
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.result: asyncio.Future[Outcome] = self._loop.create_future()
        self.settled: asyncio.Future[None] = self._loop.create_future()
        self._task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        self._thread_ident: int | None = None
        self._in_user_code = False
        self._threads_live = 0
        self._body_done = False
        self._unsynced = 0  # bytes a producer thread handed over since it last waited for room
        self._progress_slot: list[bytes] | None = None  # a thread's progress not yet on the loop
        self._progress_lock = threading.Lock()
        self.aggregate: list[Any] | None = [] if handler.return_aggregate_stream is not False else None
        self._aggregate_bytes = 0
        job._progress = self._progress

    def start(self) -> None:
        self._task = self._loop.create_task(self._main())
        self._task.add_done_callback(self._task_ended)

    def _task_ended(self, _: asyncio.Task[None]) -> None:
        # A task cancelled before its first step (a job stopped as it began) never ran _main,
        # whose `finally` settles the run: settle it here, or its slot would never free.
        if not self._body_done:
            if not self.result.done():
                self.result.set_result(Outcome(None))
            self._body_done = True
            self._maybe_settle()

    async def run_here(self, task: asyncio.Task[Any] | None) -> None:
        """`start()` without a task of its own: the handler runs in the caller's `task`, which
        `interrupt()` then cancels (while the handler's code runs, and only then)."""
        self._task = task
        await self._main()

    def interrupt(self) -> None:
        self.job._interrupt()
        if self._task is not None and not self._task.done() and not self._body_done:
            self._task.cancel()
        with self._lock:
            if self._in_user_code and self._thread_ident is not None:
                raise_in_thread(self._thread_ident, JobInterrupted)

    # -- emission (any thread) ------------------------------------------------------------
    def _progress(self, packed: bytes) -> None:
        if threading.get_ident() == self._loop_thread:
            self.sink.add("progress", packed)
            return
        # From a thread, updates made before the loop takes the previous one share its slot:
        # a tight progress() loop costs one loop callback per loop turn, not one per call.
        with self._progress_lock:
            slot = self._progress_slot
            if slot is not None:
                slot[0] = packed
                return
            slot = self._progress_slot = [packed]
        try:
            self._call_soon(self._flush_progress, slot)
        except JobInterrupted:
            self._seal_progress()  # so the next call raises too
            raise

    def _flush_progress(self, slot: list[bytes]) -> None:
        with self._progress_lock:
            if self._progress_slot is slot:
                self._progress_slot = None
            packed = slot[0]
        self.sink.add("progress", packed)

    def _seal_progress(self) -> None:
        """A chunk follows: later progress updates must not join a slot queued before it."""
        with self._progress_lock:
            self._progress_slot = None

    def _call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is gone: the worker stopped
            raise JobInterrupted("the worker stopped") from None

    def _add_pieces(self, pieces: list[bytes]) -> None:
        for packed in pieces:
            self.sink.add("chunk", packed)

    def _keep(self, item: Any, size: int) -> None:
        """Hold `item` (`size` bytes packed) for the aggregate output, while that is wanted."""
        if self.aggregate is None:
            return
        self.aggregate.append(item)
        self._aggregate_bytes += size
        if self.handler.return_aggregate_stream is None and self._aggregate_bytes > AGGREGATE_AUTO_MAX_BYTES:
            # Not asked for and already over any default result limit: stop holding the stream
            # in memory; the output is left empty and the chunks stay readable on /stream.
            self.aggregate = None
            log.warning(
                "job %s: its stream is over %d MB, so its output is left empty (read it from /stream; "
                "return_aggregate_stream=False skips the list)", self.job.id,
                AGGREGATE_AUTO_MAX_BYTES // 1048576, extra={"job_id": self.job.id},
            )

    def _streamed(self) -> Outcome:
        optional = self.handler.return_aggregate_stream is None
        return Outcome(JobState.COMPLETED, output=self.aggregate, output_optional=optional)

    def _emit(self, item: Any) -> None:
        """Hand one yielded item to the sink (the caller then awaits the sink's room)."""
        if type(item) is str and len(item) <= SHORT_TEXT:  # a token (this runs once per streamed item)
            packed = pack_text(item)
            self.sink.add("chunk", packed)
            size = len(packed)
        else:
            pieces = pack_chunk(item)
            self._add_pieces(pieces)
            size = sum(map(len, pieces))
        if self.aggregate is not None:
            self._keep(item, size)

    def _emit_from_thread(self, item: Any) -> None:
        pieces = pack_chunk(item)  # encoding happens in the handler's thread, off the loop
        self._seal_progress()
        self._call_soon(self._add_pieces, pieces)
        size = sum(map(len, pieces))
        self._keep(item, size)
        self._unsynced += size
        if self._unsynced >= SYNC_BYTES:
            # Wait on the loop, behind the adds scheduled so far, until the backlog has room:
            # a fast producer thread cannot run ahead of the network.
            self._unsynced = 0
            try:
                fut = asyncio.run_coroutine_threadsafe(self.sink.wait_room(), self._loop)
            except RuntimeError:
                raise JobInterrupted("the worker stopped") from None
            while True:
                try:
                    fut.result(timeout=0.5)
                    return
                except TimeoutError:
                    self.job.check_cancelled()

    # -- the body -------------------------------------------------------------------------
    async def _main(self) -> None:
        try:
            try:
                outcome = await self._invoke()
            except (JobInterrupted, asyncio.CancelledError):
                outcome = Outcome(None)
            except BaseException as exc:
                outcome = failure(exc)
            # The result before `settled`: their callbacks run in that order, so the job's task
            # queues its report before the claim loop (woken by the freed slot) builds a claim,
            # and the report rides with that claim without the claim yielding turns for it.
            if not self.result.done():
                self.result.set_result(outcome)
        finally:
            self._body_done = True
            self._maybe_settle()

    async def _invoke(self) -> Outcome:
        if self.handler.input_schema is not None and self._validate is not None:
            value, problems = self._validate(self.handler.input_schema, self.job.input)
            if problems:
                message = "input validation failed: " + "; ".join(problems)
                detail = {"type": "ValidationError", "message": message, "errors": problems}
                return Outcome(JobState.FAILED, error=message, error_detail=detail)
            self.job.input = value
        fn = self.handler.fn
        if _is_async_callable(fn):
            returned = fn(self.job)
        else:
            streamed, returned = await self._in_thread(lambda: self._call_sync(fn))
            if streamed:
                return self._streamed()
        for _ in range(4):  # an awaitable may resolve to a generator or another awaitable
            if type(returned) in _PLAIN:
                return value_outcome(returned)
            if not inspect.isawaitable(returned):
                break
            returned = await returned
        if inspect.isasyncgen(returned) or isinstance(returned, AsyncIterator):
            emit, wait_room = self._emit, self.sink.wait_room
            async for item in returned:
                emit(item)
                await wait_room()  # backpressure: the sink holds a bounded backlog
            return self._streamed()
        if inspect.isgenerator(returned):
            gen = returned
            await self._in_thread(lambda: self._iterate(gen))
            return self._streamed()
        return value_outcome(returned)

    def _call_sync(self, fn: Callable[..., Any]) -> tuple[bool, Any]:
        returned = fn(self.job)
        if inspect.isgenerator(returned):
            self._iterate(returned)
            return True, None
        return False, returned

    def _iterate(self, gen: Any) -> tuple[bool, None]:
        try:
            for item in gen:
                self._emit_from_thread(item)
        finally:
            gen.close()
        return True, None

    def _in_thread(self, target: Callable[[], Any]) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._threads_live += 1

        def main() -> None:
            res: tuple[bool, Any]
            try:
                try:
                    with self._lock:
                        self._thread_ident = threading.get_ident()
                        self._in_user_code = True
                    self.job.check_cancelled()  # interrupted before the thread began
                    res = (True, target())
                except BaseException as exc:
                    res = (False, exc)
                finally:
                    with self._lock:
                        self._in_user_code = False
            except BaseException as exc:  # an interrupt that landed in the bookkeeping above
                res = (False, exc)
            # No interrupt can be sent any more; drop one still pending so that it cannot
            # hit this pooled thread's next job.
            while True:
                try:
                    raise_in_thread(threading.get_ident(), None)
                    break
                except BaseException:  # the pending interrupt fired just now: clear again
                    continue
            try:
                self._loop.call_soon_threadsafe(self._thread_done, fut, res)
            except RuntimeError:
                pass  # the loop is closed: nobody waits for this result any more

        threads.submit(main)
        return fut

    def _thread_done(self, fut: asyncio.Future[Any], res: tuple[bool, Any]) -> None:
        self._threads_live -= 1
        if not fut.done():
            ok, value = res
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        elif not res[0]:
            res[1].__traceback__ = None  # nobody will see it; drop frames early
        self._maybe_settle()

    def _maybe_settle(self) -> None:
        if self._body_done and self._threads_live == 0 and not self.settled.done():
            self.settled.set_result(None)
