"""/worker/exchange: a job's finish and the claim of the next one go to the store together (on
SQLite: one operation in one transaction, Storage.exchange), and a refused finish does not cost
the worker its next job."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_STORAGE

from .test_protocol_raw import done, jworker


@pytest.mark.skipif(TEST_STORAGE != "sqlite", reason="counts SQLite's group commits")
async def test_a_finish_and_the_next_claim_share_one_commit(
    service_factory: Any, api_at: Any, session: Any
) -> None:
    # No sweep during the test: each sweep is a write transaction of its own.
    service = await service_factory(sweep_interval_s=3600)
    api = api_at(service.endpoint_url("ep"))
    w = await jworker(api, session)
    ids = [await api.run({"n": i}) for i in range(2)]
    (first,) = (await w.exchange([], max_jobs=1))["jobs"]
    before = service.storage.stats()
    reply = await w.exchange([done(first, "r0")], max_jobs=1)
    after = service.storage.stats()
    assert reply["finished"] == [{"id": first["id"], "status": "COMPLETED"}]
    assert [job["id"] for job in reply["jobs"]] == [ids[1]]
    # The finish and the claim went to the store together: one operation, one commit.
    assert after["transactions"] - before["transactions"] == 1
    assert after["operations"] - before["operations"] == 1
    assert (await api.status(first["id"]))["output"] == "r0"


async def test_a_refused_finish_still_gets_the_next_job(service: Any, api: Any, session: Any) -> None:
    w = await jworker(api, session)
    ids = [await api.run({"n": i}) for i in range(2)]
    (first,) = (await w.exchange([], max_jobs=1))["jobs"]
    stale = {**first, "token": "0" * 32}
    reply = await w.exchange([done(stale, "r0")], max_jobs=1)
    assert reply["finished"][0]["code"] == 409
    assert [job["id"] for job in reply["jobs"]] == [ids[1]]
    assert (await api.status(first["id"]))["status"] == "IN_PROGRESS"


@pytest.mark.skipif(TEST_STORAGE != "sqlite", reason="makes SQLite itself fail a write")
async def test_a_store_failure_fails_the_exchange_whole_and_claims_nothing(
    service_factory: Any, api_at: Any, session: Any, tmp_path: Path
) -> None:
    store = tmp_path / "failing.db"
    service = await service_factory(storage=f"sqlite:///{store}", sweep_interval_s=3600)
    api = api_at(service.endpoint_url("ep"))
    w = await jworker(api, session)
    ids = [await api.run({"n": i}) for i in range(2)]
    (first,) = (await w.exchange([], max_jobs=1))["jobs"]
    # A real failure of the store, not a refusal: SQLite aborts any write that ends a job.
    with sqlite3.connect(store) as conn:
        conn.execute("CREATE TRIGGER fail_endings BEFORE UPDATE OF finished_at ON jobs "
                     "BEGIN SELECT RAISE(ABORT, 'the disk said no'); END")  # fmt: skip
    status, body = await w.post(
        "/worker/exchange", {"worker_id": w.worker_id, "finish": [done(first, "r0")], "max": 1}
    )
    assert status == 503 and "the disk said no" in body["error"]
    # Nothing of it was applied: the job still runs, the next one is still queued.
    assert (await api.status(first["id"]))["status"] == "IN_PROGRESS"
    assert (await api.status(ids[1]))["status"] == "IN_QUEUE"
    with sqlite3.connect(store) as conn:
        conn.execute("DROP TRIGGER fail_endings")
    # The worker sends it again (finishes are idempotent) and this time it all goes through.
    reply = await w.exchange([done(first, "r0")], max_jobs=1)
    assert reply["finished"] == [{"id": first["id"], "status": "COMPLETED"}]
    assert [job["id"] for job in reply["jobs"]] == [ids[1]]
