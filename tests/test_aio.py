"""fastpool.aio without a server: aiosqlite (the embedded default) and a fake async driver.

Every test runs its own event loop (asyncio.run); the pools are opened inside it.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import time
import warnings
from typing import Any, Awaitable, Callable

import pytest

import fastpool
import fastpool.aio
from aio_checks import LoopStall
from aiofake import FakeAsyncDriver

pytest.importorskip("greenlet")


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main())  # type: ignore[arg-type]


def test_the_compiled_bridge_is_the_one_loaded() -> None:
    import fastpool._bridge as bridge

    assert bridge.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), bridge.__file__


# ---- aiosqlite -------------------------------------------------------------------------
aiosqlite = pytest.importorskip("aiosqlite")


def test_sqlite_statements_rows_and_transactions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with fastpool.aio.open(f"sqlite:///{tmp_path / 'a.db'}", max_open=2) as db:
            assert db.driver == "aiosqlite"
            await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            res = await db.execute("INSERT INTO t (v) VALUES (?)", ("a",))
            assert res.rowcount == 1 and res.lastrowid == 1
            assert await db.query_row("SELECT v FROM t WHERE id = ?", (1,)) == ("a",)
            assert await db.query_row("SELECT v FROM t WHERE id = ?", (99,)) is None
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t (v) VALUES ('b')")
            with pytest.raises(ZeroDivisionError):
                async with db.transaction() as tx:
                    await tx.execute("INSERT INTO t (v) VALUES ('never')")
                    1 / 0
            tx = await db.begin()
            await tx.execute("INSERT INTO t (v) VALUES ('c')")
            await tx.rollback()
            assert tx.done
            rows = await db.query("SELECT v FROM t ORDER BY id")
            assert rows.columns == ("v",)
            assert list(rows) == [("a",), ("b",)]  # a buffered Rows iterates without I/O
            assert db.stats().in_use == 0
            s = db.stats()
            assert s.open == s.in_use + s.idle + s.opening

    run(main)


def test_sqlite_stream_releases_at_the_last_row_and_on_exit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with fastpool.aio.open(f"sqlite:///{tmp_path / 's.db'}", max_open=1) as db:
            await db.execute("CREATE TABLE n (i INTEGER)")
            await db.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
                             " WHERE x < 2000) INSERT INTO n SELECT x FROM c")
            got = 0
            rows = db.query("SELECT i FROM n ORDER BY i", stream=True)
            async for _ in rows:
                got += 1
                if got == 1:
                    assert db.stats().in_use == 1  # held while rows remain
            assert got == 2000 and db.stats().in_use == 0
            async with db.query("SELECT i FROM n", stream=True) as rows:
                assert await rows.fetchone() == (1,)
                assert len(await rows.fetchmany(3)) == 3
                assert db.stats().in_use == 1
            assert db.stats().in_use == 0
            # Awaited with stream=True: the same Rows, read with async for.
            rows = await db.query("SELECT i FROM n WHERE i <= 3", stream=True)
            assert [r async for r in rows] == [(1,), (2,), (3,)]
            with pytest.raises(fastpool.FastpoolError, match="async for"):
                iter(await db.query("SELECT 1", stream=True))

    run(main)


def _first(db: fastpool.aio.Pool) -> Any:
    async def first() -> Any:
        async for row in db.query("SELECT i FROM n", stream=True):
            return row  # the seed's bug: the loop returns, the rows are dropped
        return None

    return first


def test_the_seeds_leak_in_async_form_is_reclaimed_on_one_connection(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with fastpool.aio.open(f"sqlite:///{tmp_path / 'l.db'}", max_open=10) as db:
            await db.execute("CREATE TABLE n (i INTEGER)")
            await db.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
                             " WHERE x < 3000) INSERT INTO n SELECT x FROM c")
            first = _first(db)
            peak = 0
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for _ in range(300):
                    assert await first() == (1,)
                    peak = max(peak, db.stats().open)
                await db.query_row("SELECT 1")  # waits for the last reclaim
            assert peak == 1
            assert db.stats().leaks_reclaimed == 300
            assert db.stats().in_use == 0
            leaks = [w for w in caught if w.category is fastpool.ConnectionLeakWarning]
            assert len(leaks) == 300
            assert leaks[0].filename == __file__
            assert "streaming Rows" in str(leaks[0].message)

    run(main)


def test_dropped_conn_and_tx_are_reclaimed_and_rolled_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with fastpool.aio.open(f"sqlite:///{tmp_path / 'd.db'}", max_open=1) as db:
            await db.execute("CREATE TABLE t (v INTEGER)")

            async def leak_tx() -> None:
                tx = await db.begin()
                await tx.execute("INSERT INTO t VALUES (1)")

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                await leak_tx()
                assert await db.query_row("SELECT COUNT(*) FROM t") == (0,)  # rolled back
                async with db.conn() as c:
                    assert not c.closed
                c2 = await db.getconn()
                del c2
                assert await db.query_row("SELECT 1") == (1,)
            msgs = [str(w.message) for w in caught if w.category is fastpool.ConnectionLeakWarning]
            assert len(msgs) == 2 and "Tx opened at" in msgs[0] and "Conn opened at" in msgs[1]
            assert all(__file__ in m for m in msgs)
            assert db.stats().leaks_reclaimed == 2

    run(main)


def test_deadline_interrupts_a_sqlite_statement(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with fastpool.aio.open(f"sqlite:///{tmp_path / 'x.db'}", max_open=1) as db:
            slow = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
                    " SELECT COUNT(*) FROM c")
            started = time.monotonic()
            with fastpool.deadline(0.3), pytest.raises(fastpool.DeadlineExceeded):
                await db.query_row(slow)
            assert time.monotonic() - started < 5
            assert await db.query_row("SELECT 2") == (2,)
            assert db.stats().deadlines_exceeded == 1

    run(main)


# ---- the fake async driver: waiting, fairness, errors, loops ----------------------------
def test_waiting_tasks_are_served_in_arrival_order() -> None:
    async def main() -> None:
        driver = FakeAsyncDriver()
        async with fastpool.aio.Pool(driver, max_open=1) as db:
            db.sync._set_handoff_after(0)  # strict hand-off: arrival order exactly
            holder = await db.getconn()
            order: list[int] = []

            async def waiter(i: int) -> None:
                async with db.conn():
                    order.append(i)

            tasks = []
            for i in range(20):
                tasks.append(asyncio.create_task(waiter(i)))
                await asyncio.sleep(0)  # each one queues before the next starts
            while db.stats().waiting < 20:
                await asyncio.sleep(0.001)
            await db.putconn(holder)
            await asyncio.gather(*tasks)
            assert order == list(range(20))
            assert len(driver.connections) == 1

    run(main)


def test_timeout_too_many_waiting_and_closed() -> None:
    async def main() -> None:
        db = fastpool.aio.Pool(FakeAsyncDriver(), max_open=1, max_waiting=1)
        holder = await db.getconn()
        started = time.monotonic()
        with pytest.raises(fastpool.PoolTimeout):
            await db.getconn(timeout=0.2)
        assert time.monotonic() - started >= 0.19
        queued = asyncio.create_task(db.getconn(timeout=5))
        while db.stats().waiting < 1:
            await asyncio.sleep(0.001)
        with pytest.raises(fastpool.TooManyWaiting):
            await db.getconn(timeout=5)
        await db.close()
        with pytest.raises(fastpool.PoolClosed):
            await queued
        await holder.close()  # given back to a closed pool: closed, not pooled
        with pytest.raises(fastpool.PoolClosed):
            await db.query_row("SELECT 1")
        assert db.stats().open == 0

    run(main)


def test_a_cancelled_waiter_leaves_the_queue_and_loses_nothing() -> None:
    async def main() -> None:
        async with fastpool.aio.Pool(FakeAsyncDriver(), max_open=1) as db:
            db.sync._set_handoff_after(0)
            holder = await db.getconn()
            doomed = asyncio.create_task(db.getconn())
            nxt = asyncio.create_task(db.getconn())
            while db.stats().waiting < 2:
                await asyncio.sleep(0.001)
            # Give the connection back (handed to `doomed`) and cancel `doomed` in the same
            # instant: the connection must reach `nxt`, not be lost with the cancelled task.
            await db.putconn(holder)
            doomed.cancel()
            with pytest.raises(asyncio.CancelledError):
                await doomed
            c = await asyncio.wait_for(nxt, 2)
            assert db.stats().waiting == 0 and db.stats().in_use == 1
            await c.close()
            s = db.stats()
            assert (s.open, s.in_use, s.idle) == (1, 0, 1)

    run(main)


def test_a_task_cancelled_mid_statement_discards_its_connection() -> None:
    async def main() -> None:
        driver = FakeAsyncDriver()
        async with fastpool.aio.Pool(driver, max_open=2) as db:
            task = asyncio.create_task(db.query_row("SLEEP 5"))
            await asyncio.sleep(0.05)
            task.cancel()
            started = time.monotonic()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - started < 0.5
            assert driver.connections[0].closed  # state unknown: never pooled again
            s = db.stats()
            assert s.in_use == 0 and s.bad_conns_discarded == 1
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await db.execute("SLEEP 5")
            assert await db.query_row("SELECT 1") is not None
            assert db.stats().in_use == 0

    run(main)


def test_driver_errors_propagate_unchanged_and_keep_the_connection() -> None:
    async def main() -> None:
        import aiofake

        driver = FakeAsyncDriver()
        async with fastpool.aio.Pool(driver, max_open=1) as db:
            with pytest.raises(aiofake.Error, match="the statement failed"):
                await db.execute("FAIL now")
            assert await db.query_row("SELECT 1") == (driver.connections[0].id,)
            assert len(driver.connections) == 1

    run(main)


# ---- the native route: a statement on an idle connection awaits the driver itself ----
def test_a_statement_on_an_idle_connection_awaits_the_driver_without_the_bridge() -> None:
    async def main() -> None:
        driver = FakeAsyncDriver()
        async with fastpool.aio.Pool(driver, max_open=1) as db:
            await db.query_row("SELECT 1")  # connects: through the bridge
            conn = driver.connections[0]
            assert conn.bridged == [True]
            assert await db.query_row("SELECT 1") == (conn.id,)
            res = await db.execute("UPDATE x")
            assert res.rowcount == 0
            assert conn.bridged[1:] == [False, False]
            # What may wait or do I/O in the pool's own code takes the bridge.
            with fastpool.deadline(5):
                await db.query_row("SELECT 1")
            db.statement_timeout = 5
            await db.query_row("SELECT 1")
            db.statement_timeout = None
            await db.execute("BEGIN")  # transaction control: the session is reset after
            assert conn.bridged[3:] == [True, True, True]
            # A task that must wait for a connection waits in the core's queue (through
            # the bridge), then runs its statement natively.
            holder = await db.getconn()  # the only connection taken: the next one waits
            waiting = asyncio.ensure_future(db.query_row("SELECT 1"))
            await asyncio.sleep(0.01)
            assert db.stats().waiting == 1
            await db.putconn(holder)
            assert await waiting == (conn.id,)
            assert conn.bridged[-1] is False
            s = db.stats()
            assert s.in_use == 0 and s.idle == 1 and s.connects == 1 and s.wait_count == 1

    run(main)


def test_the_native_route_settles_its_connection_as_the_bridge_does() -> None:
    async def main() -> None:
        import aiofake

        driver = FakeAsyncDriver()
        async with fastpool.aio.Pool(driver, max_open=2) as db:
            await db.query_row("SELECT 1")
            first = driver.connections[0]
            # A driver error: the caller's, unchanged; the connection kept.
            with pytest.raises(aiofake.Error, match="the statement failed"):
                await db.execute("FAIL now")
            assert first.bridged[-1] is False and not first.closed
            assert db.stats().idle == 1
            # Cancelled mid-statement: the protocol state is unknown, the connection closed.
            task = asyncio.create_task(db.query_row("SLEEP 5"))
            await asyncio.sleep(0.05)
            assert first.bridged[-1] is False  # the SLEEP runs on the native route
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert first.closed
            s = db.stats()
            assert s.in_use == 0 and s.bad_conns_discarded == 1 and s.open == 0
            # A statement with no result set: None, as the bridge gives.
            await db.query_row("SELECT 1")
            assert await db.query_row("UPDATE x") is None
            assert driver.connections[-1].bridged[-1] is False
            assert db.stats().in_use == 0

    run(main)


def test_tasks_that_wait_natively_are_served_in_arrival_order_time_out_and_leave_on_cancel() -> None:
    async def main() -> None:
        driver = FakeAsyncDriver()
        async with fastpool.aio.Pool(driver, max_open=1, timeout=5) as db:
            await db.query_row("SELECT 1")
            conn = driver.connections[0]
            db.sync._set_handoff_after(0)  # strict hand-off: the order is exactly FIFO
            holder = await db.getconn()
            done: list[int] = []

            async def request(i: int) -> None:
                await db.query_row("SELECT 1")
                done.append(i)

            tasks = []
            for i in range(5):
                tasks.append(asyncio.ensure_future(request(i)))
                await asyncio.sleep(0.005)  # queued in this order
            assert db.stats().waiting == 5
            await db.putconn(holder)
            await asyncio.gather(*tasks)
            assert done == [0, 1, 2, 3, 4]
            assert conn.bridged[-5:] == [False] * 5  # each ran natively after its wait
            assert db.stats().wait_count == 5

            # Its time runs out: PoolTimeout, counted; the holder keeps its connection.
            db.timeout = 0.05
            holder = await db.getconn()
            with pytest.raises(fastpool.PoolTimeout):
                await db.query_row("SELECT 1")
            assert db.stats().timeouts == 1 and db.stats().waiting == 0
            # Cancelled while it waits: it leaves the queue, nothing is lost.
            db.timeout = 5
            waiting = asyncio.ensure_future(db.query_row("SELECT 1"))
            await asyncio.sleep(0.01)
            assert db.stats().waiting == 1
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert db.stats().waiting == 0
            await db.putconn(holder)
            s = db.stats()
            assert s.in_use == 0 and s.idle == 1 and s.open == 1
            assert await db.query_row("SELECT 1") == (conn.id,)

    run(main)


def test_a_pool_that_never_waits_connects_through_the_bridge() -> None:
    async def main() -> None:
        driver = FakeAsyncDriver()
        async with fastpool.aio.Pool(driver, max_open=2, timeout=0) as db:
            assert await db.query_row("SELECT 1") == (driver.connections[0].id,)
            holder = await db.getconn()
            # None idle, room under max_open: timeout=0 connects in the caller's place.
            assert await db.query_row("SELECT 1") == (driver.connections[1].id,)
            await db.putconn(holder)
            held = [await db.getconn(), await db.getconn()]
            with pytest.raises(fastpool.PoolTimeout):  # full: "never wait" refuses at once
                await db.query_row("SELECT 1")
            for c in held:
                await db.putconn(c)
            assert db.stats().in_use == 0 and db.stats().open == 2

    run(main)


def test_the_native_route_tells_checkout_and_checkin_listeners() -> None:
    async def main() -> None:
        events: list[str] = []
        driver = FakeAsyncDriver()
        async with fastpool.aio.Pool(driver, max_open=1) as db:
            await db.query_row("SELECT 1")
            db.on("checkout", lambda ev: events.append(ev.event))
            db.on("checkin", lambda ev: events.append(ev.event))
            await db.query_row("SELECT 1")
            await db.execute("UPDATE x")
            assert driver.connections[0].bridged[1:] == [False, False]
            assert events == ["checkout", "checkin"] * 2

    run(main)


def test_a_reset_hook_runs_through_the_bridge_after_a_native_statement() -> None:
    async def main() -> None:
        resets: list[Any] = []

        async def reset(conn: Any) -> None:
            await asyncio.sleep(0)  # I/O of its own: awaited for the task
            resets.append(conn)

        driver = FakeAsyncDriver()
        async with fastpool.aio.Pool(driver, max_open=1, reset=reset) as db:
            await db.query_row("SELECT 1")
            await db.query_row("SELECT 1")
            assert driver.connections[0].bridged == [True, False]
            assert resets == [driver.connections[0]] * 2
            assert db.stats().in_use == 0 and db.stats().idle == 1

    run(main)


def test_a_second_event_loop_gets_a_clear_error() -> None:
    db = fastpool.aio.Pool(FakeAsyncDriver(), max_open=1)

    async def use() -> Any:
        return await db.query_row("SELECT 1")

    asyncio.run(use())

    def other_loop() -> None:
        loop = asyncio.new_event_loop()
        try:
            with pytest.raises(fastpool.EventLoopError, match="another event loop"):
                loop.run_until_complete(asyncio.wait_for(use(), 5))
        finally:
            loop.close()

    import threading

    err: list[BaseException] = []

    def target() -> None:
        try:
            other_loop()
        except BaseException as exc:
            err.append(exc)

    # The first loop is closed but its connection is still open: still refused, not hung.
    t = threading.Thread(target=target)
    t.start()
    t.join(10)
    assert not t.is_alive() and not err


def test_options_are_live_and_validated_and_hooks_may_be_coroutines() -> None:
    async def main() -> None:
        configured: list[Any] = []

        async def configure(conn: Any) -> None:
            await asyncio.sleep(0)
            configured.append(conn)

        db = fastpool.aio.Pool(FakeAsyncDriver(), max_open=3, configure=configure)
        assert db.configure is configure
        await db.query_row("SELECT 1")
        assert len(configured) == 1 and type(configured[0]).__name__ == "FakeAsyncConnection"
        db.max_open = 5
        assert db.max_open == 5 and db.stats().max_open == 5
        with pytest.raises(fastpool.ConfigError, match="max_open"):
            db.max_open = -1
        assert db.max_open == 5
        assert "fastpool.aio.Pool" in repr(db)
        await db.close()

    run(main)


def test_urls_pick_an_asyncio_driver_or_say_why_not() -> None:
    with pytest.raises(fastpool.ConfigError, match="fastpool.aio.open"):
        fastpool.open("mysql://u:secret@127.0.0.1/db?driver=asyncmy")
    with pytest.raises(fastpool.ConfigError, match="not an asyncio driver") as err:
        fastpool.aio.open("mysql://u:secret@127.0.0.1/db?driver=mysqlclient")
    assert "secret" not in str(err.value)
    with pytest.raises(fastpool.ConfigError, match="ssl_mod"):
        fastpool.aio.open("mysql://u:secret@127.0.0.1/db?driver=aiomysql&ssl_mod=REQUIRED")
    db = fastpool.aio.open("mysql://u:secret@127.0.0.1/db")
    assert db.driver in ("asyncmy", "aiomysql") and "secret" not in repr(db)


def test_the_loop_never_stalls_on_connects_waits_or_close() -> None:
    """64 tasks on 4 connections whose connects each take 0.3 s: if a connect, a wait, a
    statement or close() ran on the loop's thread, a ticker task would see a stall of at
    least that long."""

    async def main() -> float:
        async with LoopStall() as stall:
            db = fastpool.aio.Pool(FakeAsyncDriver(connect_delay=0.3), max_open=4, min_idle=2)

            async def worker() -> None:
                for _ in range(10):
                    await db.query_row("SLEEP 0.002")

            await asyncio.gather(*[worker() for _ in range(64)])
            # Close with a connect in flight (the opener's, for min_idle): joining the
            # opener on the loop's thread would wait for a connect that needs the loop.
            other = fastpool.aio.Pool(FakeAsyncDriver(connect_delay=0.3), max_open=2)
            await other.ping()
            other.min_idle = 2
            await asyncio.sleep(0.01)
            assert other.stats().opening == 1
            await other.close()
            await db.close()
        return stall.longest

    stall = run(main)
    assert stall < 0.25, f"the loop stalled for {stall:.3f}s"
