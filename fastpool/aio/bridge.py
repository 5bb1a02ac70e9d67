"""One implementation for threads and tasks: fastpool's pool runs on the event loop in a greenlet.

fastpool's pool (the compiled core: checkout, waiters, statements, rows, transactions,
deadlines, reclaim of dropped objects) is written once, as blocking code. ``fastpool.aio``
runs that same code for a task inside a greenlet of its own (:func:`call`); wherever it
would block, on a driver's I/O or on a wait for a connection, it hands an awaitable up to
the task (:func:`await_`), which awaits it on the loop and switches back with the result
(or throws the exception, ``CancelledError`` included, into the code at that point).
SQLAlchemy's asyncio support works the same way; psycopg generates its sync pool from its
async one instead. Either way nothing is written twice.

What waits how:

* a task waiting for a connection sleeps on a :class:`TaskParker` (the core's waiter
  interface, as threads sleep on a C lock and greenlets on a gevent lock): a future,
  woken from whichever thread gives a connection back;
* the pool's background workers (opener, cleaner, deadline watcher, KILL sender) stay
  threads; their I/O on an async driver's connection is run on the pool's loop
  (:func:`run_on_loop`) while the thread waits, so the loop itself never blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Awaitable, Callable, TypeVar

from greenlet import getcurrent

from ..errors import EventLoopError

T = TypeVar("T")

# How often a worker thread waiting on the loop checks that the loop still runs.
LOOP_CHECK_INTERVAL = 1.0


# The per-statement hot path is compiled (src_c/fastpool/_bridge.pyx): call() runs fn in a
# reused greenlet; await_() steps an awaitable in place, switching to the task only while
# it must wait.
from .._bridge import Bridged as _Bridged
from .._bridge import (STATEMENT_EXEC, STATEMENT_ROW, Expiries, TaskParker, await_, call, call_soon_on,
                       in_bridge, statement)
from .._bridge import step as _step

__all__ = ["TaskParker", "await_", "call", "call_soon_on", "in_bridge", "run_on_loop", "statement",
           "STATEMENT_EXEC", "STATEMENT_ROW", "Expiries"]


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _discard(*coroutines: Any) -> None:
    # Coroutines that will never run: closed, so that they do not warn "never awaited".
    for coro in coroutines:
        close = getattr(coro, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                pass


def run_on_loop(loop: asyncio.AbstractEventLoop, awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable``: awaited by the task inside :func:`call`, else (a worker
    thread) run on ``loop`` while this thread waits. Refused on the loop's own thread
    outside :func:`call`, where waiting would stop the loop for good."""
    g = getcurrent()
    if type(g) is _Bridged:
        return _step(g, awaitable)
    if asyncio._get_running_loop() is loop:
        _discard(awaitable)
        raise EventLoopError("fastpool.aio: driver I/O on the event loop's thread outside"
                          " fastpool's async calls")
    wrapper = _awaited(awaitable)
    try:
        fut = asyncio.run_coroutine_threadsafe(wrapper, loop)
    except RuntimeError as exc:  # the loop is closed
        _discard(wrapper, awaitable)
        raise EventLoopError(f"fastpool.aio: the pool's event loop is gone ({exc})") from None
    while True:
        # Wait first, then read the result: a TimeoutError raised by the awaitable itself
        # (a hook, a driver's own timeout) is the same class as result()'s "not done yet",
        # and taken for it the thread would ask again forever, at full speed.
        done, _ = concurrent.futures.wait((fut,), LOOP_CHECK_INTERVAL)
        try:
            if done:
                return fut.result()
            if loop.is_closed() or not loop.is_running():
                fut.cancel()
                if loop.is_closed():
                    _discard(wrapper, awaitable)  # nothing will ever run them now
                raise EventLoopError("fastpool.aio: the pool's event loop stopped") from None
        except concurrent.futures.CancelledError:
            _discard(awaitable)  # finished, or never started: closing it is harmless
            raise EventLoopError("fastpool.aio: the pool's event loop cancelled the call"
                              " (it is shutting down)") from None
