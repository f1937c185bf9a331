"""The embedded SQLite backend: `backend` (the Storage), `engine` (the group-commit writer and
reader threads), `schema` (tables and URL), `ops` (the statements behind each operation) and
`sweep` (time limits and retention)."""

from .backend import SQLiteStorage

__all__ = ["SQLiteStorage"]
