"""A drop-in for asyncpg's pool: ``from fastpool.asyncpg import create_pool``.

``create_pool(dsn=None, *, init_size=None, min_size=10, max_size=10, max_queries=50000,
max_inactive_connection_lifetime=300.0, connect=None, setup=None, init=None, reset=None,
loop=None, connection_class=asyncpg.Connection, record_class=asyncpg.Record,
**connect_kwargs)`` takes asyncpg 0.32's arguments and returns a :class:`Pool` with its
API. What ``acquire()`` hands out is asyncpg's own pool proxy class (a subclass of it): it
passes ``isinstance(conn, asyncpg.Connection)`` and raises ``asyncpg.InterfaceError`` once
released.

Underneath is fastpool's core, with the task's waits and statements awaited natively
(no greenlet): waiting tasks are served in arrival order within the core's fairness
bound, never more than ``max_size`` connections are open (a connect counts), the acquire
timeout bounds the connect too, and a dead idle connection is replaced at acquire
without a round trip. Where asyncpg's pool differs on purpose:

* **No reset round trip for a connection that needs none.** asyncpg sends its reset
  (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) at every release.
  Here a release reads the transaction state from the protocol (no round trip) and rolls
  back only an open transaction; the full reset runs only when a statement sent through
  the proxy or the pool could have left session state (``SET``, ``RESET``,
  ``set_config``, ``LISTEN``, ``PREPARE``, temporary tables, ``WITH HOLD`` cursors,
  session advisory locks, several statements in one string) or a listener was added.
  A ``reset=`` callback, when given, runs at every release as in asyncpg. Session state
  made where the pool cannot see it (a function that calls ``set_config``, a prepared
  statement's own execution) is not detected: pass ``reset=`` for that.
* **A dropped connection is reclaimed**, not lost: a proxy its holder drops without
  ``release()`` frees its slot when it is collected (``ConnectionLeakWarning`` names the
  line that acquired it); asyncpg's pool keeps the slot for good.
* ``close(timeout=None)``: waits for the connections in use, as asyncpg's, then
  terminates what is still in use after ``timeout`` seconds if one is given.
"""

from __future__ import annotations

import asyncio
import logging
import math
import operator
import sys
import time
import weakref
from typing import Any, Awaitable, Callable, Generator

import asyncpg  # type: ignore[import-untyped]
from asyncpg import compat as _compat
from asyncpg import exceptions as _exc
from asyncpg.pool import PoolConnectionProxy as _AsyncpgProxy  # type: ignore[import-untyped]

from ._asyncpg import is_clean, keeps_session_state, pooled_call, take_idle
from ._bridge import checkout
from .dialects.postgresql import AsyncpgDialect
from .errors import ConfigError
from .options import check_seconds, show
from .lending import Lender

__all__ = ["Pool", "PoolConnectionProxy", "PoolAcquireContext", "create_pool"]

log = logging.getLogger("fastpool")

# Seconds for the side connection that ends a session released mid-statement.
SIDE_TIMEOUT = 10.0


class _LentDialect(AsyncpgDialect):
    """asyncpg connections lent out bare: the pooled raw's driver connection is the
    asyncpg Connection itself (no DB-API face), and the release settles its state (the
    core gives back only clean connections, with no hook of its own)."""

    checks_state_at_checkin = False

    @staticmethod
    def conn_of(raw: Any) -> Any:
        return raw.driver_connection

    def is_dead(self, raw: Any) -> bool:
        return bool(raw.driver_connection.is_closed())


