"""What the asyncio tests (and bench/test_async.py) measure the same way: the event loop's
longest stall while something runs, and the statements still running on the server."""

from __future__ import annotations

import asyncio
import time
from typing import Any


class LoopStall:
    """``async with LoopStall() as s: ...`` then ``s.longest``: the longest time a ticker
    task, asking to run every 5 ms, was kept waiting beyond that (in seconds). A pool that
    blocks the loop (a C-level wait, a join, a blocking connect) shows up here."""

    TICK = 0.005

    def __init__(self) -> None:
        self.longest = 0.0
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.monotonic()
        while not self._stop:
            await asyncio.sleep(self.TICK)
            now = time.monotonic()
            self.longest = max(self.longest, now - last - self.TICK)
            last = now

    async def __aenter__(self) -> LoopStall:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop = True
        if self._task is not None:
            await self._task


def running_on_server(connect: Any, marker: str) -> int:
    """Statements whose text contains marker, running on the server now, read from
    information_schema.processlist over a connection of connect() (a blocking DB-API one)."""
    conn = connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM information_schema.processlist"
                    " WHERE info LIKE %s AND id <> CONNECTION_ID()", (f"%{marker}%",))
        return int(cur.fetchone()[0])
    finally:
        conn.close()
