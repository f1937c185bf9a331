"""The hosted service's worker environment, read without importing the transport (settings use it
at start-up, where every import costs cold-start time)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError

DEFAULT_PING_INTERVAL_MS = 10_000


@dataclass(frozen=True, slots=True)
class HostedEnv:
    """The hosted service's worker environment: URL templates with `$ID` and `$RUNPOD_POD_ID`."""

    get_job: str
    post_output: str
    post_stream: str
    ping: str | None
    api_key: str | None
    pod_id: str
    ping_interval_ms: int = DEFAULT_PING_INTERVAL_MS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HostedEnv | None:
        """The hosted environment, or None when `RUNPOD_WEBHOOK_GET_JOB` is not set."""
        get_job = env.get("RUNPOD_WEBHOOK_GET_JOB")
        if not get_job:
            return None
        missing = [v for v in ("RUNPOD_WEBHOOK_POST_OUTPUT", "RUNPOD_WEBHOOK_POST_STREAM") if not env.get(v)]
        if missing:
            raise ConfigError(
                f"RUNPOD_WEBHOOK_GET_JOB is set but {' and '.join(missing)} not: the hosted protocol needs "
                "the job-done and job-stream URL templates too"
            )
        if "/job-take/" not in get_job:
            raise ConfigError(f"RUNPOD_WEBHOOK_GET_JOB must contain /job-take/, got {get_job!r}")
        raw = env.get("RUNPOD_PING_INTERVAL") or str(DEFAULT_PING_INTERVAL_MS)
        try:
            interval = int(raw)
        except ValueError:
            raise ConfigError(f"RUNPOD_PING_INTERVAL must be milliseconds, got {raw!r}") from None
        if interval < 100:
            raise ConfigError(f"RUNPOD_PING_INTERVAL must be at least 100 ms, got {raw!r}")
        return cls(
            get_job=get_job,
            post_output=env["RUNPOD_WEBHOOK_POST_OUTPUT"],
            post_stream=env["RUNPOD_WEBHOOK_POST_STREAM"],
            ping=env.get("RUNPOD_WEBHOOK_PING") or None,
            api_key=env.get("RUNPOD_AI_API_KEY") or None,
            pod_id=env.get("RUNPOD_POD_ID") or f"wk-{os.urandom(6).hex()}",  # no uuid: it imports platform
            ping_interval_ms=interval,
        )

    @classmethod
    def from_os(cls) -> HostedEnv | None:
        return cls.from_env(os.environ)
