"""The public client API as raw HTTP against one endpoint of a running service (plain aiohttp,
so a test depends on no other part than the service), for the service and worker tests alike.

    api = Api(session, service.endpoint_url("ep"))     # or the `api` / `api_at` fixtures
    status, body = await api.post("/run", {"input": 1})  # any call: (HTTP status, decoded body)
    job_id = await api.run({"x": 1})                   # the common ones assert they worked
    final = await api.wait(job_id)
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from worker_kit.job import TERMINAL_STATES
from worker_kit.protocol import MSGPACK, unpack

TERMINAL = frozenset(state.value for state in TERMINAL_STATES)


class Api:
    """Calls against the endpoint at `base` (…/v2/ENDPOINT), with `key` as the bearer key if given."""

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
        """(status, body): msgpack and JSON answers decoded, anything else as text."""
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

    # -- the common calls, asserting they worked ------------------------------------------------
    async def ok(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        """Any call that must answer `expect`: its body."""
        status, answer = await self.call(method, path, body)
        assert status == expect, (status, answer)
        return answer

    async def run(self, job_input: Any = None, **fields: Any) -> str:
        """POST /run {"input": job_input, **fields} (e.g. policy=..., webhook=...) -> the job id."""
        status, body = await self.post("/run", {"input": job_input, **fields})
        assert status == 200, body
        assert body["status"] == "IN_QUEUE"
        return body["id"]

    async def status(self, job_id: str) -> dict[str, Any]:
        status, body = await self.get(f"/status/{job_id}")
        assert status == 200, body
        return body

    async def wait(
        self, job_id: str, timeout: float = 20.0, states: frozenset[str] | set[str] = TERMINAL
    ) -> dict[str, Any]:
        """The job's status once it is in one of `states` (default: any terminal state)."""
        async with asyncio.timeout(timeout):
            while True:
                status = await self.status(job_id)
                if status["status"] in states:
                    return status
                await asyncio.sleep(0.02)

    async def cancel(self, job_id: str) -> dict[str, Any]:
        status, body = await self.post(f"/cancel/{job_id}")
        assert status == 200, body
        return body

    async def chunks(self, job_id: str) -> list[Any]:
        """Every stream chunk of the job so far, read with the non-consuming cursor (one
        answer holds a bounded number of bytes: follow the cursor until a page is empty)."""
        out: list[Any] = []
        cursor = 0
        while True:
            status, body = await self.get(f"/stream/{job_id}?cursor={cursor}")
            assert status == 200, body
            if not body["stream"]:
                return out
            out.extend(c["output"] for c in body["stream"])
            cursor = body["cursor"]
