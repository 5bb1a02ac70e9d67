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
