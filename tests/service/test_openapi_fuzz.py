"""Issue #13 point 12: /openapi.json tells the truth, kept so by schemathesis.

Schemathesis runs over the served document with all its checks and its stateful phase (links
between operations), with a fixed seed and a bounded number of examples, and the test fails on
any 5xx, undocumented status, schema violation, or request the document allows but the service
refuses (and the reverse). Long-polls are held at most 200 ms (schemathesis_hooks.py).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from worker_kit.service.config import EndpointConfig

pytest.importorskip("schemathesis")

HOOKS_DIR = Path(__file__).parent
#: Random cases per operation in the fuzzing phase. The coverage phase already sends every
#: operation its boundary and negative cases deterministically (~2 200 requests); fuzzing adds
#: random ones, and costs schemathesis ~0.5 s of CPU per case to generate (the requests themselves
#: take ~18 s of a run in all): 8 took 154 s of a 210 s run, 4 take half as long.
MAX_EXAMPLES = 4
SEED = 13


@pytest.mark.timeout(600)
async def test_schemathesis_finds_no_disagreement(service_factory: Any, tmp_path: Path) -> None:
    # No rate limits or backpressure: 429s are documented, but they would hide the routes behind them.
    svc = await service_factory(default=EndpointConfig(rate_limits_enabled=False, backpressure=False))
    st = Path(sys.executable).with_name("st")
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HOOKS_DIR), os.environ.get("PYTHONPATH")])),
    }
    proc = await asyncio.create_subprocess_exec(
        str(st), "--config-file", str(HOOKS_DIR / "schemathesis.toml"), "run", f"{svc.url}/openapi.json",
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--seed", str(SEED),
        "--max-examples", str(MAX_EXAMPLES),
        "--workers", "1",
        "--generation-database", "none",
        "--request-timeout", "20",
        "--no-color",
        "--report-dir", str(tmp_path),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-20_000:]
