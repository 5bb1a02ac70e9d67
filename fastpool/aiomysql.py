"""A drop-in for aiomysql's pool: ``from fastpool.aiomysql import create_pool``.

``create_pool(minsize=1, maxsize=10, echo=False, pool_recycle=-1, loop=None, **kwargs)``
takes aiomysql's arguments (the rest go to ``aiomysql.connect()``) and returns a pool with
aiomysql's API: ``acquire()`` (awaitable, and an async context manager that releases),
``release(conn)``, ``size``, ``freesize``, ``minsize``, ``maxsize``, ``echo``, ``clear()``,
``close()``, ``wait_closed()``, ``terminate()``, ``async with``. The connections handed
out are aiomysql's own.

Underneath is fastpool.aio's pool: waiting tasks are served in arrival order (aiomysql's
``Condition`` lets a newcomer take a connection before a task that has waited), a dead
connection is replaced at acquire without a round trip, and a task cancelled while it holds
a connection mid-statement does not leave the statement running (see ``release``).
As in aiomysql, ``acquire()`` waits without a time limit, idle connections are kept
forever, and a connection given back inside a transaction is closed, not rolled back.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from collections.abc import Coroutine
from typing import Any, Generator

from .dialects.mysql import AioMySQLDialect
from .errors import ConfigError, FastpoolError
from .lending import Lender

__all__ = ["Pool", "create_pool"]


class _KeepSessionDialect(AioMySQLDialect):
    """aiomysql's connections as its users set them up: autocommit stays what they asked
    for (aiomysql's default is off); only the server id is read, for KILL."""

    def prepare(self, raw: Any) -> None:
        raw._fastpool_server_id = int(raw.thread_id())


class Pool:
    """aiomysql.Pool's API over fastpool.aio.Pool (see the module)."""

    def __init__(self, minsize: int, maxsize: int, echo: bool, pool_recycle: int,
                 loop: Any = None, **kwargs: Any) -> None:
        if minsize < 0:
            raise ConfigError(f"minsize should be zero or greater, got {minsize!r}")
        if maxsize < minsize and maxsize != 0:
            raise ConfigError(f"maxsize should be not less than minsize, got maxsize={maxsize!r}"
                              f" < minsize={minsize!r}")
        import aiomysql

        from .aio import Pool as TaskPool

        self._minsize = minsize
        self._maxsize = maxsize
        self._echo = echo
        # Held weakly: a connection its holder drops without release() is reclaimed
        # (fastpool/lending.py), not kept here for good as aiomysql keeps it.
        self._in_use: weakref.WeakSet[Any] = weakref.WeakSet()
        self._terminated: weakref.WeakSet[Any] = weakref.WeakSet()  # closed by terminate()
        self._records: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._closing = False
        self._closed = False
        self._released = asyncio.Event()

        async def connect() -> Any:
            return await aiomysql.connect(echo=echo, **kwargs)

        self._pool = TaskPool(
            connect, driver=_KeepSessionDialect(), max_open=maxsize, max_idle=maxsize or None,
            max_lifetime=pool_recycle if pool_recycle and pool_recycle > 0 else None,
            max_idle_time=None, timeout=None, _name=f"aiomysql:{kwargs.get('host', '')}")
        self._pool.sync._set_reuse_fifo(True)  # as aiomysql: the longest-idle one first
        self._lender = Lender(self._pool.sync, "an aiomysql connection", "release()",
                              self._lost)

    # ---- aiomysql's attributes ---------------------------------------------------------
    @property
    def minsize(self) -> int:
        """``minsize``: connections the pool keeps open."""
        return self._minsize

    @property
    def maxsize(self) -> int:
        """``maxsize``: the most connections open at once."""
        return self._maxsize

    @property
    def echo(self) -> bool:
        """``echo``, passed to each connection (aiomysql logs its queries)."""
        return self._echo

    @property
    def size(self) -> int:
        """Connections open: in use, idle, or being opened."""
        return self._pool.stats().open

    @property
    def freesize(self) -> int:
        """Idle connections."""
        return self._pool.stats().idle

    @property
    def closed(self) -> bool:
        """True once ``close()`` or ``terminate()`` was called."""
        return self._closed

    @property
    def _used(self) -> set[Any]:
        """The connections in use (aiomysql's attribute; a snapshot)."""
        return set(self._in_use)

    @property
    def _loop(self) -> Any:
        """The event loop the pool is bound to (aiomysql's attribute)."""
        return self._pool._loop

    @property
    def fastpool(self) -> Any:
        """The fastpool.aio.Pool underneath (stats(), options, events)."""
        return self._pool

    # ---- acquire / release -------------------------------------------------------------
    def acquire(self) -> _Acquire:
        """A connection: ``conn = await pool.acquire()`` (give it back with release()), or
        ``async with pool.acquire() as conn`` (released on exit)."""
        return _Acquire(self)

    async def _acquire(self) -> Any:
        if self._closing:
            raise RuntimeError("Cannot acquire connection after closing pool")
        site = _caller_frame(sys._getframe(1))
        pool = self._pool
        rec = await pool._call(pool.sync._take, None)
        conn = self._lender.lend(rec, site)
        del site
        self._in_use.add(conn)
        self._records[conn] = rec
        return conn

    def release(self, conn: Any) -> asyncio.Future[None]:
        """Give a connection back (not a coroutine, as in aiomysql; returns a done future).
        One still inside a transaction, or closed, is closed rather than pooled."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        if conn in self._terminated:
            self._terminated.discard(conn)  # closed by terminate(): nothing left to do
            return fut
        rec = self._records.pop(conn, None)
        if rec is None:
            raise FastpoolError("release(): this connection is not in use from this pool")
        self._in_use.discard(conn)
        self._lender.take_back(rec)
        bad = bool(conn.closed or conn.get_transaction_status())
        if conn.closed and getattr(conn, "_close_reason", None) == "Cancelled during execution":
            # aiomysql closed its socket because the task was cancelled mid-statement: the
            # server runs the statement on. End that session (aiomysql does not).
            self._pool.sync._end_interrupted(rec.raw)
        self._pool.sync._give(rec, bad)
        self._released.set()
        return fut

    async def fill(self) -> None:
        """Open minsize connections now (aiomysql does so in create_pool)."""
        pool = self._pool
        taken: list[Any] = []
        try:
            while len(taken) < self._minsize:
                taken.append(await pool._call(pool.sync._take, None))
        finally:
            for rec in taken:
                pool.sync._give(rec)

    async def clear(self) -> None:
        """Close the idle connections."""
        self._pool.sync._close_idle()

    # ---- closing -----------------------------------------------------------------------
    def close(self) -> None:
        """Close idle connections now; connections in use are closed as they come back."""
        if self._closing:
            return
        self._closing = True
        self._pool.sync._close_core()

    def terminate(self) -> None:
        """close(), and close the connections in use as well."""
        self.close()
        for conn in list(self._in_use):
            conn.close()
            rec = self._records.pop(conn, None)
            if rec is not None:
                self._lender.take_back(rec)
                self._pool.sync._give(rec, True)
            self._terminated.add(conn)
        self._in_use.clear()
        self._released.set()

    def _lost(self) -> None:
        # A connection was dropped unreleased and its slot reclaimed (on any thread, from
        # a weak reference's callback): wait_closed() may be waiting for it.
        loop = self._pool._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._released.set)
        except RuntimeError:  # the loop is closed
            pass

    async def wait_closed(self) -> None:
        """Wait until every connection in use has come back and been closed."""
        if self._closed:
            return
        if not self._closing:
            raise RuntimeError(".wait_closed() should be called after .close()")
        while self._in_use:
            self._released.clear()
            await self._released.wait()
        await self._pool.close()
        self._closed = True

    def __enter__(self) -> None:
        raise RuntimeError('"await" should be used as context manager expression')

    def __exit__(self, *exc: object) -> None:
        pass  # never reached: __enter__ raises

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        return (f"<fastpool.aiomysql.Pool minsize={self._minsize} maxsize={self._maxsize} "
                f"size={self.size} freesize={self.freesize}>")


class _Acquire(Coroutine[Any, Any, Any]):
    """What acquire() returns: a coroutine (so ``asyncio.create_task(pool.acquire())``
    works, as with aiomysql) that is also an async context manager releasing on exit."""

    __slots__ = ("_pool", "_coro", "_conn")

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._coro = pool._acquire()
        self._conn: Any = None

    def send(self, value: Any) -> Any:
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:
        return self._coro.throw(*args)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._coro.__await__()

    async def __aenter__(self) -> Any:
        self._conn = await self._coro
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)


class _PoolContextManager:
    """What create_pool() returns: ``pool = await create_pool(...)`` or ``async with
    create_pool(...) as pool`` (closed and waited for on exit)."""

    __slots__ = ("_coro", "_pool")

    def __init__(self, coro: Any) -> None:
        self._coro = coro
        self._pool: Pool | None = None

    def __await__(self) -> Generator[Any, None, Pool]:
        return self._coro.__await__()  # type: ignore[no-any-return]

    async def __aenter__(self) -> Pool:
        self._pool = await self._coro
        return self._pool

    async def __aexit__(self, *exc: object) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            await pool.wait_closed()


def create_pool(minsize: int = 1, maxsize: int = 10, echo: bool = False, pool_recycle: int = -1,
                loop: Any = None, **kwargs: Any) -> _PoolContextManager:
    """aiomysql.create_pool(), on fastpool: the same arguments, the same pool API."""
    return _PoolContextManager(_create_pool(minsize, maxsize, echo, pool_recycle, loop, **kwargs))


async def _create_pool(minsize: int, maxsize: int, echo: bool, pool_recycle: int, loop: Any,
                       **kwargs: Any) -> Pool:
    pool = Pool(minsize, maxsize, echo, pool_recycle, loop, **kwargs)
    if minsize > 0:
        await pool.fill()
    return pool


def _caller_frame(frame: Any) -> Any:
    """The first frame outside this module: the line that acquired (None: a task that
    was handed the bare coroutine)."""
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return frame
