"""The Redis backend's URL forms and key layout (docs/storage.md, "Redis key layout").

Every key of one endpoint starts with `PREFIX:{ENDPOINT}:`; the braces are a Redis Cluster
hash tag, so one endpoint's keys share a slot and each Lua script touches one slot only.
The endpoint id is percent-encoded in keys, so no id can break out of its hash tag.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from ...errors import ConfigError

DEFAULT_PREFIX = "wk"
SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True, slots=True)
class RedisURL:
    """A storage URL split into what redis-py connects to and our own options."""

    connect_url: str
    prefix: str = DEFAULT_PREFIX

    @classmethod
    def parse(cls, url: str) -> RedisURL:
        """`redis://[:password@]host:port/db`, `rediss://…` (TLS) or `unix:///path/redis.sock?db=N`,
        with an optional `prefix=NAME` query option (default `wk`) that namespaces every key, so
        several deployments or test runs can share one Redis. Other query options go to redis-py."""
        scheme = url.split("://", 1)[0]
        if scheme not in SCHEMES or "://" not in url:
            raise ConfigError(f"not a Redis URL: {url!r} (expected redis://HOST:PORT/DB, rediss:// or unix://)")
        # Split by hand: urlunsplit would turn unix:///path into unix:/path.
        base, _, raw_query = url.partition("?")
        query = urllib.parse.parse_qsl(raw_query, keep_blank_values=True)
        prefix = DEFAULT_PREFIX
        rest = []
        for key, value in query:
            if key == "prefix":
                if not value or any(c in value for c in "{}: "):
                    raise ConfigError(
                        f"prefix={value!r} in {url!r}: use a non-empty name without '{{', '}}', ':' or spaces"
                    )
                prefix = value
            else:
                rest.append((key, value))
        connect = f"{base}?{urllib.parse.urlencode(rest)}" if rest else base
        return cls(connect_url=connect, prefix=prefix)


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        #: The set of endpoints that have jobs: the sweep walks it (a key of its own slot).
        self.endpoints = f"{prefix}:endpoints"
        #: Pub/sub channel carrying wake-ups between service replicas.
        self.wakeups = f"{prefix}:wake"

    def base(self, endpoint: str) -> str:
        """KEYS[1] of every script: the endpoint's key base, with its hash tag."""
        return f"{self.prefix}:{{{urllib.parse.quote(endpoint, safe='')}}}:"
