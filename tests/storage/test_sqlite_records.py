"""The SQLite backend builds JobRecords from rows by position (schema.record_from_row): each
column must land in the field of its name, whatever order JobRecord's fields are declared in."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from worker_kit.job import JobRecord, JobState, Policy
from worker_kit.protocol import pack
from worker_kit.storage import open_storage
from worker_kit.storage.sqlite.backend import SQLiteStorage
from worker_kit.storage.sqlite.schema import RECORD_COLUMNS, STATUS_COLUMNS, record_from_row, status_from_row

#: A distinct value for every column, as SQLite would hand it back (payloads packed).
ROW = {
    "id": "job-1", "endpoint": "ep", "state": "FAILED", "execution_timeout_ms": 1234, "timeout_explicit": 1,
    "ttl_ms": 5678, "retention_ms": 91011, "created_at": 1.0, "started_at": 2.0, "finished_at": 3.0,
    "expires_at": 4.0, "attempt": 5, "retries": 6, "worker_id": "w-7", "token": "t-8", "lease_until": 9.0,
    "next_seq": 10, "stream_len": 11, "read_cursor": 12, "webhook": "http://hook/13", "error": "e-14",
    "error_detail": pack({"d": 15}), "progress": pack({"p": 16}), "output": pack({"o": 17}),
    "input": pack({"i": 18}),
}  # fmt: skip


def columns(names: str) -> tuple[object, ...]:
    return tuple(ROW[name.strip()] for name in names.split(","))


def test_every_column_lands_in_the_field_of_its_name() -> None:
    record = record_from_row(columns(RECORD_COLUMNS))
    assert record == JobRecord(
        id="job-1", endpoint="ep", input={"i": 18}, state=JobState.FAILED,
        policy=Policy(execution_timeout_ms=1234, ttl_ms=5678, execution_timeout_explicit=True),
        webhook="http://hook/13", retention_ms=91011, created_at=1.0, started_at=2.0, finished_at=3.0,
        expires_at=4.0, output={"o": 17}, error="e-14", error_detail={"d": 15}, progress={"p": 16},
        attempt=5, retries=6, worker_id="w-7", token="t-8", lease_until=9.0, next_seq=10, stream_len=11,
        read_cursor=12,
    )  # fmt: skip
    # Every field of JobRecord came from a column: a field added to it needs a column here too.
    assert {f.name for f in dataclasses.fields(JobRecord)} - {"policy"} <= {
        name.strip() for name in RECORD_COLUMNS.split(",")
    }


def test_a_status_row_renders_as_the_whole_record_would() -> None:
    whole = record_from_row(columns(RECORD_COLUMNS)).to_status()
    assert status_from_row(columns(STATUS_COLUMNS)) == whole


_AGO = time.time() - 100.0


@pytest.mark.parametrize("state", list(JobState))
@pytest.mark.parametrize(
    "started, finished", [(None, None), (_AGO + 2, None), (_AGO + 2, _AGO + 3.5), (None, _AGO + 3)]
)
def test_a_status_shows_what_the_rules_say_in_every_state(
    state: JobState, started: float | None, finished: float | None
) -> None:
    # status_answer, which both /status paths use, against JobRecord's own timing properties and
    # the documented output rule: the progress while the job runs, the output once it ended.
    row = {**ROW, "state": state.value, "created_at": _AGO, "started_at": started, "finished_at": finished}
    record = record_from_row(tuple(row[name.strip()] for name in RECORD_COLUMNS.split(",")))
    got = status_from_row(tuple(row[name.strip()] for name in STATUS_COLUMNS.split(",")))
    assert got == record.to_status() | {k: got[k] for k in ("delayTime", "executionTime")}
    assert abs(got["delayTime"] - record.delay_ms) <= 1  # the clock moved in between, perhaps
    assert abs(got["executionTime"] - record.execution_ms) <= 1
    assert (got["executionTime"] == 0) == (started is None)
    if started or finished:  # no clock in it: the figures are exact
        assert got["delayTime"] == int(((started or finished) - _AGO) * 1000)
    if started and finished:
        assert got["executionTime"] == int((finished - started) * 1000)
    shown = {"p": 16} if state is JobState.IN_PROGRESS else {"o": 17} if state.is_terminal else None
    assert got.get("output") == shown
    assert got["status"] == state.value and type(got["status"]) is str
    rest = ("job-1", "e-14", {"d": 15}, 6, "w-7")
    assert (got["id"], got["error"], got["errorDetail"], got["retries"], got["workerId"]) == rest


async def test_records_read_back_from_a_file_carry_what_was_stored(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'jobs.db'}")
    assert isinstance(storage, SQLiteStorage)
    await storage.open()
    try:
        policy = Policy(execution_timeout_ms=4321, ttl_ms=98765, execution_timeout_explicit=True)
        job = await storage.submit("ep", {"x": 1}, policy=policy, webhook="http://h/1", retention_ms=4242)
        got = await storage.get("ep", job.id)
        assert got == job  # the submit's own record, built by position as well
        [claimed] = await storage.claim("ep", "w1", 1, 30_000)
        assert (claimed.id, claimed.input, claimed.policy, claimed.webhook) == (job.id, {"x": 1}, policy, "http://h/1")
        assert claimed.state is JobState.IN_PROGRESS and claimed.worker_id == "w1" and claimed.attempt == 1
        assert claimed.token and claimed.lease_until and claimed.started_at
    finally:
        await storage.close()
