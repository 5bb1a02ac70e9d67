"""A drop-in for psycopg_pool: ``from fastpool.psycopg import ConnectionPool,
AsyncConnectionPool`` (and ``PoolTimeout``, ``PoolClosed``, ``TooManyRequests``).

The constructors take psycopg_pool's arguments (``conninfo``, ``kwargs``,
``connection_class``, ``min_size``, ``max_size``, ``open``, ``configure``, ``check``,
``reset``, ``name``, ``close_returns``, ``timeout``, ``max_waiting``, ``max_lifetime``,
``max_idle``, ``reconnect_timeout``, ``reconnect_failed``, ``num_workers``) and the pools
have its methods: ``connection()``, ``getconn()`` / ``putconn()``, ``open()`` / ``close()``,
``wait()``, ``resize()``, ``check()``, ``check_connection()``, ``drain()``,
``get_stats()`` / ``pop_stats()`` (psycopg_pool's keys), ``min_size``, ``max_size``,
``closed``, ``name``, context-manager use. The connections handed out are psycopg's own,
set up as psycopg_pool sets them up: autocommit stays what ``kwargs`` asked for, and
``with pool.connection() as conn`` commits or rolls back on exit.

Underneath is fastpool's pool (``.fastpool``): waiting callers are served in arrival order
under the same fairness bound as everywhere in fastpool, a dead idle connection is found
at checkout by polling its socket (no round trip), a connection given back inside a
transaction is rolled back and one given back mid-statement discarded, read from libpq's
transaction status. The errors are fastpool's and psycopg_pool's at once: ``except
psycopg_pool.PoolTimeout`` and ``except fastpool.PoolTimeout`` both catch a timeout.

One source for both pools: each operation is written once, blocking
(``_Common._getconn`` ...); ``AsyncConnectionPool`` runs the same code for the calling task
through fastpool.aio's bridge, where each of its waits becomes the task's await.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import warnings
from typing import Any, Callable

import psycopg
from psycopg.pq import TransactionStatus

from . import errors as _errors
from .dialects.base import CLEAN, DISCARD
from .lending import Lender
from .dialects.postgresql import IDLE, AsyncPostgreSQLDialect, PostgreSQLDialect
from .errors import ConfigError
from .options import show

__all__ = ["ConnectionPool", "AsyncConnectionPool", "PoolTimeout", "PoolClosed", "TooManyRequests"]

log = logging.getLogger("fastpool")

try:  # the originals' classes too, so `except psycopg_pool.PoolTimeout` keeps working
    import psycopg_pool as _original

    _TIMEOUT_BASES: tuple[type, ...] = (_original.PoolTimeout,)
    _CLOSED_BASES: tuple[type, ...] = (_original.PoolClosed,)
    _TOO_MANY_BASES: tuple[type, ...] = (_original.TooManyRequests,)
except ImportError:  # psycopg_pool's own bases
    _TIMEOUT_BASES = _CLOSED_BASES = _TOO_MANY_BASES = (psycopg.OperationalError,)


class PoolTimeout(_errors.PoolTimeout, *_TIMEOUT_BASES):  # type: ignore[misc]
    """No connection within the timeout (psycopg_pool.PoolTimeout, fastpool.PoolTimeout)."""


class PoolClosed(_errors.PoolClosed, *_CLOSED_BASES):  # type: ignore[misc]
    """The pool is not open (psycopg_pool.PoolClosed, fastpool.PoolClosed)."""


class TooManyRequests(_errors.TooManyWaiting, *_TOO_MANY_BASES):  # type: ignore[misc]
    """max_waiting callers are queued already (psycopg_pool.TooManyRequests,
    fastpool.TooManyWaiting)."""


for _cls in (PoolTimeout, PoolClosed, TooManyRequests):
    _cls.__module__ = "fastpool.psycopg"

_pool_numbers = iter(range(1, 1 << 62))


class _Common:
    """What both pools share, and each operation written once, blocking. For the async
    pool the blocking code runs in fastpool.aio's bridge: ``conn.rollback()`` on the
    connection fastpool holds (a SyncConnection there) is awaited for the task."""

    _is_async = False

    def __init__(self, conninfo: Any = "", *, connection_class: Any = None, kwargs: Any = None,
                 min_size: int = 4, max_size: int | None = None, open: bool | None = None,
                 configure: Callable[[Any], Any] | None = None,
                 check: Callable[[Any], Any] | None = None,
                 reset: Callable[[Any], Any] | None = None, name: str | None = None,
                 close_returns: bool = False, timeout: float = 30.0, max_waiting: int = 0,
                 max_lifetime: float = 3600.0, max_idle: float = 600.0,
                 reconnect_timeout: float = 300.0,
                 reconnect_failed: Callable[[Any], Any] | None = None,
                 num_workers: int = 3) -> None:
        min_size, max_size = self._check_size(min_size, max_size)
        if num_workers < 1:
            raise ConfigError("num_workers must be at least 1")
        self.conninfo = conninfo
        self.kwargs = kwargs
        self.connection_class: Any = connection_class or (
            psycopg.AsyncConnection if self._is_async else psycopg.Connection)
        self.name = name or f"pool-{next(_pool_numbers)}"
        self.close_returns = close_returns
        self.timeout = timeout
        self.reconnect_timeout = reconnect_timeout
        self.num_workers = num_workers  # accepted; fastpool's opener is one thread
        self._min_size = min_size
        self._max_size = max_size
        self._user_configure = configure
        self._user_check = check
        self._user_reset = reset
        self._reconnect_failed = reconnect_failed
        self._failing_since: float | None = None
        self._lock = threading.Lock()  # protects the counters below
        self._counts: dict[str, int] = {}
        self._base: dict[str, int] = {}
        self._drained_at = 0.0
        self._opened = False
        self._closed = True
        self._min_kept = -1  # the min_size the core keeps open now (-1: none yet)
        self._open_implicit = False
        self._pool = self._new_pool(max_waiting, max_lifetime, max_idle)
        self._core = self._sync  # the thread pool's core, looked up once for the hot path
        self._lender = Lender(self._core, "a psycopg connection", "putconn()")
        if open is None:
            open = self._open_implicit = True
        if open:
            self._open()

    # ---- psycopg_pool's attributes ------------------------------------------------------
    @property
    def min_size(self) -> int:
        return self._min_size

    @property
    def max_size(self) -> int:
        return self._max_size

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def max_waiting(self) -> int:
        return int(self._sync.max_waiting or 0)

    @property
    def max_lifetime(self) -> float:
        return float(self._sync.max_lifetime or 0.0)

    @property
    def max_idle(self) -> float:
        return float(self._sync.max_idle_time or 0.0)

    @property
    def fastpool(self) -> Any:
        """The fastpool pool underneath (stats(), options, events)."""
        return self._pool

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__name__} {self.name!r} at 0x{id(self):x}>"

    @staticmethod
    def _check_size(min_size: int, max_size: int | None) -> tuple[int, int]:
        if max_size is None:
            max_size = min_size
        if min_size < 0:
            raise ConfigError("min_size cannot be negative")
        if max_size < min_size:
            raise ConfigError("max_size must be greater or equal than min_size")
        if min_size == max_size == 0:
            raise ConfigError("if min_size is 0 max_size must be greater than 0")
        return min_size, max_size

    # ---- the fastpool pool underneath ----------------------------------------------------
    def _new_pool(self, max_waiting: int, max_lifetime: float, max_idle: float) -> Any:
        raise NotImplementedError

    def _options(self, max_waiting: int, max_lifetime: float, max_idle: float) -> dict[str, Any]:
        if not isinstance(max_waiting, int) or isinstance(max_waiting, bool) or max_waiting < 0:
            raise ConfigError(f"max_waiting must be an int >= 0, got {show(max_waiting)}")
        return dict(
            # min_size connections are kept from open() on (a pool never opened has none).
            max_open=self._max_size, min_idle=0, max_idle=None,
            max_lifetime=max_lifetime or None, max_idle_time=max_idle or None,
            timeout=self.timeout, max_waiting=max_waiting or None,
            configure=self._configure, check=self._user_check, check_after=0.0,
            _name=self.name,
        )

    @property
    def _sync(self) -> Any:
        return self._pool

    def _configure(self, conn: Any) -> Any:
        conn._fp_created = time.monotonic()
        if self._user_configure is None:
            return None
        return self._user_configure(conn)

    def _check_configured(self, conn: Any) -> None:
        # psycopg_pool's rule: configure must leave the connection idle.
        status = conn.pgconn.transaction_status
        if status != TransactionStatus.IDLE:
            raise psycopg.ProgrammingError(
                f"connection left in status {TransactionStatus(status).name} by configure"
                f" function {self._user_configure}: discarded")

    def _connect_kwargs(self) -> tuple[Any, Any]:
        """(conninfo, kwargs): each a value or what a callable gave (for the async pool,
        maybe an awaitable)."""
        conninfo = self.conninfo() if callable(self.conninfo) else (self.conninfo or "")
        kwargs = self.kwargs() if callable(self.kwargs) else dict(self.kwargs or {})
        return conninfo, kwargs

    def _connected(self) -> None:
        self._failing_since = None

    def _connect_failed(self) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since >= self.reconnect_timeout:
            self._failing_since = None
            log.warning("fastpool.psycopg %s: reconnection attempt failed for %s s",
                        self.name, self.reconnect_timeout)
            if self._reconnect_failed is not None:
                self._reconnect_failed(self)

    # ---- the operations, written once ---------------------------------------------------
    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + n

    def _check_open_getconn(self) -> None:
        if self._closed:
            raise PoolClosed(f"the pool {self.name!r} is "
                             f"{'already closed' if self._opened else 'not open yet'}")
        if self._open_implicit:
            self._open_implicit = False
            warnings.warn(self._implicit_open_warning(), self._implicit_open_category,
                          stacklevel=4)

    _implicit_open_category: type[Warning] = DeprecationWarning

    def _implicit_open_warning(self) -> str:
        name = type(self).__name__
        return (f"the default for the {name} 'open' parameter will become 'False' in a future"
                f" release. Please use open={{True|False}} explicitly, or use the pool as context"
                f" manager using: `with {name}(...) as pool: ...`")

    def _getconn(self, timeout: float | None, site: Any, rec: Any = None) -> Any:
        # site: the caller's frame, named if the connection is dropped unreturned. rec: a
        # record the async pool took already (_take_idle_now), else one is taken here.
        core = self._core
        core._tally(_REQUESTS_NUM)
        if self._closed or self._open_implicit:
            try:
                self._check_open_getconn()
            except BaseException:
                if rec is not None:
                    core._give(rec)
                raise
        if timeout is None:
            timeout = self.timeout
        try:
            if rec is None:
                rec = core._take(timeout)
        except _errors.TooManyWaiting:
            self._count("requests_errors")
            raise TooManyRequests(f"the pool {self.name!r} has already"
                                  f" {self.max_waiting} requests waiting") from None
        except _errors.PoolTimeout:
            self._count("requests_errors")
            raise PoolTimeout(f"couldn't get a connection after {timeout:.2f} sec") from None
        except _errors.PoolClosed:
            raise PoolClosed(f"the pool {self.name!r} is already closed") from None
        conn = self._lender.lend(rec, site)  # held weakly while lent: a dropped one is reclaimed
        conn._pool = self  # psycopg: `with conn` then does not close it; close_returns
        conn._fp_rec = rec
        return conn

    def _putconn(self, conn: Any) -> None:
        rec = getattr(conn, "_fp_rec", None)
        if rec is None or getattr(conn, "_pool", None) is not self:
            owner = getattr(conn, "_pool", None)
            where = f"it comes from pool {owner.name!r}" if owner else "it doesn't come from any pool"
            raise ConfigError(f"can't return connection to pool {self.name!r}, {where}: {conn}")
        conn._pool = None
        conn._fp_rec = None
        self._lender.take_back(rec)
        status = conn.pgconn.transaction_status
        if (status == IDLE and not self._closed and self._user_reset is None
                and not self._drained_at):
            self._core._give(rec)  # clean as it is: nothing to count, log or reset
            return
        raw = rec.raw
        bad = status == TransactionStatus.UNKNOWN or self._closed
        if status == TransactionStatus.UNKNOWN:
            self._count("returns_bad")
            log.warning("fastpool.psycopg %s: discarding closed connection: %s", self.name, conn)
        elif status == TransactionStatus.ACTIVE:
            log.warning("fastpool.psycopg %s: closing returned connection: %s", self.name, conn)
            self._count("returns_bad")  # as psycopg_pool counts it
            bad = True
        elif status != TransactionStatus.IDLE:
            log.warning("fastpool.psycopg %s: rolling back returned connection: %s", self.name, conn)
        if not bad and getattr(conn, "_fp_created", 0.0) <= self._drained_at:
            bad = True  # drain(): made before it
        if not bad and (status != TransactionStatus.IDLE or self._user_reset is not None):
            bad = not self._reset_returned(raw, conn)  # idle and no reset: clean as it is
        self._sync._give(rec, bad)

    def _reset_returned(self, raw: Any, conn: Any) -> bool:
        dialect = self._sync._dialect_of(raw)
        state = dialect.state_at_checkin(raw)
        if state == DISCARD:
            return False
        try:
            if state != CLEAN:
                dialect.reset(raw)
            if self._user_reset is not None:
                self._run_user(raw, self._user_reset)
                status = conn.pgconn.transaction_status
                if status != TransactionStatus.IDLE:
                    raise psycopg.ProgrammingError(
                        f"connection left in status {TransactionStatus(status).name} by reset"
                        f" function {self._user_reset}: discarded")
        except Exception as exc:
            log.warning("fastpool.psycopg %s: error resetting connection: %s", self.name, exc)
            return False
        return True

    def _run_user(self, raw: Any, fn: Callable[[Any], Any]) -> Any:
        return fn(raw)

    def _fill(self, timeout: float) -> None:
        # min_size connections open and idle (psycopg_pool's wait()): take them, then give
        # them back; the takes wait for the opener or connect themselves.
        deadline = time.monotonic() + timeout
        taken: list[Any] = []
        try:
            while len(taken) < self._min_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _errors.PoolTimeout("")
                taken.append(self._sync._take(left))
        except (_errors.PoolTimeout, psycopg.Error):
            for rec in taken:
                self._sync._give(rec)
            taken = []
            self._close_now()
            raise PoolTimeout(f"pool initialization incomplete after {timeout} sec") from None
        finally:
            for rec in taken:
                self._sync._give(rec)

    def _check_idle(self) -> None:
        # psycopg_pool's check(): each idle connection tried once, the broken replaced.
        # All are taken out first: given back one by one, the same connection would come
        # back out of the (last in, first out) free list every time.
        taken = []
        for _ in range(self._sync.stats().idle):
            try:
                taken.append(self._sync._take(0))
            except _errors.FastpoolError:
                break
        while taken:
            rec = taken.pop()
            # (Past max_lifetime the core replaces it by itself.)
            try:
                self._try_connection(rec.raw)
            except Exception:
                self._count("connections_lost")
                self._sync._give(rec, True)
                continue
            except BaseException:  # interrupted: nothing taken may be lost
                self._sync._give(rec, True)
                for other in taken:
                    self._sync._give(other)
                raise
            self._sync._give(rec)

    def _try_connection(self, raw: Any) -> None:
        raw.cursor().execute("")  # an empty query: one round trip, no transaction

    def _resize(self, min_size: int, max_size: int | None) -> None:
        min_size, max_size = self._check_size(min_size, max_size)
        self._min_size, self._max_size = min_size, max_size
        self._sync.max_open = max_size
        if not self._closed:
            self._keep_min_size()

    def _drain(self) -> None:
        self._drained_at = time.monotonic()
        self._sync._close_idle()
        if not self._closed:
            self._keep_min_size()  # the opener refills

    def _open(self) -> None:
        if not self._closed:
            return
        if self._opened:
            raise PoolClosed("pool has already been opened/closed and cannot be reused")
        self._closed = False
        self._opened = True
        self._keep_min_size()

    def _keep_min_size(self) -> None:
        # psycopg_pool's min_size counts connections in use too: the core's min_open, not
        # min_idle (with 2 held and min_size=2, min_idle grew the pool to 4).
        self._sync._set_min_open(self._min_size)
        self._min_kept = self._min_size

    def _close_now(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sync._close_core()

    # ---- stats ------------------------------------------------------------------------
    def _totals(self) -> dict[str, int]:
        s = self._sync.stats()
        with self._lock:
            counts = dict(self._counts)
        tallies = self._core._tallies()
        counts.update({
            "requests_num": tallies[_REQUESTS_NUM],
            "usage_ms": tallies[_USAGE_MS],
            "requests_queued": int(s.wait_count),
            "requests_wait_ms": int(s.wait_duration * 1000),
            "connections_num": int(s.connects),
            "connections_ms": int(s.connect_time * 1000),
            "connections_errors": int(s.connect_errors),
            "connections_lost": counts.get("connections_lost", 0) + int(s.bad_conns_discarded),
        })
        return counts

    def _measures(self) -> dict[str, int]:
        s = self._sync.stats()
        return {"pool_min": self._min_size, "pool_max": self._max_size, "pool_size": int(s.open),
                "pool_available": int(s.idle), "requests_waiting": int(s.waiting)}

    def get_stats(self) -> dict[str, int]:
        """psycopg_pool's stats: the counters since the last pop_stats() (those not zero)
        and the pool's measures now."""
        totals = self._totals()
        out = {k: v - self._base.get(k, 0) for k, v in totals.items()}
        out = {k: v for k, v in out.items() if v}
        out.update(self._measures())
        return out

    def pop_stats(self) -> dict[str, int]:
        """get_stats(), then the counters start again from zero."""
        out = self.get_stats()
        self._base = self._totals()
        return out


