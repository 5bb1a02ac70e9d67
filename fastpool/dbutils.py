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

from typing import Any, Callable

from . import _core
from .dialects import ERR_RETRY, Dialect, guess_dialect
from .errors import FastpoolError, PoolTimeout
from .pool import Pool

__all__ = [
    "PooledDB",
    "PooledDBError",
    "InvalidConnectionError",
    "NotSupportedError",
    "TooManyConnectionsError",
    "InvalidConnection",
    "TooManyConnections",
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
        self._setsession = list(setsession or ())
        self._reset = reset
        self._failures_arg = failures
        self._isfatal = isfatal
        self._ping_mode, self._pinger = _parse_ping(ping)
        mincached = mincached or 0
        maxcached = max(maxcached, mincached) if maxcached else 0
        maxconnections = (max(maxconnections, maxcached, maxshared or 0) if maxconnections else 0)
        self._maxcached, self._maxconnections = maxcached, maxconnections
        self._maxshared = 0  # never shared: see the module's docstring
        self._dialect = _AsIs()
        self._pool = Pool(
            self._open, driver=self._dialect, max_open=maxconnections,
            max_idle=maxcached or None, timeout=None if blocking else 0,
            max_lifetime=None, max_idle_time=None,
            _display=f"PooledDB({getattr(creator, '__name__', type(creator).__name__)})",
        )
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
        except BaseException:
            raw.close()
            raise
        return raw

    def _failures(self, raw: Any) -> tuple[type[BaseException], ...]:
        if self._failures_arg is not None:
            f = self._failures_arg
            return f if isinstance(f, tuple) else (f,)
        for src in (getattr(self._creator, "dbapi", None), self._creator, raw):
            if src is None:
                continue
            try:
                return (src.OperationalError, src.InterfaceError, src.InternalError)
            except AttributeError:
                continue
        module = __import__(type(raw).__module__.split(".")[0])
        try:
            return (module.OperationalError, module.InterfaceError, module.InternalError)
        except AttributeError:
            raise AttributeError(
                "Could not determine failure exceptions (please set failures or creator.dbapi)."
            ) from None

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
        # the connections it cannot check.
        if self._ping_mode & 1 and rec.fd < 0:
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
        # Replace the connection by a new one (not inside a transaction: it would be lost).
        old, self._rec = self._rec, None
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
        self._raw()
        self._ping_check(2)
        return PooledCursor(self, args, kwargs)

    def begin(self, *args: Any, **kwargs: Any) -> None:
        """Mark the start of a transaction (calls the driver's begin() if it has one)."""
        raw = self._raw()
        self._transaction = True
        begin = getattr(raw, "begin", None)
        if callable(begin):
            begin(*args, **kwargs)

    def commit(self) -> None:
        self._transaction = False
        self._raw().commit()

    def rollback(self) -> None:
        self._transaction = False
        self._raw().rollback()

    def cancel(self) -> None:
        self._transaction = False
        cancel = getattr(self._raw(), "cancel", None)
        if callable(cancel):
            cancel()

    def ping(self, *args: Any, **kwargs: Any) -> Any:
        return self._raw().ping(*args, **kwargs)

    def dbapi(self) -> Any:
        creator = self._pool._creator
        return getattr(creator, "dbapi", creator)

    def threadsafety(self) -> int:
        return _threadsafety(self._pool._creator)

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
                 kwargs: dict[str, Any]) -> None:
        self._con = con
        self._args, self._kwargs = args, kwargs
        self._cursor = con._raw().cursor(*args, **kwargs)

    def _renew(self) -> None:
        self._con._reconnect()
        self._cursor = self._con._raw().cursor(*self._args, **self._kwargs)

    def _tough(self, name: str, *args: Any, **kwargs: Any) -> Any:
        con = self._con
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
            if con._transaction or (isfatal is not None and not isfatal(exc)):
                raise
            retry = con._pool._dialect.classify(exc) == ERR_RETRY
            self._renew()  # the connection is gone either way: replace it
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
        try:
            self._cursor.close()
        except Exception:
            pass

    def __iter__(self) -> Any:
        return iter(self._cursor)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_cursor", "_con", "_args", "_kwargs"):
            raise AttributeError(name)
        return getattr(self._cursor, name)

    def __enter__(self) -> PooledCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
