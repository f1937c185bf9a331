"""Delivering one job's output to the service: stream chunks split to the 1 MB cap,
ordered and batched with progress updates (`JobReporter`), and the final report
(`final_report`), retried until delivered or the lease is lost, never dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import PayloadTooLarge, RateLimited, SequenceGap, ServiceError, ServiceUnavailable, StaleLease
from ..job import MAX_CHUNK_BYTES, JobState
from ..protocol import STOP_LOST, pack, pack_text
from ..retrying import Backoff
from .transport import MAX_BATCH_BYTES, MAX_BATCH_ITEMS, Final, Transport, pack_item

log = logging.getLogger("worker_kit.worker")

#: Pieces of a split str/bytes chunk stay this far under the 1 MB cap, leaving room for the
#: msgpack header (at most 5 bytes), since the service measures the packed chunk.
PIECE_BYTES = MAX_CHUNK_BYTES - 16


def split_chunk(item: Any) -> list[Any]:
    """str and bytes over 1 MB become several pieces of at most 1 MB, in order (str is
    cut on character boundaries, measured in UTF-8); anything else is one piece."""
    if isinstance(item, bytearray | memoryview):
        item = bytes(item)
    if isinstance(item, bytes):
        if len(item) <= PIECE_BYTES:
            return [item]
        return [item[i : i + PIECE_BYTES] for i in range(0, len(item), PIECE_BYTES)]
    if isinstance(item, str):
        if len(item) * 4 <= PIECE_BYTES:  # fast path: cannot exceed the cap
            return [item]
        data = item.encode("utf-8")
        if len(data) <= PIECE_BYTES:
            return [item]
        pieces, start = [], 0
        while start < len(data):
            end = min(start + PIECE_BYTES, len(data))
            while end < len(data) and (data[end] & 0xC0) == 0x80:  # inside a multi-byte char
                end -= 1
            pieces.append(data[start:end].decode("utf-8"))
            start = end
        return pieces
    return [item]


def pack_chunk(item: Any) -> list[bytes]:
    """The packed pieces of one yielded item; raises for unserialisable or oversized items."""
    if type(item) is str and len(item) * 4 <= PIECE_BYTES:  # the common case: one short piece
        return [pack_text(item)]
    out = []
    for piece in split_chunk(item):
        packed = pack(piece)
        if len(packed) > MAX_CHUNK_BYTES:
            raise ValueError(
                f"a streamed {type(item).__name__} is {len(packed)} bytes packed, over the 1 MB chunk "
                "limit; only str and bytes are split automatically"
            )
        out.append(packed)
    return out


class JobReporter:
    """One claimed job's ordered output (chunks and progress share one seq) and its result.

    `add` queues an item; a sender task ships whatever has accumulated while the previous
    request was in flight, so small chunks batch without any artificial wait, and a progress
    update still unsent is replaced by a newer one that follows it directly (a handler calling
    progress() in a tight loop sends about one update per request, not every one). `finish`
    sends the remaining items inside the finish request, so nothing lands after the result.
    """

    #: Backlog above which producers wait (the handler is paused, not the loop).
    HIGH_WATER = 8 * 1024 * 1024
    #: A request carrying nothing but a progress update waits until this long after the
    #: previous request began (newer updates replace it meanwhile); chunks never wait.
    PROGRESS_INTERVAL_S = 0.1
    #: A handler that yields chunks without ever awaiting anything else would hold the event
    #: loop until it ends, and its whole stream would leave at the end. `wait_room` lets the
    #: loop run when the sender could send, and at least this often while a request is out
    #: (so its answer is read), so output leaves while the handler is still producing.
    #: (time.perf_counter: the loop's clock ticks in whole milliseconds under uvloop.)
    YIELD_EVERY_S = 0.0002

    def __init__(self, transport: Transport, job_id: str, token: str, on_lost: Callable[[], None]) -> None:
        self.transport, self.job_id, self.token = transport, job_id, token
        self._on_lost = on_lost
        self._pending: list[tuple[int, bytes]] = []
        self._seq = 0
        self._progress_seq = -1  # seq of the newest item when it is a progress update
        #: Highest seq ever put in a request: such an item may be stored by the service already
        #: (a reply lost to a timeout), so it is never replaced, only resent as it was.
        self._tried_upto = -1
        self.coalesced = 0  # progress updates replaced by a newer one before being sent
        self.buffered = 0
        # The three events are made only when something waits on them (most jobs send nothing
        # before their finish): `_room` None means room; `_woken` is `_wake`'s state until made.
        self._room: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._woken = False
        self._more: asyncio.Event | None = None  # a chunk was queued or the job ended: send now
        self._last_send = float("-inf")
        self._sender: asyncio.Task[None] | None = None
        self._sender_busy = False  # the sender awaits a request or a backoff, not the loop
        self._yield_at = 0.0  # perf_counter time by which wait_room lets the loop run again
        self._closed = False  # no more items accepted (finished or abandoned)
        self._abandoned: str | None = None  # why nothing more is sent at all
        #: Set when the service refused output (413 or 4xx); the job then finishes FAILED.
        self.rejected: str | None = None

    # -- the Sink the handler side uses --------------------------------------------------
    def add(self, kind: str, packed_data: bytes) -> None:
        if self._closed:
            log.debug("job %s: %s after the job ended, dropped", self.job_id, kind)
            return
        if kind == "progress":
            last = self._pending[-1] if self._pending else None
            if last is not None and last[0] == self._progress_seq and last[0] > self._tried_upto:
                # Only the latest of consecutive progress updates matters: one never sent,
                # with no chunk after it, is replaced in place (same seq, same place in order).
                item = pack_item(last[0], kind, packed_data)
                self._pending[-1] = (last[0], item)
                self.buffered += len(item) - len(last[1])
                self.coalesced += 1
                return
            self._progress_seq = self._seq
        else:
            self._progress_seq = -1
            if self._more is not None:
                self._more.set()
        item = pack_item(self._seq, kind, packed_data)
        self._pending.append((self._seq, item))
        self._seq += 1
        self.buffered += len(item)
        if self.buffered > self.HIGH_WATER:
            if self._room is None:
                self._room = asyncio.Event()
            else:
                self._room.clear()
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_loop())

    async def wait_room(self) -> None:
        room = self._room
        if room is not None and not room.is_set():
            await room.wait()
            return
        if self._sender is None:
            return
        now = time.perf_counter()
        if not self._sender_busy or now >= self._yield_at:
            self._yield_at = now + self.YIELD_EVERY_S
            await asyncio.sleep(0)

    # -- delivery -------------------------------------------------------------------------
    def _acked(self, next_seq: int) -> None:
        # Pending seqs are consecutive (each add takes the next one), so the rest is a slice.
        first = self._pending[0][0] if self._pending else next_seq
        keep = self._pending[max(0, next_seq - first) :]
        if keep and keep[0][0] > next_seq:
            # The service lacks items it had acknowledged (a store that lost writes): they
            # cannot be resent, and every later item would be refused as a gap.
            self.rejected = f"stream items {next_seq}..{keep[0][0] - 1} were lost by the service"
            log.error("job %s: %s; dropping the rest of the stream", self.job_id, self.rejected)
            keep = []
        self._pending = keep
        self.buffered = sum(len(b) for _, b in keep)
        if self.buffered <= self.HIGH_WATER and self._room is not None:
            self._room.set()

    async def _send_loop(self) -> None:
        try:
            await self._send(keep=0)
        finally:
            self._sender = None
            if self._room is not None:
                self._room.set()

    async def _send(self, keep: int, keep_items: int = 0) -> None:
        """Send batches until at most `keep` bytes and `keep_items` items are pending (the
        background sender stops early once the job finishes: its items then ride in the finish
        request)."""
        if not self._pending:
            return
        backoff = Backoff()
        while (self._pending and (self.buffered > keep or len(self._pending) > keep_items)
               and not self._abandoned):
            if keep == 0 and self._closed:
                return
            if keep == 0 and len(self._pending) == 1 and self._pending[0][0] == self._progress_seq:
                loop = asyncio.get_running_loop()
                wait = self._last_send + self.PROGRESS_INTERVAL_S - loop.time()
                if wait > 0:  # progress only: throttled
                    if self._more is None:
                        self._more = asyncio.Event()
                    else:
                        self._more.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._more.wait()
                    continue
            if self.buffered <= MAX_BATCH_BYTES and len(self._pending) <= MAX_BATCH_ITEMS:
                batch = list(self._pending)  # the common case: everything pending fits one request
            else:
                batch, size = [], 0
                for seq, item in self._pending:
                    if batch and (size + len(item) > MAX_BATCH_BYTES or len(batch) >= MAX_BATCH_ITEMS):
                        break
                    batch.append((seq, item))
                    size += len(item)
            self._tried_upto = max(self._tried_upto, batch[-1][0])
            self._last_send = asyncio.get_running_loop().time()
            self._sender_busy = True
            try:
                next_seq = await self.transport.output(self.job_id, self.token, [b for _, b in batch])
            except SequenceGap as exc:
                next_seq = exc.expected
            except StaleLease:
                self._lost()
                return
            except (ServiceUnavailable, RateLimited) as exc:
                await backoff.sleep(getattr(exc, "retry_after", None) or 0.0, self._wake_event(), "output")
                continue
            except ServiceError as exc:
                # 413 or another refusal: these items can never be delivered.
                self.rejected = f"the service refused stream output: {exc.message}"
                log.error("job %s: %s", self.job_id, self.rejected)
                next_seq = batch[-1][0] + 1
            finally:
                self._sender_busy = False
            backoff.reset()
            self._acked(next_seq)

    def _wake_event(self) -> asyncio.Event:
        """`_wake`, made now (set if it was set before): a backoff waits on it."""
        if self._wake is None:
            self._wake = asyncio.Event()
            if self._woken:
                self._wake.set()
        return self._wake

    def _set_wake(self, woken: bool) -> None:
        self._woken = woken
        if self._wake is not None:
            if woken:
                self._wake.set()
            else:
                self._wake.clear()

    def _lost(self) -> None:
        if not self._abandoned:
            self.abandon(STOP_LOST)
            self._on_lost()

    def abandon(self, reason: str) -> None:
        """Send nothing more for this job (CANCELLED, TIMED_OUT or LOST by the service, or
        the worker's shutdown)."""
        self._closed = True
        self._abandoned = reason
        self._pending.clear()
        self.buffered = 0
        if self._room is not None:
            self._room.set()
        self._set_wake(True)
        if self._more is not None:
            self._more.set()

    async def finish(self, final: Final) -> bool:
        """Deliver the final result, retrying until it lands or the lease is lost.

        Returns True when the service accepted it. A 413 turns the result into FAILED
        with a message saying why; a lost lease or other refusal is logged, never silent.
        """
        self._closed = True
        self._set_wake(True)  # a sender sleeping in backoff stops; its items go in the finish
        if self._more is not None:
            self._more.set()
        if self._sender is not None:
            await asyncio.shield(self._sender)
        if not self._abandoned:
            self._set_wake(False)
        if self._pending:  # a finish request carries at most one batch: bytes and items both bounded
            await self._send(keep=MAX_BATCH_BYTES, keep_items=MAX_BATCH_ITEMS)
        if self.rejected and final.state is JobState.COMPLETED:
            final = Final(JobState.FAILED, error=self.rejected)
        backoff: Backoff | None = None  # made on the first retry: most results land at once
        while not self._abandoned:
            try:
                await self.transport.finish(self.job_id, self.token, final, [b for _, b in self._pending])
                return True
            except SequenceGap as exc:
                self._acked(exc.expected)
            except StaleLease as exc:
                level = logging.INFO if exc.state == JobState.CANCELLED else logging.ERROR
                log.log(level, "job %s: result (%s) not delivered: the service answered that the lease is "
                        "gone (job is %s)", self.job_id, final.state, exc.state or "unknown",
                        extra={"job_id": self.job_id})
                return False
            except PayloadTooLarge as exc:
                if final.output is None and not self._pending:
                    log.error("job %s: result refused as too large: %s", self.job_id, exc.message)
                    return False
                error = f"result too large: the service refused it ({exc.message})"
                final = Final(JobState.FAILED, error=error)
                log.error("job %s: %s", self.job_id, final.error, extra={"job_id": self.job_id})
                self._pending.clear()
            except (ServiceUnavailable, RateLimited) as exc:
                backoff = backoff or Backoff()
                await backoff.sleep(getattr(exc, "retry_after", None) or 0.0, self._wake_event(), "finish")
            except ServiceError as exc:
                log.error("job %s: result (%s) not delivered: the service refused it: %s",
                          self.job_id, final.state, exc, extra={"job_id": self.job_id})
                return False
        expected = self._abandoned in (JobState.CANCELLED, JobState.TIMED_OUT)
        level = logging.WARNING if expected else logging.ERROR
        log.log(level, "job %s: result (%s) not delivered: the job was abandoned (%s)", self.job_id,
                final.state, self._abandoned, extra={"job_id": self.job_id})
        return False


def final_report(
    state: JobState, output: Any, error: str | None, error_detail: Any, result_limit: int
) -> Final:
    """The report for a handler's outcome: a COMPLETED output is packed here, and one that
    cannot be serialised or is over `result_limit` bytes turns the job FAILED, saying why."""
    if state is not JobState.COMPLETED:
        return Final(state, error=error, error_detail=error_detail)
    if output is None:
        return Final(state)
    try:
        packed = pack(output)
    except Exception as exc:
        error = f"result is not serialisable: {type(exc).__name__}: {exc}"
        detail = {"type": "SerializationError", "message": error}
        return Final(JobState.FAILED, error=error, error_detail=detail)
    if len(packed) > result_limit:
        error = (f"result too large: {len(packed) / 1048576:.1f} MB packed, over the "
                 f"{result_limit / 1048576:.0f} MB result limit")
        return Final(JobState.FAILED, error=error, error_detail={"type": "ResultTooLarge", "message": error})
    return Final(state, output=packed)


async def release(transport: Transport, job_id: str, token: str) -> bool:
    """Hand a job back to the queue (a few quick tries; else its lease brings it back)."""
    backoff = Backoff(cap=1.0)
    for _ in range(5):
        try:
            await transport.release(job_id, token)
            log.info("job %s released back to the queue", job_id, extra={"job_id": job_id})
            return True
        except StaleLease:
            return False  # it ended or was requeued already
        except (ServiceUnavailable, RateLimited):
            await backoff.sleep()
        except ServiceError as exc:
            log.error("job %s: release refused: %s", job_id, exc, extra={"job_id": job_id})
            return False
    log.error("job %s could not be released (service unreachable); it returns to the queue when its "
              "lease expires", job_id, extra={"job_id": job_id})
    return False
