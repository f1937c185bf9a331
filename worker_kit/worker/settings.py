"""Worker settings: read once, at the edge (start() or the CLI), from flags and environment.

Precedence: command-line flag > WORKER_KIT_* environment variable > start(**options) > default.
Library classes (`Worker`) take plain keyword arguments and never read the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from ..errors import ConfigError
from ..logs import LOG_FORMATS, LOG_LEVELS
from .hosted_env import HostedEnv

#: Exit codes of a worker process (documented in docs/worker.md).
EXIT_OK = 0
EXIT_CONFIG = 2
#: A handler could not be interrupted (stuck in native code): restart the process.
EXIT_STUCK = 3
#: The service refused the worker (bad key, unknown endpoint): fix the settings.
EXIT_REFUSED = 4
#: The worker process went over WORKER_KIT_MAX_RSS_MB (only seen with WORKER_KIT_ON_STUCK=exit).
EXIT_MEMORY = 5

ON_STUCK = ("restart", "exit")
ISOLATIONS = ("thread", "process")

ENV_HELP = """\
environment (a flag, when given, wins over its variable):
  WORKER_KIT_URL          the endpoint's base URL, e.g. http://127.0.0.1:8000/v2/my-endpoint
  RUNPOD_WEBHOOK_GET_JOB  without WORKER_KIT_URL: speak the hosted service's worker protocol,
                          with RUNPOD_WEBHOOK_POST_OUTPUT, _POST_STREAM, _PING, RUNPOD_AI_API_KEY,
                          RUNPOD_POD_ID and RUNPOD_PING_INTERVAL as that service sets them
  WORKER_KIT_API_KEY      the endpoint's worker key, sent as 'Authorization: Bearer <key>'
                          (not a client key: the client's is WORKER_KIT_CLIENT_API_KEY)
  WORKER_KIT_CONCURRENCY  jobs run at once (default: the handler's, else 1)
  WORKER_KIT_TIMEOUT      execution timeout in seconds when neither the job's policy nor
                          the handler's timeout= sets one (default 600)
  WORKER_KIT_GRACE        seconds running jobs get to finish after SIGTERM (default 30)
  WORKER_KIT_STUCK_GRACE  seconds a stopped handler gets to end before it counts as stuck (default 5)
  WORKER_KIT_ON_STUCK     restart (default): after a stuck handler, or over the memory cap, the
                          worker replaces itself in place (same PID, same command line);
                          exit: it exits with code 3 (stuck) or 5 (memory) for a supervisor
  WORKER_KIT_ISOLATION    thread (default) or process: run the handler in a supervised child
                          process, replaced when it crashes, is stuck or grows too big
  WORKER_KIT_MAX_RSS_MB   memory cap of a handler process, MB: over it, the process finishes its
                          current jobs and is replaced (default: none)
  WORKER_KIT_KILL_RSS_MB  process isolation only: a child over this many MB is killed at once
                          and its job FAILED (default: none)
  WORKER_KIT_LOG_LEVEL    DEBUG, INFO (default), WARNING or ERROR
  WORKER_KIT_LOG_FORMAT   text (default) or json (one JSON object per line)
  WORKER_KIT_WORKER_ID    this worker's id (default: hostname-pid-random)

local runs (no queue service needed):
  --test-input JSON       run one job, e.g. --test-input '{"input": {"x": 1}}', and print the result
  --serve                 serve the whole client API on localhost with this handler

exit codes: 0 stopped cleanly, 1 the worker's own claim or heartbeat loop failed (logged),
2 bad settings (or, with process isolation, a handler that does not load in a child),
3 a handler was stuck and could not be interrupted (only with WORKER_KIT_ON_STUCK=exit),
4 the service refused the worker (key or URL), 5 over WORKER_KIT_MAX_RSS_MB (only with
WORKER_KIT_ON_STUCK=exit);
a second SIGINT/SIGTERM exits at once with 128 + the signal number.
"""


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    #: The native endpoint URL; in hosted mode, the job-take URL (for logs only).
    url: str
    api_key: str | None = None
    #: None: the handler's concurrency, else 1.
    concurrency: int | None = None
    timeout_s: float | None = None
    grace_s: float = 30.0
    stuck_grace_s: float = 5.0
    log_level: str = "INFO"
    log_format: str = "text"
    worker_id: str | None = None
    #: "restart" (replace the process in place) or "exit" (EXIT_STUCK / EXIT_MEMORY).
    on_stuck: str = "restart"
    #: None: the handler's isolation, else "thread".
    isolation: str | None = None
    max_rss_mb: float | None = None
    kill_rss_mb: float | None = None
    #: Set when the hosted service's environment is present and WORKER_KIT_URL is not: the worker
    #: then speaks that service's protocol (worker/hosted_transport.py).
    hosted: HostedEnv | None = None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One clear line, not the usage block: settings errors are read in container logs.
        raise ConfigError(message)


def _parser(prog: str) -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog,
        description="Run this handler as a worker_kit worker: claim jobs from the queue service, run them.",
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", metavar="URL", help="endpoint base URL (WORKER_KIT_URL)")
    p.add_argument("--api-key", metavar="KEY", help="the endpoint's worker key, not its client key "
                   "(WORKER_KIT_API_KEY)")
    p.add_argument("--concurrency", metavar="N", help="jobs at once (WORKER_KIT_CONCURRENCY)")
    p.add_argument("--timeout", metavar="S", help="default execution timeout, s (WORKER_KIT_TIMEOUT)")
    p.add_argument("--grace", metavar="S", help="drain grace after SIGTERM, s (WORKER_KIT_GRACE)")
    p.add_argument("--stuck-grace", metavar="S", help="wait for a stopped handler (WORKER_KIT_STUCK_GRACE)")
    p.add_argument("--log-level", metavar="LEVEL", help="log level (WORKER_KIT_LOG_LEVEL)")
    p.add_argument("--log-format", metavar="FORMAT", help="text or json (WORKER_KIT_LOG_FORMAT)")
    p.add_argument("--worker-id", metavar="ID", help="worker id (WORKER_KIT_WORKER_ID)")
    p.add_argument("--on-stuck", metavar="ACTION", help="restart or exit (WORKER_KIT_ON_STUCK)")
    p.add_argument("--isolation", metavar="MODE", help="thread or process (WORKER_KIT_ISOLATION)")
    p.add_argument("--max-rss-mb", metavar="MB", help="memory cap, handler process (WORKER_KIT_MAX_RSS_MB)")
    p.add_argument("--kill-rss-mb", metavar="MB", help="kill a child over this (WORKER_KIT_KILL_RSS_MB)")
    return p


def _number(name: str, raw: Any, *, minimum: float, integer: bool = False, strict: bool = False) -> Any:
    try:
        value = int(raw) if integer else float(raw)
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}, got {raw!r}") from None
    if value < minimum or (strict and value == minimum) or value != value:
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ConfigError(f"{name} must be {bound}, got {raw!r}")
    return value


def load_settings(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    *,
    prog: str | None = None,
) -> WorkerSettings:
    """Settings from flags, then environment, then `defaults` (start()'s options).

    Past our usual 60 lines on purpose: it is the one table of every worker setting (flag,
    variable, default, check), which reads best in one place.

    Raises ConfigError with a one-line reason; `--help` prints the help and exits 0.
    """
    env = os.environ if env is None else env
    defaults = dict(defaults or {})
    unknown = set(defaults) - {f.name for f in dataclasses.fields(WorkerSettings)}
    if unknown:
        raise ConfigError(f"unknown worker option(s): {', '.join(sorted(unknown))}")
    # No flags (the usual container start): no parser either; building one imports shutil and
    # the compression modules behind it, a few percent of a worker's cold start.
    args = argparse.Namespace()
    if argv:
        args = _parser(prog or os.path.basename(sys.argv[0]) or "worker").parse_args(list(argv))

    def pick(flag: str, var: str, key: str) -> Any:
        value = getattr(args, flag, None)
        if value is None:
            value = env.get(var) or None
        return defaults.get(key) if value is None else value

    url = pick("url", "WORKER_KIT_URL", "url")
    hosted = None if url else HostedEnv.from_env(env)
    if hosted is not None:
        url = hosted.get_job.split("?", 1)[0]
    elif not url:
        raise ConfigError(
            "WORKER_KIT_URL is not set: set it (or --url) to the endpoint's base URL, e.g. "
            "http://127.0.0.1:8000/v2/my-endpoint, or run locally with --test-input '{\"input\": ...}' "
            "or --serve"
        )
    url = str(url).rstrip("/")
    if hosted is None and (not url.startswith(("http://", "https://")) or "/v2/" not in url):
        raise ConfigError(f"WORKER_KIT_URL must look like http://HOST:PORT/v2/ENDPOINT_ID, got {url!r}")

    raw = pick("concurrency", "WORKER_KIT_CONCURRENCY", "concurrency")
    concurrency = None if raw is None else _number("WORKER_KIT_CONCURRENCY", raw, minimum=1, integer=True)
    if concurrency is not None and concurrency > 1000:
        raise ConfigError(f"WORKER_KIT_CONCURRENCY must be at most 1000, got {raw!r}")
    raw = pick("timeout", "WORKER_KIT_TIMEOUT", "timeout_s")
    timeout = None if raw is None else _number("WORKER_KIT_TIMEOUT", raw, minimum=0, strict=True)
    raw = pick("grace", "WORKER_KIT_GRACE", "grace_s")
    grace = 30.0 if raw is None else _number("WORKER_KIT_GRACE", raw, minimum=0)
    raw = pick("stuck_grace", "WORKER_KIT_STUCK_GRACE", "stuck_grace_s")
    stuck = 5.0 if raw is None else _number("WORKER_KIT_STUCK_GRACE", raw, minimum=0, strict=True)
    level = str(pick("log_level", "WORKER_KIT_LOG_LEVEL", "log_level") or "INFO").upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"WORKER_KIT_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    fmt = str(pick("log_format", "WORKER_KIT_LOG_FORMAT", "log_format") or "text").lower()
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"WORKER_KIT_LOG_FORMAT must be text or json, got {fmt!r}")
    on_stuck = _choice("WORKER_KIT_ON_STUCK", pick("on_stuck", "WORKER_KIT_ON_STUCK", "on_stuck"), ON_STUCK)
    raw = pick("isolation", "WORKER_KIT_ISOLATION", "isolation")
    isolation = _choice("WORKER_KIT_ISOLATION", raw, ISOLATIONS)
    raw = pick("max_rss_mb", "WORKER_KIT_MAX_RSS_MB", "max_rss_mb")
    max_rss = None if raw is None else _number("WORKER_KIT_MAX_RSS_MB", raw, minimum=0, strict=True)
    raw = pick("kill_rss_mb", "WORKER_KIT_KILL_RSS_MB", "kill_rss_mb")
    kill_rss = None if raw is None else _number("WORKER_KIT_KILL_RSS_MB", raw, minimum=0, strict=True)
    return WorkerSettings(
        url=url,
        api_key=pick("api_key", "WORKER_KIT_API_KEY", "api_key"),
        concurrency=concurrency,
        timeout_s=timeout,
        grace_s=grace,
        stuck_grace_s=stuck,
        log_level=level,
        log_format=fmt,
        worker_id=pick("worker_id", "WORKER_KIT_WORKER_ID", "worker_id"),
        on_stuck=on_stuck or "restart",
        isolation=isolation,
        max_rss_mb=max_rss,
        kill_rss_mb=kill_rss,
        hosted=hosted,
    )


def _choice(name: str, raw: Any, choices: Sequence[str]) -> str | None:
    if raw is None:
        return None
    value = str(raw).strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be {' or '.join(choices)}, got {raw!r}")
    return value
