"""SQLite through the standard library's sqlite3: the embedded default."""

from __future__ import annotations

import itertools
import os
from typing import Any

from .base import ERR_BROKEN, ERR_OK, Connect, Dialect


_memory_ids = itertools.count(1)


class SQLiteDialect(Dialect):
    """The standard library's sqlite3: the embedded default, needs no server."""

    name = "sqlite"
    cursor_iterates_in_c = True
    cancel_method = "interrupt"

    def interrupt(self, raw: Any) -> None:
        raw.interrupt()

    def connect_factory(self, kwargs: dict[str, Any]) -> Connect:
        import sqlite3

        kwargs = dict(kwargs)
        database = kwargs.pop("database")
        if database == ":memory:":
            # One shared in-memory database per pool; it lives while a connection is open.
            database = f"file:fastpool-mem-{os.getpid()}-{next(_memory_ids)}?mode=memory&cache=shared"
            kwargs["uri"] = True
        # Connections move between threads through the pool (one thread at a time).
        kwargs.setdefault("check_same_thread", False)
        kwargs.setdefault("isolation_level", None)  # autocommit, transactions via BEGIN

        def connect() -> Any:
            return sqlite3.connect(database, **kwargs)

        return connect

    def classify(self, exc: BaseException) -> int:
        import sqlite3

        if not isinstance(exc, Exception):
            return ERR_BROKEN
        if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
            return ERR_BROKEN
        # sqlite3 reports plain SQL errors ("no such table") as OperationalError too;
        # an embedded database has no connection to lose.
        return ERR_OK

    def reset(self, raw: Any) -> None:
        if raw.in_transaction:
            raw.rollback()

    def begin(self, raw: Any) -> None:
        raw.execute("BEGIN")
