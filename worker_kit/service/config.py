"""Service settings: one frozen `ServiceConfig`, read once from flags and an optional TOML file.

The file has top-level service settings, a `[defaults]` table of endpoint settings and
`[endpoints.<id>]` tables that override the defaults for one endpoint (docs/service.md).
Every key is checked: a typo is a ConfigError naming the key, never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..ids import ENDPOINT_ID_RULE, valid_endpoint_id
from ..job import DEFAULT_EXECUTION_TIMEOUT_MS, DEFAULT_TTL_MS, RUN_RETENTION_MS, RUNSYNC_RETENTION_MS
from .webhook_guard import parse_allow

MB = 1024 * 1024

#: Operations that carry a rate limit; /stream and /status-sync share the "status" limits, as in
#: the hosted service; "openai" is /openai/* and "requests" is GET /requests.
#: "sse" bounds the Server-Sent Event streams open at once: a stream is opened under "status",
#: then holds an "sse" slot rather than a "status" one, so waiting clients cannot starve polling.
RATE_LIMITED_OPS = ("run", "runsync", "status", "sse", "cancel", "retry", "purge", "openai", "requests")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `requests` per `window_s` seconds (a token bucket) and `concurrent` in flight at once."""

    requests: int | None
    window_s: float = 10.0
    concurrent: int | None = None


