"""Issue #13 point 7: a full disk answers 503 with Retry-After and a clear error, loses nothing
acknowledged, and the service recovers by itself once space returns.

The disk is a real small filesystem: a tmpfs mounted for the test (root only; skipped where
mounting is not allowed), made larger again with a remount, as an operator freeing space would.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from worker_kit.service.config import EndpointConfig


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "disk"
    where.mkdir()
    done = _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


async def test_full_disk_is_503_then_recovers(service_factory: Any, small_disk: Path) -> None:
    svc = await service_factory(
        storage=f"sqlite:///{small_disk / 'jobs.db'}",
        default=EndpointConfig(rate_limits_enabled=False, backpressure=False),
    )
    url = svc.endpoint_url("ep")
    accepted: list[str] = []
    async with aiohttp.ClientSession() as session:
        for n in range(200):  # 64 KB inputs: a 1 MB disk fills within a few dozen
            async with session.post(url + "/run", json={"input": {"n": n, "pad": "x" * 65536}}) as resp:
                body = await resp.json()
                if resp.status == 503:
                    break
                assert resp.status == 200, body
                accepted.append(body["id"])
        else:
            pytest.fail("the disk never filled up")
        assert resp.headers["Retry-After"].isdigit() and int(resp.headers["Retry-After"]) > 0
        assert body["error"].startswith("the job store is full (no space left on its disk)"), body
        assert body["retry_after"] > 0
        assert accepted, "the disk was full before the first job"
        # Reads still answer while the disk is full, and every acknowledged job is there.
        for job_id in accepted:
            async with session.get(f"{url}/status/{job_id}") as status:
                assert status.status == 200 and (await status.json())["status"] == "IN_QUEUE"
        # Space returns: the next submit succeeds, with no restart.
        assert _mount("-o", "remount,size=64m", str(small_disk)).returncode == 0
        async with session.post(url + "/run", json={"input": "after"}) as resp:
            assert resp.status == 200, await resp.text()
        async with session.get(url + "/health") as resp:
            assert (await resp.json())["jobs"]["inQueue"] == len(accepted) + 1
