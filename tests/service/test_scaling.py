"""GET /v2/{endpoint_id}/scaling through submits, claims and completions (#11)."""

from __future__ import annotations

from typing import Any

from tests.support.api import Api
from worker_kit.protocol import MSGPACK, pack
from worker_kit.service.config import EndpointConfig

from .conftest import MiniWorker

CLIENT_KEY = "client-key-123"
WORKER_KEY = "worker-key-123"


async def scaling(api: Api) -> dict[str, Any]:
    status, body = await api.get("/scaling")
    assert status == 200, body
    return body


def load(doc: dict[str, Any]) -> tuple[int, int, int, int, int]:
    return doc["inQueue"], doc["inProgress"], doc["workersLive"], doc["workersBusy"], doc["desiredWorkers"]


async def claim(worker: MiniWorker, n: int, concurrency: int) -> list[dict[str, Any]]:
    status, body = await worker.api.post(
        "/worker/claim",
        raw=pack({"worker_id": worker.worker_id, "max": n, "wait_ms": 0, "concurrency": concurrency}),
        headers={"Content-Type": MSGPACK, "Accept": MSGPACK},
    )
    assert status == 200, body
    return body["jobs"]


async def test_desired_workers_follow_demand_up_to_workers_max(service_factory: Any, session: Any) -> None:
    svc = await service_factory(endpoints={"ep": EndpointConfig(workers_max=3)})
    api = Api(session, svc.endpoint_url("ep"))
    worker = MiniWorker(api, "w1")

    idle = await scaling(api)
    assert load(idle) == (0, 0, 0, 0, 0)
    assert idle["workersMax"] == 3 and idle["slotsPerWorker"] == 1 and idle["endpoint"] == "ep"

    for i in range(7):
        await api.run(i)
    # No worker yet: one slot per worker is assumed, so 7 jobs want 7 workers, capped at 3.
    assert load(await scaling(api)) == (7, 0, 0, 0, 3)

    held = await claim(worker, 2, concurrency=2)
    assert len(held) == 2
    doc = await scaling(api)
    # 7 jobs of demand at 2 slots per worker: 4 workers, capped at 3.
    assert load(doc) == (5, 2, 1, 1, 3) and doc["slots"] == 2 and doc["slotsPerWorker"] == 2

    for job in held:
        await worker.finish(job, output=1)
    # 5 queued, nothing running: ceil(5 / 2) = 3.
    assert load(await scaling(api)) == (5, 0, 1, 0, 3)

    held = await claim(worker, 2, concurrency=2)
    for job in held:
        await worker.finish(job, output=1)
    # 3 queued: 2 workers of 2 slots.
    assert load(await scaling(api)) == (3, 0, 1, 0, 2)

    held = await claim(worker, 2, concurrency=2)
    await worker.finish(held[0], output=1)
    # 1 queued + 1 running: one worker, and the busy one is counted, not scaled away.
    assert load(await scaling(api)) == (1, 1, 1, 1, 1)

    await worker.finish(held[1], output=1)
    await worker.finish(await worker.claim_one(), output=1)
    # Nothing left: zero, so workers can scale to zero; the idle worker is still live.
    assert load(await scaling(api)) == (0, 0, 1, 0, 0)


async def test_scaling_needs_a_client_key_like_health(service_factory: Any, session: Any) -> None:
    svc = await service_factory(
        endpoints={"ep": EndpointConfig(client_keys=(CLIENT_KEY,), worker_keys=(WORKER_KEY,))}
    )
    status, body = await Api(session, svc.endpoint_url("ep")).get("/scaling")
    assert status == 401 and "client API key" in body["error"]
    status, body = await Api(session, svc.endpoint_url("ep"), WORKER_KEY).get("/scaling")
    assert status == 403 and "worker key" in body["error"]
    status, body = await Api(session, svc.endpoint_url("ep"), CLIENT_KEY).get("/scaling")
    assert status == 200 and body["desiredWorkers"] == 0
