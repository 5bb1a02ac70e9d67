"""A fake asyncio driver for fastpool.aio's fast tests: its statements complete at once,
or sleep on the loop ("SLEEP 0.2"), and each connection records what ran on it."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any


class Error(Exception):
    pass


def _in_bridge() -> bool:
    from fastpool.aio.bridge import in_bridge

    return in_bridge()


class FakeCursor:
    def __init__(self, conn: FakeAsyncConnection) -> None:
        self.conn = conn
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid = None
        self._rows: list[tuple[Any, ...]] = []

    async def execute(self, sql: str, params: Any = None) -> int:
        if self.conn.closed:
            raise Error("connection is closed")
        self.conn.statements.append(sql)
        self.conn.bridged.append(_in_bridge())
        if sql.startswith("SLEEP "):
            await asyncio.sleep(float(sql.split()[1]))
        if sql.startswith("FAIL"):
            raise Error("the statement failed")
        if sql.startswith("ROWS "):
            n = int(sql.split()[1])
            self._rows = [(i,) for i in range(n)]
            self.description = (("n",),)
        elif sql.startswith("SELECT"):
            self._rows = [(self.conn.id,)]
            self.description = (("id",),)
        else:
            self._rows = []
            self.description = None
        self.rowcount = len(self._rows)
        return self.rowcount

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int = 1) -> list[Any]:
        out, self._rows = self._rows[:size], self._rows[size:]
        return out

    async def fetchall(self) -> list[Any]:
        out, self._rows = self._rows, []
        return out

    async def close(self) -> None:
        self._rows = []


class FakeAsyncConnection:
    ids = itertools.count(1)

    def __init__(self) -> None:
        self.id = next(self.ids)
        self.closed = False
        self.statements: list[str] = []
        self.bridged: list[bool] = []  # per statement: run inside fastpool.aio's bridge?

    def cursor(self, *args: Any) -> FakeCursor:
        return FakeCursor(self)

    async def commit(self) -> None:
        self.statements.append("COMMIT")

    async def rollback(self) -> None:
        self.statements.append("ROLLBACK")

    def close(self) -> None:
        self.closed = True


class FakeAsyncDriver:
    """connect(): an async callable; counts connects, can be slowed down."""

    def __init__(self, connect_delay: float = 0.0) -> None:
        self.connect_delay = connect_delay
        self.connections: list[FakeAsyncConnection] = []

    async def __call__(self) -> FakeAsyncConnection:
        if self.connect_delay:
            await asyncio.sleep(self.connect_delay)
        conn = FakeAsyncConnection()
        self.connections.append(conn)
        return conn
