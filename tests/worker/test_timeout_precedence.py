"""Which execution timeout a job runs under: the client's executionTimeout when it set one,
else the handler's timeout, else the worker's; always capped by the service's deadline
(the endpoint's default execution timeout when the client set none)."""

from __future__ import annotations

from typing import Any

from tests.support.handlers import Sleeper
from worker_kit.service.config import EndpointConfig

from .conftest import make_handler


async def test_handler_timeout_applies_under_a_non_default_endpoint_default(
    service_factory: Any, start_worker: Any, api_at: Any
) -> None:
    svc = await service_factory(default=EndpointConfig(execution_timeout_ms=120_000))
    url = svc.endpoint_url("precedence")
    api = api_at(url)
    await start_worker(make_handler(Sleeper(), timeout=1), url)
    status = await api.wait(await api.run({"sleep": 60}))
    assert status["status"] == "TIMED_OUT", status
    assert status["error"] == "execution timeout: the job ran longer than 1 s"


async def test_client_timeout_shorter_than_the_handlers_wins(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    url = service.endpoint_url("precedence")
    api = api_at(url)
    await start_worker(make_handler(Sleeper(), timeout=60), url, timeout=30)
    status = await api.wait(await api.run({"sleep": 60}, policy={"executionTimeout": 700}))
    assert status["status"] == "TIMED_OUT", status
    assert status["error"] == "execution timeout: the job ran longer than 0.7 s"


async def test_client_timeout_longer_than_the_handlers_wins(
    service: Any, start_worker: Any, api_at: Any
) -> None:
    url = service.endpoint_url("precedence")
    api = api_at(url)
    await start_worker(make_handler(Sleeper(), timeout=0.3), url)
    status = await api.wait(await api.run({"sleep": 1.0}, policy={"executionTimeout": 30_000}))
    assert status["status"] == "COMPLETED", status
    assert status["output"] == {"slept": 1.0}


async def test_explicit_600_s_is_the_clients_choice_too(service: Any, start_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("precedence")
    api = api_at(url)
    await start_worker(make_handler(Sleeper(), timeout=1), url)
    job_id = await api.run({"sleep": 2.0}, policy={"executionTimeout": 600_000})
    status = await api.wait(job_id)
    assert status["status"] == "COMPLETED", status


async def test_worker_timeout_applies_when_neither_job_nor_handler_sets_one(
    service_factory: Any, start_worker: Any, api_at: Any
) -> None:
    svc = await service_factory(default=EndpointConfig(execution_timeout_ms=120_000))
    url = svc.endpoint_url("precedence")
    api = api_at(url)
    await start_worker(Sleeper(), url, timeout=0.4)
    status = await api.wait(await api.run({"sleep": 60}))
    assert status["status"] == "TIMED_OUT", status
    assert status["error"] == "execution timeout: the job ran longer than 0.4 s"


async def test_a_longer_handler_timeout_is_capped_by_the_endpoint_default(
    service_factory: Any, start_worker: Any, api_at: Any
) -> None:
    svc = await service_factory(default=EndpointConfig(execution_timeout_ms=800))
    url = svc.endpoint_url("precedence")
    api = api_at(url)
    await start_worker(make_handler(Sleeper(), timeout=60), url)
    status = await api.wait(await api.run({"sleep": 60}))
    assert status["status"] == "TIMED_OUT", status
    # The worker stops the handler at the service's deadline and reports it itself.
    assert status["error"].startswith("execution timeout: the job ran longer than 0."), status
