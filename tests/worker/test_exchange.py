"""The runtime's hot path (protocol 2): a finish rides with the next claim in one
/worker/exchange request, finishes of several jobs share requests, and against a service
that speaks protocol 1 only the runtime falls back to claim and finish."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.api import Api
from tests.support.servers import loopback_app
from worker_kit import protocol
from worker_kit.worker.execution import Job
from worker_kit.worker.transport import NativeTransport


class RecordingTransport(NativeTransport):
    """The real transport, keeping (route, decoded body) of every request it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def _post(self, path: str, body: bytes, timeout_s: float) -> Any:
        self.sent.append((path, protocol.unpack(body)))
        return await super()._post(path, body, timeout_s)

    def routes(self) -> list[str]:
        return [path.rsplit("/", 1)[-1] if "/jobs/" in path else path for path, _ in self.sent]


async def submit_all(api: Api, n: int) -> list[str]:
    return [await api.run({"i": i}) for i in range(n)]


async def test_at_concurrency_1_each_finish_rides_with_the_next_claim(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    url = service.endpoint_url("hot")
    api = api_at(url)
    n = 12
    ids = await submit_all(api, n)  # queued before the worker starts: it never waits
    transport = RecordingTransport(url, worker_id="hot-1")
    await start_worker(lambda job: job.input["i"] * 2, url, transport=transport, worker_id="hot-1",
                       concurrency=1)
    for i, job_id in enumerate(ids):
        status = await api.wait(job_id)
        assert status["status"] == "COMPLETED" and status["output"] == i * 2
    # Jobs 1..n-1 each came back in the request that finished the one before: one round trip
    # per job. The last finish may have gone alone (nothing was left to claim).
    carried = [body for path, body in transport.sent if path == protocol.WORKER_EXCHANGE and body["max"] > 0
               and body["finish"]]
    assert len(carried) >= n - 1, transport.routes()
    assert all(len(body["finish"]) == 1 and body["wait_ms"] == 0 for body in carried)
    assert "finish" not in transport.routes() and protocol.WORKER_CLAIM not in transport.routes()


async def test_at_concurrency_4_finishes_of_several_jobs_share_a_request(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    url = service.endpoint_url("hot")
    api = api_at(url)
    n = 40
    ids = await submit_all(api, n)
    transport = RecordingTransport(url, worker_id="hot-4")
    await start_worker(lambda job: job.input["i"], url, transport=transport, worker_id="hot-4", concurrency=4)
    for i, job_id in enumerate(ids):
        assert (await api.wait(job_id))["output"] == i
    exchanges = [body for path, body in transport.sent if path == protocol.WORKER_EXCHANGE]
    finished = [report["id"] for body in exchanges for report in body["finish"]]
    assert sorted(finished) == sorted(ids)  # each job reported once
    assert max(len(body["finish"]) for body in exchanges) > 1
    assert len(exchanges) < n, transport.routes()


async def test_a_finish_while_the_claim_long_polls_goes_on_its_own(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    # Concurrency 2: one job runs while the worker's other slot holds a long-poll on an empty
    # queue. The finish must not wait for that long-poll to end.
    url = service.endpoint_url("hot")
    api = api_at(url)
    release = asyncio.Event()

    async def handler(job: Job) -> Any:
        await release.wait()
        return "done"

    transport = RecordingTransport(url, worker_id="hold")
    await start_worker(handler, url, transport=transport, worker_id="hold", concurrency=2, claim_wait_s=20)
    job_id = await api.run(None)
    await api.wait(job_id, states={"IN_PROGRESS"})
    release.set()
    status = await api.wait(job_id, timeout=5)  # far less than the 20 s long-poll
    assert status["status"] == "COMPLETED" and status["output"] == "done"
    alone = [body for path, body in transport.sent if path == protocol.WORKER_EXCHANGE and body["finish"]]
    assert alone and alone[0]["finish"][0]["id"] == job_id


async def test_a_refused_finish_in_an_exchange_fails_only_its_own_job(
    service_factory: Any, start_worker: Any, api_at: Any
) -> None:
    # A result over the endpoint's limit is refused (413) inside the exchange; the worker then
    # reports that job FAILED saying why, and the other jobs of the same requests complete.
    from worker_kit.service.config import EndpointConfig

    svc = await service_factory(default=EndpointConfig(result_limit=1000))
    url = svc.endpoint_url("limits")
    api = api_at(url)

    def handler(job: Job) -> Any:
        return "x" * 5000 if job.input["i"] == 1 else job.input["i"]

    ids = await submit_all(api, 4)
    await start_worker(handler, url, concurrency=4, result_limit=1_000_000)
    states = [(await api.wait(job_id)) for job_id in ids]
    assert [s["status"] for s in states] == ["COMPLETED", "FAILED", "COMPLETED", "COMPLETED"]
    assert "too large" in states[1]["error"]


@pytest.fixture
async def protocol_1_proxy(service: Any) -> AsyncIterator[str]:
    """A proxy in front of the real service that answers 404 for /worker/exchange, as a
    service of protocol 1 does, and passes everything else through."""
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.StreamResponse:
        if request.path.endswith(protocol.WORKER_EXCHANGE):
            return web.json_response({"error": "not found"}, status=404)
        async with session.request(request.method, service.url + request.path_qs,
                                   data=await request.read(), headers=request.headers) as resp:
            return web.Response(body=await resp.read(), status=resp.status,
                                content_type=resp.content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    # A claim forwarded when the worker stopped is a long-poll the service holds: end it at
    # teardown rather than wait out its hold (aiohttp waits up to 60 s for a handler).
    try:
        async with loopback_app(app, shutdown_timeout=0.5) as base:
            yield base
    finally:
        await session.close()


async def test_against_a_protocol_1_service_the_worker_uses_claim_and_finish(
    service: Any, protocol_1_proxy: str, start_worker: Any, api_at: Any
) -> None:
    url = service.endpoint_url("old")
    api = api_at(url)
    proxied = protocol_1_proxy + url[len(service.url):]
    ids = await submit_all(api, 5)
    transport = RecordingTransport(proxied, worker_id="v1")
    await start_worker(lambda job: job.input["i"] + 100, proxied, transport=transport, worker_id="v1",
                       concurrency=2)
    for i, job_id in enumerate(ids):
        assert (await api.wait(job_id))["output"] == i + 100
    routes = transport.routes()
    assert routes.count(protocol.WORKER_EXCHANGE) == 1, routes  # tried once, then protocol 1
    assert routes.count("finish") == 5 and protocol.WORKER_CLAIM in routes
