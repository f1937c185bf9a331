"""A store that fails under a running service: requests answer 503 with Retry-After and a clear
error (one WARNING line, no traceback), never a 500; the job rules' own answers stay 404/409."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest

from worker_kit.service.config import ServiceConfig
from worker_kit.service.runner import run_service
from worker_kit.storage import open_storage

from ..conftest import TEST_DEFAULTS


async def test_a_closed_store_answers_503_with_retry_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'gone.db'}")
    await storage.open()
    config = ServiceConfig(**{**TEST_DEFAULTS, "storage": "sqlite://:memory:"})
    async with run_service(config, storage) as svc, aiohttp.ClientSession() as session:
        base = svc.endpoint_url("ep")
        async with session.post(f"{base}/run", json={"input": 1}) as resp:
            job_id = (await resp.json())["id"]
        async with session.get(f"{base}/status/unknown-job") as resp:
            assert resp.status == 404  # an answer of the job rules, not a store failure
        await storage.close()  # the store goes away under the running service
        with caplog.at_level(logging.WARNING, logger="worker_kit.service"):
            for method, path in (("GET", f"/status/{job_id}"), ("POST", "/run")):
                async with session.request(method, base + path, json={"input": 2}) as resp:
                    assert resp.status == 503
                    assert resp.headers["Retry-After"] == "2"
                    body = await resp.json()
                    assert body["error"].startswith("the job store is failing, retry shortly")
                    assert body["retry_after"] == 2
        lines = [r for r in caplog.records if "the job store is failing" in r.getMessage()]
        assert len(lines) == 2 and all(r.exc_info is None for r in lines)
