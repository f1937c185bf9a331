"""Storage backends behind one interface (`Storage`), chosen by URL."""

from __future__ import annotations

from ..errors import ConfigError, MissingDependency
from .base import JobPage, Notifier, StopSignal, Storage, SweepResult, WorkerInfo

__all__ = [
    "JobPage", "Notifier", "StopSignal", "Storage", "SweepResult", "WorkerInfo", "open_storage", "redacted",
]  # fmt: skip


def redacted(url: str) -> str:
    """`url` with its password, if any, replaced by `***`: fit for logs and error messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"


def open_storage(url: str) -> Storage:
    """A backend for `sqlite:///path.db` (or `sqlite://:memory:`) or `redis://host:port/db`.

    The backend is returned unopened: call `await storage.open()`.
    """
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "sqlite":
        from .sqlite.backend import SQLiteStorage

        return SQLiteStorage.from_url(url)
    if scheme in ("redis", "rediss", "unix"):
        try:
            import redis  # noqa: F401 - only to say clearly that the extra is missing
        except ImportError:
            raise MissingDependency(
                f"the storage URL {redacted(url)!r} needs the redis package: pip install 'worker-kit[redis]'"
            ) from None
        from .redis import RedisStorage

        return RedisStorage.from_url(url)
    raise ConfigError(f"unknown storage URL {url!r}: use sqlite:///PATH or redis://HOST:PORT/DB")
