"""docs/protocol.md as an outsider reads it: a worker speaking plain JSON over HTTP, written
from the page's rules (not from the runtime's code), against a real service.

Covers the finish-and-claim exchange (protocol 2), heartbeats for finished jobs, the control
channel for jobs claimed while a heartbeat waits, two attempts of one job held by one worker,
and oversized output items."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from .test_jobs import wait_for_status

MB = 1024 * 1024


class JsonWorker:
    """Plain JSON calls to the worker routes of one endpoint."""

    def __init__(self, session: aiohttp.ClientSession, base: str, worker_id: str = "json-worker") -> None:
        self.session, self.base, self.worker_id = session, base, worker_id

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.session.post(self.base + path, json=body) as resp:
            return resp.status, await resp.json()

    async def claim(self, max_jobs: int = 1, wait_ms: int = 5000) -> list[dict[str, Any]]:
        status, body = await self.post(
            "/worker/claim", {"worker_id": self.worker_id, "max": max_jobs, "wait_ms": wait_ms}
        )
        assert status == 200, body
        return body["jobs"]

    async def exchange(self, finish: list[dict[str, Any]], max_jobs: int = 0, wait_ms: int = 0) -> Any:
        status, body = await self.post(
            "/worker/exchange",
            {"worker_id": self.worker_id, "finish": finish, "max": max_jobs, "wait_ms": wait_ms},
        )
        assert status == 200, body
        return body

    async def heartbeat(self, leases: dict[str, str], wait_ms: int = 0) -> dict[str, Any]:
        status, body = await self.post(
            "/worker/heartbeat", {"worker_id": self.worker_id, "jobs": leases, "wait_ms": wait_ms}
        )
        assert status == 200, body
        return body

    async def output(self, job: dict[str, Any], items: list[dict[str, Any]]) -> tuple[int, Any]:
        return await self.post(f"/worker/jobs/{job['id']}/output", {"token": job["token"], "items": items})


def done(job: dict[str, Any], output: Any = None, **fields: Any) -> dict[str, Any]:
    return {"id": job["id"], "token": job["token"], "state": "COMPLETED", "output": output, **fields}


async def jworker(api: Any, session: aiohttp.ClientSession, worker_id: str = "json-worker") -> JsonWorker:
    return JsonWorker(session, api.base, worker_id)


# -- /worker/exchange -------------------------------------------------------------------------------
async def test_exchange_finishes_and_claims_the_next_jobs_in_one_request(api: Any, session: Any) -> None:
    w = await jworker(api, session)
    ids = [await api.run({"n": i}) for i in range(3)]
    first = (await w.exchange([], max_jobs=1))["jobs"]
    assert [j["id"] for j in first] == ids[:1]

    reply = await w.exchange([done(first[0], "r0")], max_jobs=2)
    assert reply["finished"] == [{"id": ids[0], "status": "COMPLETED"}]
    assert [j["id"] for j in reply["jobs"]] == ids[1:]
    assert reply["lease_ms"] > 0 and reply["result_limit"] > 0 and reply["protocol"] == 2
    assert (await api.status(ids[0]))["output"] == "r0"

    # The same exchange sent again (its answer was lost): each finish answers as before, and
    # the claim part is a new claim (nothing is queued now).
    again = await w.exchange([done(first[0], "r0")], max_jobs=2)
    assert again["finished"] == [{"id": ids[0], "status": "COMPLETED"}] and again["jobs"] == []

    # Finishes with trailing items and progress; max 0 claims nothing.
    second, third = reply["jobs"]
    items = [{"seq": 0, "kind": "chunk", "data": "a"}, {"seq": 1, "kind": "chunk", "data": "b"}]
    reply = await w.exchange([done(second, items=items), done(third, "r2")])
    assert reply["finished"] == [{"id": ids[1], "status": "COMPLETED"}, {"id": ids[2], "status": "COMPLETED"}]
    assert reply["jobs"] == []
    _, stream = await api.get(f"/stream/{ids[1]}")
    assert [c["output"] for c in stream["stream"]] == ["a", "b"]


async def test_exchange_answers_each_finish_on_its_own(api: Any, session: Any) -> None:
    w = await jworker(api, session)
    ids = [await api.run(i) for i in range(4)]
    jobs = (await w.exchange([], max_jobs=4))["jobs"]
    await api.post(f"/cancel/{ids[1]}")
    finishes = [
        done(jobs[0], 0),
        done(jobs[1], 1),  # cancelled meanwhile
        done({**jobs[2], "token": "not-the-token"}, 2),
        done(jobs[3], 3, items=[{"seq": 5, "kind": "chunk", "data": "gap"}]),
        {"id": "", "token": "t", "state": "COMPLETED"},
    ]
    reply = await w.exchange(finishes)
    answers = reply["finished"]
    assert answers[0] == {"id": ids[0], "status": "COMPLETED"}
    assert answers[1]["code"] == 409 and answers[1]["stale"] is True and answers[1]["state"] == "CANCELLED"
    assert answers[2]["code"] == 409 and answers[2]["stale"] is True
    assert answers[3]["code"] == 409 and answers[3]["expected"] == 0
    assert answers[4]["code"] == 400 and "id" in answers[4]["error"]
    assert [(await api.status(i))["status"] for i in ids] == ["COMPLETED", "CANCELLED", "IN_PROGRESS",
                                                               "IN_PROGRESS"]


async def test_two_finishes_of_one_job_in_one_exchange_apply_the_first_refuse_the_second(
    api: Any, session: Any
) -> None:
    w = await jworker(api, session)
    job_id = await api.run("x")
    job = (await w.exchange([], max_jobs=1))["jobs"][0]
    items = [{"seq": 0, "kind": "chunk", "data": "lost?"}]
    reply = await w.exchange([done(job, "first"), done(job, "second", items=items)])
    first, second = reply["finished"]
    assert first == {"id": job_id, "status": "COMPLETED"}
    assert second["code"] == 409 and second["id"] == job_id and "already carries a finish" in second["error"]
    assert (await api.status(job_id))["output"] == "first"


async def test_exchange_with_finishes_never_holds_without_them_it_long_polls(api: Any, session: Any) -> None:
    w = await jworker(api, session)
    await api.run("only")
    job = (await w.exchange([], max_jobs=1))["jobs"][0]
    # The queue is empty now; a request that carries a finish answers at once despite wait_ms.
    reply = await asyncio.wait_for(w.exchange([done(job)], max_jobs=1, wait_ms=30_000), 10)
    assert reply["finished"][0]["status"] == "COMPLETED" and reply["jobs"] == []
    # Without finishes it holds until a job comes.
    held = asyncio.create_task(w.exchange([], max_jobs=1, wait_ms=20_000))
    await asyncio.sleep(0.3)
    assert not held.done()
    job_id = await api.run("late")
    reply = await asyncio.wait_for(held, 10)
    assert [j["id"] for j in reply["jobs"]] == [job_id]


async def test_exchange_refuses_malformed_requests_whole(api: Any, session: Any) -> None:
    w = await jworker(api, session)
    for body, word in [
        ({"finish": []}, "worker_id"),
        ({"worker_id": "w", "finish": {}}, "finish"),
        ({"worker_id": "w", "finish": [{}] * 101}, "at most 100"),
        ({"worker_id": "w", "max": 101}, "max"),
    ]:
        status, answer = await w.post("/worker/exchange", body)
        assert status == 400 and word in answer["error"], answer


async def test_a_capped_wait_still_refuses_what_the_wire_cannot_carry(api: Any, session: Any) -> None:
    """wait_ms above its cap (60 s) is lowered to it, but a value beyond what the wire carries is
    refused, as the schema's maximum says: whether written as an integer or as an integral float."""
    w = await jworker(api, session)
    for wait_ms, word in [(2**64, "does not fit in 64 bits"), (1e20, "must be an integer")]:
        status, answer = await w.post("/worker/heartbeat", {"worker_id": "w", "jobs": {}, "wait_ms": wait_ms})
        assert status == 400 and word in answer["error"], answer
    status, _ = await w.post("/worker/heartbeat", {"worker_id": "w", "jobs": {}, "wait_ms": 0})
    assert status == 200


