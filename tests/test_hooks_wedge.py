"""No hook can wedge a pool: whatever a configure, check or reset hook raises (sync or
async; ``TimeoutError``, ``CancelledError``, a ``BaseException`` of its own), that one
connect, checkout or give-back fails, is counted, and the pool stays whole: the counts add
up, no thread is left busy, and once the hook behaves the pool serves again."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from typing import Any

import pytest

import fastpool
from fastpool import FastpoolError


class Stop(BaseException):
    """A BaseException of the hook's own (as a framework's exit signal would be)."""


EXCEPTIONS = [RuntimeError, TimeoutError, asyncio.CancelledError, Stop]
HOOKS = ["configure", "check", "reset"]


class Hook:
    def __init__(self, exc: type[BaseException]) -> None:
        self.exc = exc
        self.armed = True
        self.calls = 0

    def __call__(self, raw: Any) -> None:
        self.calls += 1
        if self.armed:
            raise self.exc("raised by the hook")


class AsyncHook(Hook):
    async def __call__(self, raw: Any) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        super().__call__(raw)


def _cpu_while_idle(seconds: float = 0.4) -> float:
    t0 = time.process_time()
    time.sleep(seconds)
    return time.process_time() - t0


def _whole(s: Any) -> None:
    assert s.in_use == 0, s
    assert s.open == s.in_use + s.idle + s.opening, s


def _failed_and_counted(hook: Hook, hook_name: str, s: Any) -> None:
    """The hook ran, its failure was counted where it belongs, the pool is whole."""
    assert hook.calls >= 1
    _whole(s)
    if hook_name == "configure":
        assert s.connect_errors >= 1, s
    else:
        assert s.bad_conns_discarded >= 1, s


@pytest.mark.parametrize("exc", EXCEPTIONS, ids=lambda e: e.__name__)
@pytest.mark.parametrize("hook_name", HOOKS)
def test_a_raising_sync_hook_never_wedges_the_pool(tmp_path, hook_name, exc):
    hook = Hook(exc)
    db = fastpool.open(f"sqlite:///{tmp_path / 'h.db'}", max_open=2, timeout=1.0,
                       check_after=0, **{hook_name: hook})
    threads_before = threading.active_count()
    try:
        for _ in range(3):
            try:
                db.query_row("SELECT 1")
            except BaseException as e:  # noqa: B036 - the hook's own, or a PoolTimeout
                assert isinstance(e, (exc, FastpoolError)), repr(e)
        _failed_and_counted(hook, hook_name, db.stats())
        assert _cpu_while_idle() < 0.15  # nothing spins
        hook.armed = False
        assert db.query_row("SELECT 1") == (1,)
        _whole(db.stats())
    finally:
        db.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= threads_before


@pytest.mark.parametrize("exc", EXCEPTIONS, ids=lambda e: e.__name__)
@pytest.mark.parametrize("hook_name", HOOKS)
def test_a_raising_async_hook_never_wedges_the_pool(tmp_path, hook_name, exc):
    pytest.importorskip("greenlet")  # fastpool.aio's bridge (none for free-threaded 3.13 yet)
    aiosqlite = pytest.importorskip("aiosqlite")
    import fastpool.aio

    hook = AsyncHook(exc)
    path = tmp_path / "h.db"

    async def main() -> None:
        db = fastpool.aio.Pool(lambda: aiosqlite.connect(path), max_open=2, timeout=1.0,
                               check_after=0, **{hook_name: hook})
        try:
            for _ in range(3):
                try:
                    await asyncio.wait_for(db.query_row("SELECT 1"), 5)
                except BaseException as e:  # noqa: B036
                    assert isinstance(e, (exc, FastpoolError)), repr(e)
                    if isinstance(e, asyncio.CancelledError):
                        # A CancelledError that is not ours must not cancel this task.
                        assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]
            _failed_and_counted(hook, hook_name, db.stats())
            t0 = time.process_time()
            await asyncio.sleep(0.4)
            assert time.process_time() - t0 < 0.15  # nothing spins
            hook.armed = False
            assert await db.query_row("SELECT 1") == (1,)
            _whole(db.stats())
        finally:
            await db.close()

    asyncio.run(main())


def test_a_hanging_configure_hook_holds_one_slot_not_the_pool(tmp_path):
    # A configure hook that never returns holds its connect; the callers still time out
    # with PoolTimeout on time, and the counts still add up.
    release = threading.Event()

    def configure(raw: sqlite3.Connection) -> None:
        release.wait(10)

    db = fastpool.open(f"sqlite:///{tmp_path / 'h.db'}", max_open=2, timeout=0.3,
                       configure=configure)
    try:
        t0 = time.monotonic()
        with pytest.raises(fastpool.PoolTimeout):
            db.query_row("SELECT 1")
        assert time.monotonic() - t0 < 2
        _whole(db.stats())
        release.set()
        assert db.query_row("SELECT 1") == (1,)
    finally:
        release.set()
        db.close()


SLOW_SQLITE = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
               " SELECT count(*) FROM c")


def _opener_threads() -> int:
    return sum(t.name == "fastpool-opener" for t in threading.enumerate())


def _cut_in_time(db: Any, stuck: list[bool], running: Any = None) -> None:
    """The caller gets PoolTimeout; within seconds the hung connect has failed (counted),
    no opener thread is left in the hook, nothing runs on the server (running() == 0),
    the counts add up, and once the hook behaves the pool serves."""
    t0 = time.monotonic()
    with pytest.raises(fastpool.PoolTimeout):
        db.query_row("SELECT 1")
    deadline = time.monotonic() + 10
    while (_opener_threads() or db.stats().opening) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert time.monotonic() - t0 < 5
    assert _opener_threads() == 0  # nothing left busy in the hook
    left = 1 if running is not None else 0
    while left and time.monotonic() < deadline:  # the session's end is on its way
        left = running()
        time.sleep(0.05)
    assert left == 0  # nothing left running on the server
    s = db.stats()
    assert s.connect_errors >= 1, s
    _whole(s)
    stuck[0] = False
    assert db.query_row("SELECT 1") == (1,)


def test_a_configure_hook_stuck_in_a_statement_is_cut_at_the_timeout(tmp_path):
    # The common hang: the hook waits on the database. Past the pool's timeout nobody
    # waits for that connection: it is cut under the hook, the connect fails (counted,
    # PoolTimeout naming the hook), and no thread stays busy.
    stuck = [True]

    def configure(raw: sqlite3.Connection) -> None:
        if stuck[0]:
            raw.execute(SLOW_SQLITE).fetchall()  # runs for minutes unless interrupted

    db = fastpool.open(f"sqlite:///{tmp_path / 'h.db'}", max_open=2, timeout=0.3,
                       configure=configure)
    try:
        _cut_in_time(db, stuck)
    finally:
        db.close()


def _running(dsn: str, marker: str) -> int:
    """Statements with marker in their text running on the server now (another session)."""
    with fastpool.open(dsn, max_open=1) as side:
        if dsn.startswith("postgresql"):
            sql = ("SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                   " AND query LIKE %s AND pid <> pg_backend_pid()")
        else:
            sql = ("SELECT COUNT(*) FROM information_schema.processlist"
                   " WHERE info LIKE %s AND id <> CONNECTION_ID()")
        row = side.query_row(sql, (f"%{marker}%",))
        return int(row[0])


@pytest.mark.parametrize("server", ["mariadb", "postgres"])
def test_a_configure_hook_stuck_on_the_server_is_cut_at_the_timeout(request, server):
    # The same on a real server: a hook blocked in a sleep (a lock it waits for, a slow
    # SET) has its socket shut at the timeout and its session ended (PostgreSQL would run
    # the sleep on for its client gone); the slot and the opener thread are free.
    dsn = request.getfixturevalue(server).dsn
    sleep = "SELECT pg_sleep(30)" if server == "postgres" else "SELECT SLEEP(30)"
    stuck = [True]

    def configure(raw: Any) -> None:
        if stuck[0]:
            cur = raw.cursor()
            cur.execute(sleep + " /* hook_stuck */")
            cur.fetchall()

    db = fastpool.open(dsn, max_open=2, timeout=0.5, configure=configure)
    try:
        _cut_in_time(db, stuck, lambda: _running(dsn, "hook_stuck"))
    finally:
        db.close()


def test_an_async_configure_hook_that_never_returns_is_cancelled_at_the_timeout(tmp_path):
    pytest.importorskip("greenlet")  # fastpool.aio's bridge (none for free-threaded 3.13 yet)
    aiosqlite = pytest.importorskip("aiosqlite")
    import fastpool.aio

    stuck = [True]
    cancelled = []

    async def configure(conn: Any) -> None:
        if stuck[0]:
            try:
                await asyncio.Event().wait()  # never set
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

    async def main() -> None:
        db = fastpool.aio.Pool(lambda: aiosqlite.connect(tmp_path / "h.db"), max_open=2,
                               timeout=0.3, configure=configure)
        try:
            with pytest.raises(fastpool.PoolTimeout):
                await asyncio.wait_for(db.query_row("SELECT 1"), 5)
            for _ in range(200):
                if cancelled and not db.stats().opening:
                    break
                await asyncio.sleep(0.01)
            assert cancelled == [True]  # the hook's coroutine was ended, not left pending
            s = db.stats()
            assert s.connect_errors >= 1, s
            _whole(s)
            stuck[0] = False
            assert await db.query_row("SELECT 1") == (1,)
        finally:
            await db.close()

    asyncio.run(main())
