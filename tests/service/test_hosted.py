"""The hosted service's worker protocol, spoken the way its SDK speaks it (reference §1)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.support.api import Api
from worker_kit.service.config import EndpointConfig

from .test_jobs import wait_for_status

# What the SDK sends on result and stream POSTs: JSON labelled as a form, plus a bogus header.
SDK_POST_HEADERS = {"Content-Type": "application/x-www-form-urlencoded", "charset": "utf-8"}


class SdkWorker:
    """The hosted SDK's requests, by hand: templates with a query string, raw Authorization."""

    def __init__(
        self, session: aiohttp.ClientSession, base: str, worker_id: str = "worker1", key: str | None = None
    ) -> None:
        self.session, self.base, self.worker_id = session, base, worker_id
        self.headers = {"Authorization": key} if key else {}

    async def _get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path, headers=self.headers) as resp:
            return resp.status, (await resp.json() if resp.status != 204 else None)

    async def take(self, wait_ms: int = 5000) -> tuple[int, Any]:
        return await self._get(f"/job-take/{self.worker_id}?wait_ms={wait_ms}&job_in_progress=0")

    async def take_batch(self, n: int, wait_ms: int = 5000) -> tuple[int, Any]:
        return await self._get(
            f"/job-take-batch/{self.worker_id}?wait_ms={wait_ms}&batch_size={n}&job_in_progress=0"
        )

    async def stop(self, wait_ms: int = 0) -> tuple[int, Any]:
        return await self._get(f"/job-stop/{self.worker_id}?wait_ms={wait_ms}")

    async def ping(self, *job_ids: str) -> tuple[int, Any]:
        query = f"&job_id={'%2C'.join(job_ids)}" if job_ids else ""
        return await self._get(f"/ping/{self.worker_id}?gpu=TEST{query}&runpod_version=1.12.0")

    async def _post(self, kind: str, job_id: str, body: Any, is_stream: bool = False) -> tuple[int, Any]:
        url = f"{self.base}/{kind}/{self.worker_id}/{job_id}?gpu=TEST&isStream={str(is_stream).lower()}"
        async with self.session.post(
            url, data=json.dumps(body), headers={**self.headers, **SDK_POST_HEADERS}
        ) as r:
            return r.status, await r.json()

    async def done(self, job_id: str, body: Any, is_stream: bool = False) -> tuple[int, Any]:
        return await self._post("job-done", job_id, body, is_stream)

    async def stream(self, job_id: str, chunk: Any) -> tuple[int, Any]:
        return await self._post("job-stream", job_id, {"output": chunk})


async def test_take_stream_progress_done(api: Api, session: Any) -> None:
    sdk = SdkWorker(session, api.base)
    assert await sdk.take(wait_ms=0) == (204, None)
    job_id = await api.run({"prompt": "hi"}, webhook="http://127.0.0.1:9/hook")
    status, job = await sdk.take()
    assert status == 200 and job == {
        "id": job_id,
        "input": {"prompt": "hi"},
        "webhook": "http://127.0.0.1:9/hook",
    }

    assert (await sdk.done(job_id, {"status": "IN_PROGRESS", "output": "halfway"}))[0] == 200
    assert (await api.status(job_id))["output"] == "halfway"
    for i in range(3):
        assert (await sdk.stream(job_id, {"tok": i}))[0] == 200
    assert (await sdk.done(job_id, {"output": []}, is_stream=True)) == (200, {"status": "COMPLETED"})

    body = await api.status(job_id)
    assert body["status"] == "COMPLETED" and body["output"] == [] and body["workerId"] == "worker1"
    _, stream = await api.get(f"/stream/{job_id}")
    assert [c["output"] for c in stream["stream"]] == [{"tok": 0}, {"tok": 1}, {"tok": 2}]

    # Progress that lands after the result (the SDK sends it from another thread) changes nothing.
    assert (await sdk.done(job_id, {"status": "IN_PROGRESS", "output": "late"}))[0] == 200
    assert (await api.status(job_id))["output"] == []


async def test_take_batch_answers_a_list(api: Api, session: Any) -> None:
    sdk = SdkWorker(session, api.base)
    ids = [await api.run(i) for i in range(3)]
    status, jobs = await sdk.take_batch(5)
    assert status == 200 and sorted(j["id"] for j in jobs) == sorted(ids)
    assert await sdk.take_batch(5, wait_ms=0) == (204, None)


async def test_take_batch_is_bounded_by_claim_max_bytes(service_factory: Any, session: Any) -> None:
    svc = await service_factory(claim_max_bytes=2500)
    api = Api(session, svc.endpoint_url("ep"))
    for i in range(3):
        await api.run("x" * 1000 + str(i))
    sdk = SdkWorker(session, api.base)
    sizes = []
    for _ in range(2):
        status, jobs = await sdk.take_batch(5, wait_ms=0)
        assert status == 200
        sizes.append(len(jobs))
    assert sizes == [2, 1]  # two 1 kB inputs fit in 2 500 bytes, the third waits for the next take


