"""``PooledDB``: DBUtils' pool, served by the fastpool core.

    from fastpool.dbutils import PooledDB      # was: from dbutils.pooled_db import PooledDB

    pool = PooledDB(MySQLdb, maxconnections=10, blocking=True, host=..., user=..., ...)
    conn = pool.connection()
    cur = conn.cursor(); cur.execute("..."); conn.commit(); conn.close()

The constructor, ``connection()``, ``dedicated_connection()``, ``steady_connection()``,
``close()`` and the exceptions are DBUtils'. Connections keep the driver's own settings
(fastpool's autocommit is not imposed), ``setsession`` runs on each new connection,
``reset`` rolls back on return, ``maxusage`` reconnects after that many statements, and the
``ping`` modes are honoured. Waiting, hand-off (first come, first served) and liveness are
fastpool's.

Where it deliberately differs from DBUtils:

* Dead connections are found without a round trip where the driver exposes its socket
  (mysqlclient): a readable idle socket means the server closed it, and it is replaced.
  ``ping=1`` (the default) therefore costs nothing for mysqlclient; drivers without a
  socket are pinged as DBUtils does.
* A statement that fails with one of the ``failures`` errors is re-executed on a new
  connection only when the driver's error proves it never reached the server (mysqlclient
  2006). DBUtils re-executes it whenever not in a transaction, which can run an INSERT
  twice. The connection is still replaced, so the next statement works.
* Connections are never shared between threads: ``maxshared`` is accepted and only counts
  towards ``maxconnections``, as DBUtils does for mysqlclient (threadsafety 1) anyway.
* ``blocking=True`` waits with no time limit, as DBUtils does; ``close()`` closes the idle
  connections and leaves the pool usable, as DBUtils does.
* Idle connections are reused newest first (DBUtils: oldest first).
"""

from __future__ import annotations

import sys
import weakref
from contextlib import contextmanager, suppress
from functools import total_ordering
from threading import Condition
from typing import Any, Callable, Iterator

from . import _core
from .dialects import ERR_RETRY, Dialect, guess_dialect
from .errors import FastpoolError, PoolTimeout
from .pool import Pool

# Every public name of dbutils.pooled_db imports from here too, so swapping the whole
# import line works (Condition, suppress and total_ordering are the stdlib's, as there).
__all__ = [
    "PooledDB",
    "PooledDBError",
    "InvalidConnectionError",
    "NotSupportedError",
    "TooManyConnectionsError",
    "InvalidConnection",
    "TooManyConnections",
    "PooledDedicatedDBConnection",
    "PooledSharedDBConnection",
    "SharedDBConnection",
    "connect",
    "Condition",
    "suppress",
    "total_ordering",
]


class PooledDBError(FastpoolError):
    """General PooledDB error."""


class InvalidConnectionError(PooledDBError):
    """Database connection is invalid (it was closed)."""


class NotSupportedError(PooledDBError):
    """DB-API module not supported by PooledDB."""


class TooManyConnectionsError(PooledDBError):
    """Too many database connections were opened (blocking=False)."""


InvalidConnection = InvalidConnectionError
TooManyConnections = TooManyConnectionsError

for _cls in (PooledDBError, InvalidConnectionError, NotSupportedError, TooManyConnectionsError):
    _cls.__module__ = "fastpool.dbutils"
del _cls


def _dbapi_module(raw: Any) -> Any:
    """The DB-API 2 module of a driver connection, as DBUtils finds it: the first module
    with a callable connect() walking up the connection's module path
    (mysql.connector.connection_cext -> mysql.connector), then its OperationalError's."""
    paths = [getattr(type(raw), "__module__", None)]
    op_error = getattr(raw, "OperationalError", None)
    if op_error is not None:
        paths.append(getattr(op_error, "__module__", None))
    for mod in paths:
        while mod:
            module = sys.modules.get(mod)
            if module is not None and callable(getattr(module, "connect", None)):
                return module
            mod = mod.rpartition(".")[0]
    return None


def _threadsafety(creator: Any) -> int:
    # DBUtils' rule: the module's threadsafety, else its dbapi's, else 1 for a plain
    # function, 0 for an object with a connect() of its own that does not say.
    for obj in (creator, getattr(creator, "dbapi", None)):
        value = getattr(obj, "threadsafety", None) if obj is not None else None
        if value is not None:
            return int(value)
    return 0 if callable(getattr(creator, "connect", None)) else 1


