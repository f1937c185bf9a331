"""The SQLite backend's replica-shared state (storage/coordination.py): held hosted leases,
the webhook outbox and leader leases.

The outbox row of a job ending is written by a trigger on the job's state change, so it is
committed in the same transaction that ends the job, whichever path ends it (finish,
cancel, sweep, purge): no ending can commit without its webhook, nor a webhook without it.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..coordination import SharedState, WebhookDelivery

if TYPE_CHECKING:
    from .engine import SQLiteEngine

_NOW_SQL = "((julianday('now') - 2440587.5) * 86400.0)"

SHARED_DDL = f"""
CREATE TABLE IF NOT EXISTS held_leases (
    endpoint TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    token TEXT NOT NULL,
    PRIMARY KEY (endpoint, worker_id, job_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS held_leases_job ON held_leases(job_id);

CREATE TABLE IF NOT EXISTS webhook_outbox (
    id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    job_id TEXT NOT NULL,
    retries INTEGER NOT NULL,
    url TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    due_at REAL NOT NULL,
    leased_until REAL,
    body BLOB
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox(due_at);

CREATE TABLE IF NOT EXISTS leader_leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until REAL NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER IF NOT EXISTS jobs_webhook_outbox AFTER UPDATE OF state ON jobs
WHEN NEW.webhook IS NOT NULL
    AND NEW.state IN ('COMPLETED', 'FAILED', 'TIMED_OUT', 'CANCELLED')
    AND OLD.state IN ('IN_QUEUE', 'IN_PROGRESS') BEGIN
    INSERT INTO webhook_outbox (id, endpoint, job_id, retries, url, created_at, due_at)
        VALUES (lower(hex(randomblob(16))), NEW.endpoint, NEW.id, NEW.retries, NEW.webhook,
                coalesce(NEW.finished_at, {_NOW_SQL}), coalesce(NEW.finished_at, {_NOW_SQL}));
END;

CREATE TRIGGER IF NOT EXISTS jobs_delete_held AFTER DELETE ON jobs BEGIN
    DELETE FROM held_leases WHERE job_id = OLD.id;
END;
"""

_OUTBOX_COLUMNS = "id, endpoint, job_id, retries, url, attempts, body, created_at"


def _hold(conn: sqlite3.Connection, notes: list[str], endpoint: str, worker_id: str,
          leases: dict[str, str]) -> None:  # fmt: skip
    conn.executemany(
        "INSERT INTO held_leases (endpoint, worker_id, job_id, token) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (endpoint, worker_id, job_id) DO UPDATE SET token = excluded.token",
        [(endpoint, worker_id, job_id, token) for job_id, token in leases.items()],
    )


def _drop(conn: sqlite3.Connection, notes: list[str], endpoint: str, worker_id: str,
          job_ids: list[str]) -> None:  # fmt: skip
    conn.executemany(
        "DELETE FROM held_leases WHERE endpoint = ? AND worker_id = ? AND job_id = ?",
        [(endpoint, worker_id, job_id) for job_id in job_ids],
    )


def _take(
    conn: sqlite3.Connection, notes: list[str], limit: int, lease_ms: int, now: float
) -> list[tuple[object, ...]]:
    rows = conn.execute(
        f"SELECT {_OUTBOX_COLUMNS} FROM webhook_outbox WHERE due_at <= ? "
        "AND (leased_until IS NULL OR leased_until <= ?) ORDER BY due_at LIMIT ?",
        (now, now, limit),
    ).fetchall()
    conn.executemany(
        "UPDATE webhook_outbox SET leased_until = ? WHERE id = ?",
        [(now + lease_ms / 1000.0, row[0]) for row in rows],
    )
    return rows


def _later(conn: sqlite3.Connection, notes: list[str], delivery_id: str, attempts: int, delay_ms: int,
           body: bytes, now: float) -> None:  # fmt: skip
    conn.execute(
        "UPDATE webhook_outbox SET attempts = ?, due_at = ?, leased_until = NULL, body = ? WHERE id = ?",
        (attempts, now + delay_ms / 1000.0, body, delivery_id),
    )


def _lead(conn: sqlite3.Connection, notes: list[str], name: str, owner: str, ttl_ms: int) -> bool:
    now = time.time()
    row = conn.execute(
        "INSERT INTO leader_leases (name, owner, until) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until "
        "WHERE leader_leases.owner = excluded.owner OR leader_leases.until <= ? RETURNING owner",
        (name, owner, now + ttl_ms / 1000.0, now),
    ).fetchone()
    return row is not None


class SQLiteSharedState(SharedState):
    """Mixed into SQLiteStorage; runs on its engine like every other operation."""

    _engine: SQLiteEngine
    #: The storage's clock (Storage.clock): the outbox's due times follow it, like the sweep's.
    clock: Callable[[], float]

    async def hold_leases(self, endpoint: str, worker_id: str, leases: dict[str, str]) -> None:
        if leases:
            await self._engine.write(functools.partial(_hold, endpoint=endpoint, worker_id=worker_id,
                                                       leases=dict(leases)))  # fmt: skip

    async def held_leases(self, endpoint: str, worker_id: str) -> dict[str, str]:
        rows = await self._engine.read(
            lambda conn: conn.execute(
                "SELECT job_id, token FROM held_leases WHERE endpoint = ? AND worker_id = ?",
                (endpoint, worker_id),
            ).fetchall()
        )
        return dict(rows)

    async def drop_leases(self, endpoint: str, worker_id: str, job_ids: list[str]) -> None:
        if job_ids:
            await self._engine.write(functools.partial(_drop, endpoint=endpoint, worker_id=worker_id,
                                                       job_ids=list(job_ids)))  # fmt: skip

    async def take_webhooks(self, limit: int, lease_ms: int) -> list[WebhookDelivery]:
        # Senders look every second: a read first keeps an idle service from writing (and,
        # with synchronous=full, syncing) a transaction each time.
        now = self.clock()
        due = await self._engine.read(
            lambda conn: conn.execute(
                "SELECT 1 FROM webhook_outbox WHERE due_at <= ? "
                "AND (leased_until IS NULL OR leased_until <= ?) LIMIT 1",
                (now, now),
            ).fetchone()
        )
        if due is None:
            return []
        rows = await self._engine.write(functools.partial(_take, limit=limit, lease_ms=lease_ms, now=now))
        return [WebhookDelivery(*row) for row in rows]  # type: ignore[arg-type]

    async def webhook_done(self, delivery_id: str) -> None:
        await self._engine.write(
            lambda conn, notes: conn.execute("DELETE FROM webhook_outbox WHERE id = ?", (delivery_id,))
        )

    async def webhook_later(self, delivery_id: str, *, attempts: int, delay_ms: int, body: bytes) -> None:
        later = functools.partial(_later, delivery_id=delivery_id, attempts=attempts, delay_ms=delay_ms,
                                  body=body, now=self.clock())
        await self._engine.write(later)

    async def webhooks_pending(self) -> int:
        return await self._engine.read(  # type: ignore[no-any-return]
            lambda conn: conn.execute("SELECT count(*) FROM webhook_outbox").fetchone()[0]
        )

    async def lead(self, name: str, owner: str, ttl_ms: int) -> bool:
        return await self._engine.write(functools.partial(_lead, name=name, owner=owner, ttl_ms=ttl_ms))

    async def resign(self, name: str, owner: str) -> None:
        await self._engine.write(
            lambda conn, notes: conn.execute(
                "DELETE FROM leader_leases WHERE name = ? AND owner = ?", (name, owner)
            )
        )