class ConnectionPool(_Common):
    """psycopg_pool.ConnectionPool's API over fastpool.Pool (see the module)."""

    def _new_pool(self, max_waiting: int, max_lifetime: float, max_idle: float) -> Any:
        from .pool import Pool

        def connect() -> Any:
            conninfo, kwargs = self._connect_kwargs()
            try:
                conn = self.connection_class.connect(conninfo, **kwargs)
            except Exception:
                self._connect_failed()
                raise
            self._connected()
            return conn

        return Pool(connect, driver=PostgreSQLDialect(keep_autocommit=True),
                    **self._options(max_waiting, max_lifetime, max_idle))

    def _configure(self, conn: Any) -> Any:
        super()._configure(conn)
        self._check_configured(conn)

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool (start filling it to ``min_size``); ``wait=True`` waits for those connections
        (``PoolTimeout`` if they are not ready within ``timeout``)."""
        self._open()
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> None:
        """Wait until min_size connections are ready; PoolTimeout (and the pool closed)
        if they are not within timeout."""
        self._check_open_getconn()
        self._fill(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool: idle connections at once, connections in use as they come back; waiters get
        ``PoolClosed``."""
        self._close_now()
        self._pool.close()

    def __enter__(self) -> ConnectionPool:
        self._open_implicit = False
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def getconn(self, timeout: float | None = None) -> Any:
        """Take a connection (psycopg's own ``Connection``); give it back with ``putconn()``. A connection
        dropped without ``putconn()`` is reclaimed and warned about, naming the line that took it."""
        return self._getconn(timeout, sys._getframe(1))

    def putconn(self, conn: Any) -> None:
        """Give back a connection from ``getconn()``; its transaction is rolled back if one is open."""
        self._putconn(conn)

    def connection(self, timeout: float | None = None) -> _Connection:
        """``with pool.connection() as conn``: the connection, given back at the end of the
        block, its transaction committed (rolled back on an error) as psycopg_pool does."""
        return _Connection(self, timeout)

    def resize(self, min_size: int, max_size: int | None = None) -> None:
        """Change ``min_size`` and ``max_size`` on the live pool."""
        self._resize(min_size, max_size)

    def check(self) -> None:
        """Check the idle connections now (the ``check`` callback, or an empty query), closing the bad ones."""
        self._check_idle()

    def drain(self) -> None:
        """Close every idle connection and retire those in use when they come back (new connections
        replace them: after a failover or a credential change)."""
        self._drain()

    @staticmethod
    def check_connection(conn: Any) -> None:
        """A check callback: an empty query, one round trip (the error if it fails)."""
        _check_connection(conn)


