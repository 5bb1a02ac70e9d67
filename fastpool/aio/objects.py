"""What fastpool.aio hands a task: Rows, Conn and Tx.

Each wraps the core's own object (``fastpool.Rows``, ``Conn``, ``Tx``) and runs its
methods through the bridge, so the rules are the core's: a streaming Rows gives its
connection back at its last row, a Tx commits or rolls back, a dropped one is reclaimed,
counted and reported with the line that opened it.

Dropping one that still holds a connection is the seed's leak. The core object's finalizer
finds it (when the wrapper, its only holder, goes, or when the collector ends a cycle
through it); its reclaim needs I/O (unread rows to drain, a rollback), which a finalizer
cannot wait for on the loop: the pool runs it as a task at once (``Pool._reclaim_later``),
and its next call waits for that task first, so a leak in a loop never costs a second
connection.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterator

from .._core import Result
from ..errors import FastpoolError

if TYPE_CHECKING:
    from .pool import Pool

# Rows a streaming Rows reads per trip through the bridge under `async for`.
BATCH = 512


def caller_site(depth: int = 2) -> tuple[Any, int]:
    """(code, instruction offset) of the caller's caller: where a Rows or Conn was opened."""
    f = sys._getframe(depth)
    return f.f_code, f.f_lasti


def _query(target: Any, sql: str, params: Any, stream: bool) -> Any:
    return target.query(sql, params, stream=stream)


class Rows:
    """Rows of a query, for a task. ``query()`` returns it before the query runs; awaiting
    it, entering it (``async with``) or iterating it (``async for``) runs the query.

    Buffered (the default): the rows are read and the connection is back before the await
    returns; it can then be iterated with ``for`` as well. Streaming (``stream=True``): rows
    come from the server as they are iterated, and the connection goes back at the last
    row, on ``close()`` / leaving ``async with``, or, if it is dropped, reclaimed."""

    __slots__ = ("_pool", "_target", "_sql", "_params", "_stream", "_site", "_rows", "_buf",
                 "_i", "__weakref__")

    def __init__(self, pool: Pool, target: Any, sql: str, params: Any, stream: bool,
                 site: tuple[Any, int] | None) -> None:
        self._pool = pool
        self._target = target  # the core pool, Conn or Tx that runs it
        self._sql = sql
        self._params = params
        self._stream = stream
        self._site = site
        self._rows: Any = None
        self._buf: Any = ()
        self._i = 0

    async def _run(self) -> Rows:
        if self._rows is None:
            rows = await self._pool._call(_query, self._target, self._sql, self._params, self._stream)
            if self._site is not None:
                rows._set_site(*self._site)
            self._rows = rows
            self._target = None
        return self

    def __await__(self) -> Generator[Any, None, Rows]:
        return self._run().__await__()

    async def __aenter__(self) -> Rows:
        return await self._run()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> Rows:
        return self

    async def __anext__(self) -> Any:
        if self._rows is None:
            await self._run()
        if self._i < len(self._buf):
            row = self._buf[self._i]
            self._i += 1
            return row
        if not self._stream:
            try:
                return next(self._rows)
            except StopIteration:
                raise StopAsyncIteration from None
        batch = await self._pool._call(self._rows.fetchmany, BATCH)
        if not batch:
            raise StopAsyncIteration
        self._buf, self._i = batch, 1
        return batch[0]

    def __iter__(self) -> Iterator[Any]:
        if self._rows is None:
            raise FastpoolError("await the query first: rows = await db.query(...)")
        if self._stream:
            raise FastpoolError("a streaming Rows is read with `async for`")
        return self._rows  # type: ignore[no-any-return]

    async def fetchone(self) -> Any:
        """The next row, or ``None`` after the last."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            return None

    async def fetchmany(self, size: int = 1) -> list[Any]:
        """Up to ``size`` more rows, as a list (empty after the last)."""
        out: list[Any] = []
        while len(out) < size:
            try:
                out.append(await self.__anext__())
            except StopAsyncIteration:
                break
        return out

    async def fetchall(self) -> list[Any]:
        """The remaining rows, as a list."""
        if self._rows is None:
            await self._run()
        out = list(self._buf[self._i:])
        self._buf, self._i = (), 0
        if self._stream:
            out.extend(await self._pool._call(self._rows.fetchall))
        else:
            out.extend(self._rows)
        return out

    async def close(self) -> None:
        """Stop reading: unread rows are discarded, the connection goes back (idempotent)."""
        self._buf, self._i = (), 0
        rows = self._rows
        if rows is None:
            self._target = None  # never run: nothing to close
            return
        if self._stream and rows.holds_result:
            await self._pool._call(rows.close)
        else:
            rows.close()

    @property
    def columns(self) -> tuple[str, ...]:
        """The column names, as a tuple of str (empty for a statement with no result)."""
        return () if self._rows is None else self._rows.columns

    @property
    def description(self) -> Any:
        """The driver's ``cursor.description`` of the result (``None`` for a statement with no result)."""
        return None if self._rows is None else self._rows.description

    @property
    def holds_connection(self) -> bool:
        """True while a streaming ``Rows`` still holds its connection (until the last row, ``close()`` or its drop)."""
        return self._rows is not None and bool(self._rows.holds_connection)

    def __repr__(self) -> str:
        if self._rows is None:
            return f"<fastpool.aio.Rows not run{' streaming' if self._stream else ''}>"
        return "<fastpool.aio." + repr(self._rows)[len("<fastpool."):]


