"""Helpers for the service tests: a minimal worker made of plain protocol calls.

The client side (`Api`, and the `session`, `api` and `api_at` fixtures) is tests/support/api.py and
tests/conftest.py, shared with the worker tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import Api
from worker_kit.protocol import MSGPACK, pack


class MiniWorker:
    """The worker side of docs/protocol.md in a few plain HTTP calls (msgpack, as real workers send)."""

    def __init__(self, api: Api, worker_id: str = "mini-worker") -> None:
        self.api = api
        self.worker_id = worker_id

    async def _post(self, path: str, body: dict[str, Any], **kwargs: Any) -> tuple[int, Any]:
        return await self.api.post(
            path, raw=pack(body), headers={"Content-Type": MSGPACK, "Accept": MSGPACK}, **kwargs
        )

    async def claim(self, max_jobs: int = 1, wait_ms: int = 5000) -> list[dict[str, Any]]:
        status, body = await self._post(
            "/worker/claim", {"worker_id": self.worker_id, "max": max_jobs, "wait_ms": wait_ms}
        )
        assert status == 200, body
        return body["jobs"]

    async def claim_one(self, wait_ms: int = 5000) -> dict[str, Any]:
        jobs = await self.claim(1, wait_ms)
        assert len(jobs) == 1, jobs
        return jobs[0]

    async def heartbeat(self, leases: dict[str, str], wait_ms: int = 0) -> tuple[int, Any]:
        return await self._post(
            "/worker/heartbeat", {"worker_id": self.worker_id, "jobs": leases, "wait_ms": wait_ms}
        )

    async def output(self, job: dict[str, Any], items: list[dict[str, Any]]) -> tuple[int, Any]:
        return await self._post(f"/worker/jobs/{job['id']}/output", {"token": job["token"], "items": items})

    async def finish(self, job: dict[str, Any], state: str = "COMPLETED", **fields: Any) -> tuple[int, Any]:
        return await self._post(
            f"/worker/jobs/{job['id']}/finish", {"token": job["token"], "state": state, **fields}
        )

    async def release(self, job: dict[str, Any]) -> tuple[int, Any]:
        return await self._post(f"/worker/jobs/{job['id']}/release", {"token": job["token"]})


@pytest.fixture
def worker(api: Api) -> MiniWorker:
    return MiniWorker(api)