class _Connection:
    """What ``ConnectionPool.connection()`` returns. A class rather than a generator under
    contextlib: one frame and no generator per block, on the path every request takes."""

    __slots__ = ("_pool", "_timeout", "_conn", "_started")

    def __init__(self, pool: Any, timeout: float | None) -> None:
        self._pool, self._timeout = pool, timeout
        self._conn: Any = None
        self._started = 0.0

    def __enter__(self) -> Any:
        # sys._getframe(1): the caller's `with`, named if the connection is dropped unreturned.
        self._conn = self._pool._getconn(self._timeout, sys._getframe(1))
        self._started = time.monotonic()
        return self._conn

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        conn, pool = self._conn, self._pool
        owner: Any = None
        self._conn = None
        try:
            if _transaction_to_end(conn):
                conn.__exit__(et, ev, tb)  # psycopg: COMMIT, or ROLLBACK on an error
        finally:
            pool._core._tally(_USAGE_MS, int(1000 * (time.monotonic() - self._started)))
            owner = getattr(conn, "_pool", None)
            if owner is pool:  # not given back by close_returns
                pool._putconn(conn)


class _AsyncConnection:
    """What ``AsyncConnectionPool.connection()`` returns (see _Connection)."""

    __slots__ = ("_pool", "_timeout", "_conn", "_started")

    def __init__(self, pool: Any, timeout: float | None) -> None:
        self._pool, self._timeout = pool, timeout
        self._conn: Any = None
        self._started = 0.0

    async def __aenter__(self) -> Any:
        pool = self._pool
        pool._started()
        rec = pool._take_idle_now()
        if rec is not None:
            self._conn = pool._getconn(self._timeout, sys._getframe(1), rec)
        else:
            self._conn = await pool._pool._call(pool._getconn, self._timeout, sys._getframe(1))
        self._started = time.monotonic()
        return self._conn

    async def __aexit__(self, et: Any, ev: Any, tb: Any) -> None:
        conn, pool = self._conn, self._pool
        owner: Any = None
        self._conn = None
        try:
            if _transaction_to_end(conn):
                await conn.__aexit__(et, ev, tb)  # psycopg: COMMIT, or ROLLBACK on an error
        finally:
            pool._core._tally(_USAGE_MS, int(1000 * (time.monotonic() - self._started)))
            owner = getattr(conn, "_pool", None)
            if owner is pool:
                await pool.putconn(conn)