class _AsIs(Dialect):
    """The driver's dialect for liveness and error classes, without fastpool's session
    policy: connections keep the autocommit setting their creator gave them."""

    name = "dbutils"

    def __init__(self) -> None:
        self.base: Dialect | None = None

    def _of(self, raw: Any) -> Dialect:
        if self.base is None:
            self.base = guess_dialect(raw)
        return self.base

    def fileno(self, raw: Any) -> int:
        return self._of(raw).fileno(raw)

    def classify(self, exc: BaseException) -> int:
        return self.base.classify(exc) if self.base is not None else super().classify(exc)

    def neutralise_inherited(self, raw: Any) -> None:
        self._of(raw).neutralise_inherited(raw)


class PooledDB:
    """Pool for DB-API 2 connections, with DBUtils' constructor and behaviour."""

    version = "fastpool"

    def __init__(
        self, creator: Any, mincached: int = 0, maxcached: int = 0, maxshared: int = 0,
        maxconnections: int = 0, blocking: bool = False, maxusage: int | None = None,
        setsession: list[str] | None = None, reset: bool = True, failures: Any = None,
        ping: Any = 1, isfatal: Callable[[BaseException], bool] | None = None,
        *args: Any, **kwargs: Any,
    ) -> None:
        threadsafety = _threadsafety(creator)
        if not threadsafety:
            raise NotSupportedError("Database module is not thread-safe.")
        self._creator = creator
        connect = getattr(creator, "connect", None)  # a DB-API module, or a plain function
        self._connect = connect if callable(connect) else creator
        self._args, self._kwargs = args, kwargs
        self._blocking = blocking
        self._maxusage = maxusage or 0
        self._setsession = setsession  # as given (DBUtils keeps a tuple a tuple)
        self._reset = reset
        self._failures_arg = failures
        self._isfatal = isfatal
        self._ping_mode, self._pinger = _parse_ping(ping)
        # A creator function is taken for thread-safe, as DBUtils does, until its first
        # connection shows which driver module it comes from.
        self._check_module: Callable[[Any], None] | None = (
            None if callable(getattr(creator, "connect", None)) or hasattr(creator, "threadsafety")
            else self._check_connection_module)
        mincached = mincached or 0
        maxcached = max(maxcached, mincached) if maxcached else 0
        maxconnections = (max(maxconnections, maxcached, maxshared or 0) if maxconnections else 0)
        self._maxcached, self._maxconnections = maxcached, maxconnections
        self._maxshared = 0  # never shared: see the module's docstring
        self._dialect = _AsIs()
        # The core holds the opener through a weak reference: no cycle through it, so
        # `del pool` closes the idle connections at once, as DBUtils does.
        this = weakref.ref(self)

        def open_via_pool() -> Any:
            owner = this()
            if owner is None:
                raise InvalidConnectionError("the PooledDB is gone")
            return owner._open()

        self._pool = Pool(
            open_via_pool, driver=self._dialect, max_open=maxconnections,
            max_idle=maxcached or None, timeout=None if blocking else 0,
            max_lifetime=None, max_idle_time=None,
            _display=f"PooledDB({getattr(creator, '__name__', type(creator).__name__)})",
        )
        # As DBUtils: the creator runs in the thread that asks for a connection.
        self._pool._set_inline_connect(True)
        # As DBUtils: open mincached connections now and put them in the idle cache.
        idle = [self.dedicated_connection() for _ in range(mincached)]
        while idle:
            idle.pop().close()

    # ---- opening ------------------------------------------------------------------
    def _open(self) -> Any:
        raw = self._connect(*self._args, **self._kwargs)
        try:
            if self._setsession:
                cur = raw.cursor()
                for sql in self._setsession:
                    cur.execute(sql)
                cur.close()
            if self._check_module is not None:
                self._check_module(raw)
        except BaseException:
            raw.close()
            raise
        return raw

    def _check_connection_module(self, raw: Any) -> None:
        module = _dbapi_module(raw)
        if module is not None and not getattr(module, "threadsafety", 0):
            raise NotSupportedError("Database module is not thread-safe.")
        self._check_module = None  # checked once

    def _failures(self, raw: Any) -> tuple[type[BaseException], ...]:
        if self._failures_arg is not None:
            f = self._failures_arg
            return f if isinstance(f, tuple) else (f,)
        for src in (getattr(self._creator, "dbapi", None), self._creator, raw, _dbapi_module(raw)):
            if src is None:
                continue
            try:
                return (src.OperationalError, src.InterfaceError, src.InternalError)
            except AttributeError:
                continue
        raise AttributeError(
            "Could not determine failure exceptions (please set failures or creator.dbapi)."
        )

    # ---- the DBUtils API ----------------------------------------------------------------
    def steady_connection(self) -> Any:
        """A new, unpooled connection (with setsession applied)."""
        return self._open()

    def connection(self, shareable: bool = True) -> PooledDedicatedDBConnection:
        """A connection from the pool (always dedicated; see the module's docstring)."""
        try:
            rec = self._pool._take()
        except PoolTimeout:
            raise TooManyConnectionsError from None
        con = PooledDedicatedDBConnection(self, rec)
        # Where the driver has a socket the core has just polled it at checkout; ping only
        # the connections it cannot check, and, as DBUtils, never a brand-new one.
        if self._ping_mode & 1 and rec.fd < 0 and rec.uses > 1:
            con._ping_check()
        return con

    def dedicated_connection(self) -> PooledDedicatedDBConnection:
        """Alias for connection(shareable=False)."""
        return self.connection(False)

    def close(self) -> None:
        """Close all idle connections (connections in use are cached again when closed)."""
        self._pool._close_idle()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # the interpreter may be shutting down
            pass

    def __repr__(self) -> str:
        return repr(self._pool).replace("fastpool.Pool", "fastpool.dbutils.PooledDB", 1)


