"""`worker-kit dev handler.py`: serves a handler file; clear one-line errors for broken files."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

WITH_START = """
    import worker_kit

    @worker_kit.handler
    def shout(job):
        return job.input.upper()

    worker_kit.start()
"""

WITHOUT_START = """
    import worker_kit

    @worker_kit.handler
    def shout(job):
        return job.input.upper() + "!"
"""


def _runsync(url: str, payload: object) -> dict:
    request = urllib.request.Request(
        url + "/runsync",
        data=json.dumps({"input": payload}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    return lines[0]


@pytest.mark.parametrize(("source", "expected"), [(WITH_START, "HELLO"), (WITHOUT_START, "HELLO!")])
def test_dev_serves_the_file_and_stops_on_ctrl_c(
    dev_servers, write_handler, source: str, expected: str
) -> None:
    path = write_handler(source)
    server = dev_servers(["-m", "worker_kit", "dev", str(path), "--port", "0", "--concurrency", "3"])
    assert any("handler 'shout', concurrency 3" in line for line in server.banner)
    answer = _runsync(server.url, "hello")
    assert answer["status"] == "COMPLETED" and answer["output"] == expected
    assert server.interrupt() == 0, server.stderr()
    assert "worker_kit: stopped" in server.stderr()


def test_dev_imports_sibling_modules(dev_servers, write_handler) -> None:
    write_handler("def double(x):\n    return x * 2\n", "helpers.py")
    path = write_handler(
        """
        import worker_kit
        from helpers import double

        @worker_kit.handler
        def twice(job):
            return double(job.input)
        """
    )
    server = dev_servers(["-m", "worker_kit", "dev", str(path), "--port", "0"])
    assert _runsync(server.url, 21)["output"] == 42
    assert server.interrupt() == 0


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import worker_kit\ndef f(job)\n    return 1\n", "line 2: syntax error"),
        (
            "import worker_kit\nimport no_such_module_xyz\n",
            "failed to import: No module named 'no_such_module_xyz'",
        ),
        (
            "import worker_kit\nraise RuntimeError('model file missing')\n",
            "raised RuntimeError while loading",
        ),
        ("import worker_kit\nx = 1\n", "no handler registered"),
        (
            "import worker_kit\n"
            "@worker_kit.handler\ndef a(job): return 1\n"
            "@worker_kit.handler\ndef b(job): return 2\n",
            "several handlers are registered",
        ),
    ],
    ids=["syntax-error", "import-error", "raises-at-import", "no-handler", "two-handlers"],
)
@pytest.mark.parametrize("command", [("dev", "--port", "0"), ("work", "--url", "http://127.0.0.1:9/v2/x")])
def test_broken_files_get_one_line_and_exit_2(
    py, write_handler, source: str, expected: str, command: tuple[str, ...]
) -> None:
    path = write_handler(source)
    proc = py("-m", "worker_kit", command[0], path, *command[1:], timeout=30)
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc.stderr)
    assert ": error: " in line
    if command[0] == "dev" or "handler" not in expected:
        assert line.startswith(f"worker-kit {command[0]}: error: ")
    assert expected in line


@pytest.mark.parametrize("command", ["dev", "work"])
def test_missing_file(py, tmp_path: Path, command: str) -> None:
    proc = py("-m", "worker_kit", command, tmp_path / "nope.py")
    assert proc.returncode == 2
    assert "no such file" in _one_error_line(proc.stderr)


def test_dev_port_in_use_is_one_line(py, dev_servers, write_handler) -> None:
    path = write_handler(WITH_START)
    first = dev_servers(["-m", "worker_kit", "dev", str(path), "--port", "0"])
    port = first.url.split(":")[2].split("/")[0]
    proc = py("-m", "worker_kit", "dev", path, "--port", port, timeout=30)
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc.stderr)
    assert f"cannot listen on 127.0.0.1:{port}: address already in use; pass another --port" in line
    assert line.count(port) == 1, line  # the address is said once, not repeated by aiohttp's message
    assert first.interrupt() == 0


README_LIKE = """
    import worker_kit

    @worker_kit.handler
    def greet(job):
        for word in job.input["prompt"].split():
            yield word + " "
"""


def _banner_try_lines(server) -> list[str]:
    """The banner lines after `endpoint:`, up to "Press Ctrl-C"."""
    lines = []
    while True:
        line = server.proc.stdout.readline().rstrip("\n")
        if line.startswith("Press Ctrl-C") or not line:
            return lines
        lines.append(line)


def test_the_banners_curl_uses_the_handlers_test_input(dev_servers, write_handler) -> None:
    import subprocess

    path = write_handler(README_LIKE)
    (path.parent / "test_input.json").write_text('{"input": {"prompt": "hi there"}}')
    server = dev_servers(["-m", "worker_kit", "dev", str(path), "--port", "0"], cwd=path.parent)
    (try_line,) = _banner_try_lines(server)
    command = try_line.split("try:", 1)[1].strip()
    assert command.startswith("curl -s ") and "prompt" in command, command
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30)
    answer = json.loads(done.stdout)
    assert answer["status"] == "COMPLETED" and answer["output"] == ["hi ", "there "], answer
    assert server.interrupt() == 0, server.stderr()


def test_without_a_test_input_the_banner_says_where_to_put_one(dev_servers, write_handler) -> None:
    path = write_handler(README_LIKE)
    server = dev_servers(["-m", "worker_kit", "dev", str(path), "--port", "0"], cwd=path.parent)
    try_line, hint = _banner_try_lines(server)
    assert try_line.endswith("""-d '{"input": {}}'"""), try_line
    assert "test_input.json" in hint, hint
    assert server.interrupt() == 0, server.stderr()


def test_work_takes_the_file_from_worker_kit_handler_or_says_how(py) -> None:
    proc = py("-m", "worker_kit", "work")
    assert proc.returncode == 2
    assert "pass HANDLER_FILE or set WORKER_KIT_HANDLER" in _one_error_line(proc.stderr)
