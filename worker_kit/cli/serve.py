"""`worker-kit serve`: run the queue service until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import signal
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the service is imported when `serve` runs, not for `--help`
    from ..service.config import ServiceConfig

DESCRIPTION = """\
Run the queue service: the client API (/v2/<endpoint>/run, /runsync, /status, /stream, /cancel,
/retry, /purge-queue, /health) and the native worker API, on one port. Any endpoint id is served
(unless the config file sets strict_endpoints). Flags override the config file; see
docs/service.md for every setting and docs/worker-kit.example.toml for a commented example."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the queue service",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default=None,
        help="address to listen on (default 127.0.0.1, loopback only). A non-loopback address "
        "needs client and worker API keys in the config file, or --insecure",
    )
    parser.add_argument(
        "--port", type=int, default=None, help="TCP port (default 8000; 0 picks a free port and prints it)"
    )
    parser.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="where jobs are kept: sqlite:///relative.db, sqlite:////absolute.db or "
        "sqlite://:memory: (default sqlite:///worker-kit.db); or Redis, for several replicas: "
        "redis://HOST:PORT/DB, rediss://… (TLS), unix:///path.sock, each with an optional ?prefix=NAME "
        "(needs pip install 'worker-kit[redis]'; docs/storage.md)",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="TOML file with service settings, [defaults] and [endpoints.<id>] tables",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow listening on a non-loopback address with no API keys (anyone who can "
        "reach the port can submit jobs and act as a worker)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="log lines as plain text (default) or one JSON object per line",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=None,
        help="least severe level logged (default info; debug logs one line per request)",
    )
    parser.set_defaults(func=serve_command)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def missing_keys(config: Any) -> list[str]:
    """The endpoint settings tables lacking client or worker keys."""
    missing = []
    for where, cfg in config.all_endpoint_configs():
        kinds = [
            k for k, keys in (("client_keys", cfg.client_keys), ("worker_keys", cfg.worker_keys)) if not keys
        ]
        if kinds:
            missing.append(f"{where} has no {' or '.join(kinds)}")
    return missing


def serve_command(args: argparse.Namespace) -> int:
    config = _config_or_none(args)
    if config is None:
        return 2
    from ..logs import configure_logging

    configure_logging(level=config.log_level, fmt=config.log_format)
    try:
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    if uvloop is not None:
        uvloop.install()
    return _run(config)


def _config_or_none(args: argparse.Namespace) -> ServiceConfig | None:
    """The service's settings from the flags and the config file; None once it has said on stderr
    why they cannot be used (bad settings, or a public address without API keys)."""
    from ..errors import ConfigError
    from ..service.config import ServiceConfig

    overrides = {
        "host": args.host,
        "port": args.port,
        "storage": args.storage,
        "insecure": args.insecure,
        "log_format": args.log_format,
        "log_level": args.log_level,
    }
    try:
        if args.config:
            config = ServiceConfig.from_toml(args.config, **overrides)
        else:
            config = ServiceConfig(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        print(f"worker-kit serve: {exc}", file=sys.stderr)
        return None
    if not is_loopback(config.host) and not config.insecure:
        problems = missing_keys(config)
        if problems:
            print(
                f"worker-kit serve: refusing to listen on {config.host!r} (not a loopback address) without "
                f"API keys: {'; '.join(problems)}. Configure client_keys and worker_keys in the config file "
                "(docs/service.md, Security), or pass --insecure to accept anyone who can reach the port.",
                file=sys.stderr,
            )
            return None
    return config


def _run(config: ServiceConfig) -> int:
    """Serve until stopped; the exit code, with one line on stderr for what kept it from starting."""
    from ..errors import ConfigError, MissingDependency, StorageError
    from ..storage import redacted

    try:
        asyncio.run(_serve(config))
    except ConfigError as exc:
        print(f"worker-kit serve: {exc}", file=sys.stderr)
        return 2
    except MissingDependency as exc:  # the redis extra is not installed
        print(f"worker-kit serve: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # a storage backend (or its extra) that is not installed
        where = redacted(config.storage)
        print(f"worker-kit serve: storage {where!r} is not available: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:  # unreachable, refused, a file that cannot be opened
        print(f"worker-kit serve: cannot open storage {redacted(config.storage)!r}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"worker-kit serve: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(config: Any) -> None:
    from ..service.runner import run_service

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with run_service(config) as svc:
        # What exists now (modules, the app and its routes, the store) lives as long as the
        # process: frozen out of the cyclic collector's full passes, which would otherwise walk
        # all of it, tens of milliseconds in the middle of a request, whenever a burst of
        # requests (a token stream's output reports) has allocated enough.
        gc.freeze()
        # One machine-readable line on stdout, so scripts (and tests) can find the port.
        print(f"worker-kit serve: listening on {svc.url}", flush=True)
        await stop.wait()
    print("worker-kit serve: stopped", flush=True)