# The counters kept in the core (CorePool._tally: no Python lock on the hot path).
_REQUESTS_NUM, _USAGE_MS = 0, 1

# libpq's states in which a connection given back is rolled back first (I/O).
_ROLL_BACK = (TransactionStatus.INTRANS, TransactionStatus.INERROR)


def _transaction_to_end(conn: Any) -> bool:
    # psycopg's `with conn` commits (or rolls back) and, the connection being a pool's,
    # does nothing else: with libpq's status idle there is no transaction to end, and
    # its commit() would only step an empty generator. (A closed connection reads
    # UNKNOWN: its __exit__ returns at once, as psycopg's does.)
    return bool(conn.pgconn.transaction_status != IDLE)


def _check_connection(conn: Any) -> None:
    if conn.autocommit:
        conn.execute("")
        return
    conn.autocommit = True
    try:
        conn.execute("")
    finally:
        conn.autocommit = False


class AsyncConnectionPool(_Common):
    """psycopg_pool.AsyncConnectionPool's API over fastpool.aio.Pool (see the module)."""

    _is_async = True

    def _new_pool(self, max_waiting: int, max_lifetime: float, max_idle: float) -> Any:
        from .aio import Pool

        async def connect() -> Any:
            conninfo, kwargs = self._connect_kwargs()
            if callable(self.conninfo) and hasattr(conninfo, "__await__"):
                conninfo = await conninfo
            if hasattr(kwargs, "__await__"):
                kwargs = await kwargs
            try:
                conn = await self.connection_class.connect(conninfo, **kwargs)
            except Exception:
                self._connect_failed()
                raise
            self._connected()
            return conn

        return Pool(connect, driver=AsyncPostgreSQLDialect(keep_autocommit=True),
                    **self._options(max_waiting, max_lifetime, max_idle))

    async def _configure(self, conn: Any) -> Any:
        conn._fp_created = time.monotonic()
        if self._user_configure is not None:
            await self._user_configure(conn)
        self._check_configured(conn)

    @property
    def _sync(self) -> Any:
        return self._pool.sync

    def _run_user(self, raw: Any, fn: Callable[[Any], Any]) -> Any:
        return raw.wait(fn(raw.driver_connection))  # a coroutine: awaited for the task

    def _try_connection(self, raw: Any) -> None:
        raw.wait(raw.driver_connection.execute(""))

    def _keep_min_size(self) -> None:
        # The opener connects on the pool's loop: bind it first (open() runs on it; an
        # implicit open in the constructor waits for the first use).
        try:
            self._pool._bind()
        except RuntimeError:
            return
        super()._keep_min_size()

    _implicit_open_category = RuntimeWarning

    def _implicit_open_warning(self) -> str:
        name = type(self).__name__
        return (f"opening the async pool {name} in the constructor is deprecated and will not"
                f" be supported anymore in a future release. Please use `await pool.open()`,"
                f" or use the pool as context manager using: `async with {name}(...) as pool:"
                f" `...")

    def _started(self) -> None:
        # Opened in the constructor, maybe with no loop running: keep min_size from the
        # first use on.
        if not self._closed and self._min_kept != self._min_size:
            self._keep_min_size()

    async def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool (start filling it to ``min_size``); ``wait=True`` waits for those connections
        (``PoolTimeout`` if they are not ready within ``timeout``)."""
        self._open()
        self._started()
        if wait:
            await self.wait(timeout)

    async def wait(self, timeout: float = 30.0) -> None:
        """Wait until ``min_size`` connections are ready; ``PoolTimeout`` (and the pool closed) if they
        are not within ``timeout``."""
        self._check_open_getconn()
        self._started()
        await self._pool._call(self._fill, timeout)

    async def close(self, timeout: float = 5.0) -> None:
        """Close the pool: idle connections at once, connections in use as they come back; waiters get
        ``PoolClosed``."""
        self._close_now()
        await self._pool.close()

    async def __aenter__(self) -> AsyncConnectionPool:
        self._open_implicit = False
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def getconn(self, timeout: float | None = None) -> Any:
        """Take a connection (psycopg's own ``Connection``); give it back with ``putconn()``. A connection
        dropped without ``putconn()`` is reclaimed and warned about, naming the line that took it."""
        self._started()
        rec = self._take_idle_now()
        if rec is not None:
            return self._getconn(timeout, sys._getframe(1), rec)
        return await self._pool._call(self._getconn, timeout, sys._getframe(1))

    async def putconn(self, conn: Any) -> None:
        """Give back a connection from ``getconn()``; its transaction is rolled back if one is open."""
        if self._put_now_ok(conn):
            self._putconn(conn)
        else:
            await self._pool._call(self._putconn, conn)

    # Without the bridge when nothing can wait or do I/O (fastpool.aio's native route):
    # an idle connection taken at once, a connection given back that needs no rollback.
    def _take_idle_now(self) -> Any:
        pool = self._pool
        if not pool._native_now() or self._closed or pool.sync._check_hook is not None:
            return None
        return pool.sync._take_idle()

    def _put_now_ok(self, conn: Any) -> bool:
        if not self._pool._native_now() or self._user_reset is not None:
            return False
        pgconn = getattr(conn, "pgconn", None)
        return pgconn is not None and pgconn.transaction_status not in _ROLL_BACK

    def connection(self, timeout: float | None = None) -> _AsyncConnection:
        """``async with pool.connection() as conn``: as ConnectionPool.connection()."""
        return _AsyncConnection(self, timeout)

    async def resize(self, min_size: int, max_size: int | None = None) -> None:
        """Change ``min_size`` and ``max_size`` on the live pool."""
        self._resize(min_size, max_size)

    async def check(self) -> None:
        """Check the idle connections now (the ``check`` callback, or an empty query), closing the bad ones."""
        await self._pool._call(self._check_idle)

    async def drain(self) -> None:
        """Close every idle connection and retire those in use when they come back (new connections
        replace them: after a failover or a credential change)."""
        self._drain()

    @staticmethod
    async def check_connection(conn: Any) -> None:
        """A check callback: an empty query, one round trip (the error if it fails)."""
        if conn.autocommit:
            await conn.execute("")
            return
        await conn.set_autocommit(True)
        try:
            await conn.execute("")
        finally:
            await conn.set_autocommit(False)

