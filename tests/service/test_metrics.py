"""/metrics parsed with prometheus_client's own parser after a known sequence of jobs (#11),
and bounded series for endpoint ids clients make up (#13.8)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support.api import Api
from tests.support.servers import loopback_app
from worker_kit.service import access
from worker_kit.service import state as state_module
from worker_kit.service.config import EndpointConfig, RateLimit, ServiceConfig
from worker_kit.service.metrics import OTHER_ENDPOINT
from worker_kit.service.runner import run_service
from worker_kit.service.state import STATE
from worker_kit.storage import open_storage

from ..conftest import TEST_DEFAULTS
from .conftest import MiniWorker

Families = dict[str, tuple[str, list[Sample]]]


async def scrape(session: aiohttp.ClientSession, url: str) -> Families:
    async with session.get(url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        text = await resp.text()
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


def value(families: Families, family: str, sample: str, **labels: str) -> float:
    """The one sample of `family` named `sample` whose labels include `labels`."""
    found = [
        s.value
        for s in families[family][1]
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (family, sample, labels, found)
    return found[0]


def label_sets(families: Families, family: str, sample: str) -> set[frozenset[str]]:
    return {frozenset(s.labels) for s in families[family][1] if s.name == sample}


def hook_receiver() -> tuple[web.Application, list[Any]]:
    """An app receiving webhooks at /hook, and the bodies it got."""
    received: list[Any] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    return app, received


async def test_metrics_after_a_known_sequence_of_jobs(service_factory: Any, session: Any) -> None:
    svc = await service_factory(
        endpoints={
            "ep": EndpointConfig(),
            "tight": EndpointConfig(rate_limits={"run": RateLimit(1, 60.0, None)}),
            "full": EndpointConfig(queue_floor=0, workers_max=0, rate_limits_enabled=False),
        }
    )
    api = Api(session, svc.endpoint_url("ep"))
    worker = MiniWorker(api)
    receiver, received = hook_receiver()
    async with loopback_app(receiver) as base:
        hook_url = f"{base}/hook"
        done_id = await api.run(1, webhook=hook_url)
        failed_id = await api.run(2)
        cancelled_id = await api.run(3)
        await worker.finish(await worker.claim_one(), output="ok")
        await worker.finish(await worker.claim_one(), state="FAILED", error="boom")
        assert (await api.post(f"/cancel/{cancelled_id}"))[0] == 200
        await api.run(4)  # stays queued
        for _ in range(100):  # the webhook is delivered in the background
            if received:
                break
            await asyncio.sleep(0.05)
        assert [r["id"] for r in received] == [done_id]
    tight = Api(session, svc.endpoint_url("tight"))
    assert (await tight.post("/run", {"input": 1}))[0] == 200
    assert (await tight.post("/run", {"input": 2}))[0] == 429
    full = Api(session, svc.endpoint_url("full"))
    assert (await full.post("/run", {"input": 1}))[0] == 200
    assert (await full.post("/run", {"input": 2}))[0] == 429
    assert failed_id

    m = await scrape(session, svc.url)
    types = {name: kind for name, (kind, _) in m.items()}
    assert types["worker_kit_jobs_submitted"] == "counter"
    assert types["worker_kit_jobs_ended"] == "counter"
    assert types["worker_kit_job_delay_seconds"] == "histogram"
    assert types["worker_kit_job_execution_seconds"] == "histogram"
    assert types["worker_kit_jobs"] == "gauge"
    assert types["worker_kit_workers"] == "gauge"
    assert types["worker_kit_desired_workers"] == "gauge"
    assert types["worker_kit_http_requests"] == "counter"
    assert types["worker_kit_http_request_duration_seconds"] == "histogram"
    assert types["worker_kit_refusals"] == "counter"
    assert types["worker_kit_storage_operation_duration_seconds"] == "histogram"
    assert types["worker_kit_webhook_deliveries"] == "counter"
    assert types["process_cpu_seconds"] == "counter"  # the process collector

    assert value(m, "worker_kit_jobs_submitted", "worker_kit_jobs_submitted_total", endpoint="ep") == 4
    ended = "worker_kit_jobs_ended_total"
    assert value(m, "worker_kit_jobs_ended", ended, endpoint="ep", state="COMPLETED") == 1
    assert value(m, "worker_kit_jobs_ended", ended, endpoint="ep", state="FAILED") == 1
    assert value(m, "worker_kit_jobs_ended", ended, endpoint="ep", state="CANCELLED") == 1
    # Only the two jobs a worker started have a delay and an execution time.
    assert value(m, "worker_kit_job_delay_seconds", "worker_kit_job_delay_seconds_count", endpoint="ep") == 2
    execution = "worker_kit_job_execution_seconds"
    assert value(m, execution, execution + "_count", endpoint="ep", state="COMPLETED") == 1
    assert value(m, execution, execution + "_count", endpoint="ep", state="FAILED") == 1
    assert label_sets(m, execution, execution + "_bucket") == {frozenset({"endpoint", "state", "le"})}
    assert value(m, execution, execution + "_bucket", endpoint="ep", state="COMPLETED", le="+Inf") == 1

    for state, n in (("IN_QUEUE", 1), ("IN_PROGRESS", 0), ("COMPLETED", 1), ("FAILED", 1), ("CANCELLED", 1)):
        assert value(m, "worker_kit_jobs", "worker_kit_jobs", endpoint="ep", state=state) == n
    assert value(m, "worker_kit_workers", "worker_kit_workers", endpoint="ep", state="idle") == 1
    assert value(m, "worker_kit_workers", "worker_kit_workers", endpoint="ep", state="busy") == 0
    assert value(m, "worker_kit_desired_workers", "worker_kit_desired_workers", endpoint="ep") == 1

    run_route = {"route": "/v2/{endpoint_id}/run", "method": "POST"}
    http = "worker_kit_http_requests"
    assert value(m, http, http + "_total", status="200", **run_route) == 6
    assert value(m, http, http + "_total", status="429", **run_route) == 2
    latency = "worker_kit_http_request_duration_seconds"
    assert value(m, latency, latency + "_count", **run_route) == 8
    assert label_sets(m, http, http + "_total") == {frozenset({"route", "method", "status"})}

    refusals = "worker_kit_refusals"
    assert value(m, refusals, refusals + "_total", endpoint="tight", operation="run", reason="rate") == 1
    full_run = {"endpoint": "full", "operation": "run"}
    assert value(m, refusals, refusals + "_total", reason="backpressure", **full_run) == 1

    storage = "worker_kit_storage_operation_duration_seconds"
    # 6 stored, and the backpressure refusal: storage decides it in the submit itself (docs/deploy.md)
    assert value(m, storage, storage + "_count", operation="submit") == 7
    assert value(m, storage, storage + "_count", operation="finish") == 2
    hooks = "worker_kit_webhook_deliveries"
    assert value(m, hooks, hooks + "_total", outcome="delivered") == 1
    assert value(m, hooks, hooks + "_total", outcome="failed") == 0


async def test_made_up_endpoint_ids_share_a_bounded_label(
    service_factory: Any, session: Any, monkeypatch: Any
) -> None:
    # Smaller bounds than the defaults (1000 endpoints), so 200 ids cross them.
    monkeypatch.setattr(state_module, "MAX_TRACKED_ENDPOINTS", 50)
    monkeypatch.setattr(access, "MAX_BUCKETS", 50)
    svc = await service_factory(metrics_max_endpoints=5, endpoints={"configured": EndpointConfig()})
    for i in range(200):
        api = Api(session, svc.endpoint_url(f"made-up-{i}"))
        await api.run(i)
    await Api(session, svc.endpoint_url("configured")).run(0)
    m = await scrape(session, svc.url)
    submitted = {
        s.labels["endpoint"]: s.value
        for s in m["worker_kit_jobs_submitted"][1]
        if s.name == "worker_kit_jobs_submitted_total"
    }
    # Five made-up ids keep their label, the 195 after them are counted together.
    assert len(submitted) == 7, submitted
    assert submitted[OTHER_ENDPOINT] == 195 and submitted["configured"] == 1
    assert sum(submitted.values()) == 201
    gauges = {s.labels["endpoint"] for s in m["worker_kit_jobs"][1]}
    assert len(gauges) == 6 and OTHER_ENDPOINT not in gauges
    state = svc.app[STATE]
    assert len(state.metrics.endpoint.tracked()) == 6
    # Nothing else kept per endpoint grows with the number of ids either.
    assert len(state.known_endpoints) <= 50
    # Rate buckets of made-up ids go once refilled (run: 100 tokens a second, 1 used each).
    assert len(state.limiter._buckets) <= 51


async def test_strict_endpoints_serve_and_count_only_configured_ones(
    service_factory: Any, session: Any
) -> None:
    svc = await service_factory(strict_endpoints=True, endpoints={"known": EndpointConfig()})
    for i in range(20):
        status, body = await Api(session, svc.endpoint_url(f"unknown-{i}")).post("/run", {"input": 1})
        assert status == 404 and "unknown endpoint" in body["error"]
    await Api(session, svc.endpoint_url("known")).run(1)
    m = await scrape(session, svc.url)
    endpoints = {s.labels.get("endpoint") for f in m.values() for s in f[1] if "endpoint" in s.labels}
    assert endpoints == {"known"}


async def test_scrape_answers_while_the_store_cannot_be_read(session: Any, tmp_path: Any) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'jobs.db'}")
    await storage.open()
    async with run_service(ServiceConfig(**TEST_DEFAULTS), storage) as svc:
        await Api(session, svc.endpoint_url("ep")).run(1)
        m = await scrape(session, svc.url)
        assert value(m, "worker_kit_store_up", "worker_kit_store_up") == 1
        assert value(m, "worker_kit_jobs", "worker_kit_jobs", endpoint="ep", state="IN_QUEUE") == 1
        await storage.close()  # the store goes away under the running service
        m = await scrape(session, svc.url)
        assert value(m, "worker_kit_store_up", "worker_kit_store_up") == 0
        assert m["worker_kit_jobs"][1] == []  # unknown, not zero
        # This process's own counters still answer, and the failed reads are counted.
        assert value(m, "worker_kit_jobs_submitted", "worker_kit_jobs_submitted_total", endpoint="ep") == 1
        errors = "worker_kit_storage_errors"
        assert value(m, errors, errors + "_total", operation="counts") >= 1