# -- heartbeats ------------------------------------------------------------------------------------
async def test_a_heartbeat_for_a_job_just_finished_answers_no_stop(api: Any, session: Any) -> None:
    w = await jworker(api, session)
    job_id = await api.run("x")
    job = (await w.claim())[0]
    # Sent before the finish, answered after it: the job is not LOST, it is done.
    held = asyncio.create_task(w.heartbeat({job_id: job["token"]}, wait_ms=600))
    await asyncio.sleep(0.1)
    assert (await w.exchange([done(job, "ok")]))["finished"][0]["status"] == "COMPLETED"
    assert (await held)["stop"] == []
    assert (await w.heartbeat({job_id: job["token"]}))["stop"] == []
    # LOST keeps its meaning: a token that is not current, or a job that does not exist.
    stops = (await w.heartbeat({job_id: "old-token", "no-such-job": "t"}))["stop"]
    assert sorted((s["id"], s["reason"], s["token"]) for s in stops) == sorted(
        [(job_id, "LOST", "old-token"), ("no-such-job", "LOST", "t")]
    )


async def test_a_job_claimed_while_a_heartbeat_waits_is_covered_by_the_next_heartbeat(
    api: Any, session: Any
) -> None:
    """The rule of docs/protocol.md: a heartbeat covers the jobs it lists; when a new job is
    claimed, close the waiting heartbeat and send one that lists every held job."""
    w = await jworker(api, session)
    a_id, b_id = await api.run("a"), await api.run("b")
    a = (await w.claim())[0]
    first = asyncio.create_task(w.heartbeat({a_id: a["token"]}, wait_ms=20_000))
    await asyncio.sleep(0.2)
    b = (await w.claim())[0]
    assert b["id"] == b_id
    first.cancel()  # closes the connection: the service stops holding it
    second = asyncio.create_task(w.heartbeat({a_id: a["token"], b_id: b["token"]}, wait_ms=20_000))
    await asyncio.sleep(0.2)
    await api.post(f"/cancel/{b_id}")
    reply = await asyncio.wait_for(second, 10)
    assert reply["stop"] == [{"id": b_id, "reason": "CANCELLED", "token": b["token"]}]
    assert (await api.status(a_id))["status"] == "IN_PROGRESS"


