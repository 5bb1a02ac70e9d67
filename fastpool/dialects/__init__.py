"""Driver dialects: how to open, prepare, check and close one kind of DB-API connection.

A dialect holds what differs between drivers; the pool itself never imports a driver.
One module per database, its drivers together: ``mysql`` (mysqlclient, PyMySQL),
``sqlite`` (sqlite3); ``base`` is the generic DB-API dialect they build on.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import ERR_BROKEN, ERR_OK, ERR_RETRY, Connect, Dialect, driver_error_class
from .mysql import DEFAULT_CONNECT_TIMEOUT, MySQLDialect, PyMySQLDialect
from .sqlite import SQLiteDialect

__all__ = [
    "ERR_BROKEN", "ERR_OK", "ERR_RETRY", "Connect", "Dialect", "DEFAULT_CONNECT_TIMEOUT",
    "MySQLDialect", "PyMySQLDialect", "SQLiteDialect", "DIALECTS", "get_dialect",
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
    if module == "pymysql":
        return PyMySQLDialect()
    if module in ("sqlite3", "_sqlite3"):
        return SQLiteDialect()
    return Dialect()
