"""Django's SQLite backend with fastpool underneath; see fastpool.django.

An in-memory database is never pooled: Django keeps its one connection open for the life
of the process (closing it would destroy the database), and so does this backend.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteDatabaseWrapper

from fastpool.django import PoolingMixin


class DatabaseWrapper(PoolingMixin, SQLiteDatabaseWrapper):  # type: ignore[misc]
    _fastpool_driver = "sqlite"

    def _poolable(self) -> bool:
        return not self.is_in_memory_db()

    def _in_transaction(self, raw: Any) -> bool:
        return bool(raw.in_transaction)
