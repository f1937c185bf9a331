"""Issue #13 points 1, 2 and 4: values every answer format can carry, one rule at every door.

A poisoned value (nested too deep, a lone surrogate, NaN on a client route, a msgpack extension)
is refused with 400 where a client sends it; a worker's result that cannot be stored ends its job
FAILED saying why; and a job stored before the rule existed fails alone instead of failing every
claim that picks it up.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import msgpack

from tests.support.api import Api
from worker_kit.job import Policy
from worker_kit.portable import MAX_DEPTH
from worker_kit.protocol import MSGPACK, pack

from .conftest import MiniWorker
from .test_hosted import SdkWorker
from .test_jobs import wait_for_status

JSON_HEADERS = {"Content-Type": "application/json"}


def nested(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = [value]
    return value


def deep_msgpack_run(depth: int) -> bytes:
    # {"input": [[[...nil...]]]}, built by hand as in the repro.
    return b"\x81\xa5input" + b"\x91" * depth + b"\xc0"


async def test_deep_msgpack_input_is_refused_and_innocent_jobs_run(api: Api, worker: MiniWorker) -> None:
    status, body = await api.post("/run", raw=deep_msgpack_run(1000), headers={"Content-Type": MSGPACK})
    assert status == 400 and f"nested deeper than {MAX_DEPTH}" in body["error"], body
    ids = [await api.run({"n": i}) for i in range(5)]
    # A JSON-speaking worker claims them all at once: the reply builds, nothing is lost.
    status, reply = await api.post("/worker/claim", {"worker_id": "jw", "max": 10, "wait_ms": 0})
    assert status == 200, reply
    assert sorted(job["id"] for job in reply["jobs"]) == sorted(ids)


async def test_depth_limit_is_exact(api: Api) -> None:
    # The body counts as one level: an input of MAX_DEPTH - 1 levels is the deepest accepted.
    assert (await api.post("/run", {"input": nested(MAX_DEPTH - 1)}))[0] == 200
    status, body = await api.post("/run", {"input": nested(MAX_DEPTH)})
    assert status == 400 and "body.input[0]" in body["error"], body


async def test_every_client_entry_point_refuses_unportable_values(api: Api) -> None:
    cases: list[tuple[str, bytes, str]] = [
        ("/run", b'{"input": "\\ud800"}', "lone UTF-16 surrogate"),
        ("/runsync?wait=0", b'{"input": {"k": ["a\\udfff"]}}', "lone UTF-16 surrogate"),
        ("/run", b'{"input": {"\\ud800": 1}}', "key"),
        ("/run", b'{"input": [1e400, 1]}', "not a finite number"),
        ("/run", b'{"input": NaN}', "not a finite number"),
        ("/run", b'{"input": -Infinity}', "not a finite number"),
        ("/run", b'{"input": 1, "webhook": "http://x/\\ud800"}', "surrogate"),
    ]
    for path, raw, reason in cases:
        status, body = await api.post(path, raw=raw, headers=JSON_HEADERS)
        assert status == 400 and reason in body["error"], (path, raw, body)
    deep_key = msgpack.packb({"input": {"k": nested(MAX_DEPTH)}})
    status, body = await api.post("/run", raw=deep_key, headers={"Content-Type": MSGPACK})
    assert status == 400 and "body.input.k" in body["error"], body
    _, health = await api.get("/health")
    assert sum(health["jobs"].values()) == 0  # nothing was stored


async def test_worker_ids_and_tokens_with_surrogates_are_refused(api: Api) -> None:
    status, body = await api.post(
        "/worker/claim", raw=b'{"worker_id": "w\\ud800", "wait_ms": 0}', headers=JSON_HEADERS
    )
    assert status == 400 and "surrogate" in body["error"], body
    job_id = await api.run(1)
    raw = b'{"token": "\\ud800", "state": "COMPLETED"}'
    status, body = await api.post(f"/worker/jobs/{job_id}/finish", raw=raw, headers=JSON_HEADERS)
    assert status == 400 and "surrogate" in body["error"], body


async def test_unportable_native_result_ends_the_job_failed(api: Api, worker: MiniWorker) -> None:
    outputs = [b'"\\ud800"', json.dumps(nested(MAX_DEPTH + 5)).encode()]
    for raw_output in outputs:
        job_id = await api.run("x")
        job = await worker.claim_one()
        raw = b'{"token": "%s", "state": "COMPLETED", "output": %s}' % (job["token"].encode(), raw_output)
        status, body = await api.post(f"/worker/jobs/{job_id}/finish", raw=raw, headers=JSON_HEADERS)
        assert status == 200 and body["status"] == "FAILED", body
        final = await api.status(job_id)
        assert final["status"] == "FAILED" and "could not be stored" in final["error"], final
    # A failure's error text is held to the same rule: the job still ends, FAILED, saying why.
    job_id = await api.run("y")
    job = await worker.claim_one()
    raw = b'{"token": "%s", "state": "FAILED", "error": "bad \\udc00"}' % job["token"].encode()
    status, body = await api.post(f"/worker/jobs/{job_id}/finish", raw=raw, headers=JSON_HEADERS)
    assert status == 200 and body["status"] == "FAILED"
    assert "surrogate" in (await api.status(job_id))["error"]


async def test_unportable_native_chunks_and_progress_are_refused(api: Api, worker: MiniWorker) -> None:
    job_id = await api.run("x")
    job = await worker.claim_one()
    for data in (b'"\\ud800"', json.dumps(nested(MAX_DEPTH)).encode()):
        for kind in ("chunk", "progress"):
            raw = b'{"token": "%s", "items": [{"seq": 0, "kind": "%s", "data": %s}]}' % (
                job["token"].encode(),
                kind.encode(),
                data,
            )
            status, body = await api.post(f"/worker/jobs/{job_id}/output", raw=raw, headers=JSON_HEADERS)
            assert status == 400 and "output" in body["error"], body
    # The job is untouched and its worker can still finish it.
    assert (await api.status(job_id))["status"] == "IN_PROGRESS"
    assert (await worker.finish(job, output="done"))[0] == 200


async def test_non_finite_worker_results_are_answered_as_null(api: Api, worker: MiniWorker) -> None:
    job_id = await api.run("x")
    job = await worker.claim_one()
    status, _ = await worker.output(job, [{"seq": 0, "kind": "chunk", "data": [float("nan"), 1.5]}])
    assert status == 200
    assert (await worker.finish(job, output={"loss": float("inf"), "ok": 1}))[0] == 200
    async with api.session.get(f"{api.base}/status/{job_id}") as resp:
        text = await resp.text()
    body = json.loads(text, parse_constant=lambda name: pytest_fail(f"non-standard JSON {name} in {text}"))
    assert body["output"] == {"loss": None, "ok": 1}
    async with api.session.get(f"{api.base}/stream/{job_id}?cursor=0") as resp:
        text = await resp.text()
    assert json.loads(text, parse_constant=pytest_fail)["stream"] == [{"output": [None, 1.5]}]
    # msgpack answers carry the float itself.
    _, packed = await api.get(f"/status/{job_id}", headers={"Accept": MSGPACK})
    assert packed["output"]["loss"] == float("inf")


def pytest_fail(message: str) -> Any:
    raise AssertionError(message)


async def test_hosted_reports_with_unportable_values(
    api: Api, session: aiohttp.ClientSession, service: Any
) -> None:
    sdk = SdkWorker(session, service.endpoint_url("ep"))
    # NaN from the SDK's json.dumps is accepted and answered as null.
    job_id = await api.run("nan")
    status, taken = await sdk.take()
    assert status == 200 and taken["id"] == job_id
    assert (await sdk.done(job_id, {"output": {"x": float("nan")}}))[0] == 200
    assert (await api.status(job_id))["output"] == {"x": None}
    # A lone surrogate (json.dumps escapes it as \ud800) in a result: FAILED, saying why.
    job_id = await api.run("surrogate")
    assert (await sdk.take())[1]["id"] == job_id
    status, body = await sdk.done(job_id, {"output": "\ud800"})
    assert status == 200 and body["status"] == "FAILED", body
    final = await api.status(job_id)
    assert final["status"] == "FAILED" and "surrogate" in final["error"], final
    # Progress that cannot be stored is refused; the job goes on.
    job_id = await api.run("progress")
    assert (await sdk.take())[1]["id"] == job_id
    status, body = await sdk.done(job_id, {"status": "IN_PROGRESS", "output": nested(MAX_DEPTH + 1)})
    assert status == 400 and "progress refused" in body["error"], body
    assert (await api.status(job_id))["status"] == "IN_PROGRESS"
    # A chunk that cannot be stored fails the job rather than vanish from its stream.
    status, body = await sdk.stream(job_id, "a\udc80")
    assert status == 400 and "FAILED" in body["error"], body
    assert (await api.status(job_id))["status"] == "FAILED"


async def _store_poisoned(service: Any, endpoint: str) -> str:
    """A job stored without the door's check, as a service before it would have stored it."""
    job = await service.storage.submit(
        endpoint, nested(1000), policy=Policy(60_000, 600_000), webhook=None, retention_ms=600_000
    )
    return job.id


