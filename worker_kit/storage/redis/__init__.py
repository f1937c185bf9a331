"""The Redis backend: several service replicas share one Redis (docs/storage.md)."""

from .backend import RedisStorage

__all__ = ["RedisStorage"]