class _Holder:
    """One pooled connection's lending state, kept on its record (``rec.info``). It is
    what asyncpg's Connection and proxy expect as their holder: ``con._pool_holder``
    (a weak reference; the connection calls ``_release_on_close`` when it is closed) and
    ``proxy._holder._pool``. It holds the proxy weakly: a proxy its holder drops must be
    free to die, and its connection with it (fastpool/lending.py reclaims the slot)."""

    __slots__ = ("_pool", "_rec", "_proxy_ref", "_timeout", "_dirty", "_running", "_self_ref",
                 "__weakref__")

    def __init__(self, pool: Pool, rec: Any) -> None:
        self._pool = pool
        self._rec = rec
        self._self_ref = weakref.ref(self)  # con._pool_holder while lent, made once
        self._proxy_ref: weakref.ref[PoolConnectionProxy] | None = None  # None: not lent
        self._timeout: float | None = None
        self._dirty = False
        self._running = 0  # statements through the proxy running now

    @property
    def _con(self) -> Any:
        """The connection while lent (asyncpg's _cleanup tests ``holder._con is self``)."""
        ref = self._rec.lend_ref
        return None if self._proxy_ref is None or ref is None else ref()

    def _release_on_close(self) -> None:
        # The holder closed or terminated the connection while it had it: its slot is
        # free now, as with asyncpg.
        if self._proxy_ref is not None:
            self._pool._settle_lent(self, True)


def _released(name: str) -> _exc.InterfaceError:
    return _exc.InterfaceError(
        f"cannot call Connection.{name}(): connection has been released back to the pool")


class PoolConnectionProxy(_AsyncpgProxy):  # type: ignore[misc]
    """What ``acquire()`` returns: asyncpg's pool proxy, whose statement methods also
    note what may leave session state, so that a release resets only when needed."""

    __slots__ = ("__weakref__",)  # its holder refers to it weakly

    def __init__(self, holder: _Holder, con: Any) -> None:
        # Unlike asyncpg's, not con._set_proxy(self): the connection does not refer back
        # to its proxy, so a proxy its holder drops dies at once, by reference counting
        # (no cycle left for the collector), and the pool reclaims its slot at once
        # (fastpool/lending.py). What asyncpg uses that back-reference for -- dropping
        # every pooled connection's statement cache after a schema change -- each
        # connection then does for itself when it meets the change.
        self._con = con  # type: ignore[misc]  # slots of asyncpg's class
        self._holder = holder  # type: ignore[misc]


def _noting(name: str) -> Callable[..., Any]:
    method = getattr(asyncpg.Connection, name)

    def call(self: PoolConnectionProxy, query: Any, *args: Any, **kwargs: Any) -> Any:
        con = self._con
        if con is None:
            raise _released(name)  # at the call, as asyncpg's proxy does
        holder = self._holder
        if keeps_session_state(query):
            holder._dirty = True
        return _counted(holder, getattr(type(con), name)(con, query, *args, **kwargs))

    call.__name__ = call.__qualname__ = name
    call.__doc__ = method.__doc__
    call.__wrapped__ = method  # type: ignore[attr-defined]
    _compat.markcoroutinefunction(call)  # (a no-op before Python 3.12)
    return call


async def _counted(holder: _Holder, statement: Awaitable[Any]) -> Any:
    # Counted while it runs: a release meanwhile (from another task) must not pool a
    # connection that is mid-statement.
    holder._running += 1
    try:
        return await statement
    finally:
        holder._running -= 1


def _cursor(self: PoolConnectionProxy, query: Any, *args: Any, **kwargs: Any) -> Any:
    # Not a coroutine in asyncpg: it returns the cursor factory (its use needs a
    # transaction, which a release rolls back).
    con = self._con
    if con is None:
        raise _released("cursor")
    if keeps_session_state(query):
        self._holder._dirty = True
    return type(con).cursor(con, query, *args, **kwargs)


_cursor.__name__ = _cursor.__qualname__ = "cursor"
_cursor.__doc__ = asyncpg.Connection.cursor.__doc__