async def test_a_poisoned_stored_job_fails_alone_on_native_claim(
    api: Api, service: Any, worker: MiniWorker
) -> None:
    poisoned = await _store_poisoned(service, "ep")
    ids = [await api.run({"n": i}) for i in range(5)]
    status, reply = await api.post("/worker/claim", {"worker_id": "jw", "max": 10, "wait_ms": 0})
    assert status == 200, reply
    assert sorted(job["id"] for job in reply["jobs"]) == sorted(ids)
    final = await api.status(poisoned)
    assert final["status"] == "FAILED" and "cannot be sent to a worker" in final["error"], final
    for job in reply["jobs"]:  # the innocent jobs are held by this worker, not lost
        assert (await api.status(job["id"]))["status"] == "IN_PROGRESS"


async def test_a_poisoned_stored_job_fails_alone_on_hosted_take(
    api: Api, service: Any, session: aiohttp.ClientSession
) -> None:
    sdk = SdkWorker(session, service.endpoint_url("ep"))
    poisoned = await _store_poisoned(service, "ep")
    ids = [await api.run({"n": i}) for i in range(4)]
    status, batch = await sdk.take_batch(10)
    assert status == 200 and sorted(job["id"] for job in batch) == sorted(ids), batch
    assert (await api.status(poisoned))["status"] == "FAILED"
    poisoned = await _store_poisoned(service, "ep")
    status, _ = await sdk.take(wait_ms=0)
    assert status == 204  # the only queued job cannot be sent: it fails, and the take finds nothing
    await wait_for_status(api, poisoned, "FAILED")


async def test_msgpack_worker_gets_a_msgpack_input_nested_to_the_limit(api: Api, worker: MiniWorker) -> None:
    value = nested(MAX_DEPTH - 1)
    status, _ = await api.post("/run", raw=pack({"input": value}), headers={"Content-Type": MSGPACK})
    assert status == 200
    job = await worker.claim_one()
    assert job["input"] == value
    # The same job over JSON to a JSON reader of /status once it ends.
    assert (await worker.finish(job, output=value))[0] == 200
    await asyncio.sleep(0)
    assert (await api.status(job["id"]))["output"] == value
