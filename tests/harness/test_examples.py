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
