"""Django's MySQL backend (mysqlclient, or PyMySQL installed as MySQLdb) with fastpool underneath; see fastpool.django."""

from __future__ import annotations

from typing import Any

from django.db.backends.mysql.base import Database
from django.db.backends.mysql.base import DatabaseWrapper as MySQLDatabaseWrapper

from fastpool.django import PoolingMixin


class DatabaseWrapper(PoolingMixin, MySQLDatabaseWrapper):  # type: ignore[misc]
    # mysqlclient, or PyMySQL where a gevent service ran pymysql.install_as_MySQLdb().
    _fastpool_driver = "pymysql" if Database.__name__ == "pymysql" else "mysql"

    def _in_transaction(self, raw: Any) -> bool:
        # Autocommit off means a transaction may be open; with it on, Django's atomic
        # blocks have ended (a request cannot leave one open without in_atomic_block).
        return not raw.get_autocommit()

    def _autocommit_of(self, raw: Any) -> bool:
        return bool(raw.get_autocommit())  # read locally, no round trip

    def _restore_autocommit(self, raw: Any) -> None:
        raw.autocommit(True)