async def test_two_attempts_of_one_job_held_by_one_worker(service_factory: Any, session: Any) -> None:
    svc = await service_factory(lease_ms=300)
    from tests.support.api import Api

    api = Api(session, svc.endpoint_url("ep"))
    w = await jworker(api, session)
    job_id = await api.run("x")
    stale = (await w.claim())[0]
    await wait_for_status(api, job_id, "IN_QUEUE")  # no heartbeat: the lease ran out
    fresh = (await w.claim())[0]
    assert fresh["id"] == job_id and fresh["attempt"] == 2 and fresh["token"] != stale["token"]
    # `jobs` maps a job id to one token: list the newest attempt's. The stale attempt's token
    # alone gets LOST, naming that token, so the worker stops the right attempt.
    reply = await w.heartbeat({job_id: stale["token"]})
    assert reply["stop"] == [{"id": job_id, "reason": "LOST", "token": stale["token"]}]
    assert (await w.heartbeat({job_id: fresh["token"]}))["stop"] == []
    reply = await w.exchange([done(stale, "old")])
    assert reply["finished"][0]["code"] == 409 and reply["finished"][0]["stale"] is True
    reply = await w.exchange([done(fresh, "new")])
    assert reply["finished"] == [{"id": job_id, "status": "COMPLETED"}]
    assert (await api.status(job_id))["output"] == "new"