def _parse_ping(ping: Any) -> tuple[int, Callable[[Any], Any] | None]:
    # DBUtils' forms: an int of bit flags, an SQL string or a callable (checked on fetch),
    # or a tuple (flags, SQL-or-callable).
    if isinstance(ping, tuple):
        mode, check = ping
        return int(mode or 0), _parse_ping(check)[1]
    if isinstance(ping, str):
        sql = ping

        def run(con: Any) -> bool:
            cur = con.cursor()
            try:
                cur.execute(sql)
                cur.fetchall()
            finally:
                cur.close()
            return True

        return 1, run
    if callable(ping):
        return 1, ping
    return int(ping or 0), None


class PooledDedicatedDBConnection:
    """A pooled connection: DB-API calls go to the driver's connection; close() gives it
    back (after the reset DBUtils does); dropping it gives it back too."""

    def __init__(self, pool: PooledDB, rec: Any) -> None:
        self._pool = pool
        self._rec = rec
        self._transaction = False

    # -- internals --
    def _raw(self) -> Any:
        if self._rec is None:
            raise InvalidConnectionError
        return self._rec.raw

    def _alive(self) -> bool | None:
        raw = self._raw()
        if self._rec.fd >= 0:
            return not _core.fd_dead(self._rec.fd)
        pinger = self._pool._pinger
        try:
            # ping() without arguments: under the pool the driver must not reconnect by
            # itself, and mysqlclient's ping() does not.
            alive = pinger(raw) if pinger is not None else raw.ping()
        except (AttributeError, IndexError, TypeError, ValueError):
            return None  # cannot be checked
        except Exception:
            return False
        return True if alive is None else bool(alive)

    def _reconnect(self) -> None:
        # Replace the connection by a new one. Inside a transaction that transaction is
        # lost with its connection: the caller raises the error that broke it.
        old, self._rec = self._rec, None
        self._transaction = False
        self._pool._pool._give(old, True)
        try:
            self._rec = self._pool._pool._take()
        except PoolTimeout:
            raise TooManyConnectionsError from None

    def _ping_check(self, flag: int = 1) -> None:
        if self._pool._ping_mode & flag and not self._transaction and self._alive() is False:
            self._reconnect()

    def _count_use(self) -> None:
        info = self._rec.info
        self._rec.info = (info or 0) + 1

    def _overused(self) -> bool:
        return bool(self._pool._maxusage) and (self._rec.info or 0) >= self._pool._maxusage

    # -- the DB-API connection --
    def cursor(self, *args: Any, **kwargs: Any) -> PooledCursor:
        """A cursor on the connection (DBUtils' ``SteadyDBCursor``): a connection that broke
        while held is reopened first, as in DBUtils; inside a transaction the error is raised once."""
        raw = self._raw()
        if not self._transaction:
            self._ping_check(2)
            raw = self._raw()
        try:
            dbapi_cursor = raw.cursor(*args, **kwargs)
        except self._pool._failures(raw) as error:
            # The connection broke while it was held: reopen it, as DBUtils does; inside a
            # transaction the error is raised once and the connection is fresh afterwards.
            isfatal = self._pool._isfatal
            if isfatal is not None and not isfatal(error):
                raise
            was_transaction = self._transaction
            self._reconnect()
            if was_transaction:
                raise
            dbapi_cursor = self._raw().cursor(*args, **kwargs)
        return PooledCursor(self, args, kwargs, dbapi_cursor)

    def begin(self, *args: Any, **kwargs: Any) -> None:
        """Mark the start of a transaction (calls the driver's begin() if it has one)."""
        raw = self._raw()
        self._transaction = True
        begin = getattr(raw, "begin", None)
        if callable(begin):
            begin(*args, **kwargs)

    def commit(self) -> None:
        """Commit the driver connection's transaction."""
        self._transaction = False
        self._raw().commit()

    def rollback(self) -> None:
        """Roll back the driver connection's transaction."""
        self._transaction = False
        self._raw().rollback()

    def cancel(self) -> None:
        """Cancel a long-running transaction, where the driver has ``cancel()``."""
        self._transaction = False
        cancel = getattr(self._raw(), "cancel", None)
        if callable(cancel):
            cancel()

    def ping(self, *args: Any, **kwargs: Any) -> Any:
        """The driver connection's own ``ping()``."""
        return self._raw().ping(*args, **kwargs)

    def dbapi(self) -> Any:
        """The DB-API 2 module of the connection (from the creator, or found up the module
        path of the driver's connection class)."""
        creator = self._pool._creator
        found = getattr(creator, "dbapi", None) or _dbapi_module(self._raw())
        if found is None:
            raise AttributeError("Could not determine DB-API 2 module (please set creator.dbapi).")
        return found

    def threadsafety(self) -> int:
        """The driver module's ``threadsafety`` (fastpool shares no connection whatever it says)."""
        # The driver module's, also when the creator is a plain function.
        creator = self._pool._creator
        for src in (creator, getattr(creator, "dbapi", None), _dbapi_module(self._raw())):
            value = getattr(src, "threadsafety", None) if src is not None else None
            if value is not None:
                return int(value)
        return _threadsafety(self._pool._creator)

    @property
    def dbapi_connection(self) -> Any:
        """The driver's own connection (operations on it bypass failover and maxusage)."""
        return self._raw()

    def close(self) -> None:
        """Give the connection back to the pool (rolled back as ``reset`` says)."""
        rec, self._rec = self._rec, None
        if rec is None:
            return
        bad = False
        if self._pool._reset or self._transaction:
            try:
                rec.raw.rollback()
            except Exception:
                bad = True
        self._transaction = False
        self._pool._pool._give(rec, bad)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_rec", "_pool", "_transaction"):
            raise AttributeError(name)
        return getattr(self._raw(), name)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> PooledDedicatedDBConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PooledCursor:
    """A cursor whose execute*() honour maxusage, ping mode 4 and safe failover."""

    def __init__(self, con: PooledDedicatedDBConnection, args: tuple[Any, ...],
                 kwargs: dict[str, Any], dbapi_cursor: Any = None) -> None:
        self._con: PooledDedicatedDBConnection | None = con
        self._args, self._kwargs = args, kwargs
        self._cursor = dbapi_cursor if dbapi_cursor is not None else con._raw().cursor(*args, **kwargs)
        self._no_failover = 0

    def _connection(self) -> PooledDedicatedDBConnection:
        if self._con is None:
            raise InvalidConnectionError("the cursor is closed")
        return self._con

    def _renew(self) -> None:
        con = self._connection()
        con._reconnect()
        self._cursor = con._raw().cursor(*self._args, **self._kwargs)

    def _tough(self, name: str, *args: Any, **kwargs: Any) -> Any:
        con = self._connection()
        if not con._transaction:
            before = con._rec
            con._ping_check(4)
            if con._overused():
                con._reconnect()
            if con._rec is not before:
                self._cursor = con._raw().cursor(*self._args, **self._kwargs)
        try:
            result = getattr(self._cursor, name)(*args, **kwargs)
        except con._pool._failures(con._raw()) as exc:
            isfatal = con._pool._isfatal
            if self._no_failover or (isfatal is not None and not isfatal(exc)):
                raise
            in_transaction = con._transaction
            retry = con._pool._dialect.classify(exc) == ERR_RETRY and not in_transaction
            with suppress(Exception):
                # The connection is gone either way: replace it, so the next statement
                # works (inside a transaction the transaction is lost with it: as DBUtils,
                # the error is raised once and the connection is fresh afterwards).
                self._renew()
            if not retry:
                raise  # it may have reached the server: never run it twice
            result = getattr(self._cursor, name)(*args, **kwargs)
        con._count_use()
        return result

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self._tough("execute", *args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        return self._tough("executemany", *args, **kwargs)

    def callproc(self, *args: Any, **kwargs: Any) -> Any:
        return self._tough("callproc", *args, **kwargs)

    def close(self) -> None:
        """Close the cursor. It lets go of its connection, so a connection whose last
        reference was this cursor goes back to the pool (as DBUtils')."""
        try:
            self._cursor.close()
        except Exception:
            pass
        self._con = None

    @property
    def dbapi_cursor(self) -> Any:
        """The driver's own cursor (statements on it bypass failover and maxusage)."""
        return self._cursor

    @contextmanager
    def no_failover(self) -> Iterator[PooledCursor]:
        """Inside this block a failed statement is raised at once, never retried and its
        connection not replaced here (ping checks and usage counts go on)."""
        self._no_failover += 1
        try:
            yield self
        finally:
            self._no_failover -= 1

    def __iter__(self) -> Any:
        try:  # the driver cursor's own iterator, else fetchone() until None (DBUtils' rule)
            return iter(self._cursor)
        except TypeError:
            return iter(self._cursor.fetchone, None)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_cursor", "_con", "_args", "_kwargs", "_no_failover"):
            raise AttributeError(name)
        return getattr(self._cursor, name)

    def __enter__(self) -> PooledCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@total_ordering
class SharedDBConnection:
    """DBUtils' bookkeeping record of a shared connection. fastpool never shares a
    connection between threads (see the module's docstring); the class is here so code
    that imports or type-checks against it keeps working. As DBUtils', records order by
    preference: not in a transaction first, then fewest shares."""

    def __init__(self, con: Any) -> None:
        self.con = con
        self.shared = 1

    def __lt__(self, other: SharedDBConnection) -> bool:
        mine, theirs = self.con._transaction, other.con._transaction
        if mine == theirs:
            return self.shared < other.shared
        return not mine

    def __eq__(self, other: object) -> bool:
        # Ranked equally is not interchangeable: equal only to itself (DBUtils 3.2).
        if not isinstance(other, SharedDBConnection):
            return NotImplemented
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def share(self) -> None:
        """Count one more sharer (kept for DBUtils' API; fastpool never shares)."""
        self.shared += 1

    def unshare(self) -> None:
        """Count one sharer less (kept for DBUtils' API)."""
        self.shared -= 1


# Connections are never shared, so a "shared" connection is a dedicated one.
PooledSharedDBConnection = PooledDedicatedDBConnection


def connect(creator: Any, maxusage: int | None = None, setsession: list[str] | None = None,
            failures: Any = None, ping: Any = 1, closeable: bool = True,
            *args: Any, **kwargs: Any) -> Any:
    """DBUtils' steady_db.connect(): one connection outside any pool, with setsession
    applied. (Its automatic reconnection is not imitated: fastpool's rule is that a
    statement is never re-run after it may have reached the server.)"""
    factory = getattr(creator, "connect", None)
    raw = (factory if callable(factory) else creator)(*args, **kwargs)
    if setsession:
        cur = raw.cursor()
        try:
            for sql in setsession:
                cur.execute(sql)
        finally:
            cur.close()
    return raw
