"""Driver dialects: how to open, prepare, check and close one kind of DB-API connection.

A dialect holds what differs between drivers; the pool itself never imports a driver.
One module per database, its drivers together: ``mysql`` (mysqlclient, PyMySQL; asyncmy and
aiomysql for asyncio), ``sqlite`` (sqlite3; aiosqlite); ``postgresql`` (psycopg 3, sync and async); ``base`` is the generic DB-API
dialect they build on.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import ERR_BROKEN, ERR_OK, ERR_RETRY, Connect, Dialect, driver_error_class
from .mysql import (
    DEFAULT_CONNECT_TIMEOUT, AioMySQLDialect, AsyncMyDialect, MySQLDialect, PyMySQLDialect,
)
from .postgresql import AsyncpgDialect, AsyncPostgreSQLDialect, PostgreSQLDialect
from .sqlite import AioSQLiteDialect, SQLiteDialect

__all__ = [
    "ERR_BROKEN", "ERR_OK", "ERR_RETRY", "Connect", "Dialect", "DEFAULT_CONNECT_TIMEOUT",
    "MySQLDialect", "PyMySQLDialect", "SQLiteDialect", "AsyncMyDialect", "AioMySQLDialect",
    "AioSQLiteDialect", "PostgreSQLDialect", "AsyncPostgreSQLDialect", "AsyncpgDialect", "DIALECTS", "get_dialect",
    "guess_dialect", "driver_error_class",
]

DIALECTS: dict[str, type[Dialect]] = {
    "generic": Dialect,
    "mysql": MySQLDialect,
    "mysqldb": MySQLDialect,
    "mysqlclient": MySQLDialect,
    "pymysql": PyMySQLDialect,
    "sqlite": SQLiteDialect,
    "sqlite3": SQLiteDialect,
    "postgresql": PostgreSQLDialect,
    "postgres": PostgreSQLDialect,
    "psycopg": PostgreSQLDialect,
    # asyncio drivers (fastpool.aio)
    "asyncmy": AsyncMyDialect,
    "aiomysql": AioMySQLDialect,
    "aiosqlite": AioSQLiteDialect,
    "psycopg_async": AsyncPostgreSQLDialect,
    "asyncpg": AsyncpgDialect,
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
    """Pick the dialect from the module a connection object comes from (for fastpool.aio:
    the driver's connection behind its SyncConnection)."""
    module = type(getattr(raw, "driver_connection", raw)).__module__.split(".", 1)[0]
    if module == "asyncmy":
        return AsyncMyDialect()
    if module == "aiomysql":
        return AioMySQLDialect()
    if module == "aiosqlite":
        return AioSQLiteDialect()
    if module == "MySQLdb":
        return MySQLDialect()
    if module == "pymysql":
        return PyMySQLDialect()
    if module in ("sqlite3", "_sqlite3"):
        return SQLiteDialect()
    if module == "asyncpg" or type(getattr(raw, "driver_connection", raw)).__name__ == "AsyncpgFace":
        return AsyncpgDialect()
    if module == "psycopg":
        return AsyncPostgreSQLDialect() if hasattr(raw, "driver_connection") else PostgreSQLDialect()
    return Dialect()
