"""/worker/exchange: a job's finish and the claim of the next one go to the store together (on
SQLite: one operation in one transaction, Storage.exchange), and a refused finish does not cost
the worker its next job."""

from __future__ import annotations

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