async def test_take_long_polls_until_a_job_arrives(api: Api, session: Any) -> None:
    sdk = SdkWorker(session, api.base)
    held = asyncio.create_task(sdk.take(wait_ms=20_000))
    await asyncio.sleep(0.2)
    assert not held.done()
    job_id = await api.run("late")
    status, job = await asyncio.wait_for(held, 10)
    assert status == 200 and job["id"] == job_id


async def test_handler_error_becomes_failed_with_detail(api: Api, session: Any) -> None:
    sdk = SdkWorker(session, api.base)
    job_id = await api.run(1)
    await sdk.take()
    info = {
        "error_type": "<class 'ValueError'>",
        "error_message": "boom",
        "error_traceback": "Traceback ...",
        "hostname": "h",
        "worker_id": "worker1",
        "runpod_version": "1.12.0",
    }
    assert await sdk.done(job_id, {"error": json.dumps(info)}) == (200, {"status": "FAILED"})
    body = await api.status(job_id)
    assert body["status"] == "FAILED" and body["error"] == "ValueError: boom"
    assert body["errorDetail"] == {"type": "ValueError", "message": "boom", "traceback": "Traceback ..."}


async def test_plain_error_string_and_dict_output(api: Api, session: Any) -> None:
    sdk = SdkWorker(session, api.base)
    failed, done = await api.run(1), await api.run(2)
    _, jobs = await sdk.take_batch(2)
    assert {j["id"] for j in jobs} == {failed, done}
    await sdk.done(failed, {"error": "handler: bad input \ntraceback: ..."})
    await sdk.done(done, {"output": {"answer": 42}})
    assert (await api.status(failed))["error"].startswith("handler: bad input")
    assert (await api.status(done))["output"] == {"answer": 42}


async def test_cancel_reaches_job_stop_and_the_result_is_refused(api: Api, session: Any) -> None:
    sdk = SdkWorker(session, api.base)
    job_id = await api.run("x")
    await sdk.take()
    assert await sdk.stop() == (204, None)
    held = asyncio.create_task(sdk.stop(wait_ms=20_000))
    await asyncio.sleep(0.2)
    assert not held.done()
    await api.post(f"/cancel/{job_id}")
    assert await asyncio.wait_for(held, 10) == (200, {"jobsToStop": [job_id]})
    status, body = await sdk.done(job_id, {"output": "too late"})
    assert status == 409 and body["stale"] is True
    assert (await api.status(job_id))["status"] == "CANCELLED"


async def test_job_stop_polls_and_pings_keep_leases_alive(service_factory: Any, session: Any) -> None:
    svc = await service_factory(lease_ms=400)
    api = Api(session, svc.endpoint_url("ep"))
    polling, pinging, silent = (SdkWorker(session, api.base, w) for w in ("polling", "pinging", "silent"))
    ids = {}
    for sdk in (polling, pinging, silent):
        ids[sdk.worker_id] = await api.run(sdk.worker_id)
        assert (await sdk.take())[1]["id"] == ids[sdk.worker_id]
    for _ in range(8):  # twice the lease, renewed only by the first two workers
        await polling.stop(wait_ms=100)
        await pinging.ping(ids["pinging"])
    assert (await api.status(ids["polling"]))["status"] == "IN_PROGRESS"
    assert (await api.status(ids["pinging"]))["status"] == "IN_PROGRESS"
    await wait_for_status(api, ids["silent"], "IN_QUEUE")  # its lease expired: requeued
    assert (await silent.done(ids["silent"], {"output": 1}))[0] == 409


async def test_templates_without_question_mark_and_other_workers(api: Api, session: Any) -> None:
    sdk = SdkWorker(session, api.base)
    job_id = await api.run("q")
    async with session.get(f"{api.base}/job-take/worker1&job_in_progress=0") as resp:
        assert resp.status == 200 and (await resp.json())["id"] == job_id
    assert (await SdkWorker(session, api.base, "intruder").done(job_id, {"output": "x"}))[0] == 409
    async with session.post(
        f"{api.base}/job-done/worker1/{job_id}&isStream=false",
        data=b'{"output": 7}',
        headers=SDK_POST_HEADERS,
    ) as resp:
        assert resp.status == 200
    assert (await api.status(job_id))["output"] == 7
    assert (await sdk.done("no-such-job", {"output": 1}))[0] == 404


async def test_hosted_routes_need_a_worker_key(service_factory: Any, session: Any) -> None:
    keys = EndpointConfig(client_keys=("client-key-1",), worker_keys=("worker-key-1",))
    svc = await service_factory(default=keys)
    base = svc.endpoint_url("ep")
    assert (await SdkWorker(session, base).take(wait_ms=0))[0] == 401
    assert (await SdkWorker(session, base, key="client-key-1").take(wait_ms=0))[0] == 403
    assert (await SdkWorker(session, base, key="worker-key-1").take(wait_ms=0)) == (204, None)
