"""Jobs per endpoint and state, and requeues per endpoint: the SQLite backend keeps them in memory.

Schema 2 kept the counts in a `job_counts` table updated by triggers. Every transition then
ran the trigger's two statements and rewrote that table's page in the WAL: about a tenth of
the SQLite work of a finish + claim. Now each operation states what it moved as it writes
(`moved`, on its write connection); the moves of a transaction apply to the counts only once
it has committed (transactions.run_batch), so the counts are always those of the committed
rows, and a caller answered after its commit reads its own change in them.

Nothing is persisted, so nothing can disagree with the rows after a crash: the counts are
recounted from the rows whenever the database opens (one scan of a covering index, in the
transaction that opens it; about half a second per million stored jobs).
"""

from __future__ import annotations

import sqlite3
import threading

from ...job import JobState

#: The counter of jobs put back in the queue (/retry, a lost lease), beside the states.
RETRIED = "retried"

#: (endpoint, what the job was or None when new, what it is or None when deleted).
Move = tuple[str, str | None, str | None]


class WriteConnection(sqlite3.Connection):
    """A write connection: the moves of the transaction in progress, and where they go."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.moves: list[Move] = []
        self.counts: Counts | None = None


def moved(conn: sqlite3.Connection, endpoint: str, was: str | None, now_is: str | None) -> None:
    """Record, in the transaction in progress, that a job of `endpoint` went from `was` to `now_is`."""
    conn.moves.append((endpoint, was, now_is))  # type: ignore[attr-defined]


class Counts:
    """The committed counts. Written by the one transaction that commits at a time, read by any thread."""

    def __init__(self) -> None:
        self._by_endpoint: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def apply(self, moves: list[Move]) -> None:
        with self._lock:
            for endpoint, was, now_is in moves:
                counts = self._by_endpoint.get(endpoint)
                if counts is None:
                    counts = self._by_endpoint[endpoint] = {}
                if was is not None:
                    counts[was] = counts.get(was, 0) - 1
                if now_is is not None:
                    counts[now_is] = counts.get(now_is, 0) + 1

    def of(self, endpoint: str) -> dict[str, int]:
        """Every state's count and RETRIED, zero when none."""
        out = {state.value: 0 for state in JobState}
        out[RETRIED] = 0
        with self._lock:
            out.update(self._by_endpoint.get(endpoint, ()))
        return out

    def queued(self, conn: sqlite3.Connection, endpoint: str) -> int:
        """Queued jobs of `endpoint` as the transaction in progress on `conn` sees them."""
        with self._lock:
            n = self._by_endpoint.get(endpoint, {}).get(JobState.IN_QUEUE.value, 0)
        queued = JobState.IN_QUEUE.value
        for ep, was, now_is in conn.moves:  # type: ignore[attr-defined]
            if ep == endpoint:
                n += (now_is == queued) - (was == queued)
        return n

    def recount(self, conn: sqlite3.Connection) -> None:
        """Count from the rows (at open, inside the transaction that opens the database)."""
        by_endpoint: dict[str, dict[str, int]] = {}
        for endpoint, state, n in conn.execute("SELECT endpoint, state, count(*) FROM jobs GROUP BY 1, 2"):
            by_endpoint.setdefault(endpoint, {})[state] = n
        for endpoint, retried in conn.execute("SELECT endpoint, retried FROM endpoint_stats"):
            by_endpoint.setdefault(endpoint, {})[RETRIED] = retried
        with self._lock:
            self._by_endpoint = by_endpoint