class Conn:
    """A connection taken for a task's exclusive use (Go's sql.Conn): session state
    survives between its statements. Give it back with ``await c.close()``, by leaving
    ``async with``, or ``await db.putconn(c)``."""

    __slots__ = ("_pool", "_conn", "__weakref__")

    def __init__(self, pool: Pool, conn: Any) -> None:
        self._pool = pool
        self._conn = conn  # the core's Conn (or Tx)

    async def execute(self, sql: str, params: Any = None) -> Result:
        """Run a statement on this connection; return ``Result(rowcount, lastrowid)``. Never retried elsewhere: this connection's session is what the caller holds it for."""
        return await self._pool._call(self._conn.execute, sql, params)  # type: ignore[no-any-return]

    async def query_row(self, sql: str, params: Any = None) -> Any:
        """The first row of a query on this connection, or ``None``."""
        return await self._pool._call(self._conn.query_row, sql, params)

    def query(self, sql: str, params: Any = None, *, stream: bool = False) -> Rows:
        """The rows of a query on this connection: ``await`` it (read at once), or with ``stream=True`` iterate it with ``async for``."""
        return Rows(self._pool, self._conn, sql, params, stream, caller_site() if stream else None)

    async def close(self) -> None:
        """Give the connection back (harmless if it is already back)."""
        if not self._conn.closed:
            await self._pool._call(self._conn.close)

    async def discard(self) -> None:
        """Close the driver connection instead of pooling it."""
        if not self._conn.closed:
            await self._pool._call(self._conn.discard)

    async def __aenter__(self) -> Conn:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._conn.closed:
            await self._pool._call(self._conn.__exit__, exc_type, exc, tb)

    @property
    def raw(self) -> Any:
        """The driver's own connection (marks it for a rollback when given back)."""
        return self._conn.raw.driver_connection

    @property
    def closed(self) -> bool:
        """True once given back."""
        return bool(self._conn.closed)

    @property
    def pool(self) -> Pool:
        """The pool it was taken from."""
        return self._pool

    def __repr__(self) -> str:
        return f"<fastpool.aio.{type(self).__name__} {'closed' if self.closed else 'open'}>"


class Tx(Conn):
    """A transaction (Go's sql.Tx) for a task: ``await tx.commit()`` or ``rollback()``;
    ``async with db.transaction() as tx`` commits on normal exit, rolls back on exception."""

    __slots__ = ()

    async def commit(self) -> None:
        """Commit, and give the connection back."""
        await self._pool._call(self._conn.commit)

    async def rollback(self) -> None:
        """Roll back, and give the connection back."""
        await self._pool._call(self._conn.rollback)

    @property
    def done(self) -> bool:
        """True once committed or rolled back."""
        return bool(self._conn.done)


class Acquire:
    """What ``db.conn()`` and ``db.transaction()`` return: ``async with`` it (given back on
    exit), or await it for the Conn / Tx itself."""

    __slots__ = ("_pool", "_take", "_timeout", "_wrap", "_site", "_obj")

    def __init__(self, pool: Pool, take: Callable[[Any], Any], timeout: Any,
                 wrap: Callable[[Pool, Any], Conn], site: tuple[Any, int]) -> None:
        self._pool = pool
        self._take = take
        self._timeout = timeout
        self._wrap = wrap
        self._site = site
        self._obj: Conn | None = None

    async def _get(self) -> Any:
        core = await self._pool._call(self._take, self._timeout)
        core._set_site(*self._site)
        return self._wrap(self._pool, core)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._get().__await__()

    async def __aenter__(self) -> Any:
        self._obj = await self._get()
        return self._obj

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        obj, self._obj = self._obj, None
        if obj is not None:
            await obj.__aexit__(exc_type, exc, tb)

