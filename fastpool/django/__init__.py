"""Django database backends on fastpool: ``fastpool.django.mysql``,
``fastpool.django.postgresql`` and ``fastpool.django.sqlite3`` (``pip install
fastpool[django]``).

    DATABASES = {"default": {
        "ENGINE": "fastpool.django.mysql", "NAME": "shop", ..., "CONN_MAX_AGE": 0,
        "OPTIONS": {"charset": "utf8mb4", "pool": {"max_open": 20, "min_idle": 2, "timeout": 10}},
    }}

The shape of Django's own PostgreSQL pooling: ``OPTIONS["pool"]`` is True or a dict of
fastpool options; one pool per database alias per process, made at first use (fastpool
pools are fork-safe); ``connection.close()`` at the end of a request gives the connection
back; ``CONN_MAX_AGE`` other than 0 with a pool is ``ImproperlyConfigured``;
``connection.close_pool()`` closes it and ``connection.pool.stats()`` reads it. Without
``"pool"`` the backends are Django's own, unchanged.

What Django sets on a new connection (the connect parameters and ``init_command``, the
isolation level, ``SQL_AUTO_IS_NULL``) is applied once per physical connection. At give-back
a transaction left open is rolled back and autocommit restored; a connection whose session
a request changed in ways that cannot be undone cheaply (``SET``, ``LOCK TABLES``,
temporary tables, ``USE``, ``PRAGMA`` on SQLite) or that broke is closed instead of pooled.
"""

from __future__ import annotations

import contextlib
import re
import threading
from typing import Any, Iterator

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS

import fastpool
from fastpool.dialects.base import ERR_OK
from fastpool.errors import ConfigError
from fastpool.multihost.options import NAMES as HOST_LIST_OPTIONS

__all__ = ["PoolingMixin", "ReplicaRouter"]

# One pool per alias in this process: (the connect parameters it was made for, the pool).
_POOLS: dict[str, tuple[str, fastpool.Pool]] = {}
_POOLS_LOCK = threading.Lock()

# Statements after which a connection's session is not what the pool handed out.
_SESSION_CHANGING = re.compile(
    r"^\s*(?:SET\b(?!\s+TRANSACTION\b)|LOCK\s|UNLOCK\s|CREATE\s+TEMPORARY\s|USE\s|PRAGMA\s)",
    re.IGNORECASE,
)


_READY = object()


class _TrackingCursor:
    """The backend's cursor, noting statements that change the session (see above)."""

    __slots__ = ("_cursor", "_owner")

    def __init__(self, cursor: Any, owner: Any) -> None:
        self._cursor = cursor
        self._owner = owner

    def _note(self, query: Any) -> None:
        if isinstance(query, str) and _SESSION_CHANGING.match(query):
            self._owner._fastpool_dirty = True

    def execute(self, query: Any, args: Any = None) -> Any:
        self._note(query)
        try:
            return self._cursor.execute(query, args)
        except Exception as exc:
            self._owner._fastpool_failed(exc)
            raise

    def executemany(self, query: Any, args: Any) -> Any:
        self._note(query)
        try:
            return self._cursor.executemany(query, args)
        except Exception as exc:
            self._owner._fastpool_failed(exc)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __iter__(self) -> Any:
        return iter(self._cursor)


