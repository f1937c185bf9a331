"""The served /openapi.json describes the client routes as they really answer: each answer a
real service sends to /run, /runsync, /status, /stream, /cancel, /retry, /purge-queue and the
two /health routes validates against the schema the document gives for it, and each body sent
validates against the request schema (tests/service/test_openapi_wire.py does the same for the
worker routes; the schemas are generated from worker_kit.protocol.submit and .answers).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import Api
from worker_kit.protocol.submit import SubmitRequest

from .conftest import MiniWorker

jsonschema_rs = pytest.importorskip("jsonschema_rs")


class Client:
    """Client calls, both directions checked against the served document."""

    def __init__(self, api: Api, document: dict[str, Any]) -> None:
        self.api, self.document = api, document
        self.seen: set[tuple[str, str]] = set()

    def check(self, schema: dict[str, Any], value: Any, what: str) -> None:
        validator = jsonschema_rs.Draft202012Validator({**schema, "components": self.document["components"]})
        errors = [str(e) for e in validator.iter_errors(value)]
        assert not errors, (what, value, errors)

    async def call(self, method: str, template: str, body: Any = None, query: str = "", **path: str) -> Any:
        operation = self.document["paths"][template][method]
        if body is not None:
            self.check(operation["requestBody"]["content"]["application/json"]["schema"], body, template)
        url = template.format(endpoint_id="", **path).removeprefix("/v2/")
        if template.startswith("/v2/"):
            status, answer = await self.api.call(method.upper(), url + query, body)
        else:  # a service route, beside /v2/{endpoint_id}
            async with self.api.session.get(self.api.base.split("/v2/")[0] + template) as resp:
                status, answer = resp.status, await resp.json()
        assert status == 200, (template, status, answer)
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        self.check(schema, answer, f"answer {method} {template}")
        self.seen.add((method, template))
        return answer


EP = "/v2/{endpoint_id}"


async def test_client_answers_match_the_document(api: Api, worker: MiniWorker) -> None:
    async with api.session.get(api.base.split("/v2/")[0] + "/openapi.json") as resp:
        client = Client(api, await resp.json())
    live = await client.call("get", "/health")
    assert live["status"] == "ok"

    body = SubmitRequest({"n": 1}, webhook="http://example.com/hook").encode()
    first = (await client.call("post", EP + "/run", body))["id"]
    policy = {"executionTimeout": 60_000, "ttl": 120_000, "lowPriority": False}
    second = (await client.call("post", EP + "/run", {"input": 2, "policy": policy}))["id"]
    job = await worker.claim_one()
    assert job["id"] == first
    assert (await worker.output(job, [{"seq": 0, "kind": "chunk", "data": "tok"}]))[0] == 200
    read = await client.call("get", EP + "/stream/{job_id}", job_id=first)
    assert read["stream"] == [{"output": "tok"}] and read["status"] == "IN_PROGRESS"
    assert (await client.call("get", EP + "/stream/{job_id}", query="?cursor=0", job_id=first))["cursor"] == 1
    running = await client.call("get", EP + "/status/{job_id}", job_id=first)
    assert running["status"] == "IN_PROGRESS" and running["workerId"] == worker.worker_id

    health = await client.call("get", EP + "/health")
    assert health["jobs"]["inQueue"] == 1 and health["jobs"]["inProgress"] == 1
    assert health["workers"] == {"idle": 0, "running": 1}

    assert (await worker.finish(job, state="FAILED", error="boom"))[0] == 200
    retried = await client.call("post", EP + "/retry/{job_id}", job_id=first)
    assert retried == {"id": first, "status": "IN_QUEUE"}
    cancelled = await client.call("post", EP + "/cancel/{job_id}", job_id=first)
    assert cancelled == {"id": first, "status": "CANCELLED"}
    again = await client.call("post", EP + "/cancel/{job_id}", job_id=first)  # ended: says how
    assert again == cancelled
    assert (await client.call("post", EP + "/purge-queue")) == {"removed": 1, "status": "completed"}
    assert (await api.status(second))["status"] == "CANCELLED"

    ended = await client.call("post", EP + "/runsync", {"input": 3}, query="?wait=0")
    assert ended["status"] == "IN_QUEUE"
    assert client.seen >= {("get", "/health"), ("post", EP + "/run"), ("post", EP + "/runsync"),
                           ("get", EP + "/stream/{job_id}"), ("get", EP + "/status/{job_id}"),
                           ("post", EP + "/cancel/{job_id}"), ("post", EP + "/retry/{job_id}"),
                           ("post", EP + "/purge-queue"), ("get", EP + "/health")}  # fmt: skip


async def test_a_refused_submit_answers_the_documented_error(api: Api) -> None:
    async with api.session.get(api.base.split("/v2/")[0] + "/openapi.json") as resp:
        document = await resp.json()
    client = Client(api, document)
    operation = document["paths"][EP + "/run"]["post"]
    for bad in ({"inputs": 1}, {"input": 1, "policy": {"ttl": 0}}, {"input": 1, "webhook": "ftp://h/"}):
        status, answer = await api.post("/run", bad)
        assert status == 400 and "error" in answer
        client.check(operation["responses"]["400"]["content"]["application/json"]["schema"], answer, "400")
        request = jsonschema_rs.Draft202012Validator(
            {**operation["requestBody"]["content"]["application/json"]["schema"],
             "components": document["components"]})  # fmt: skip
        assert not request.is_valid(bad), f"the document should refuse {bad} as the route does"