# -- output limits -------------------------------------------------------------------------------
async def test_an_output_batch_with_one_oversized_item_is_refused_whole(api: Any, session: Any) -> None:
    w = await jworker(api, session)
    job_id = await api.run("x")
    job = (await w.claim())[0]
    too_big = "x" * (MB - 4)  # its msgpack form (str 32: 5-byte header) is over 1 MiB
    items = [{"seq": 0, "kind": "chunk", "data": "fine"}, {"seq": 1, "kind": "chunk", "data": too_big}]
    status, body = await w.output(job, items)
    assert status == 413 and body["limit"] == MB and "seq 1" in body["error"]
    # Nothing of the batch was applied: the stream continues from seq 0.
    status, body = await w.output(job, items[:1])
    assert (status, body) == (200, {"next_seq": 1})
    _, stream = await api.get(f"/stream/{job_id}")
    assert [c["output"] for c in stream["stream"]] == ["fine"]


async def test_the_json_rule_for_string_chunks(api: Any, session: Any) -> None:
    """A string chunk fits when its UTF-8 length is at most 1 048 571 bytes."""
    w = await jworker(api, session)
    await api.run("x")
    job = (await w.claim())[0]
    status, body = await w.output(job, [{"seq": 0, "kind": "chunk", "data": "é" * ((MB - 5) // 2) + "x"}])
    assert (status, body) == (200, {"next_seq": 1})  # 1 048 571 bytes of UTF-8
    status, body = await w.output(job, [{"seq": 1, "kind": "chunk", "data": "y" * (MB - 4)}])
    assert status == 413 and body["limit"] == MB


async def test_large_msgpack_reports_are_stored_as_sent(api: Any, worker: Any) -> None:
    """Bodies over 64 KiB keep each payload's bytes (encode once): results, chunks and exchange
    finishes arrive intact, and a truncated one is refused with 400."""
    from worker_kit.protocol import MSGPACK, pack

    big = {"text": "é" * 40_000, "raw": b"\x00\xff" * 1000, "nums": [1, -2, 3.5, None, True]}
    ids = [await api.run(i) for i in range(3)]
    a, b, c = await worker.claim(3)
    status, body = await worker.output(a, [{"seq": 0, "kind": "chunk", "data": big}])
    assert (status, body) == (200, {"next_seq": 1})
    assert (await worker.finish(a, output=big))[0] == 200
    status, body = await worker._post("/worker/exchange", {
        "worker_id": worker.worker_id,
        "finish": [{"id": b["id"], "token": b["token"], "state": "COMPLETED", "output": [big, big],
                    "items": [{"seq": 0, "kind": "chunk", "data": "x" * 70_000}]},
                   {"id": c["id"], "token": c["token"], "state": "COMPLETED", "output": "small"}],
    })
    assert status == 200 and [f["status"] for f in body["finished"]] == ["COMPLETED", "COMPLETED"]
    done = [await api.get(f"/status/{job_id}", headers={"Accept": MSGPACK}) for job_id in ids]
    assert [d[1]["output"] for d in done] == [big, [big, big], "small"]
    _, stream = await api.get(f"/stream/{ids[0]}?cursor=0", headers={"Accept": MSGPACK})
    assert stream["stream"] == [{"output": big}]

    await api.run("z")
    d = await worker.claim_one()
    raw = pack({"token": d["token"], "state": "COMPLETED", "output": "y" * 80_000})
    status, body = await api.post(f"/worker/jobs/{d['id']}/finish", raw=raw[:-5],
                                  headers={"Content-Type": MSGPACK})
    assert status == 400 and "msgpack" in body["error"]
