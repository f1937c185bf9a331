"""Helpers for the service tests: an HTTP session and a minimal worker made of plain protocol calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from worker_kit.protocol import MSGPACK, pack, unpack


class Api:
    """Thin JSON calls against one endpoint of a running service; answers (status, body)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, key: str | None = None) -> None:
        self.session = session
        self.base = base
        self.key = key

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        headers.update(extra or {})
        return headers

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        async with self.session.request(
            method,
            self.base + path,
            json=body if raw is None else None,
            data=raw,
            headers=self.headers(headers),
            **kwargs,
        ) as resp:
            data = await resp.read()
            if resp.content_type == MSGPACK:
                return resp.status, unpack(data)
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, data.decode()

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("POST", path, body, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kwargs)

    async def run(self, job_input: Any = None, **fields: Any) -> str:
        status, body = await self.post("/run", {"input": job_input, **fields})
        assert status == 200, body
        assert body["status"] == "IN_QUEUE"
        return body["id"]

    async def status(self, job_id: str) -> dict[str, Any]:
        status, body = await self.get(f"/status/{job_id}")
        assert status == 200, body
        return body


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
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


@pytest.fixture
def api(service: Any, session: aiohttp.ClientSession) -> Api:
    return Api(session, service.endpoint_url("ep"))


@pytest.fixture
def worker(api: Api) -> MiniWorker:
    return MiniWorker(api)
