"""The served /openapi.json describes the worker wire as it really goes: every body the runtime's
message types build for a real service validates against the request schema the document gives,
and every answer the service sends validates against the document's answer schema.

(tests/test_protocol_messages.py shows the schemas are generated from what the decoders read;
tests/service/test_openapi_fuzz.py holds the whole document to the service with schemathesis.)
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import Api
from worker_kit.job import JobState
from worker_kit.protocol import (
    MSGPACK,
    ClaimRequest,
    ExchangeRequest,
    Final,
    FinishReport,
    HeartbeatRequest,
    HostedReport,
    OutputRequest,
    ReleaseRequest,
    pack,
    pack_item,
    unpack,
)

jsonschema_rs = pytest.importorskip("jsonschema_rs")

HEADERS = {"Content-Type": MSGPACK, "Accept": MSGPACK}


class Wire:
    """Sends packed messages and checks both directions against the served document."""

    def __init__(self, api: Api, document: dict[str, Any]) -> None:
        self.api, self.document = api, document

    def check(self, schema: dict[str, Any], value: Any, what: str) -> None:
        validator = jsonschema_rs.Draft202012Validator({**schema, "components": self.document["components"]})
        errors = [str(e) for e in validator.iter_errors(value)]
        assert not errors, (what, value, errors)

    async def send(self, template: str, body: bytes, job_id: str = "") -> Any:
        operation = self.document["paths"]["/v2/{endpoint_id}" + template]["post"]
        request = operation["requestBody"]["content"][MSGPACK]["schema"]
        self.check(request, unpack(body), f"request {template}")
        status, answer = await self.api.post(template.format(job_id=job_id), raw=body, headers=HEADERS)
        assert status == 200, answer
        schema = operation["responses"][str(status)]["content"][MSGPACK]["schema"]
        self.check(schema, answer, f"answer {template}")
        return answer

    async def hosted(self, method: str, template: str, body: Any = None, **path: str) -> tuple[int, Any]:
        """A JSON call to a hosted-protocol route, both ways checked against the document."""
        operation = self.document["paths"]["/v2/{endpoint_id}" + template][method]
        if body is not None:
            self.check(operation["requestBody"]["content"]["application/json"]["schema"], body, template)
        status, answer = await self.api.call(method.upper(), template.format(**path) + "?wait_ms=500", body)
        assert str(status) in operation["responses"], (template, status, answer)
        if status == 200:
            schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
            self.check(schema, answer, f"answer {template}")
        return status, answer


async def test_runtime_messages_and_service_answers_match_the_document(api: Api) -> None:
    async with api.session.get(api.base.split("/v2/")[0] + "/openapi.json") as resp:
        wire = Wire(api, await resp.json())
    first, second, third = [await api.run({"n": n}) for n in range(3)]

    claimed = await wire.send("/worker/claim", ClaimRequest("w1", 2, 1000, 4).pack())
    assert [job["id"] for job in claimed["jobs"]] == [first, second]
    one, two = claimed["jobs"]
    beat = HeartbeatRequest("w1", {one["id"]: one["token"], two["id"]: two["token"]}, 0, 4, 2)
    assert (await wire.send("/worker/heartbeat", beat.pack()))["stop"] == []
    items = [pack_item(0, "chunk", pack("tok")), pack_item(1, "progress", pack({"pct": 50}))]
    output = OutputRequest(one["token"], items).pack()
    assert await wire.send("/worker/jobs/{job_id}/output", output, one["id"]) == {"next_seq": 2}
    await wire.send("/worker/jobs/{job_id}/release", ReleaseRequest(two["token"]).pack(), two["id"])

    # Protocol 2: one finish (with a trailing item) and the next claim in one request; a stale
    # finish is refused in its own answer, not by the request's status.
    done = FinishReport(one["token"], Final(JobState.COMPLETED, pack({"ok": True})),
                        [pack_item(2, "chunk", pack("end"))], id=one["id"]).pack()  # fmt: skip
    stale = FinishReport("not-the-token", Final(JobState.FAILED, None, "boom"), [], id=two["id"]).pack()
    answer = await wire.send("/worker/exchange", ExchangeRequest("w1", [done, stale], 2, 0, 4).pack())
    assert answer["finished"][0] == {"id": first, "status": "COMPLETED"}
    assert answer["finished"][1]["code"] == 409 and answer["finished"][1]["stale"] is True
    assert {job["id"] for job in answer["jobs"]} == {second, third}
    last = answer["jobs"][0]
    ended = FinishReport(last["token"], Final(JobState.FAILED, None, "no"), [], id=last["id"]).pack()
    assert await wire.send("/worker/jobs/{job_id}/finish", ended, last["id"]) == {
        "id": last["id"], "status": "FAILED"}  # fmt: skip
    assert (await api.status(first))["output"] == {"ok": True}


async def test_hosted_protocol_traffic_matches_the_document(api: Api) -> None:
    async with api.session.get(api.base.split("/v2/")[0] + "/openapi.json") as resp:
        wire = Wire(api, await resp.json())
    job_id = await api.run({"prompt": "hi"}, webhook="http://example.com/hook")
    status, job = await wire.hosted("get", "/job-take/{worker_id}", worker_id="pod-1")
    assert status == 200 and job == {"id": job_id, "input": {"prompt": "hi"}, "webhook": "http://example.com/hook"}
    assert (await wire.hosted("get", "/job-take-batch/{worker_id}", worker_id="pod-1"))[0] == 204
    ids = {"worker_id": "pod-1", "job_id": job_id}
    stream, done = "/job-stream/{worker_id}/{job_id}", "/job-done/{worker_id}/{job_id}"
    assert (await wire.hosted("post", stream, HostedReport.chunk("tok"), **ids))[0] == 200
    assert (await wire.hosted("post", done, HostedReport.progress(0.5), **ids))[0] == 200
    assert (await api.post(f"/cancel/{job_id}"))[0] == 200
    status, stops = await wire.hosted("get", "/job-stop/{worker_id}", worker_id="pod-1")
    assert status == 200 and stops == {"jobsToStop": [job_id]}
    status, refused = await wire.hosted("post", done, HostedReport.result(1), **ids)
    assert status == 409 and refused["stale"] is True
