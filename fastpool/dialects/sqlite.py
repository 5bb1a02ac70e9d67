"""SQLite through the standard library's sqlite3 (the embedded default), and through
aiosqlite for fastpool.aio."""

from __future__ import annotations

import itertools
import os
from typing import Any

from .base import ERR_BROKEN, ERR_OK, Connect, Dialect


_memory_ids = itertools.count(1)


def _autocommit_legacy(conn: Any) -> None:
    """sqlite3 in autocommit with transactions by explicit BEGIN, which commit() and
    rollback() end (Python 3.12's autocommit=True would turn those two into no-ops)."""
    import sqlite3

    if getattr(conn, "autocommit", None) not in (None, -1):  # -1: LEGACY_TRANSACTION_CONTROL
        conn.autocommit = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1)  # 3.12+
    if conn.in_transaction:
        conn.rollback()
    conn.isolation_level = None


class SQLiteDialect(Dialect):
    """The standard library's sqlite3: the embedded default, needs no server."""

    name = "sqlite"
    cursor_iterates_in_c = True
    cancel_method = "interrupt"

    def interrupt(self, raw: Any) -> None:
        raw.interrupt()

    def connect_factory(self, kwargs: dict[str, Any]) -> Connect:
        import sqlite3

        database, kwargs = self._connect_args(kwargs)

        def connect() -> Any:
            return sqlite3.connect(database, **kwargs)

        if not kwargs["check_same_thread"]:
            self.any_thread = True  # no need to try each connection from another thread
        return connect

    # True when the pool's own connect made its connections usable from any thread.
    any_thread = False

    def _connect_args(self, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        kwargs = dict(kwargs)
        database = kwargs.pop("database")
        if database == ":memory:":
            # One shared in-memory database per pool; it lives while a connection is open.
            database = f"file:fastpool-mem-{os.getpid()}-{next(_memory_ids)}?mode=memory&cache=shared"
            kwargs["uri"] = True
        # Connections move between threads through the pool (one thread at a time).
        kwargs.setdefault("check_same_thread", False)
        kwargs.setdefault("isolation_level", None)  # autocommit, transactions via BEGIN
        return database, kwargs

    def classify(self, exc: BaseException) -> int:
        import sqlite3

        if not isinstance(exc, Exception):
            return ERR_BROKEN
        if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
            return ERR_BROKEN
        # sqlite3 reports plain SQL errors ("no such table") as OperationalError too;
        # an embedded database has no connection to lose.
        return ERR_OK

    def prepare(self, raw: Any) -> None:
        # Autocommit, as every pooled connection is, whoever made it: a connection from a
        # user's own sqlite3.connect() starts in sqlite3's implicit-transaction mode, where
        # an INSERT opens a transaction that nobody commits (other writers get "database is
        # locked", and the rows are gone at close). Explicit BEGIN / commit() still work.
        super().prepare(raw)
        if not self.any_thread and not hasattr(raw, "driver_connection"):
            _check_usable_from_any_thread(raw)
        conn = getattr(raw, "driver_connection", raw)  # fastpool.aio: the aiosqlite one
        if conn.isolation_level is None and getattr(conn, "autocommit", None) in (None, -1):
            return  # already so (the URL's connect asks for it)
        if hasattr(raw, "driver_connection"):
            # aiosqlite: its sqlite3 connection belongs to aiosqlite's own thread.
            raw.wait(conn._execute(_autocommit_legacy, conn._conn))
        else:
            _autocommit_legacy(conn)

    def reset(self, raw: Any) -> None:
        if raw.in_transaction:
            raw.rollback()

    def begin(self, raw: Any) -> None:
        raw.execute("BEGIN")


class AioSQLiteDialect(SQLiteDialect):
    """aiosqlite (sqlite3 on a thread of its own per connection): ``fastpool.aio.open(
    "sqlite://...")``. Its connections reach the dialect through fastpool.aio's
    SyncConnection, so sqlite3's reset, BEGIN and interrupt serve it unchanged."""

    name = "aiosqlite"
    is_async = True
    cursor_iterates_in_c = False

    def connect_factory(self, kwargs: dict[str, Any]) -> Connect:
        try:
            import aiosqlite
        except ImportError:
            from ..errors import ConfigError

            raise ConfigError("sqlite:// under fastpool.aio needs aiosqlite:"
                              " pip install 'fastpool[aiosqlite]'") from None
        database, kwargs = self._connect_args(kwargs)

        async def connect() -> Any:
            return await aiosqlite.connect(database, **kwargs)

        return connect

    def classify(self, exc: BaseException) -> int:
        if isinstance(exc, ValueError) and "no active connection" in str(exc):
            return ERR_BROKEN  # aiosqlite's own report of a closed connection
        return super().classify(exc)


def _check_usable_from_any_thread(raw: Any) -> None:
    """A user's own sqlite3.connect() is bound to the thread that made it (sqlite3's
    default check_same_thread=True), and a pool's connections are made on its opener's
    thread and used from any thread: every statement would fail with sqlite3's
    ProgrammingError, and even close() from another thread. Tried once, from another
    thread, at connect: refused there with the fix in the message."""
    import sqlite3
    import threading

    refused: list[BaseException] = []

    def attempt() -> None:
        try:
            raw.cursor().close()
        except sqlite3.ProgrammingError as exc:
            refused.append(exc)

    t = threading.Thread(target=attempt, name="fastpool-sqlite-check")
    t.start()
    t.join()
    if refused:
        from ..errors import ConfigError

        raise ConfigError("this sqlite3 connection can only be used in the thread that made"
                          " it, and a pool uses its connections from any thread: connect with"
                          " sqlite3.connect(..., check_same_thread=False)") from None
