"""fastpool for asyncio: the same pool for tasks, on the same compiled core.

::

    import fastpool.aio

    async with fastpool.aio.open("mysql://app:pw@host/shop", max_open=10) as db:
        row = await db.query_row("SELECT name FROM user WHERE id = %s", (7,))
        async for row in db.query("SELECT ...", stream=True):
            ...

A waiting task is a waiter like a thread (served in arrival order under the same bound);
a task cancelled inside a statement gets its CancelledError at once, its connection is
discarded and its statement ended on the server. See bridge.py for how one implementation
serves both.
"""

from __future__ import annotations

from .objects import Conn, Rows, Tx
from .pool import Pool, open

__all__ = ["Conn", "Pool", "Rows", "Tx", "open"]
