"""/health's worker counts follow the jobs a worker holds: a real worker process at
concurrency 2 counts as running while one job runs, and as idle the moment it ends
(finished or cancelled), although its other slot keeps a claim open the whole time."""

from __future__ import annotations

from typing import Any

from tests.support.api import Api

from .conftest import until


async def health_workers(api: Api) -> dict[str, int]:
    status, body = await api.get("/health")
    assert status == 200, body
    return body["workers"]


async def test_health_counts_a_worker_running_then_idle(service: Any, spawn_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("counts")
    api = api_at(url)
    await spawn_worker("slow.py", url, concurrency=2)

    async def seen_idle() -> bool:
        return await health_workers(api) == {"idle": 1, "running": 0}

    await until(seen_idle)

    job_id = await api.run({"sleep": 1.5})
    await api.wait(job_id, states={"IN_PROGRESS"})
    assert await health_workers(api) == {"idle": 0, "running": 1}

    status = await api.wait(job_id)
    assert status["status"] == "COMPLETED", status
    # No request from the worker is needed: its other slot's claim is still waiting.
    assert await health_workers(api) == {"idle": 1, "running": 0}


async def test_a_cancelled_job_frees_its_worker_at_once(service: Any, spawn_worker: Any, api_at: Any) -> None:
    url = service.endpoint_url("counts")
    api = api_at(url)
    await spawn_worker("slow.py", url, concurrency=2)
    job_id = await api.run({"sleep": 30})
    await api.wait(job_id, states={"IN_PROGRESS"})
    assert await health_workers(api) == {"idle": 0, "running": 1}
    await api.cancel(job_id)
    assert await health_workers(api) == {"idle": 1, "running": 0}
