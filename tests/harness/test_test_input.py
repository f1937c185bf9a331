"""`python handler.py --test-input ...`: sources of the input, output, exit codes, bad usage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ECHO = """
    import worker_kit

    @worker_kit.handler
    def echo(job):
        return {"got": job.input}

    worker_kit.start()
"""


def _final(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    return lines[0]


def test_flag_input_is_run_and_final_status_is_the_last_stdout_line(py, write_handler) -> None:
    path = write_handler(ECHO)
    proc = py(path, "--test-input", '{"input": {"a": 1}}')
    assert proc.returncode == 0, proc.stderr
    final = _final(proc.stdout)
    assert final["status"] == "COMPLETED" and final["output"] == {"got": {"a": 1}}
    assert final["id"] and "executionTime" in final
    assert f"job {final['id']} submitted to http://127.0.0.1:" in proc.stderr


def test_hosted_sdk_id_key_and_at_file(py, write_handler, tmp_path: Path) -> None:
    path = write_handler(ECHO)
    proc = py(path, "--test-input", '{"input": 5, "id": "local_test"}')
    assert proc.returncode == 0, proc.stderr
    assert _final(proc.stdout)["output"] == {"got": 5}
    (tmp_path / "req.json").write_text('{"input": "from file"}')
    proc = py(path, "--test-input", f"@{tmp_path / 'req.json'}")
    assert proc.returncode == 0, proc.stderr
    assert _final(proc.stdout)["output"] == {"got": "from file"}


def test_test_input_json_in_the_current_directory(py, write_handler, tmp_path: Path) -> None:
    path = write_handler(ECHO, "code/handler.py")
    (tmp_path / "code" / "test_input.json").write_text('{"input": "beside"}')
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "test_input.json").write_text('{"input": "cwd"}')
    # No flag at all: start() sees ./test_input.json and routes to the harness.
    proc = py(path, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert _final(proc.stdout)["output"] == {"got": "cwd"}
    # The flag wins over the file.
    proc = py(path, "--test-input", '{"input": "flag"}', cwd=workdir)
    assert _final(proc.stdout)["output"] == {"got": "flag"}


def test_test_input_json_beside_the_handler_file(py, write_handler, tmp_path: Path) -> None:
    path = write_handler(ECHO, "code/handler.py")
    (tmp_path / "code" / "test_input.json").write_text('{"input": "beside"}')
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    proc = py(path, "--test-input", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert _final(proc.stdout)["output"] == {"got": "beside"}
    # No flag at all: the file beside the handler is enough, as ./test_input.json is.
    proc = py(path, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert _final(proc.stdout)["output"] == {"got": "beside"}


def test_hosted_sdk_spelling_of_the_flag(py, write_handler) -> None:
    path = write_handler(ECHO)
    proc = py(path, "--test_input", '{"input": "underscored"}')
    assert proc.returncode == 0, proc.stderr
    assert _final(proc.stdout)["output"] == {"got": "underscored"}


def test_failed_job_exits_1_with_error_and_traceback(py, write_handler) -> None:
    path = write_handler(
        """
        import worker_kit

        @worker_kit.handler
        def broken(job):
            raise ValueError("the input was not what I wanted")

        worker_kit.start()
        """
    )
    proc = py(path, "--test-input", '{"input": {}}')
    assert proc.returncode == 1
    final = _final(proc.stdout)
    assert final["status"] == "FAILED"
    assert "the input was not what I wanted" in final["error"]
    assert "Traceback" in proc.stderr and "ValueError" in proc.stderr


def test_timed_out_job_exits_1(py, write_handler) -> None:
    path = write_handler(
        """
        import asyncio
        import worker_kit

        @worker_kit.handler
        async def slow(job):
            await asyncio.sleep(30)

        worker_kit.start()
        """
    )
    proc = py(path, "--test-input", '{"input": {}, "policy": {"executionTimeout": 300}}')
    assert proc.returncode == 1, proc.stderr
    assert _final(proc.stdout)["status"] == "TIMED_OUT"


def test_sync_generator_chunks_print_in_order(py, write_handler) -> None:
    path = write_handler(
        """
        import worker_kit

        @worker_kit.handler
        def count(job):
            for i in range(job.input["n"]):
                yield {"i": i}

        worker_kit.start()
        """
    )
    proc = py(path, "--test-input", '{"input": {"n": 5}}')
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[:-1] == [{"i": i} for i in range(5)]
    assert lines[-1]["status"] == "COMPLETED"


def test_input_validation_runs_before_the_handler(py, write_handler, tmp_path: Path) -> None:
    marker = tmp_path / "handler-ran"
    path = write_handler(
        f"""
        import pathlib
        import worker_kit
        from worker_kit import Field

        @worker_kit.handler(input_schema={{"n": Field(int, min=1), "name": Field(str, default="x")}})
        def checked(job):
            pathlib.Path({str(marker)!r}).touch()
            return job.input

        worker_kit.start()
        """
    )
    proc = py(path, "--test-input", '{"input": {"n": true, "name": 3, "zzz": 0}}')
    assert proc.returncode == 1
    final = _final(proc.stdout)
    assert final["status"] == "FAILED"
    assert final["error"] == (
        "input validation failed: n: expected integer, got boolean; name: expected string, got integer; "
        "zzz: unknown field (expected one of: n, name)"
    )
    assert final["errorDetail"]["type"] == "ValidationError"
    assert len(final["errorDetail"]["errors"]) == 3
    assert not marker.exists(), "the handler ran despite invalid input"
    proc = py(path, "--test-input", '{"input": {"n": 2}}')
    assert proc.returncode == 0, proc.stderr
    assert _final(proc.stdout)["output"] == {"n": 2, "name": "x"}
    assert marker.exists()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--test-input", "{bad json"], "--test-input is not valid JSON"),
        (["--test-input", '{"x": 1}'], 'has no "input" key'),
        (["--test-input", "[1, 2]"], "must be a JSON object"),
        (["--test-input", '{"input": 1, "inptu": 2}'], "unknown keys ['inptu']"),
        (["--test-input", "@/nonexistent/req.json"], "cannot read test input"),
        (["--test-input"], "no test input"),
        (["--test-input", "{}", "--bogus"], "unrecognized arguments: --bogus"),
        (
            ["--test-input", '{"input": 1, "policy": {"executionTimeout": "soon"}}'],
            "the service refused the test input: ",
        ),
        (["--serve", "--concurrency", "0"], "--concurrency must be at least 1"),
        (["--serve", "--endpoint", "a/b"], "--endpoint 'a/b': endpoint ids are 1-128 characters"),
        (["--serve", "--host", "0.0.0.0"], "add --insecure if that is what you want"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(py, write_handler, tmp_path: Path, argv, expected) -> None:
    path = write_handler(ECHO, "code/handler.py")
    workdir = tmp_path / "empty"
    workdir.mkdir()
    proc = py(path, *argv, cwd=workdir)
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc.stderr)
    assert expected in line
    assert proc.stdout == ""


def test_bad_test_input_json_file(py, write_handler, tmp_path: Path) -> None:
    path = write_handler(ECHO)
    (tmp_path / "test_input.json").write_text('{"input": }')
    proc = py(path, cwd=tmp_path)
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert "test_input.json is not valid JSON" in line


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import worker_kit\nworker_kit.start()\n", "no handler registered"),
        (
            "import worker_kit\n"
            "@worker_kit.handler\ndef a(job): return 1\n"
            "@worker_kit.handler\ndef b(job): return 2\n"
            "worker_kit.start()\n",
            "several handlers are registered",
        ),
    ],
    ids=["no-handler", "two-handlers"],
)
def test_handler_lookup_errors(py, write_handler, source: str, expected: str) -> None:
    path = write_handler(source)
    proc = py(path, "--test-input", '{"input": 1}')
    assert proc.returncode == 2, proc.stderr
    assert expected in _one_error_line(proc.stderr)


def test_ctrl_c_cancels_the_running_job(write_handler, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from .conftest import clean_env

    path = write_handler(
        """
        import asyncio, pathlib
        import worker_kit

        @worker_kit.handler
        async def forever(job):
            pathlib.Path(job.input).touch()
            while True:
                await asyncio.sleep(0.05)

        worker_kit.start()
        """
    )
    started = tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, str(path), "--test-input", json.dumps({"input": str(started)})],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )
    try:
        deadline = time.monotonic() + 30
        while not started.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the handler never started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    assert _final(out)["status"] == "CANCELLED"
    assert "cancelling the job" in err


def test_stdout_closed_early_is_no_traceback(write_handler) -> None:
    # `python handler.py --test-input ... | head -1`: the reader leaves while chunks still come.
    import subprocess
    import sys

    from .conftest import clean_env

    path = write_handler(
        """
        import asyncio
        import worker_kit

        @worker_kit.handler
        async def many(job):
            for i in range(300):
                yield i
                await asyncio.sleep(0.002)

        worker_kit.start()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, str(path), "--test-input", '{"input": {}}'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert proc.stdout.readline().strip() == "0"
        proc.stdout.close()  # as head does after its line
        err = proc.stderr.read()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode == 0, err  # the job still ran to the end and says so
    assert "COMPLETED" in err
