"""Every client route and job transition, against a real service and a minimal protocol worker."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.api import Api
from worker_kit.protocol import MSGPACK, unpack

from .conftest import MiniWorker


async def wait_for_status(api: Api, job_id: str, wanted: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll /status until the job reaches `wanted` (the sweeper acts on its own schedule)."""
    async with asyncio.timeout(timeout):
        while True:
            body = await api.status(job_id)
            if body["status"] == wanted:
                return body
            await asyncio.sleep(0.05)


async def wait_for_gone(api: Api, job_id: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if (await api.get(f"/status/{job_id}"))[0] == 404:
                return
            await asyncio.sleep(0.05)


async def test_job_lifecycle_run_claim_progress_finish(api: Api, worker: MiniWorker) -> None:
    job_id = await api.run({"prompt": "hi"})
    assert (await api.status(job_id))["status"] == "IN_QUEUE"

    job = await worker.claim_one()
    assert job["id"] == job_id and job["input"] == {"prompt": "hi"} and job["attempt"] == 1
    assert job["policy"] == {"ttl": 86_400_000}  # executionTimeout only when the client set one
    assert 0 < job["deadline_ms"] <= 600_000

    status, body = await worker.output(job, [{"seq": 0, "kind": "progress", "data": {"pct": 50}}])
    assert (status, body) == (200, {"next_seq": 1})
    running = await api.status(job_id)
    assert running["status"] == "IN_PROGRESS" and running["output"] == {"pct": 50}
    assert running["workerId"] == "mini-worker"

    status, body = await worker.finish(job, output={"answer": 42})
    assert (status, body) == (200, {"id": job_id, "status": "COMPLETED"})
    done = await api.status(job_id)
    assert done["status"] == "COMPLETED" and done["output"] == {"answer": 42}
    assert done["delayTime"] >= 0 and done["executionTime"] >= 0

    # A terminal state is final: the same finish again is idempotent, anything else is refused.
    assert (await worker.finish(job, output={"answer": 42}))[0] == 200
    status, body = await worker.finish(job, state="FAILED", error="late")
    assert status == 409 and body["stale"] is True
    status, body = await worker.output(job, [{"seq": 1, "kind": "progress", "data": 99}])
    assert status == 409 and body["stale"] is True
    assert (await api.status(job_id))["output"] == {"answer": 42}


async def test_failed_job_reports_error_and_detail(api: Api, worker: MiniWorker) -> None:
    job_id = await api.run(1)
    job = await worker.claim_one()
    detail = {"type": "ValueError", "message": "bad", "traceback": "Traceback..."}
    assert (await worker.finish(job, state="FAILED", error="ValueError: bad", error_detail=detail))[0] == 200
    body = await api.status(job_id)
    assert body["status"] == "FAILED" and body["error"] == "ValueError: bad" and body["errorDetail"] == detail


async def test_runsync_answers_when_the_job_ends(api: Api, worker: MiniWorker) -> None:
    async def work() -> None:
        job = await worker.claim_one()
        await worker.finish(job, output=job["input"] * 2)

    task = asyncio.create_task(work())
    status, body = await api.post("/runsync?wait=20000", {"input": 21})
    await task
    assert status == 200
    assert body["status"] == "COMPLETED" and body["output"] == 42


async def test_runsync_times_out_with_the_current_status_and_the_job_goes_on(
    api: Api, worker: MiniWorker
) -> None:
    status, body = await api.post("/runsync?wait=200", {"input": "slow"})
    assert status == 200 and body["status"] == "IN_QUEUE"
    job = await worker.claim_one()
    assert job["id"] == body["id"]
    await worker.finish(job, output="done")
    assert (await api.status(body["id"]))["output"] == "done"


async def test_runsync_wait_zero_answers_at_once(api: Api) -> None:
    status, body = await api.post("/runsync?wait=0", {"input": None})
    assert status == 200 and body["status"] == "IN_QUEUE"


async def test_cancel_queued_job(api: Api, worker: MiniWorker) -> None:
    job_id = await api.run("x")
    status, body = await api.post(f"/cancel/{job_id}")
    assert (status, body) == (200, {"id": job_id, "status": "CANCELLED"})
    assert (await api.status(job_id))["status"] == "CANCELLED"
    assert await worker.claim(wait_ms=0) == []
    # Cancelling again is harmless and says how the job ended.
    assert await api.post(f"/cancel/{job_id}") == (200, {"id": job_id, "status": "CANCELLED"})


async def test_cancel_running_job_reaches_the_workers_heartbeat(api: Api, worker: MiniWorker) -> None:
    job_id = await api.run("x")
    job = await worker.claim_one()
    leases = {job_id: job["token"]}
    status, body = await worker.heartbeat(leases)
    assert status == 200 and body["stop"] == [] and body["lease_ms"] == 2000

    held = asyncio.create_task(worker.heartbeat(leases, wait_ms=20_000))
    await asyncio.sleep(0.2)
    assert not held.done()  # the heartbeat long-polls while nothing must stop
    assert await api.post(f"/cancel/{job_id}") == (200, {"id": job_id, "status": "CANCELLED"})
    status, body = await asyncio.wait_for(held, 10)
    assert status == 200 and body["stop"] == [{"id": job_id, "reason": "CANCELLED", "token": job["token"]}]

    status, body = await worker.finish(job, output="too late")
    assert status == 409 and body["stale"] is True and body["state"] == "CANCELLED"
    assert (await api.status(job_id))["status"] == "CANCELLED"


async def test_cancel_finished_job_keeps_its_state(api: Api, worker: MiniWorker) -> None:
    job_id = await api.run("x")
    await worker.finish(await worker.claim_one(), output=1)
    assert await api.post(f"/cancel/{job_id}") == (200, {"id": job_id, "status": "COMPLETED"})


async def test_retry_requeues_failed_job_with_same_id_and_input(api: Api, worker: MiniWorker) -> None:
    job_id = await api.run({"n": 1})
    job = await worker.claim_one()
    await worker.finish(job, state="FAILED", error="boom", output={"partial": True})
    assert await api.post(f"/retry/{job_id}") == (200, {"id": job_id, "status": "IN_QUEUE"})
    body = await api.status(job_id)
    assert body["status"] == "IN_QUEUE" and "output" not in body and "error" not in body
    assert body["retries"] == 1
    again = await worker.claim_one()
    assert again["id"] == job_id and again["input"] == {"n": 1} and again["token"] != job["token"]
    # The old attempt's token is stale now.
    assert (await worker.finish(job, output="old"))[0] == 409
    assert (await worker.finish(again, output="new"))[0] == 200
    assert (await api.status(job_id))["output"] == "new"


async def test_retry_refuses_other_states(api: Api, worker: MiniWorker) -> None:
    queued = await api.run("q")
    status, body = await api.post(f"/retry/{queued}")
    assert status == 409 and "IN_QUEUE" in body["error"] and "FAILED or TIMED_OUT" in body["error"]
    job = await worker.claim_one()
    await worker.finish(job, output=1)
    status, body = await api.post(f"/retry/{queued}")
    assert status == 409 and "COMPLETED" in body["error"]
    status, body = await api.post("/retry/does-not-exist")
    assert status == 404 and "error" in body


async def test_purge_removes_only_queued_jobs(api: Api, worker: MiniWorker) -> None:
    first = await api.run(0)
    running = await worker.claim_one()
    assert running["id"] == first
    queued = [await api.run(i) for i in range(3)]
    assert await api.post("/purge-queue") == (200, {"removed": 3, "status": "completed"})
    for job_id in queued:  # ended, not vanished: a poller learns what happened
        status = await api.status(job_id)
        assert status["status"] == "CANCELLED" and "purge" in status["error"]
    assert (await api.status(first))["status"] == "IN_PROGRESS"
    assert (await worker.finish(running, output="ok"))[0] == 200
    assert await api.post("/purge-queue") == (200, {"removed": 0, "status": "completed"})


async def test_stream_consumes_while_cursor_reads_consume_nothing(api: Api, worker: MiniWorker) -> None:
    job_id = await api.run("s")
    job = await worker.claim_one()
    items = [{"seq": i, "kind": "chunk", "data": f"tok{i}"} for i in range(3)]
    assert (await worker.output(job, items)) == (200, {"next_seq": 3})

    status, body = await api.get(f"/stream/{job_id}?cursor=0")
    assert status == 200 and [c["output"] for c in body["stream"]] == ["tok0", "tok1", "tok2"]
    assert body["cursor"] == 3 and body["status"] == "IN_PROGRESS"
    status, body = await api.get(f"/stream/{job_id}?cursor=1")
    assert [c["output"] for c in body["stream"]] == ["tok1", "tok2"]

    status, body = await api.get(f"/stream/{job_id}")
    assert [c["output"] for c in body["stream"]] == ["tok0", "tok1", "tok2"]
    status, body = await api.post(f"/stream/{job_id}")
    assert status == 200 and body["stream"] == []  # consumed

    await worker.finish(job, output=None, items=[{"seq": 3, "kind": "chunk", "data": "tok3"}])
    status, body = await api.get(f"/stream/{job_id}")
    assert body["status"] == "COMPLETED" and [c["output"] for c in body["stream"]] == ["tok3"]
    status, body = await api.get(f"/stream/{job_id}?cursor=0")
    assert len(body["stream"]) == 4  # a cursor read still sees everything


async def test_stream_wait_holds_until_a_chunk_arrives(api: Api, worker: MiniWorker) -> None:
    job_id = await api.run("s")
    job = await worker.claim_one()
    held = asyncio.create_task(api.get(f"/stream/{job_id}?wait=20000"))
    await asyncio.sleep(0.2)
    assert not held.done()
    await worker.output(job, [{"seq": 0, "kind": "chunk", "data": "first"}])
    status, body = await asyncio.wait_for(held, 10)
    assert status == 200 and body["stream"] == [{"output": "first"}]


async def test_output_sequence_duplicates_skipped_gaps_refused(api: Api, worker: MiniWorker) -> None:
    job_id = await api.run("s")
    job = await worker.claim_one()
    chunk = [{"seq": 0, "kind": "chunk", "data": "a"}, {"seq": 1, "kind": "chunk", "data": "b"}]
    assert await worker.output(job, chunk) == (200, {"next_seq": 2})
    assert await worker.output(job, chunk) == (200, {"next_seq": 2})  # a retried request
    status, body = await worker.output(job, [{"seq": 5, "kind": "chunk", "data": "gap"}])
    assert status == 409 and body["expected"] == 2
    _, body = await api.get(f"/stream/{job_id}?cursor=0")
    assert [c["output"] for c in body["stream"]] == ["a", "b"]


async def test_release_requeues_without_counting_the_attempt(api: Api, worker: MiniWorker) -> None:
    job_id = await api.run("r")
    job = await worker.claim_one()
    assert await worker.release(job) == (200, {"id": job_id, "status": "IN_QUEUE"})
    assert (await api.status(job_id))["status"] == "IN_QUEUE"
    again = await worker.claim_one()
    assert again["attempt"] == 1 and again["token"] != job["token"]
    status, body = await worker.release(job)
    assert status == 409 and body["stale"] is True


async def test_claim_batches_and_long_polls(api: Api, worker: MiniWorker) -> None:
    ids = [await api.run(i) for i in range(3)]
    jobs = await worker.claim(max_jobs=5, wait_ms=0)
    assert sorted(j["id"] for j in jobs) == sorted(ids)
    assert await worker.claim(wait_ms=0) == []

    held = asyncio.create_task(worker.claim(wait_ms=20_000))
    await asyncio.sleep(0.2)
    assert not held.done()
    new_id = await api.run("late")
    got = await asyncio.wait_for(held, 10)
    assert [j["id"] for j in got] == [new_id]


async def test_claim_wait_expires_empty(api: Api, worker: MiniWorker) -> None:
    assert await worker.claim(wait_ms=100) == []


async def test_worker_answers_in_msgpack_when_asked(api: Api) -> None:
    await api.run("m")
    status, body = await api.post(
        "/worker/claim", {"worker_id": "w", "wait_ms": 0}, headers={"Accept": MSGPACK}
    )
    assert status == 200 and body["jobs"][0]["input"] == "m"
    async with api.session.post(
        api.base + "/worker/claim", json={"worker_id": "w", "wait_ms": 0}, headers={"Accept": MSGPACK}
    ) as resp:
        assert resp.content_type == MSGPACK
        assert unpack(await resp.read()) == {"jobs": [], "lease_ms": 2000, "result_limit": 20 * 1024 * 1024}


async def test_bytes_output_reaches_json_clients_base64(api: Api, worker: MiniWorker) -> None:
    job_id = await api.run("b")
    job = await worker.claim_one()
    await worker.finish(job, output=b"\x00\x01")
    assert (await api.status(job_id))["output"] == "AAE="


async def test_every_msgpack_value_has_a_json_answer(api: Api, worker: MiniWorker) -> None:
    # msgpack bodies may hold what JSON lacks: bytes as map keys, timestamps, extension types.
    # JSON readers of such a job (clients, a JSON worker's claim) get an answer, never a 500.
    import msgpack

    value = {b"\x00k": 1, "at": msgpack.Timestamp(1, 500_000_000), "ext": msgpack.ExtType(5, b"\x01")}
    status, body = await api.post(
        "/run", raw=msgpack.packb({"input": value}), headers={"Content-Type": MSGPACK}
    )
    assert status == 200, body
    job_id = body["id"]
    status, body = await api.post("/worker/claim", {"worker_id": "json-worker", "wait_ms": 0})
    assert status == 200, body
    (claimed,) = body["jobs"]
    assert claimed["input"] == {"AGs=": 1, "at": 1.5, "ext": [5, "AQ=="]}
    status, _ = await worker.finish({"id": job_id, "token": claimed["token"]}, output=value)
    assert status == 200
    assert (await api.status(job_id))["output"] == {"AGs=": 1, "at": 1.5, "ext": [5, "AQ=="]}


async def test_endpoint_health_counts_jobs_and_workers(api: Api, worker: MiniWorker) -> None:
    done = await api.run(1)
    await worker.finish(await worker.claim_one(), output=1)
    failed = await api.run(2)
    await worker.finish(await worker.claim_one(), state="FAILED", error="x")
    await api.post(f"/retry/{failed}")
    await worker.claim_one()  # the retried job, now running
    cancelled = await api.run(3)
    await api.post(f"/cancel/{cancelled}")
    await api.run(4)
    status, body = await api.get("/health")
    assert status == 200
    assert body["jobs"] == {
        "completed": 1,
        "failed": 0,
        "inProgress": 1,
        "inQueue": 1,
        "retried": 1,
        "timedOut": 0,
        "cancelled": 1,
    }
    assert body["workers"]["idle"] + body["workers"]["running"] == 1
    assert set(body["webhooks"]) == {"delivered", "failed", "pending"}
    assert done


async def test_endpoints_are_separate(service: Any, session: Any, worker: MiniWorker) -> None:
    other = Api(session, service.endpoint_url("other"))
    job_id = await other.run("o")
    assert await worker.claim(wait_ms=0) == []  # the worker serves "ep"
    assert (await worker.api.get(f"/status/{job_id}"))[0] == 404
    assert (await other.status(job_id))["status"] == "IN_QUEUE"


async def test_stream_as_server_sent_events(api: Api, worker: MiniWorker) -> None:
    sse = {"Accept": "text/event-stream"}
    status, body = await api.get("/stream/unknown-job", headers=sse)
    assert status == 404 and "error" in body
    job_id = await api.run("e")
    job = await worker.claim_one()
    await worker.finish(job, output="end", items=[{"seq": 0, "kind": "chunk", "data": "c0"}])
    async with api.session.get(f"{api.base}/stream/{job_id}", headers=sse) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        text = (await resp.read()).decode()
    assert '"c0"' in text and "COMPLETED" in text
    status, body = await api.get(f"/stream/{job_id}?cursor=-1", headers=sse)
    assert status == 400 and "cursor" in body["error"]


async def test_claim_of_a_disconnected_worker_takes_nothing(service: Any, api: Api) -> None:
    body = b'{"worker_id": "gone", "max": 1, "wait_ms": 20000}'
    _, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(
        b"POST /v2/ep/worker/claim HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    await asyncio.sleep(0.3)  # the long-poll is held
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.3)
    job_id = await api.run("for a live worker")
    await asyncio.sleep(0.3)  # the abandoned long-poll has woken by now
    got = await MiniWorker(api, "live").claim(wait_ms=0)
    assert [j["id"] for j in got] == [job_id] and got[0]["attempt"] == 1


async def test_stream_wait_of_a_client_that_left_consumes_nothing(
    service: Any, api: Api, worker: MiniWorker
) -> None:
    job_id = await api.run("s")
    job = await worker.claim_one()
    _, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(f"GET /v2/ep/stream/{job_id}?wait=20000 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    await asyncio.sleep(0.3)  # the read is held
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.3)
    await worker.output(job, [{"seq": 0, "kind": "chunk", "data": "kept"}])
    await asyncio.sleep(0.3)  # the abandoned read has woken by now
    _, body = await api.get(f"/stream/{job_id}")
    assert body["stream"] == [{"output": "kept"}]
