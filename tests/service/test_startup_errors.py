"""A store that cannot be opened stops `worker-kit serve` and `worker-kit dev` with one clear line
and exit code 2, naming the store (never the user's handler file), before anything listens."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HANDLER = """
import worker_kit

@worker_kit.handler
def echo(job):
    return job.input

worker_kit.start()
"""

# Importing redis is made to fail the way it does where the extra is not installed.
NO_REDIS = "import sys; sys.modules['redis'] = None; from worker_kit.cli import main; main(sys.argv[1:])"


def run(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "worker_kit", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def handler(tmp_path: Path) -> Path:
    path = tmp_path / "handler.py"
    path.write_text(HANDLER)
    return path


def bad_sqlite(tmp_path: Path) -> str:
    (tmp_path / "a-directory").mkdir()
    return f"sqlite:///{tmp_path / 'a-directory'}"


def test_serve_names_an_sqlite_path_that_cannot_be_opened(tmp_path: Path) -> None:
    url = bad_sqlite(tmp_path)
    result = run("serve", "--port", "0", "--storage", url)
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith("worker-kit serve: cannot open storage") and url in line
    assert "unable to open database file" in line
    assert "listening" not in result.stdout


def test_serve_names_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a database, but long enough to have a header" * 20)
    result = run("serve", "--port", "0", "--storage", f"sqlite:///{tmp_path / 'notes.txt'}")
    assert result.returncode == 2
    assert "file is not a database" in one_line(result)


def test_dev_blames_the_store_not_the_handler_file(tmp_path: Path, handler: Path) -> None:
    url = bad_sqlite(tmp_path)
    result = run("dev", str(handler), "--port", "0", "--storage", url)
    assert result.returncode == 2
    line = one_line(result)
    assert "cannot open storage" in line and url in line
    assert "handler.py" not in line and "while loading" not in line


@pytest.mark.parametrize("command", ["serve", "dev"])
def test_the_missing_redis_extra_is_named(tmp_path: Path, handler: Path, command: str) -> None:
    args = ("serve",) if command == "serve" else ("dev", str(handler))
    result = run(*args, "--port", "0", "--storage", "redis://127.0.0.1:6379/0", code=NO_REDIS)
    assert result.returncode == 2
    line = one_line(result)
    assert "pip install 'worker-kit[redis]'" in line
    assert "handler.py" not in line


def test_a_password_in_the_storage_url_is_never_printed(tmp_path: Path) -> None:
    url = "redis://user:s3cret-pw@127.0.0.1:6379/0"
    result = run("serve", "--port", "0", "--storage", url, code=NO_REDIS)
    assert result.returncode == 2
    line = one_line(result)
    assert "s3cret-pw" not in line and "redis://user:***@127.0.0.1:6379/0" in line