#: The hosted service's table (seed.md); /retry is not in it and gets /cancel's limits.
DEFAULT_RATE_LIMITS: dict[str, RateLimit] = {
    "run": RateLimit(1000, 10.0, 200),
    "runsync": RateLimit(2000, 10.0, 400),
    "status": RateLimit(2000, 10.0, 400),
    "sse": RateLimit(None, 10.0, 1000),
    "cancel": RateLimit(100, 10.0, 20),
    "retry": RateLimit(100, 10.0, 20),
    "purge": RateLimit(2, 10.0, None),
    "openai": RateLimit(2000, 10.0, 400),
    "requests": RateLimit(10, 10.0, 2),
}


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    #: Backpressure: submits get 429 once the queue holds more than `queue_floor` jobs AND more
    #: than `workers_max x queue_per_worker` jobs.
    workers_max: int = 1
    queue_floor: int = 50
    queue_per_worker: int = 500
    backpressure: bool = True
    run_body_limit: int = 10 * MB
    runsync_body_limit: int = 20 * MB
    result_limit: int = 20 * MB
    rate_limits: dict[str, RateLimit] = field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    rate_limits_enabled: bool = True
    execution_timeout_ms: int = DEFAULT_EXECUTION_TIMEOUT_MS
    ttl_ms: int = DEFAULT_TTL_MS
    run_retention_ms: int = RUN_RETENTION_MS
    runsync_retention_ms: int = RUNSYNC_RETENTION_MS
    client_keys: tuple[str, ...] = ()
    worker_keys: tuple[str, ...] = ()
    webhook_secret: str | None = None
    webhook_attempts: int = 3
    webhook_interval_s: float = 10.0
    #: Whether the dashboard's job page shows a job's input (false for sensitive inputs).
    dashboard_inputs: bool = True

    @property
    def queue_limit(self) -> int:
        """Queue length above which submits are refused."""
        return max(self.queue_floor, self.workers_max * self.queue_per_worker)

    def rate_limit(self, op: str) -> RateLimit | None:
        if not self.rate_limits_enabled:
            return None
        return self.rate_limits.get(op)


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    storage: str = "sqlite:///worker-kit.db"
    lease_ms: int = 30_000
    max_attempts: int = 3
    sweep_interval_s: float = 1.0
    deadline_grace_ms: int = 5000
    insecure: bool = False
    log_format: str = "text"
    log_level: str = "info"
    #: When true, only the ids listed under [endpoints] are served; others get 404.
    strict_endpoints: bool = False
    #: How long shutdown waits for in-flight requests (long-polls are answered at once).
    shutdown_timeout_s: float = 5.0
    #: Bound on the stored input bytes one claim reply carries (at least one job is always sent).
    claim_max_bytes: int = 32 * MB
    #: Bound on the chunk bytes one /stream answer (or one SSE read) carries (at least one chunk).
    stream_max_bytes: int = 8 * MB
    #: A connection must deliver a request's complete headers this soon after it opens or after
    #: the previous answer; idle keep-alive connections close after it too.
    header_timeout_s: float = 30.0
    #: A request body must arrive whole within this long, else 408.
    body_timeout_s: float = 120.0
    #: Connections one client address may hold open at once (0: no cap).
    max_connections_per_client: int = 1000
    #: Host names and networks webhooks may go to although they are not public addresses
    #: (loopback, link-local, private...), e.g. ["127.0.0.0/8", "hooks.internal"].
    webhook_allow: tuple[str, ...] = ()
    #: Endpoints not in [endpoints] get their own `endpoint` label in /metrics up to this many;
    #: the rest share the label "_other" (docs/operations.md).
    metrics_max_endpoints: int = 100
    endpoints: dict[str, EndpointConfig] = field(default_factory=dict)
    default: EndpointConfig = field(default_factory=EndpointConfig)

    def endpoint(self, endpoint_id: str) -> EndpointConfig | None:
        """Settings for an endpoint id, or None when strict_endpoints refuses it."""
        cfg = self.endpoints.get(endpoint_id)
        if cfg is not None:
            return cfg
        return None if self.strict_endpoints else self.default

    def all_endpoint_configs(self) -> list[tuple[str, EndpointConfig]]:
        return [("[defaults]", self.default), *((f"[endpoints.{k}]", v) for k, v in self.endpoints.items())]

    def __post_init__(self) -> None:
        _check_service(self)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> ServiceConfig:
        """Read a TOML file; keyword overrides (e.g. from command-line flags) win over the file."""
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from None
        return cls.from_dict(data, source=str(path), **overrides)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config", **overrides: Any) -> ServiceConfig:
        data = dict(data)
        defaults_table = data.pop("defaults", {})
        endpoints_table = data.pop("endpoints", {})
        service_fields = {
            f.name: f for f in dataclasses.fields(cls) if f.name not in ("endpoints", "default")
        }
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in service_fields:
                raise ConfigError(
                    f"{source}: unknown setting {key!r} (known: {', '.join(sorted(service_fields))})"
                )
            kwargs[key] = _coerce(f"{source}: {key}", value, service_fields[key].type)
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        if not isinstance(defaults_table, dict):
            raise ConfigError(f"{source}: [defaults] must be a table")
        default = endpoint_from_dict(defaults_table, EndpointConfig(), f"{source} [defaults]")
        if not isinstance(endpoints_table, dict):
            raise ConfigError(f"{source}: [endpoints] must hold one table per endpoint id")
        endpoints: dict[str, EndpointConfig] = {}
        for endpoint_id, table in endpoints_table.items():
            where = f"{source} [endpoints.{endpoint_id}]"
            if not isinstance(table, dict):
                raise ConfigError(f"{where} must be a table")
            if not valid_endpoint_id(endpoint_id):
                raise ConfigError(f"{where}: {ENDPOINT_ID_RULE}")
            endpoints[endpoint_id] = endpoint_from_dict(table, default, where)
        return cls(endpoints=endpoints, default=default, **kwargs)


_ENDPOINT_FIELDS = {f.name: f for f in dataclasses.fields(EndpointConfig)}


def endpoint_from_dict(table: dict[str, Any], base: EndpointConfig, where: str) -> EndpointConfig:
    """Settings in `table` on top of `base`; rate_limits merge per operation and per field."""
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _ENDPOINT_FIELDS:
            raise ConfigError(
                f"{where}: unknown setting {key!r} (known: {', '.join(sorted(_ENDPOINT_FIELDS))})"
            )
        if key == "rate_limits":
            if value is False:
                changes["rate_limits_enabled"] = False
                continue
            changes[key] = _rate_limits(value, base.rate_limits, f"{where} rate_limits")
        elif key in ("client_keys", "worker_keys"):
            changes[key] = _keys(value, f"{where} {key}")
        else:
            changes[key] = _coerce(f"{where} {key}", value, _ENDPOINT_FIELDS[key].type)
    cfg = dataclasses.replace(base, **changes)
    _check_endpoint(cfg, where)
    return cfg


