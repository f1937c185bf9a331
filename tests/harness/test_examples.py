"""Every example runs with --test-input through the real service and worker, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _final(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "no output on stdout"
    return json.loads(lines[-1])


def test_echo(py) -> None:
    proc = py(EXAMPLES / "echo.py", "--test-input", '{"input": {"text": "hello", "n": [1, 2]}}')
    assert proc.returncode == 0, proc.stderr
    final = _final(proc.stdout)
    assert final["status"] == "COMPLETED"
    assert final["output"] == {"text": "hello", "n": [1, 2]}


def test_stream_tokens_prints_each_chunk_then_the_aggregate(py) -> None:
    request = {"input": {"prompt": "the quick brown fox", "delay": 0.01}}
    proc = py(EXAMPLES / "stream_tokens.py", "--test-input", json.dumps(request))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    tokens = ["the", " quick", " brown", " fox"]
    assert lines[:-1] == tokens
    assert lines[-1]["status"] == "COMPLETED"
    assert lines[-1]["output"] == tokens


def test_progress_updates_are_reported(py) -> None:
    proc = py(EXAMPLES / "progress.py", "--test-input", '{"input": {"steps": 4}}')
    assert proc.returncode == 0, proc.stderr
    final = _final(proc.stdout)
    assert final["status"] == "COMPLETED"
    assert final["output"] == {"steps": 4, "final_loss": 0.0625}
    updates = [
        json.loads(line.split("progress:", 1)[1]) for line in proc.stderr.splitlines() if "progress:" in line
    ]
    # Updates may be coalesced when they come faster than they are read, never reordered.
    assert updates, proc.stderr
    steps = [u["step"] for u in updates]
    assert steps == sorted(set(steps)) and all(u["of"] == 4 for u in updates)


def test_cpu_bound(py) -> None:
    proc = py(EXAMPLES / "cpu_bound.py", "--test-input", '{"input": {"limit": 50000}}')
    assert proc.returncode == 0, proc.stderr
    assert _final(proc.stdout)["output"] == {"limit": 50000, "primes": 5133}


def test_validated_input_completes_with_defaults(py) -> None:
    proc = py(EXAMPLES / "validated.py", "--test-input", '{"input": {"text": "hi", "times": 3}}')
    assert proc.returncode == 0, proc.stderr
    assert _final(proc.stdout)["output"] == {"result": "hi hi hi"}


def test_validated_input_fails_listing_every_problem(py) -> None:
    proc = py(EXAMPLES / "validated.py", "--test-input", '{"input": {"times": 0, "colour": 1}}')
    assert proc.returncode == 1
    final = _final(proc.stdout)
    assert final["status"] == "FAILED"
    assert final["error"].startswith("input validation failed: ")
    for problem in ("text: required field is missing", "times: must be >= 1; got 0", "colour: unknown field"):
        assert problem in final["error"]
    assert len(final["errorDetail"]["errors"]) == 3


def test_the_testing_recipe_imports_an_example_handler(py, tmp_path: Path) -> None:
    # docs/harness.md: a user's pytest file imports the handler from the handler file and runs
    # it with worker_kit.testing. Importing must not start a worker (or exit the test run).
    (tmp_path / "handler.py").write_text((EXAMPLES / "stream_tokens.py").read_text())
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    (tmp_path / "test_handler.py").write_text(
        "from worker_kit.testing import endpoint_fixture, local_endpoint\n"
        "from handler import generate\n\n"
        "async def test_generate():\n"
        "    async with local_endpoint(generate, concurrency=2) as ep:\n"
        "        job = await ep.run({'prompt': 'x y z', 'delay': 0})\n"
        "        assert [c async for c in job.stream()] == ['x', ' y', ' z']\n\n"
        "generate_endpoint = endpoint_fixture(generate)\n\n"
        "async def test_with_fixture(generate_endpoint):\n"
        "    job = await generate_endpoint.run({'prompt': 'hi', 'delay': 0})\n"
        "    assert await job.output(timeout=30) == ['hi']\n"
    )
    proc = py("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout
    # Every example imports without starting a worker.
    names = sorted(p.stem for p in EXAMPLES.glob("*.py"))
    proc = py("-c", f"import {', '.join(names)}; print('imported')", cwd=EXAMPLES)
    assert proc.returncode == 0 and proc.stdout.strip() == "imported", proc.stderr
