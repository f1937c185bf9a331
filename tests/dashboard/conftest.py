"""Fixtures for the dashboard tests: an endpoint with keys, a real worker process, and Debian's
chromium driven by Playwright (never Playwright's own browser download).

Browser tests skip when chromium or Playwright is missing, except under CI=true, where they fail:
.ci/run installs both.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from worker_kit.service.config import EndpointConfig

ROOT = Path(__file__).parents[2]
CHROMIUM = Path(os.environ.get("WORKER_KIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
#: Screenshots are kept here (gitignored) for a person to look at after a run.
ARTIFACTS = Path(os.environ.get("WORKER_KIT_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CLIENT_KEY = "dash-client-key"
WORKER_KEY = "dash-worker-key"


class Endpoint:
    """The client side of one endpoint, with its key."""

    def __init__(self, session: aiohttp.ClientSession, base: str, key: str | None = CLIENT_KEY) -> None:
        self.session = session
        self.base = base
        self.key = key

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        async with self.session.request(method, self.base + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json()

    async def run(self, job_input: Any) -> str:
        status, body = await self.call("POST", "/run", {"input": job_input})
        assert status == 200, body
        return body["id"]

    async def status(self, job_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/status/{job_id}")
        assert status == 200, body
        return body

    async def wait_status(self, job_id: str, wanted: str, tries: int = 400) -> dict[str, Any]:
        for _ in range(tries):
            body = await self.status(job_id)
            if body["status"] == wanted:
                return body
            await asyncio.sleep(0.05)
        raise AssertionError(f"job {job_id} is {body['status']}, not {wanted}, after {tries} polls")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


@pytest.fixture
async def keyed(service_factory: Any) -> Any:
    """A service whose endpoint "ep" has a client key and a worker key."""
    return await service_factory(
        endpoints={"ep": EndpointConfig(client_keys=(CLIENT_KEY,), worker_keys=(WORKER_KEY,))}
    )


@pytest.fixture
async def stream_worker(keyed: Any, tmp_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """examples/stream_tokens.py as a real worker process on the keyed endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_KIT_")}
    env.update(
        {
            "WORKER_KIT_URL": keyed.endpoint_url("ep"),
            "WORKER_KIT_API_KEY": WORKER_KEY,
            "WORKER_KIT_CONCURRENCY": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    log = open(tmp_path / "worker.log", "wb")  # noqa: ASYNC230 - a local file, opened once
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "examples" / "stream_tokens.py"), stdout=log, stderr=log, env=env
        )
    finally:
        log.close()
    yield proc
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()


def _browser_missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser tests must run under CI: {missing}")
        pytest.skip(missing)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


class PageErrors:
    """Console errors and uncaught exceptions of a page, collected as they happen."""

    def __init__(self, page: Any) -> None:
        self.messages: list[str] = []
        page.on("console", lambda m: self.messages.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.messages.append(f"uncaught: {exc}"))


async def screenshot(page: Any, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
    png = await page.screenshot(path=str(path), full_page=True)
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    return path