class PoolingMixin:
    """Mixed in before a Django backend's DatabaseWrapper: pooling when OPTIONS["pool"]."""

    # What the Django DatabaseWrapper this is mixed into provides.
    settings_dict: dict[str, Any]
    alias: str
    connection: Any
    in_atomic_block: bool

    _fastpool_driver = "generic"
    _fastpool_rec: Any = None
    _fastpool_pool: Any = None
    _fastpool_dirty = False
    _fastpool_tracking = True
    _fastpool_constraints_off = False

    # ---- the pool ----------------------------------------------------------------------
    def _pool_options(self) -> dict[str, Any] | None:
        options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not options or not self._poolable():
            return None
        if options is True:
            return {}
        if not isinstance(options, dict):
            raise ImproperlyConfigured(
                f"OPTIONS['pool'] must be True or a dict of fastpool options, got {options!r}")
        return self._fastpool_options(dict(options))

    def _fastpool_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """OPTIONS["pool"] as fastpool options (a backend may accept other spellings)."""
        return options

    def _poolable(self) -> bool:
        return True

    @property
    def pool(self) -> fastpool.Pool | None:
        """This alias's fastpool.Pool in this process, or None when not pooling."""
        options = self._pool_options()
        if options is None:
            return None
        if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
            raise ImproperlyConfigured(
                "Pooling doesn't support persistent connections. Set CONN_MAX_AGE to 0 with"
                " OPTIONS['pool'] (the pool keeps the connections).")
        # What the connections depend on, read cheaply (this runs at every connect): the
        # test runner changes NAME in place, and a changed setting needs a new pool.
        sd = self.settings_dict
        key = repr((sd["NAME"], sd["USER"], sd["PASSWORD"], sd["HOST"], sd["PORT"],
                    sorted(sd["OPTIONS"].items())))
        alias = self.alias
        stale = None
        with _POOLS_LOCK:
            entry = _POOLS.get(alias)
            if entry is not None and entry[0] == key:
                return entry[1]
            # First use, or the settings changed (the test database replaces the real one):
            # a new pool, and the old one closed.
            params = self.get_connection_params()
            options.setdefault("name", f"django:{alias}")
            try:
                if HOST_LIST_OPTIONS.intersection(options) or "," in str(sd["HOST"] or ""):
                    pool = self._routed_pool(params, options)
                else:
                    pool = fastpool.Pool(lambda: self._connect_for_pool(params),
                                         driver=self._fastpool_driver, **options)
            except ConfigError as exc:
                raise ImproperlyConfigured(f"OPTIONS['pool'] of database {alias!r}: {exc}") from exc
            if entry is not None:
                stale = entry[1]
            _POOLS[alias] = (key, pool)
        if stale is not None:
            stale.close()
        return pool

    def _routed_pool(self, params: dict[str, Any], options: dict[str, Any]) -> fastpool.Pool:
        """A host list (HOST "h1:3306,h2:3306", or OPTIONS["pool"]["hosts"], or a host-list
        option such as target): a fastpool MultiHostPool whose connects are this backend's
        own, each to its host."""
        from fastpool.multihost.pool import routed_pool
        from fastpool.url import DEFAULT_PORTS, parse_host_list

        scheme = {"postgresql": "postgresql", "mysql": "mysql", "pymysql": "mysql"}.get(
            self._fastpool_driver)
        if scheme is None:
            raise ConfigError(f"a host list needs the mysql or postgresql backend, not"
                              f" {self._fastpool_driver}")
        sd = self.settings_dict
        shown = f"HOST of database {self.alias!r}"
        try:
            default_port = int(sd["PORT"] or DEFAULT_PORTS[scheme])
        except ValueError:
            raise ConfigError(f"PORT of database {self.alias!r} is not a number") from None
        text = str(sd["HOST"] or "")
        hosts = (parse_host_list(text, default_port, shown) if "," in text
                 else ((text, default_port),) if text else None)

        def connect_for(dialect: Any, host: str, port: int) -> Any:
            return lambda: self._connect_for_pool({**params, "host": host, "port": port})

        return routed_pool(self._fastpool_driver, connect_for, options, default_port=default_port,
                           single=hosts, shown=shown)

    def close_pool(self) -> None:
        """Close this alias's pool (its idle connections now, the others as they come back)."""
        with _POOLS_LOCK:
            entry = _POOLS.pop(self.alias, None)
        if entry is not None:
            entry[1].close()

    def _connect_for_pool(self, params: dict[str, Any]) -> Any:
        # The backend's own connect: its driver module, converters and init commands.
        return super().get_new_connection(params)  # type: ignore[misc]

    # ---- Django's connection life cycle ----------------------------------------------
    def get_connection_params(self) -> dict[str, Any]:
        """Django's connect parameters, less ``pool`` (fastpool's option, not the driver's)."""
        params = super().get_connection_params()  # type: ignore[misc]
        params.pop("pool", None)  # a fastpool option, not the driver's
        return params  # type: ignore[no-any-return]

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        """A connection from the alias's pool (Django's own connect when the alias has no pool)."""
        pool = self.pool
        if pool is None:
            return super().get_new_connection(conn_params)  # type: ignore[misc]
        rec = pool._take()
        self._fastpool_rec = rec
        self._fastpool_pool = pool
        self._fastpool_dirty = False
        return rec.raw

    def init_connection_state(self) -> None:
        """Django's session set-up, once per physical connection (a pooled one was set up when it was new)."""
        rec = self._fastpool_rec
        # rec.info marks a physical connection Django has set up (not every driver's
        # connection object takes new attributes).
        if rec is not None and rec.info is _READY:
            # Set up when this physical connection was new: only Django's own checks.
            from django.db.backends.base.base import BaseDatabaseWrapper

            BaseDatabaseWrapper.init_connection_state(self)
            return
        with self._untracked():
            super().init_connection_state()  # type: ignore[misc]
        if rec is not None:
            rec.info = _READY

    @contextlib.contextmanager
    def _untracked(self) -> Iterator[None]:
        """Django's own session set-up and undoable changes: not noted as dirty."""
        self._fastpool_tracking = False
        try:
            yield
        finally:
            self._fastpool_tracking = True

    # Django turns constraint checks off and on again around fixtures and flushes: not a
    # session change while it is undone, one if a request left them off.
    def disable_constraint_checking(self) -> bool:
        """Django's, noting that the session has constraint checks off until they are enabled again."""
        with self._untracked():
            disabled = bool(super().disable_constraint_checking())  # type: ignore[misc]
        if disabled:
            self._fastpool_constraints_off = True
        return disabled

    def enable_constraint_checking(self) -> None:
        """Django's, and the session is clean of it again."""
        with self._untracked():
            super().enable_constraint_checking()  # type: ignore[misc]
        self._fastpool_constraints_off = False

    def create_cursor(self, name: Any = None) -> Any:
        """Django's cursor, watched for statements that change the session (such a connection is closed,
        not pooled, at give-back)."""
        cursor = super().create_cursor(name)  # type: ignore[misc]
        if self._fastpool_rec is None or not self._fastpool_tracking:
            return cursor
        return _TrackingCursor(cursor, self)

    def _fastpool_failed(self, exc: BaseException) -> None:
        """A statement raised exc: the pool's verdict (a host list also learns from it
        that its primary was demoted); a connection it broke is closed at give-back."""
        pool = self._fastpool_pool
        if pool is not None and pool._classify_error(exc) != ERR_OK:
            self._fastpool_dirty = True

    def is_usable(self) -> bool:
        """Django's check, and false once the connection went back to the pool."""
        # A connection given back to the pool is gone from this wrapper: not usable here.
        return self.connection is not None and bool(super().is_usable())  # type: ignore[misc]

    def close_if_health_check_failed(self) -> None:
        """Nothing to do for a pooled connection: the pool polls its socket at checkout, with no round trip."""
        if self._fastpool_rec is not None:
            return  # the pool polls each connection's socket at checkout (no round trip)
        super().close_if_health_check_failed()  # type: ignore[misc]

    def _close(self) -> None:
        rec = self._fastpool_rec
        if rec is None or self.connection is not rec.raw:
            return super()._close()  # type: ignore[misc,no-any-return]
        self._fastpool_rec = None
        self.connection = None  # given back: Django must not touch it again
        # To the pool it came from, even if the settings have changed since.
        self._fastpool_pool._give(rec, not self._make_clean(rec.raw))
        return None

    def _make_clean(self, raw: Any) -> bool:
        """Roll back what a request left open; False if the connection must be closed."""
        if self._fastpool_dirty or self._fastpool_constraints_off or self.in_atomic_block:
            return False
        try:
            if self._in_transaction(raw):
                raw.rollback()
            if not self._autocommit_of(raw):
                self._restore_autocommit(raw)
        except Exception:
            return False
        return True

    # The driver-specific part (each backend overrides what differs).
    def _in_transaction(self, raw: Any) -> bool:
        return bool(getattr(raw, "in_transaction", True))

    def _autocommit_of(self, raw: Any) -> bool:
        return True

    def _restore_autocommit(self, raw: Any) -> None:
        pass


class ReplicaRouter:
    """A database router for a host list: reads on the ``replica`` alias, everything else
    on ``default``. Both aliases name the same hosts; the replica's ``OPTIONS["pool"]``
    has ``"target": "prefer-replica"`` (a replica within ``max_replica_lag``, else the
    primary). Add it with ``DATABASE_ROUTERS = ["fastpool.django.ReplicaRouter"]``.

    A replica may lag: a read that must see the request's own writes (or runs inside
    ``transaction.atomic()`` on ``default``) names ``.using("default")``.

    Attributes:
        read_alias: the alias reads go to.
        write_alias: the alias writes, migrations and everything else go to.
    """

    read_alias = "replica"
    write_alias = "default"

    def db_for_read(self, model: Any, **hints: Any) -> str:
        """Reads: the replica alias."""
        return self.read_alias

    def db_for_write(self, model: Any, **hints: Any) -> str:
        """Writes: the primary's alias."""
        return self.write_alias

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        """Objects of both aliases are rows of one database."""
        return True

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None,
                      **hints: Any) -> bool:
        """Migrations run on the primary's alias only."""
        return db == self.write_alias