def _listening(name: str) -> Callable[..., Any]:
    def call(self: PoolConnectionProxy, *args: Any, **kwargs: Any) -> Any:
        con = self._con
        if con is None:
            raise _released(name)
        self._holder._dirty = True  # LISTEN on the session: UNLISTEN * at release
        return getattr(type(con), name)(con, *args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = getattr(asyncpg.Connection, name).__doc__
    call.__wrapped__ = getattr(asyncpg.Connection, name)  # type: ignore[attr-defined]
    return call


for _name in ("execute", "executemany", "fetch", "fetchrow", "fetchval", "fetchmany",
              "prepare"):
    setattr(PoolConnectionProxy, _name, _noting(_name))
setattr(PoolConnectionProxy, "cursor", _cursor)
setattr(PoolConnectionProxy, "add_listener", _listening("add_listener"))
del _name


class Pool:
    """asyncpg.Pool's API on fastpool's core (see the module). Made by create_pool(), or
    as ``Pool(dsn, min_size=..., ...)`` then ``await pool``."""

    __slots__ = ("_aio", "_sync", "_lender", "_initsize", "_minsize", "_maxsize",
                 "_max_queries", "_connection_class", "_record_class", "_connect",
                 "_connect_args", "_connect_kwargs", "_setup", "_init", "_reset",
                 "_initialized", "_initializing", "_closing", "_closed", "_expired_at",
                 "_lent", "_released", "_made", "__weakref__")

    def __init__(self, *connect_args: Any, init_size: int | None = None, min_size: int = 10,
                 max_size: int = 10, max_queries: int = 50000,
                 max_inactive_connection_lifetime: float = 300.0,
                 connect: Callable[..., Awaitable[Any]] | None = None,
                 setup: Callable[[Any], Awaitable[Any]] | None = None,
                 init: Callable[[Any], Awaitable[Any]] | None = None,
                 reset: Callable[[Any], Awaitable[Any]] | None = None,
                 loop: Any = None, connection_class: type = asyncpg.Connection,
                 record_class: type = asyncpg.Record, **connect_kwargs: Any) -> None:
        init_size = None if init_size is None else _whole("init_size", init_size)
        min_size, max_size, max_queries = (
            _whole(name, value) for name, value in (("min_size", min_size), ("max_size", max_size),
                                                    ("max_queries", max_queries)))
        if (isinstance(max_inactive_connection_lifetime, bool)
                or not isinstance(max_inactive_connection_lifetime, (int, float))
                or math.isnan(max_inactive_connection_lifetime)):
            raise ConfigError("max_inactive_connection_lifetime is expected to be a number of"
                              f" seconds, got {show(max_inactive_connection_lifetime)}")
        if max_size <= 0:
            raise ConfigError(f"max_size is expected to be greater than zero, got {max_size!r}")
        if min_size < 0:
            raise ConfigError(f"min_size is expected to be greater or equal to zero, got {min_size!r}")
        if min_size > max_size:
            raise ConfigError(f"min_size is greater than max_size ({min_size!r} > {max_size!r})")
        if init_size is None:
            init_size = min_size
        if init_size < 0:
            raise ConfigError(f"init_size is expected to be greater or equal to zero, got {init_size!r}")
        if init_size > max_size:
            raise ConfigError(f"init_size is greater than max_size ({init_size!r} > {max_size!r})")
        if init_size < min_size:
            raise ConfigError(f"init_size is smaller than min_size ({init_size!r} < {min_size!r})")
        if max_queries <= 0:
            raise ConfigError(f"max_queries is expected to be greater than zero, got {max_queries!r}")
        if max_inactive_connection_lifetime < 0:
            raise ConfigError("max_inactive_connection_lifetime is expected to be greater or"
                              f" equal to zero, got {max_inactive_connection_lifetime!r}")
        if not (isinstance(connection_class, type) and issubclass(connection_class, asyncpg.Connection)):
            raise TypeError("connection_class is expected to be a subclass of asyncpg.Connection,"
                            f" got {connection_class!r}")
        if not (isinstance(record_class, type) and issubclass(record_class, asyncpg.Record)):
            raise TypeError("record_class is expected to be a subclass of asyncpg.Record,"
                            f" got {record_class!r}")
        from .aio import Pool as TaskPool

        self._initsize = init_size
        self._minsize = min_size
        self._maxsize = max_size
        self._max_queries = max_queries
        self._connection_class = connection_class
        self._record_class = record_class
        self._connect = connect if connect is not None else asyncpg.connect
        self._connect_args: Any = connect_args
        self._connect_kwargs = connect_kwargs
        self._setup = setup
        self._init = init
        self._reset = reset
        self._initialized = False
        self._initializing = False
        self._closing = False
        self._closed = False
        self._expired_at = -1.0  # expire_connections(): records made before it are closed
        self._lent = 0
        self._released: asyncio.Event | None = None
        self._made: weakref.WeakSet[Any] = weakref.WeakSet()  # for the cache drops
        lifetime = max_inactive_connection_lifetime or None
        self._aio = TaskPool(
            self._new_connection, driver=_LentDialect(), max_open=max_size, max_idle=max_size,
            min_idle=0, max_idle_time=lifetime, max_lifetime=None, timeout=None,
            _name=f"asyncpg:{connect_kwargs.get('host') or ''}")
        self._sync = self._aio.sync
        self._lender = Lender(self._sync, "an asyncpg connection", "release()", self._lost)

    # ---- connecting ---------------------------------------------------------------------
    async def _new_connection(self) -> Any:
        con = await self._connect(*self._connect_args, connection_class=self._connection_class,
                                  record_class=self._record_class, **self._connect_kwargs)
        if not isinstance(con, self._connection_class):
            if isinstance(con, asyncpg.Connection):
                await _close_quietly(con)
            raise _exc.InterfaceError(
                f"expected pool connect callback to return an instance of"
                f" '{_qualname(self._connection_class)}', got '{_qualname(type(con))}'")
        self._made.add(con)
        if self._init is not None:
            try:
                await self._init(con)
            except BaseException:
                # What init left is unknown: this connection is not pooled.
                await _close_quietly(con)
                raise
        return con

    def set_connect_args(self, dsn: str | None = None, **connect_kwargs: Any) -> None:
        """New arguments for the connections opened from now on (the open ones stay until
        they expire; expire_connections() hastens that)."""
        self._connect_args = [dsn]
        self._connect_kwargs = connect_kwargs

    # ---- initialization -----------------------------------------------------------------
    async def _async__init__(self) -> Pool:
        if self._initialized:
            return self
        if self._initializing:
            raise _exc.InterfaceError("pool is being initialized in another task")
        if self._closed:
            raise _exc.InterfaceError("pool is closed")
        self._initializing = True
        try:
            self._aio._bind()
            self._released = asyncio.Event()
            await self._fill(self._initsize)
            # The floor from now on (not during the fill: its opens and the fill's own
            # would add up past init_size).
            # asyncpg's min_size counts connections in use too: the core's min_open.
            self._sync._set_min_open(self._minsize)
            return self
        except BaseException:
            self._closed = True
            self._sync._close_core()
            raise
        finally:
            self._initializing = False
            self._initialized = True

    async def _fill(self, n: int) -> None:
        # Open n connections: the first alone (a bad DSN says so once), the rest together.
        if n <= 0:
            return
        taken = [await self._take(None)]
        try:
            if n > 1:
                results = await asyncio.gather(*(self._take(None) for _ in range(n - 1)),
                                               return_exceptions=True)
                taken += [r for r in results if not isinstance(r, BaseException)]
                for r in results:
                    if isinstance(r, BaseException):
                        raise r
        finally:
            for rec in taken:
                self._sync._give(rec)

    def _check_init(self) -> None:
        if not self._initialized:
            if self._initializing:
                raise _exc.InterfaceError(
                    "pool is being initialized, but not yet ready: likely there is a race"
                    " between creating a pool and using it")
            raise _exc.InterfaceError("pool is not initialized")
        if self._closed:
            raise _exc.InterfaceError("pool is closed")

    def __await__(self) -> Generator[Any, None, Pool]:
        return self._async__init__().__await__()

    async def __aenter__(self) -> Pool:
        await self._async__init__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- acquire / release --------------------------------------------------------------
    async def _take(self, timeout: float | None) -> Any:
        """A record from the core for the calling task: an idle connection at once, else
        a wait in the core's queue (the opener connecting for it), within timeout."""
        rec = take_idle(self)
        while rec is None:
            if self._aio._loop is not asyncio._get_running_loop():
                self._aio._bind()  # raises EventLoopError for another loop
            if timeout is not None and timeout <= 0:
                raise asyncio.TimeoutError()
            sync = self._sync
            rec = await checkout(sync, sync._native_parker(), -1.0 if timeout is None else float(timeout))
            if rec.created_at <= self._expired_at:  # the same clock: time.monotonic()
                sync._give(rec, True)  # made before expire_connections(): replace it
                rec = None
        return rec

    def acquire(self, *, timeout: float | None = None) -> PoolAcquireContext:
        """A connection: ``async with pool.acquire() as con`` (released on exit), or
        ``con = await pool.acquire()`` (give it back with release()). timeout bounds the
        wait, a connect included (asyncio.TimeoutError)."""
        return PoolAcquireContext(self, None if timeout is None else _timeout(timeout))

    async def _acquire(self, timeout: float | None) -> PoolConnectionProxy:
        if self._closing:
            raise _exc.InterfaceError("pool is closing")
        self._check_init()
        site = _caller_frame(sys._getframe(1))
        # An idle connection at once, without a coroutine of its own (_take's first step).
        rec = take_idle(self)
        if rec is None:
            rec = await self._take(timeout)
        holder = rec.info
        if holder is None:
            holder = rec.info = _Holder(self, rec)
        try:
            con = self._lender.lend(rec, site)
        except BaseException:
            self._sync._give(rec, True)
            raise
        del site
        holder._timeout = timeout
        holder._dirty = False
        holder._running = 0
        proxy = PoolConnectionProxy(holder, con)
        holder._proxy_ref = weakref.ref(proxy)
        con._pool_holder = holder._self_ref
        self._lent += 1
        if self._setup is not None:
            try:
                await self._setup(proxy)
            except BaseException:
                # What setup left is unknown: the connection is closed, not pooled. (The
                # proxy stays on the closed connection, as asyncpg's does: it was never
                # handed out.)
                self._settle_lent(holder, True, detach=False)
                con.terminate()
                raise
        return proxy

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:
        """Give back a connection from acquire(). A clean one (no transaction open, no
        session state made) goes back at once, with no round trip; otherwise its
        transaction is rolled back and, where session state was made, the session reset,
        within timeout (default: the acquire's). Releasing twice does nothing."""
        if type(connection) is not PoolConnectionProxy or connection._holder._pool is not self:
            raise _exc.InterfaceError(
                f"Pool.release() received invalid connection: {connection!r} is not a member"
                f" of this pool")
        con = connection._con
        if con is None:
            return  # released already
        holder = connection._holder
        if con._listeners or con._log_listeners:
            con._on_release()  # asyncpg's own: warns of the listeners left on it
        else:
            con._pool_release_ctr += 1  # all _on_release does then: its statements and
            # cursors refuse use from now on
        timeout = holder._timeout if timeout is None else _timeout(timeout)
        if not holder._running and self._is_clean(con, holder._dirty):
            self._settle_lent(holder, False)
            return
        # I/O to do: shielded, so that cancelling the caller cannot lose the connection.
        await asyncio.shield(self._settle_slow(
            con, holder._dirty, timeout, lambda bad: self._settle_lent(holder, bad),
            busy=holder._running > 0))

    def _is_clean(self, con: Any, dirty: bool) -> bool:
        """Whether con may go back as it is: nothing to roll back, reset or wait for."""
        return is_clean(self, con, dirty)

    async def _settle_slow(self, con: Any, dirty: bool, timeout: float | None,
                           done: Callable[[bool], None], busy: bool = False) -> None:
        """Settle a connection that is not clean (_is_clean), then done(bad): the open
        transaction rolled back, the session reset where state was made (or the reset
        callback run), a cancelled statement waited for; closed when that fails, times
        out, or the connection is used up. busy: a statement of its holder still runs."""
        if con.is_closed():
            done(True)
            con.terminate()
            return
        if busy or con._stmt_exclusive_section._acquired:
            # Given back while a statement of its holder still runs (in another task): in
            # no state to hand on. Discarded, and its server session ended over a side
            # connection, so that the statement does not run on for nobody.
            pid = con.get_server_pid()
            con.terminate()
            done(True)
            await self._end_session(pid)
            return
        if con._protocol.queries_count >= self._max_queries:
            done(True)  # used up: closed, a new one opened when needed
            await _close_quietly(con, timeout)
            return
        try:
            budget = timeout
            if con._protocol._is_cancelling():
                # A statement was cancelled (asyncpg sent the server its cancel request):
                # wait for that to settle before the next holder's statement.
                budget = await con._protocol._wait_for_cancellation(budget)
            if con.is_closed():
                done(True)
                con.terminate()
                return
            async with asyncio.timeout(budget):
                if self._reset is not None:
                    await con._reset()
                    await self._reset(con)
                elif dirty or con._listeners:
                    await con.reset()
                else:
                    await con._reset()  # the open transaction rolled back, nothing more
        except BaseException:
            # A reset that failed or ran out of time: the session's state is unknown.
            done(True)
            con.terminate()
            raise
        done(False)

    async def _end_session(self, pid: int) -> None:
        """pg_terminate_backend(pid) over a connection of its own (the pool's connect,
        without init): a session whose statement runs on with nobody to read it."""
        try:
            async with asyncio.timeout(SIDE_TIMEOUT):
                side = await self._connect(*self._connect_args,
                                           connection_class=self._connection_class,
                                           record_class=self._record_class,
                                           **self._connect_kwargs)
                try:
                    await side.execute("SELECT pg_terminate_backend($1)", pid)
                finally:
                    await side.close()
        except Exception as exc:
            log.warning("fastpool: ending the server session of a connection released"
                        " mid-statement failed: %s: %s", type(exc).__name__, exc)

    def _settle_lent(self, holder: _Holder, bad: bool, detach: bool = True) -> None:
        """The lent connection is back: its proxy refuses further use (unless not detach),
        and its record goes to the core (closed there if bad)."""
        ref, holder._proxy_ref = holder._proxy_ref, None
        if ref is None:
            return  # settled already (closed by its holder, then released)
        proxy = ref()
        con = None if proxy is None else proxy._detach() if detach else proxy._con
        if con is not None:
            con._pool_holder = None
        rec = holder._rec
        self._lender.take_back(rec)
        self._sync._give(rec, bad)
        self._lent -= 1
        if self._closing and self._released is not None:
            self._released.set()

    def _lost(self) -> None:
        # A proxy was dropped unreleased and its slot reclaimed (from a weak reference's
        # callback, on whichever thread collected it).
        loop = self._aio._loop

        def lost() -> None:
            self._lent -= 1
            if self._released is not None:
                self._released.set()

        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(lost)
        except RuntimeError:  # the loop is closed
            pass

    # ---- statements on a pooled connection ----------------------------------------------
    async def _run_acquired(self, method: str, query: Any, args: tuple[Any, ...],
                            kwargs: dict[str, Any]) -> Any:
        """A pool-level statement through acquire(): with a setup callback (it gets the
        proxy first), or while the pool is not open (acquire() says why)."""
        async with self.acquire() as proxy:
            return await getattr(proxy, method)(query, *args, **kwargs)

    async def _settle_taken(self, rec: Any, con: Any, dirty: bool) -> None:
        if self._is_clean(con, dirty):
            self._sync._give(rec, False)
            return
        await asyncio.shield(self._settle_slow(
            con, dirty, None, lambda bad: self._sync._give(rec, bad)))

    def execute(self, query: str, *args: Any, timeout: float | None = None) -> Awaitable[str]:
        """Connection.execute() on a pooled connection."""
        return pooled_call(self, "execute", query, args, {"timeout": timeout})

    def executemany(self, command: str, args: Any, *, timeout: float | None = None) -> Awaitable[None]:
        """Connection.executemany() on a pooled connection."""
        return pooled_call(self, "executemany", command, (args,), {"timeout": timeout})

    def fetch(self, query: str, *args: Any, timeout: float | None = None,
              record_class: type | None = None) -> Awaitable[list[Any]]:
        """Connection.fetch() on a pooled connection."""
        return pooled_call(self, "fetch", query, args,
                           {"timeout": timeout, "record_class": record_class})

    def fetchval(self, query: str, *args: Any, column: int = 0,
                 timeout: float | None = None) -> Awaitable[Any]:
        """Connection.fetchval() on a pooled connection."""
        return pooled_call(self, "fetchval", query, args, {"column": column, "timeout": timeout})

    def fetchrow(self, query: str, *args: Any, timeout: float | None = None,
                 record_class: type | None = None) -> Awaitable[Any]:
        """Connection.fetchrow() on a pooled connection."""
        return pooled_call(self, "fetchrow", query, args,
                           {"timeout": timeout, "record_class": record_class})

    def fetchmany(self, query: str, args: Any, *, timeout: float | None = None,
                  record_class: type | None = None) -> Awaitable[list[Any]]:
        """Connection.fetchmany() on a pooled connection."""
        return pooled_call(self, "fetchmany", query, (args,),
                           {"timeout": timeout, "record_class": record_class})

    async def copy_from_table(self, table_name: str, **kwargs: Any) -> str:
        """Connection.copy_from_table() on a pooled connection."""
        async with self.acquire() as con:
            return await con.copy_from_table(table_name, **kwargs)  # type: ignore[no-any-return]

    async def copy_from_query(self, query: str, *args: Any, **kwargs: Any) -> str:
        """Connection.copy_from_query() on a pooled connection."""
        async with self.acquire() as con:
            return await con.copy_from_query(query, *args, **kwargs)  # type: ignore[no-any-return]

    async def copy_to_table(self, table_name: str, **kwargs: Any) -> str:
        """Connection.copy_to_table() on a pooled connection."""
        async with self.acquire() as con:
            return await con.copy_to_table(table_name, **kwargs)  # type: ignore[no-any-return]

    async def copy_records_to_table(self, table_name: str, **kwargs: Any) -> str:
        """Connection.copy_records_to_table() on a pooled connection."""
        async with self.acquire() as con:
            return await con.copy_records_to_table(table_name, **kwargs)  # type: ignore[no-any-return]

    # ---- sizes --------------------------------------------------------------------------
    def get_size(self) -> int:
        """Connections open (in use, idle, or being opened)."""
        return int(self._sync.stats().open)

    def get_init_size(self) -> int:
        """The number of connections opened when the pool is made (``init_size``)."""
        return self._initsize

    def get_min_size(self) -> int:
        """``min_size``: the connections kept open however idle."""
        return self._minsize

    def get_max_size(self) -> int:
        """``max_size``: the most connections open at once."""
        return self._maxsize

    def get_idle_size(self) -> int:
        """Connections open and not acquired right now."""
        return int(self._sync.stats().idle)

    def is_closing(self) -> bool:
        """True once close() or terminate() was called."""
        return self._closed or self._closing

    @property
    def fastpool(self) -> Any:
        """The fastpool.aio.Pool underneath (stats(), events)."""
        return self._aio

    # ---- expiring, closing --------------------------------------------------------------
    async def expire_connections(self) -> None:
        """Replace every connection open now: the idle ones are closed at once, the ones
        in use when they are released."""
        self._expired_at = time.monotonic()
        self._sync._close_idle()

    async def close(self, *, timeout: float | None = None) -> None:
        """Wait until every connection in use is released, then close them all (a
        cancelled or failed close terminates). With timeout, what is still in use after
        it is terminated."""
        if self._closed:
            return
        self._check_init()
        self._closing = True
        try:
            released = self._released
            assert released is not None
            async with asyncio.timeout(timeout):
                while self._lent > 0:
                    released.clear()
                    await released.wait()
        except TimeoutError:
            self.terminate()
        except BaseException:
            self.terminate()
            raise
        finally:
            self._closed = True
            self._closing = False
        await self._aio.close()

    def terminate(self) -> None:
        """Close every connection now, the ones in use included."""
        if self._closed:
            return
        self._check_init()
        self._closed = True
        for rec in list(self._lender._lent):
            holder = rec.info
            con = holder._con if holder is not None else None
            if con is not None:
                con.terminate()  # its _cleanup settles it (_release_on_close)
            if holder is not None and holder._proxy_ref is not None:
                self._settle_lent(holder, True)
        self._sync._close_core()

    def __repr__(self) -> str:
        if not hasattr(self, "_sync"):
            return "<fastpool.asyncpg.Pool not made: its arguments were refused>"
        state = "closed" if self._closed else "closing" if self._closing else "open"
        return (f"<fastpool.asyncpg.Pool {state} min_size={self._minsize}"
                f" max_size={self._maxsize} size={self.get_size()} idle={self.get_idle_size()}"
                f" in_use={self._lent}>")

    # Called by asyncpg's Connection when its statement or type cache must go pool-wide.
    def _drop_statement_cache(self) -> None:
        for con in self._open_connections():
            con._drop_local_statement_cache()

    def _drop_type_cache(self) -> None:
        for con in self._open_connections():
            con._drop_local_type_cache()

    def _open_connections(self) -> list[Any]:
        return [con for con in list(self._made) if not con.is_closed()]


class PoolAcquireContext:
    """What acquire() returns: ``async with`` (released on exit) or ``await``.

    Attributes:
        pool: the pool it acquires from.
        timeout: the acquire's timeout in seconds (``None``: none).
        connection: the proxy once acquired (``None`` before, and after the block).
        done: True once the block has ended (it cannot be entered again).
    """

    __slots__ = ("pool", "timeout", "connection", "done")

    def __init__(self, pool: Pool, timeout: float | None) -> None:
        self.pool = pool
        self.timeout = timeout
        self.connection: Any = None
        self.done = False

    async def __aenter__(self) -> Any:
        if self.connection is not None or self.done:
            raise _exc.InterfaceError("a connection is already acquired")
        self.connection = await self.pool._acquire(self.timeout)
        return self.connection

    async def __aexit__(self, *exc: object) -> None:
        self.done = True
        con, self.connection = self.connection, None
        await self.pool.release(con)

    def __await__(self) -> Generator[Any, None, Any]:
        self.done = True
        return self.pool._acquire(self.timeout).__await__()


def create_pool(dsn: str | None = None, *, init_size: int | None = None, min_size: int = 10,
                max_size: int = 10, max_queries: int = 50000,
                max_inactive_connection_lifetime: float = 300.0,
                connect: Callable[..., Awaitable[Any]] | None = None,
                setup: Callable[[Any], Awaitable[Any]] | None = None,
                init: Callable[[Any], Awaitable[Any]] | None = None,
                reset: Callable[[Any], Awaitable[Any]] | None = None, loop: Any = None,
                connection_class: type = asyncpg.Connection, record_class: type = asyncpg.Record,
                **connect_kwargs: Any) -> Pool:
    """asyncpg.create_pool() on fastpool: the same arguments, the same pool API.
    ``async with create_pool(...) as pool`` or ``pool = await create_pool(...)``."""
    return Pool(dsn, init_size=init_size, min_size=min_size, max_size=max_size,
                max_queries=max_queries,
                max_inactive_connection_lifetime=max_inactive_connection_lifetime,
                connect=connect, setup=setup, init=init, reset=reset, loop=loop,
                connection_class=connection_class, record_class=record_class, **connect_kwargs)


async def _close_quietly(con: Any, timeout: float | None = None) -> None:
    try:
        await con.close(timeout=timeout)
    except BaseException:
        con.terminate()
        raise


def _whole(name: str, value: Any) -> int:
    """A size option as an int; anything else is refused by name before the range checks
    compare it."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} is expected to be an int, got {show(value)}")
    try:
        return operator.index(value)
    except TypeError:
        raise ConfigError(f"{name} is expected to be an int, got {show(value)}") from None


def _timeout(value: Any) -> float | None:
    """An acquire() / release() timeout, checked as the pool's own are (check_seconds),
    except that a negative one means no wait at all, as with asyncpg's wait_for."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return 0.0
    return check_seconds("timeout", value, positive=False)


def _qualname(cls: type) -> str:
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__name__}"


def _caller_frame(frame: Any) -> Any:
    """The first frame outside this module: the line that acquired."""
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return frame
