"""Redis storage URLs: the forms docs/storage.md lists, the prefix option, clear errors."""

from __future__ import annotations

import pytest

from worker_kit.errors import ConfigError, StorageError
from worker_kit.storage import open_storage
from worker_kit.storage.redis import RedisStorage
from worker_kit.storage.redis.keys import Keys, RedisURL


@pytest.mark.parametrize(
    ("url", "connect", "prefix"),
    [
        ("redis://127.0.0.1:6379/15", "redis://127.0.0.1:6379/15", "wk"),
        ("redis://:pw@host:6380/2?prefix=prod", "redis://:pw@host:6380/2", "prod"),
        ("rediss://host:6380/0?prefix=a-b&ssl_cert_reqs=required", "rediss://host:6380/0?ssl_cert_reqs=required",
         "a-b"),
        ("unix:///run/redis.sock?db=3&prefix=x", "unix:///run/redis.sock?db=3", "x"),
    ],
)  # fmt: skip
def test_url_forms(url: str, connect: str, prefix: str) -> None:
    parsed = RedisURL.parse(url)
    assert (parsed.connect_url, parsed.prefix) == (connect, prefix)
    storage = open_storage(url)
    assert isinstance(storage, RedisStorage) and storage.keys.prefix == prefix


@pytest.mark.parametrize("bad", ["redis://h/0?prefix=", "redis://h/0?prefix=a:b", "redis://h/0?prefix={x}"])
def test_bad_prefix_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="prefix"):
        RedisURL.parse(bad)


def test_endpoint_ids_cannot_escape_their_hash_tag() -> None:
    keys = Keys("wk")
    assert keys.base("ep-1") == "wk:{ep-1}:"
    assert keys.base("a}b{c:d") == "wk:{a%7Db%7Bc%3Ad}:"


async def test_unreachable_redis_is_one_clear_error() -> None:
    storage = RedisStorage.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(StorageError, match="cannot reach Redis"):
        await storage.open()
