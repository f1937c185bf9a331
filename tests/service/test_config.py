"""The TOML config file and the `worker-kit serve` command's checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from worker_kit.errors import ConfigError
from worker_kit.service.config import DEFAULT_RATE_LIMITS, RateLimit, ServiceConfig

EXAMPLE = Path(__file__).parents[2] / "docs" / "worker-kit.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "worker-kit.toml"
    path.write_text(text)
    return path


def test_defaults_and_endpoint_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
port = 9000
lease_ms = 10000
storage = "sqlite:///jobs.db"

[defaults]
workers_max = 4
client_keys = ["client-secret-1"]
worker_keys = ["worker-secret-1"]

[defaults.rate_limits]
run = { requests = 50 }
cancel = false

[endpoints.fast]
result_limit = 1048576
execution_timeout_ms = 5000

[endpoints.fast.rate_limits]
run = { window_s = 1, concurrent = 7 }

[endpoints.open]
rate_limits = false
client_keys = []
""",
    )
    cfg = ServiceConfig.from_toml(path, port=9100)
    assert cfg.port == 9100 and cfg.lease_ms == 10_000 and cfg.storage == "sqlite:///jobs.db"
    assert cfg.default.workers_max == 4 and cfg.default.queue_limit == 2000
    assert cfg.default.rate_limit("run") == RateLimit(50, 10.0, 200)
    assert cfg.default.rate_limit("cancel") == RateLimit(None, 10.0, None)
    fast = cfg.endpoint("fast")
    assert fast is not None
    assert fast.workers_max == 4 and fast.result_limit == 1_048_576 and fast.execution_timeout_ms == 5000
    assert fast.client_keys == ("client-secret-1",)
    assert fast.rate_limit("run") == RateLimit(50, 1.0, 7)
    assert fast.rate_limit("status") == DEFAULT_RATE_LIMITS["status"]
    open_ep = cfg.endpoint("open")
    assert open_ep is not None and open_ep.rate_limit("run") is None and open_ep.client_keys == ()
    assert cfg.endpoint("anything-else") is cfg.default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prot = 1", "unknown setting 'prot'"),
        ("[defaults]\nworker_max = 2", "unknown setting 'worker_max'"),
        ("[endpoints.a]\nresult_limits = 2", "unknown setting 'result_limits'"),
        ("[defaults.rate_limits]\nrunn = { requests = 1 }", "unknown operation 'runn'"),
        ("[defaults.rate_limits]\nrun = { request = 1 }", "unknown key 'request'"),
        ("[defaults.rate_limits]\nrun = { requests = 0 }", "must be positive"),
        ("lease_ms = '30s'", "must be an integer"),
        ("lease_ms = 0", "must be positive"),
        ("insecure = 1", "true or false"),
        ("log_format = 'xml'", "log_format"),
        ("[defaults]\nclient_keys = 'short'", "at least 8"),
        ("[defaults]\nclient_keys = ['same-key-1']\nworker_keys = ['same-key-1']", "both"),
        ("[endpoints.'bad id']\nworkers_max = 1", "endpoint ids"),
        ("port = ", "not valid TOML"),
    ],
)
def test_config_errors_are_clear(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServiceConfig.from_toml(write(tmp_path, text))


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        ServiceConfig.from_toml("/nonexistent/worker-kit.toml")


def test_the_documented_example_loads() -> None:
    cfg = ServiceConfig.from_toml(EXAMPLE)
    assert cfg.endpoints, "the example shows at least one [endpoints.<id>] table"


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker_kit", "serve", *args], capture_output=True, text=True, timeout=30
    )


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    result = serve("--host", "0.0.0.0", "--port", "0", "--storage", f"sqlite:///{tmp_path}/x.db")
    assert result.returncode == 2
    assert "refusing" in result.stderr and "--insecure" in result.stderr
    assert not (tmp_path / "x.db").exists()  # it stopped before touching anything


def test_serve_reports_config_errors(tmp_path: Path) -> None:
    result = serve("--config", str(write(tmp_path, "bogus = 1")))
    assert result.returncode == 2 and "unknown setting 'bogus'" in result.stderr


def test_serve_help_explains_every_flag() -> None:
    result = serve("--help")
    assert result.returncode == 0
    for flag in ("--host", "--port", "--storage", "--config", "--insecure", "--log-format", "--log-level"):
        assert flag in result.stdout
