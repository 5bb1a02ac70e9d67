"""Django's PostgreSQL backend (psycopg 3) with fastpool underneath; see fastpool.django.

``OPTIONS["pool"]`` is True, a dict of fastpool's options, or, as for Django's own
backend, a dict of psycopg_pool's (recognised by ``min_size`` or ``max_size``:
``min_size``, ``max_size``, ``timeout``, ``max_waiting``, ``max_lifetime``, ``max_idle``
in seconds, ``name``, ``configure``, ``check``, ``reset``; ``num_workers`` and
``reconnect_timeout`` are accepted and have no use here). A pool timeout is both
``fastpool.PoolTimeout`` and ``psycopg_pool.PoolTimeout``. The rest of ``OPTIONS``
(``isolation_level``, ``assume_role``, ``server_side_binding``, libpq's parameters) means
what it means to Django. Without ``"pool"`` this is Django's backend, unchanged.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLDatabaseWrapper
from psycopg import IsolationLevel
from psycopg.pq import TransactionStatus

import fastpool
from fastpool.django import PoolingMixin

# psycopg_pool's option -> fastpool's (None: accepted, no use here).
_PSYCOPG_POOL_OPTIONS: dict[str, str | None] = {
    "min_size": "min_idle", "max_size": "max_open", "timeout": "timeout",
    "max_waiting": "max_waiting", "max_lifetime": "max_lifetime", "max_idle": "max_idle_time",
    "name": "name", "configure": "configure", "check": "check", "reset": "reset",
    "num_workers": None, "reconnect_timeout": None,
}


class DatabaseWrapper(PoolingMixin, PostgreSQLDatabaseWrapper):  # type: ignore[misc]
    _fastpool_driver = "postgresql"

    def _isolation_level(self) -> IsolationLevel:
        """The isolation level OPTIONS asks for (Django's default: READ COMMITTED)."""
        level = self.settings_dict["OPTIONS"].get("isolation_level")
        if level is None:
            return IsolationLevel.READ_COMMITTED
        try:
            return IsolationLevel(level)
        except ValueError:
            raise ImproperlyConfigured(
                f"Invalid transaction isolation level {level} specified. Use one of the"
                f" psycopg.IsolationLevel values.") from None

    def _fastpool_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if "min_size" not in options and "max_size" not in options:
            return options  # fastpool's own
        unknown = set(options) - set(_PSYCOPG_POOL_OPTIONS)
        if unknown:
            raise ImproperlyConfigured(
                f"OPTIONS['pool'] of database {self.alias!r}: {', '.join(sorted(unknown))} not"
                f" among psycopg_pool's options this backend takes"
                f" ({', '.join(_PSYCOPG_POOL_OPTIONS)})")
        out: dict[str, Any] = {}
        for key, value in options.items():
            name = _PSYCOPG_POOL_OPTIONS[key]
            if name is not None:
                out[name] = value
        if "max_open" not in out:  # psycopg_pool: max_size defaults to min_size
            out["max_open"] = out.get("min_idle", 4)
        if out.get("max_waiting") == 0:
            out["max_waiting"] = None  # psycopg_pool's "unlimited"
        return out

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        if self.pool is None:
            return super().get_new_connection(conn_params)
        # What Django's own get_new_connection sets on the wrapper before its pool hands
        # out a connection.
        self.isolation_level = self._isolation_level()
        try:
            return super().get_new_connection(conn_params)
        except fastpool.PoolTimeout as exc:
            from fastpool.psycopg import PoolTimeout

            raise PoolTimeout(str(exc)) from exc

    def _connect_for_pool(self, params: dict[str, Any]) -> Any:
        # Django's connect minus its psycopg_pool branch: what its pool's configure does
        # (time zone, role) is done once per physical connection, here. (It may run on
        # the pool's opener thread: nothing is set on the wrapper.)
        conn = self.Database.connect(**{**params, "autocommit": True})
        if "isolation_level" in self.settings_dict["OPTIONS"]:
            conn.isolation_level = self._isolation_level()
        self._configure_connection(conn)
        return conn

    def _in_transaction(self, raw: Any) -> bool:
        return bool(raw.info.transaction_status != TransactionStatus.IDLE)

    def _autocommit_of(self, raw: Any) -> bool:
        return bool(raw.autocommit)  # read locally, no round trip

    def _restore_autocommit(self, raw: Any) -> None:
        raw.autocommit = True
