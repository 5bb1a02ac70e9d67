"""Driver dialects: how to open, prepare, check and close one kind of DB-API connection.

A dialect holds what differs between drivers; the pool itself never imports a driver.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Callable

from .errors import ConfigError

Connect = Callable[[], Any]


class Dialect:
    """The generic DB-API 2 dialect: no socket to poll, close() to close."""

    name = "generic"

    def connect_factory(self, kwargs: dict[str, Any]) -> Connect:
        raise ConfigError(f"the {self.name!r} dialect cannot open URLs; use fastpool.Pool(connect)")

    def prepare(self, raw: Any) -> None:
        """Make a fresh connection ready for pooling (e.g. autocommit on)."""

    def fileno(self, raw: Any) -> int:
        """The connection's socket, polled for liveness at checkout; -1 when unknown."""
        return -1

    def close(self, raw: Any) -> None:
        raw.close()

    def neutralise_inherited(self, raw: Any) -> None:
        """In a forked child: make sure dropping ``raw`` cannot touch the parent's socket.

        The socket is replaced by /dev/null under the same descriptor number, so a close
        (and a driver's goodbye packet) goes nowhere, while the parent's socket stays open.
        """
        fd = self.fileno(raw)
        if fd < 0:
            return
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


class MySQLDialect(Dialect):
    """mysqlclient (MySQLdb), the first-class driver."""

    name = "mysql"

    def connect_factory(self, kwargs: dict[str, Any]) -> Connect:
        try:
            import MySQLdb
        except ImportError:
            raise ConfigError(
                "mysql:// needs mysqlclient: pip install 'fastpool[mysql]'"
            ) from None

        def connect() -> Any:
            return MySQLdb.connect(**kwargs)

        return connect

    def prepare(self, raw: Any) -> None:
        # Statements outside a transaction run in autocommit, so giving a connection back
        # needs no round trip. The driver never reconnects by itself under the pool
        # (mysqlclient's default), which would silently lose session settings.
        raw.autocommit(True)

    def fileno(self, raw: Any) -> int:
        return int(raw.fileno())


_memory_ids = itertools.count(1)


class SQLiteDialect(Dialect):
    """The standard library's sqlite3: the embedded default, needs no server."""

    name = "sqlite"

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


DIALECTS: dict[str, type[Dialect]] = {
    "generic": Dialect,
    "mysql": MySQLDialect,
    "mysqldb": MySQLDialect,
    "sqlite": SQLiteDialect,
    "sqlite3": SQLiteDialect,
}


def get_dialect(name: str | Dialect) -> Dialect:
    if isinstance(name, Dialect):
        return name
    try:
        return DIALECTS[str(name).lower()]()
    except KeyError:
        raise ConfigError(
            f"unknown driver {name!r} (known: {', '.join(sorted(DIALECTS))})"
        ) from None


def guess_dialect(raw: Any) -> Dialect:
    """Pick the dialect from the module a connection object comes from."""
    module = type(raw).__module__.split(".", 1)[0]
    if module == "MySQLdb":
        return MySQLDialect()
    if module in ("sqlite3", "_sqlite3"):
        return SQLiteDialect()
    return Dialect()
