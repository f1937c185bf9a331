"""Job hashes (field -> bytes, as HGETALL answers) as JobRecords, and output items as script arguments."""

from __future__ import annotations

from typing import Any

import msgpack

from ...job import JobRecord, JobState, Policy
from ...protocol import OutputItem, pack, unpack


def unpack_reply(packed: bytes) -> Any:
    """A script's answer that it packed with cmsgpack.pack: lists of bytes, as RESP would give."""
    return msgpack.unpackb(packed, raw=True)


def _flat(reply: Any) -> dict[bytes, bytes]:
    if isinstance(reply, dict):
        return reply
    return {reply[i]: reply[i + 1] for i in range(0, len(reply), 2)}


def _float(h: dict[bytes, bytes], key: bytes) -> float | None:
    value = h.get(key)
    return None if value is None else float(value)


def _int(h: dict[bytes, bytes], key: bytes) -> int:
    value = h.get(key)
    return 0 if value is None else int(value)


def _str(h: dict[bytes, bytes], key: bytes) -> str | None:
    value = h.get(key)
    return None if value is None else value.decode()


def _blob(h: dict[bytes, bytes], key: bytes) -> Any:
    value = h.get(key)
    return None if value is None else unpack(value)


def record_from_hash(endpoint: str, reply: Any) -> JobRecord:
    """A JobRecord from a job hash (a HGETALL reply, flat list or dict). A hash without
    `input` (purge, stream reads) gives input None."""
    h = _flat(reply)
    return JobRecord(
        id=h[b"id"].decode(),
        endpoint=endpoint,
        input=_blob(h, b"input"),
        state=JobState(h[b"state"].decode()),
        policy=Policy(
            execution_timeout_ms=_int(h, b"execution_timeout_ms"),
            ttl_ms=_int(h, b"ttl_ms"),
            execution_timeout_explicit=h.get(b"timeout_explicit") == b"1",
        ),
        webhook=_str(h, b"webhook"),
        retention_ms=_int(h, b"retention_ms"),
        created_at=_float(h, b"created_at") or 0.0,
        started_at=_float(h, b"started_at"),
        finished_at=_float(h, b"finished_at"),
        expires_at=_float(h, b"expires_at"),
        output=_blob(h, b"output"),
        error=_str(h, b"error"),
        error_detail=_blob(h, b"error_detail"),
        progress=_blob(h, b"progress"),
        attempt=_int(h, b"attempt"),
        retries=_int(h, b"retries"),
        worker_id=_str(h, b"worker_id"),
        token=_str(h, b"token"),
        lease_until=_float(h, b"lease_until"),
        next_seq=_int(h, b"next_seq"),
        stream_len=_int(h, b"stream_len"),
        read_cursor=_int(h, b"read_cursor"),
    )


def item_args(items: list[OutputItem] | None) -> list[Any]:
    """Output items as (seq, kind, msgpack) argument triples, in seq order (the scripts expect it)."""
    args: list[Any] = []
    for item in sorted(items or (), key=lambda i: i.seq):
        args += [item.seq, item.kind, pack(item.data)]
    return args
