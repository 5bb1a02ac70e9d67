"""fastpool.aio.Pool: the pool for asyncio tasks, on the same compiled core as threads.

The pool is a ``fastpool.Pool`` (:class:`TaskPool`) whose connections are an async
driver's, behind a blocking face (adapt.py), and whose waiters are tasks (bridge.py). Each
async method runs the sync one for the calling task through the bridge, so the free list,
the FIFO hand-off under the fairness bound, the counts, deadlines, hooks and the reclaim
of dropped objects are the very ones threads get.

The pool is bound to the first event loop that uses it: its connections' transports
belong to that loop. Using it from another loop raises ``EventLoopError`` at once.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import logging
import threading
import time
from typing import Any, Awaitable, Callable

from .._core import CANCEL_STATES, POOL_DEFAULT
from ..deadlines import SETTLE_WAIT
from ..dialects import Dialect, get_dialect
from ..errors import ConfigError, EventLoopError, FastpoolError, PoolClosed, PoolTimeout
from ..green import new_parker as green_parker
from ..hooks import PoolEvent
from ..options import DEFAULTS, HOOKS
from ..pool import Pool as SyncPool
from ..stats import Stats
from ..multihost.options import NAMES as HOST_LIST_OPTIONS
from ..url import parse_url
from .adapt import SyncConnection
from .bridge import (STATEMENT_EXEC, STATEMENT_ROW, Expiries, TaskParker, await_, call, in_bridge,
                     run_on_loop, statement)
from .objects import Acquire, Conn, Rows, Tx, caller_site

log = logging.getLogger("fastpool")

__all__ = ["Pool", "TaskPool", "open"]

_CLAIMED = CANCEL_STATES["claimed"]
# The barging bound for tasks (threads: 10 ms, the core's HANDOFF_AFTER). A hand-off to a
# waiting task costs a loop round before the connection works again, where a thread is
# woken at once; measured here (64 tasks on 4 connections, asyncmy): 10 ms served 7.6k
# req/s with the longest wait 27 ms, 20 ms 9.3k and 35 ms, 100 ms 10.1k. 20 ms keeps the
# longest wait well under 50 ms.
TASK_HANDOFF_AFTER = 0.02
# How often a task looks whether the watcher's cancel of its statement is settled.
SETTLE_POLL = 0.002
# Seconds a worker thread waits for the pool to be bound to a loop before it connects
# (min_idle > 0 asks for connections before any task has used the pool).
BIND_WAIT = 60.0


class TaskPool(SyncPool):
    """The sync pool under a fastpool.aio.Pool: its connect opens the async driver's
    connection on the pool's loop, its waiters are tasks, and a connection discarded
    because its task was cancelled mid-statement has its server session ended."""

    __slots__ = ("_aio",)

    def __init__(self, aio: Pool, connect: Callable[[], Any], **kwargs: Any) -> None:
        self._aio = aio
        super().__init__(connect, **kwargs)
        self._new_parker = self._task_parker
        # A dropped Conn / Tx / Rows is reclaimed by a task on the loop (its I/O is awaited
        # there), whichever thread the collector or the last reference happened to be on.
        self._defer_reclaim = aio._reclaim_later
        self._probe_hook = None  # on the loop by design (the bridge)
        self._set_handoff_after(TASK_HANDOFF_AFTER)

    def _configure_within(self, raw: Any, configure: Callable[[Any], Any], dialect: Dialect) -> None:
        # Bounded on the loop instead (_sync_hook): the coroutine is cancelled in time.
        configure(raw)

    def _native_parker(self) -> Any:
        # A task's parker: for the native route's checkout (_bridge.checkout), and for a
        # task that waits inside the bridge.
        return TaskParker(self._aio._loop, None, self._aio._expiries)  # type: ignore[arg-type]

    def _task_parker(self) -> Any:
        if in_bridge():
            return self._native_parker()
        return green_parker()

    def _await_cancel_settled(self, rec: Any) -> None:
        # The watcher has claimed this task's statement (its deadline passed) and its KILL
        # QUERY is on the way. A thread waits on the watcher's condition; a task must not
        # (the loop would stop, and with it the KILL, which runs on the loop): it sleeps on
        # the loop in short steps until the cancel is settled.
        if not in_bridge():
            super()._await_cancel_settled(rec)
            return
        watcher = self._deadline_watcher
        until = time.monotonic() + SETTLE_WAIT
        while (rec.cancel_state == _CLAIMED and watcher is not None and watcher.alive
               and time.monotonic() < until):
            await_(asyncio.sleep(SETTLE_POLL))

    def _close_raw(self, raw: Any) -> None:
        if getattr(raw, "interrupted", False) and not raw.closed:
            self._end_interrupted(raw)
        super()._close_raw(raw)

    def _end_interrupted(self, raw: Any) -> None:
        # A task was cancelled (or timed out) inside a statement: the driver's coroutine was
        # cut off, the protocol is somewhere mid-way, and the server runs the statement on.
        # The connection is discarded; its whole session is ended over the side connection
        # (the KILL QUERY / KILL of the deadline watcher), so nothing keeps running there.
        dialect = self._dialect_of(raw)
        if dialect.session_is_idle(raw):
            # The driver ended the statement itself (psycopg cancels on CancelledError).
            self._count_cancelled()
            return
        try:
            if dialect.cancel_method == "kill":
                if not self._send_over_side_connection(dialect.kill_session(raw)):
                    return
            elif dialect.cancel_method == "interrupt":
                dialect.interrupt(raw)
            else:
                return
        except Exception as exc:
            log.debug("fastpool: ending a cancelled statement failed: %s: %s",
                      type(exc).__name__, exc)
            return
        self._count_cancelled()


def _sync_hook(fn: Callable[[Any], Any] | None,
               bound: Callable[[], float | None] | None = None) -> Callable[[Any], Any] | None:
    """A configure / check / reset hook for the core: it gets the driver's connection, and
    a coroutine it returns is awaited -- within ``bound()`` seconds if given (configure:
    the pool's timeout; past it the coroutine is cancelled and the connect fails with
    PoolTimeout, so a hook that never returns holds no task and no thread)."""
    if fn is None or not callable(fn):
        return fn

    def hook(raw: Any) -> Any:
        conn = getattr(raw, "driver_connection", raw)
        res = fn(conn)
        limit = None if bound is None else bound()
        if limit is not None and inspect.isawaitable(res):
            res = _within(res, limit)
        if isinstance(raw, SyncConnection):
            return raw.wait(res)
        return res

    hook.__wrapped__ = fn  # type: ignore[attr-defined]
    return hook


async def _within(awaitable: Awaitable[Any], limit: float) -> Any:
    try:
        async with asyncio.timeout(limit) as scope:
            return await awaitable
    except TimeoutError:
        if scope.expired():
            raise PoolTimeout(f"the configure hook did not return within timeout={limit}s"
                              f" (its coroutine was cancelled)") from None
        raise


class Pool:
    """A pool of asyncio driver connections for tasks (Go's ``sql.DB``), on fastpool's
    compiled core. No I/O happens until the first use, unless ``min_idle`` asks for warm
    connections. A pool is bound to the first event loop that uses it; another loop gets
    ``EventLoopError``.

    Args:
        connect: an async callable returning a new driver connection (asyncmy, aiomysql,
            aiosqlite, psycopg's ``AsyncConnection.connect``, asyncpg, or any async
            DB-API-like driver).
        driver: the dialect (``"asyncmy"``, ``"aiomysql"``, ``"aiosqlite"``,
            ``"postgresql"``, ``"asyncpg"``); else guessed from the first connection.
        **options: the options of ``fastpool.Pool`` (the hooks may be coroutine
            functions here).

    Attributes:
        sync: the same pool seen from threads (a ``fastpool.Pool``, the core underneath);
            its connections belong to this pool's loop.
    """

    __slots__ = ("sync", "_connect", "_loop", "_expiries", "_bound", "_reclaims", "_hooks", "__weakref__")

    def __init__(self, connect: Callable[[], Awaitable[Any]], *,
                 driver: str | Dialect | None = None, **options: Any) -> None:
        # fastpool's own callers may pass _display and _name (see fastpool.Pool), and
        # _sync: what makes the sync pool underneath (a host list's: aio/multihost.py).
        _display: str | None = options.pop("_display", None)
        _name: str | None = options.pop("_name", None)
        make_sync: Callable[..., TaskPool] = options.pop("_sync", TaskPool)
        if not callable(connect):
            raise ConfigError(f"connect must be an async callable returning a connection, got {connect!r}")
        dialect = None if driver is None else get_dialect(driver)
        if dialect is not None and not dialect.is_async and type(dialect) is not Dialect:
            raise ConfigError(f"driver={dialect.name} is not an asyncio driver; use fastpool.Pool")
        self._connect = connect
        self._loop: asyncio.AbstractEventLoop | None = None
        self._expiries: Expiries | None = None  # the waiting tasks' shared timer, per loop
        self._bound = threading.Event()
        self._reclaims: set[asyncio.Task[Any]] = set()
        self._hooks = {h: options.get(h) for h in HOOKS}
        opts = {k: (_sync_hook(v, self._configure_limit if k == "configure" else None)
                    if k in HOOKS else v) for k, v in options.items()}
        display = _display or getattr(connect, "__qualname__", type(connect).__name__)
        self.sync = make_sync(self, self._connect_sync, driver=dialect, _display=display,
                              _name=_name, **opts)
        self.sync._dead_hook = self._is_dead

    def _configure_limit(self) -> float | None:
        limit: float | None = self.sync._options["timeout"]
        return limit

    # ---- the loop and the bridge ------------------------------------------------------
    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return loop
        if self._loop is None or (self._loop.is_closed() and self.sync.stats().open == 0):
            self._expiries = Expiries(loop)  # before _loop: a parker made for it finds it
            self._loop = loop
            self._bound.set()
            return loop
        raise EventLoopError(
            f"fastpool.aio pool {self.sync.name!r} is bound to another event loop (the first"
            f" that used it; its connections belong to that loop): open one pool per loop")

    def _native_now(self) -> bool:
        """Whether the calling task may use the pool without the bridge's checks: it runs
        on the pool's loop and no reclaim is pending. (execute(), query_row() and _call
        test the same inline, on their hot path.)"""
        return self._loop is asyncio._get_running_loop() and not self._reclaims

    def _call(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        """fn(*args) of the sync pool (or of a core object), to be awaited by the calling
        task. (Not a coroutine itself: one layer fewer on every step of every call.)"""
        if self._loop is not asyncio._get_running_loop() or self._reclaims:
            return self._call_after_checks(fn, *args)
        return call(fn, *args)

    async def _call_after_checks(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._bind()
        if self._reclaims:
            await self._settle_reclaims()
        return await call(fn, *args)

    def _connect_sync(self, connect: Callable[[], Awaitable[Any]] | None = None) -> Any:
        # The core's connect: a task connects through the bridge, a worker thread (the
        # opener) has the loop run the driver's connect while it waits. connect: another
        # async connect than the pool's (a host list's, to one host).
        loop = self._loop
        if loop is None and not in_bridge():
            self._bound.wait(BIND_WAIT)
            loop = self._loop
        if loop is None:
            raise EventLoopError("fastpool.aio: the pool has not been used from an event loop yet")
        conn = run_on_loop(loop, (connect or self._connect)())
        return SyncConnection(conn, loop)

    def _is_dead(self, raw: Any) -> bool:
        dialect = self.sync._dialect_of(raw)
        # Once the dialect is known, ask it directly (or not at all) from then on.
        self.sync._dead_hook = dialect.is_dead if dialect.checks_liveness else None
        return dialect.checks_liveness and dialect.is_dead(raw)

    def _reclaim_later(self, reclaim: Callable[[], Any]) -> bool:
        """A dropped Rows / Conn / Tx (the core's finalizer calls this): run its reclaim as a
        task on the loop now, and say so. False when there is no loop to run it on any
        more: the core object then reclaims what it can at once."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        if asyncio._get_running_loop() is loop:
            self._start_reclaim(reclaim)
            return True
        try:
            loop.call_soon_threadsafe(self._start_reclaim, reclaim)
        except RuntimeError:
            return False  # closed meanwhile
        return True

    def _start_reclaim(self, reclaim: Callable[[], Any]) -> None:
        task = asyncio.ensure_future(call(reclaim))
        self._reclaims.add(task)
        task.add_done_callback(self._reclaim_done)

    def _reclaim_done(self, task: asyncio.Task[Any]) -> None:
        self._reclaims.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.warning("fastpool %s: reclaiming a dropped object: %s: %s", self.sync.name,
                        type(exc).__name__, exc)

    async def _settle_reclaims(self) -> None:
        # Wait for dropped objects' connections to come back before taking another: a leak
        # in a loop then costs no extra connection. Shielded: cancelling the caller must not
        # cancel a reclaim half-way (its connection would be lost).
        while self._reclaims:
            await asyncio.shield(asyncio.gather(*self._reclaims, return_exceptions=True))

    # ---- statements (Go's DB.Exec / QueryRow / Query) -----------------------------------
    # execute() and query_row() take the native route (_bridge.statement): on an idle
    # connection the task awaits the driver itself; anything else goes through the bridge.
    def execute(self, sql: str, params: Any = None) -> Awaitable[Any]:
        """Run a statement; -> Result(rowcount, lastrowid)."""
        if self._loop is not asyncio._get_running_loop() or self._reclaims:
            return self._call_after_checks(self.sync.execute, sql, params)
        return statement(self.sync, sql, params, STATEMENT_EXEC, self.sync.execute)

    def query_row(self, sql: str, params: Any = None) -> Awaitable[Any]:
        """The first row (a tuple) or None; the connection is back before it returns."""
        if self._loop is not asyncio._get_running_loop() or self._reclaims:
            return self._call_after_checks(self.sync.query_row, sql, params)
        return statement(self.sync, sql, params, STATEMENT_ROW, self.sync.query_row)

    def query(self, sql: str, params: Any = None, *, stream: bool = False) -> Rows:
        """Rows of a query: ``await`` it (read at once, the connection already back), or with
        ``stream=True`` iterate it with ``async for`` / ``async with``."""
        return Rows(self, self.sync, sql, params, stream, caller_site() if stream else None)

    # ---- connections and transactions -----------------------------------------------
    def conn(self, timeout: Any = POOL_DEFAULT) -> Acquire:
        """``async with db.conn() as c``: a dedicated connection, given back on exit."""
        return Acquire(self, self.sync.conn, timeout, Conn, caller_site())

    async def getconn(self, timeout: Any = POOL_DEFAULT) -> Conn:
        """Take a dedicated connection; give it back with ``putconn()`` or ``close()``."""
        return await Acquire(self, self.sync.getconn, timeout, Conn, caller_site())  # type: ignore[no-any-return]

    async def putconn(self, conn: Conn) -> None:
        """Give back a connection from ``getconn()`` (FastpoolError if it is back already
        or belongs to another pool)."""
        if not isinstance(conn, Conn) or conn._pool is not self:
            raise FastpoolError("connection belongs to another pool")
        await self._call(self.sync.putconn, conn._conn)

    def transaction(self, timeout: Any = POOL_DEFAULT) -> Acquire:
        """``async with db.transaction() as tx``: COMMIT on normal exit, ROLLBACK on error."""
        return Acquire(self, self.sync.begin, timeout, Tx, caller_site())

    async def begin(self, timeout: Any = POOL_DEFAULT) -> Tx:
        """Start a transaction: a Tx holding one connection until commit() or rollback()."""
        return await Acquire(self, self.sync.begin, timeout, Tx, caller_site())  # type: ignore[no-any-return]

    async def ping(self, timeout: Any = POOL_DEFAULT) -> None:
        """Make sure a connection can be had and answers (Go's db.Ping)."""
        await self._call(self.sync.ping, timeout)

    # ---- the rest: the sync pool's ----------------------------------------------------
    def stats(self, reset: bool = False) -> Stats:
        """A snapshot of the pool's counters (``fastpool.Stats``); ``reset=True`` restarts the wait distribution."""
        return self.sync.stats(reset)

    def on(self, event: str, fn: Callable[[PoolEvent], Any]) -> Callable[[PoolEvent], Any]:
        """Call ``fn(PoolEvent)`` on each ``event`` (see fastpool.Pool.on); fn runs where the
        event happens (a task or a worker thread) and must not block."""
        return self.sync.on(event, fn)

    def off(self, event: str, fn: Callable[[PoolEvent], Any]) -> bool:
        """Stop calling ``fn`` on ``event``; ``False`` if it was not listening."""
        return self.sync.off(event, fn)

    @property
    def closed(self) -> bool:
        """True once ``close()`` has begun."""
        return bool(self.sync.closed)

    @property
    def driver(self) -> str | None:
        """The dialect's name, or ``None`` until the first connection if it is to be guessed."""
        return self.sync.driver

    async def close(self) -> None:
        """Close idle connections now and in-use ones as they come back, wake waiting tasks
        with PoolClosed, stop the background workers. Calling it again is harmless."""
        if self._loop is not None and self._loop is asyncio._get_running_loop():
            await call(self.sync._close_core)
            await self._settle_reclaims()
        else:
            self.sync._close_core()
        self._bound.set()  # a worker waiting for a loop gives up
        # Joining the workers blocks: off the loop, which a connect in flight may need.
        await asyncio.get_running_loop().run_in_executor(None, self.sync._stop_workers)
        # What the workers closed on their way out (a connect that finished after the
        # close, the KILL side connection) was posted to the loop: let it run now, while
        # the loop surely still runs.
        await asyncio.sleep(0)

    async def __aenter__(self) -> Pool:
        if self.closed:
            raise PoolClosed("pool is closed")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return "<fastpool.aio.Pool" + repr(self.sync)[len("<fastpool.Pool"):]


def _option_property(name: str) -> property:
    if name in HOOKS:
        def get_hook(self: Pool) -> Any:
            return self._hooks[name]

        def set_hook(self: Pool, value: Any) -> None:
            setattr(self.sync, name,
                    _sync_hook(value, self._configure_limit if name == "configure" else None))
            self._hooks[name] = value

        return property(get_hook, set_hook, doc=getattr(SyncPool, name).__doc__)
    return property(lambda self: getattr(self.sync, name),
                    lambda self, value: setattr(self.sync, name, value),
                    doc=getattr(SyncPool, name).__doc__)


for _name in DEFAULTS:
    setattr(Pool, _name, _option_property(_name))
del _name

# mysql:// without ?driver=: the first of these that is installed.
MYSQL_ASYNC_DRIVERS = ("asyncmy", "aiomysql")


def _default_driver(scheme: str) -> str:
    if scheme == "mysql":
        for name in MYSQL_ASYNC_DRIVERS:
            if importlib.util.find_spec(name) is not None:
                return name
        raise ConfigError("mysql:// under fastpool.aio needs asyncmy or aiomysql:"
                          " pip install 'fastpool[asyncmy]'")
    if scheme == "sqlite":
        return "aiosqlite"
    if scheme == "postgresql":
        # psycopg where it is installed (the sync side's driver too), else asyncpg.
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("asyncpg"):
            return "asyncpg"
        return "psycopg_async"
    raise ConfigError(f"no asyncio driver for {scheme}:// yet")


def open(dsn: str, **options: Any) -> Pool:  # noqa: A001 - the API's name
    """Open a pool for tasks on a database URL (``mysql://`` with asyncmy or aiomysql,
    ``?driver=`` choosing; ``sqlite://`` with aiosqlite). Lazy: no I/O until first use."""
    url = parse_url(dsn)
    options = {**url.options, **options}  # an option given here wins over the URL's
    dialect = get_dialect(url.driver or _default_driver(url.scheme))
    if not dialect.is_async:
        raise ConfigError(f"driver={dialect.name} is not an asyncio driver: use fastpool.open(),"
                          f" or ?driver={'|'.join(MYSQL_ASYNC_DRIVERS)} under fastpool.aio")
    connect_kwargs = url.connect_kwargs
    if "record_class" in options:
        # asyncpg's row class for every statement (asyncpg.connect(record_class=...)).
        record_class = options.pop("record_class")
        if dialect.name != "asyncpg":
            raise ConfigError(f"record_class= is asyncpg's; driver={dialect.name} has none")
        record = importlib.import_module("asyncpg").Record
        if not (isinstance(record_class, type) and issubclass(record_class, record)):
            raise ConfigError(f"record_class must be a subclass of asyncpg.Record, got {record_class!r}")
        connect_kwargs = {**connect_kwargs, "record_class": record_class}
    if HOST_LIST_OPTIONS.intersection(options):
        from .multihost import open_hosts  # a host list, or one host with a target

        return open_hosts(url, dialect, connect_kwargs, options)
    connect = dialect.connect_factory(connect_kwargs)
    return Pool(connect, driver=dialect, _display=url.masked, _name=url.name, **options)