def _rate_limits(value: Any, base: dict[str, RateLimit], where: str) -> dict[str, RateLimit]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table of operations, or false to disable rate limits")
    merged = dict(base)
    for op, spec in value.items():
        if op not in RATE_LIMITED_OPS:
            raise ConfigError(f"{where}: unknown operation {op!r} (known: {', '.join(RATE_LIMITED_OPS)})")
        if spec is False:
            merged[op] = RateLimit(None, 10.0, None)
            continue
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}.{op} must be a table {{requests, window_s, concurrent}} or false")
        current = merged.get(op, RateLimit(None))
        fields: dict[str, Any] = {}
        for key, v in spec.items():
            if key not in ("requests", "window_s", "concurrent"):
                raise ConfigError(
                    f"{where}.{op}: unknown key {key!r} (known: requests, window_s, concurrent)"
                )
            if v is False:
                fields[key] = None
            elif key == "window_s":
                fields[key] = _positive(
                    f"{where}.{op}.window_s", _coerce(f"{where}.{op}.window_s", v, "float")
                )
            else:
                fields[key] = _positive(f"{where}.{op}.{key}", _coerce(f"{where}.{op}.{key}", v, "int"))
        merged[op] = dataclasses.replace(current, **fields)
    return merged


def _keys(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(k, str) and k.strip() for k in value):
        raise ConfigError(f"{where} must be a list of non-empty strings")
    if any(k != k.strip() or len(k) < 8 for k in value):
        raise ConfigError(f"{where}: keys must be at least 8 characters with no surrounding spaces")
    return tuple(value)


def _coerce(where: str, value: Any, type_name: Any) -> Any:
    """Check a TOML value against a field's annotation (a string, thanks to `from __future__`)."""
    t = str(type_name)
    optional = "None" in t
    if value is None and optional:
        return None
    if t.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, not {value!r}")
        return value
    if t.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, not {value!r}")
        return float(value)
    if t.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {value!r}")
        return value
    if t.startswith("tuple"):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings, not {value!r}")
        return tuple(value)
    if t.startswith("str"):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, not {value!r}")
        return value
    raise ConfigError(f"{where}: cannot be set from a config file")


def _positive(where: str, value: Any) -> Any:
    if value is not None and value <= 0:
        raise ConfigError(f"{where} must be positive, not {value!r}")
    return value


def _check_endpoint(cfg: EndpointConfig, where: str) -> None:
    for name in (
        "run_body_limit",
        "runsync_body_limit",
        "result_limit",
        "execution_timeout_ms",
        "ttl_ms",
        "run_retention_ms",
        "runsync_retention_ms",
        "webhook_attempts",
        "queue_per_worker",
    ):
        _positive(f"{where} {name}", getattr(cfg, name))
    if cfg.workers_max < 0 or cfg.queue_floor < 0:
        raise ConfigError(f"{where}: workers_max and queue_floor must not be negative")
    if cfg.webhook_interval_s < 0:
        raise ConfigError(f"{where} webhook_interval_s must not be negative")
    if set(cfg.client_keys) & set(cfg.worker_keys):
        raise ConfigError(f"{where}: a key cannot be both a client key and a worker key")


def _check_service(cfg: ServiceConfig) -> None:
    if not (0 <= cfg.port <= 65535):
        raise ConfigError(f"port must be between 0 and 65535, not {cfg.port}")
    for name in (
        "lease_ms",
        "max_attempts",
        "sweep_interval_s",
        "shutdown_timeout_s",
        "claim_max_bytes",
        "stream_max_bytes",
        "header_timeout_s",
        "body_timeout_s",
    ):
        _positive(name, getattr(cfg, name))
    try:
        parse_allow(cfg.webhook_allow)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.max_connections_per_client < 0:
        raise ConfigError("max_connections_per_client must not be negative (0 lifts the cap)")
    if cfg.deadline_grace_ms < 0:
        raise ConfigError("deadline_grace_ms must not be negative")
    if cfg.metrics_max_endpoints < 0:
        raise ConfigError("metrics_max_endpoints must not be negative")
    if cfg.log_format not in ("text", "json"):
        raise ConfigError(f"log_format must be 'text' or 'json', not {cfg.log_format!r}")
    if cfg.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"log_level must be debug, info, warning, error or critical, not {cfg.log_level!r}")
    if "://" not in cfg.storage:
        raise ConfigError(f"storage must be a URL such as sqlite:///worker-kit.db, not {cfg.storage!r}")
