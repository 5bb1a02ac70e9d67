"""fastpool.psycopg beside psycopg_pool itself, on the real PostgreSQL: the same scenarios
through both pools (sync and async) read the same.

psycopg_pool's own tests live in psycopg's repository, not in the psycopg-pool sdist (3.3.3
holds the package only) nor in psycopg's, so they cannot be run from an sdist as the other
originals' are; these side-by-side tests stand in for them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

import fastpool
from pg_server import terminate_backend

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
psycopg_pool = pytest.importorskip("psycopg_pool", reason="psycopg_pool is not installed")
import fastpool.psycopg as fp_psycopg  # noqa: E402

MODULES = {"psycopg_pool": psycopg_pool, "fastpool": fp_psycopg}


@pytest.fixture(params=list(MODULES))
def mod(request) -> Any:  # type: ignore[no-untyped-def]
    return MODULES[request.param]


def test_the_pool_classes_and_errors_are_psycopg_pools_too():
    assert issubclass(fp_psycopg.PoolTimeout, psycopg_pool.PoolTimeout)
    assert issubclass(fp_psycopg.PoolTimeout, fastpool.PoolTimeout)
    assert issubclass(fp_psycopg.PoolClosed, psycopg_pool.PoolClosed)
    assert issubclass(fp_psycopg.TooManyRequests, psycopg_pool.TooManyRequests)
    assert issubclass(fp_psycopg.TooManyRequests, fastpool.TooManyWaiting)


def test_connection_commits_or_rolls_back_as_psycopg_pool(mod, postgres):
    table = f"fp_dropin_{mod.__name__.replace('.', '_')}"
    with mod.ConnectionPool(postgres.dsn, min_size=1, max_size=2, open=False) as pool:
        with pool.connection() as conn:
            assert conn.autocommit is False  # as the user's kwargs left it
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"CREATE TABLE {table} (x int)")
            conn.execute(f"INSERT INTO {table} VALUES (1)")
        with pytest.raises(RuntimeError), pool.connection() as conn:
            conn.execute(f"INSERT INTO {table} VALUES (2)")
            raise RuntimeError("rolled back")
        with pool.connection() as conn:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)
            conn.execute(f"DROP TABLE {table}")
        with pool.connection(timeout=5) as conn:
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        stats = pool.get_stats()
        assert stats["requests_num"] == 4 and stats["pool_min"] == 1 and stats["pool_max"] == 2
        assert {"pool_size", "pool_available", "requests_waiting", "usage_ms",
                "connections_num"} <= set(stats)
        popped = pool.pop_stats()
        assert popped["requests_num"] == 4
        assert "requests_num" not in pool.get_stats()


def test_what_is_given_back_is_made_clean_as_psycopg_pool(mod, postgres, caplog):
    with mod.ConnectionPool(postgres.dsn, min_size=1, max_size=1, open=False) as pool:
        pool.wait(10)
        conn = pool.getconn()
        pid = conn.info.backend_pid
        conn.execute("SELECT 1")  # a transaction left open
        with caplog.at_level(logging.WARNING):
            pool.putconn(conn)
        assert "rolling back returned connection" in caplog.text
        conn = pool.getconn()
        assert conn.info.backend_pid == pid  # kept
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        conn.pgconn.send_query(b"SELECT pg_sleep(0.2)")  # mid-statement: closed
        pool.putconn(conn)
        conn = pool.getconn(timeout=10)
        assert conn.info.backend_pid != pid
        conn.close()  # closed by its user: replaced
        pool.putconn(conn)
        assert pool.get_stats().get("returns_bad") == 2  # mid-statement, and closed
        with pool.connection(timeout=10) as conn:
            assert conn.execute("SELECT 7").fetchone() == (7,)


def test_timeouts_queue_limits_and_closing(mod, postgres):
    pool = mod.ConnectionPool(postgres.dsn, min_size=1, max_size=1, max_waiting=1, open=True)
    try:
        held = pool.getconn()
        outcome: list[type] = []

        def wait_in_queue() -> None:
            try:
                pool.getconn(timeout=1.0)
            except Exception as exc:
                outcome.append(type(exc))

        waiter = threading.Thread(target=wait_in_queue)
        waiter.start()
        time.sleep(0.2)
        with pytest.raises(psycopg_pool.TooManyRequests):
            pool.getconn(timeout=1.0)  # the queue is full: refused at once
        waiter.join()
        assert outcome == [mod.PoolTimeout]
        # The waiter has gone. psycopg_pool still counts it against max_waiting (a waiter
        # that timed out stays in its queue until a connection is given back), so the next
        # caller is refused; fastpool's queue has room again and the caller waits.
        started = time.monotonic()
        if mod is psycopg_pool:
            with pytest.raises(psycopg_pool.TooManyRequests):
                pool.getconn(timeout=0.2)
        else:
            with pytest.raises(psycopg_pool.PoolTimeout):
                pool.getconn(timeout=0.2)
            assert 0.15 < time.monotonic() - started < 2
        pool.putconn(held)
        assert pool.get_stats()["requests_errors"] == 3
        other = mod.ConnectionPool(postgres.dsn, min_size=1, open=True)
        conn = other.getconn()
        with pytest.raises(ValueError):
            pool.putconn(conn)  # not this pool's
        other.putconn(conn)
        other.close()
    finally:
        pool.close()
    with pytest.raises(psycopg_pool.PoolClosed):
        pool.getconn()
    with pytest.raises(psycopg_pool.PoolClosed):
        pool.open()  # a closed pool is not opened again
    never = mod.ConnectionPool(postgres.dsn, open=False)
    with pytest.raises(psycopg_pool.PoolClosed, match="not open"):
        never.getconn()


def test_hooks_check_reset_configure(mod, postgres):
    seen: dict[str, int] = {"configure": 0, "reset": 0, "check": 0}

    def configure(conn: Any) -> None:
        seen["configure"] += 1
        conn.autocommit = True

    def reset(conn: Any) -> None:
        seen["reset"] += 1
        conn.execute("RESET ALL")

    def check(conn: Any) -> None:
        seen["check"] += 1
        mod.ConnectionPool.check_connection(conn)

    with mod.ConnectionPool(postgres.dsn, min_size=1, max_size=1, configure=configure,
                            reset=reset, check=check, open=False) as pool:
        with pool.connection(timeout=10) as conn:
            pid = conn.info.backend_pid
            conn.execute("SET application_name = 'fp_hooked'")
        with pool.connection(timeout=10) as conn:
            assert conn.execute("SELECT current_setting('application_name')").fetchone() == ("",)
        # A connection killed on the server is found by the check and replaced unseen.
        terminate_backend(postgres.dsn, pid)
        with pool.connection(timeout=10) as conn:
            assert conn.info.backend_pid != pid and conn.execute("SELECT 1").fetchone() == (1,)
    # psycopg_pool checks at every getconn, fastpool each connection taken from the idle
    # list (not one it has just opened): both checked the one killed on the server.
    assert seen["configure"] >= 2 and seen["reset"] >= 2 and seen["check"] >= 1


def test_check_resize_drain_and_close_returns(mod, postgres):
    with mod.ConnectionPool(postgres.dsn, min_size=2, max_size=2, close_returns=True,
                            open=False) as pool:
        pool.wait(10)
        conns = [pool.getconn() for _ in range(2)]
        pids = {c.info.backend_pid for c in conns}
        for c in conns:
            c.close()  # close_returns: back to the pool, not closed
        assert not any(c.closed for c in conns)
        terminate_backend(postgres.dsn, min(pids))
        pool.check()
        assert pool.get_stats()["connections_lost"] >= 1
        pool.resize(1, 3)
        assert (pool.min_size, pool.max_size) == (1, 3)
        held = [pool.getconn(timeout=10) for _ in range(3)]
        pids |= {c.info.backend_pid for c in held}
        for c in held:
            pool.putconn(c)
        pool.drain()  # every connection made before this is replaced
        with pool.connection(timeout=10) as conn:
            assert conn.info.backend_pid not in pids


def test_wait_gives_up_on_a_server_that_is_not_there(mod):
    pool = mod.ConnectionPool("host=127.0.0.1 port=9 connect_timeout=1", min_size=1, open=False)
    pool.open()
    started = time.monotonic()
    with pytest.raises(psycopg_pool.PoolTimeout):
        pool.wait(timeout=1.0)
    assert time.monotonic() - started < 5
    assert pool.closed


def test_sixteen_threads_on_four_connections_are_all_served(mod, postgres):
    with mod.ConnectionPool(postgres.dsn, min_size=4, max_size=4, open=False,
                            kwargs={"autocommit": True}) as pool:
        pool.wait(10)
        done = [0] * 16
        end = time.monotonic() + 1.5

        def worker(i: int) -> None:
            while time.monotonic() < end:
                with pool.connection() as conn:
                    assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
                done[i] += 1

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert min(done) > 0
        stats = pool.get_stats()
        assert stats["pool_size"] == 4 and stats["requests_waiting"] == 0


# ---- the async pool ---------------------------------------------------------------------------
def test_async_pool_reads_the_same(mod, postgres):
    table = f"fp_adropin_{mod.__name__.replace('.', '_')}"

    async def main() -> None:
        async with mod.AsyncConnectionPool(postgres.dsn, min_size=1, max_size=2,
                                           open=False) as pool:
            await pool.wait(10)
            async with pool.connection() as conn:
                await conn.execute(f"DROP TABLE IF EXISTS {table}")
                await conn.execute(f"CREATE TABLE {table} (x int)")
                await conn.execute(f"INSERT INTO {table} VALUES (1)")
            with pytest.raises(RuntimeError):
                async with pool.connection() as conn:
                    await conn.execute(f"INSERT INTO {table} VALUES (2)")
                    raise RuntimeError("rolled back")
            async with pool.connection() as conn:
                cur = await conn.execute(f"SELECT count(*) FROM {table}")
                assert await cur.fetchone() == (1,)
                await conn.execute(f"DROP TABLE {table}")
            a = await pool.getconn()
            b = await pool.getconn()
            started = time.monotonic()
            with pytest.raises(psycopg_pool.PoolTimeout):
                await pool.getconn(timeout=0.2)
            assert time.monotonic() - started < 2
            # A waiting task cancelled leaves the queue; the connection goes to the next.
            waiter = asyncio.create_task(pool.getconn(timeout=5))
            await asyncio.sleep(0.1)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            await a.execute("BEGIN")
            await pool.putconn(a)  # rolled back
            c = await pool.getconn(timeout=5)
            assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            await pool.putconn(c)
            await pool.putconn(b)
            await pool.check()
            stats = pool.get_stats()
            # psycopg_pool also counts the cancelled waiter as a request error
            assert stats["requests_errors"] == (2 if mod is psycopg_pool else 1)
            assert stats["pool_size"] == 2
        with pytest.raises(psycopg_pool.PoolClosed):
            await pool.getconn()

    asyncio.run(main())


def test_min_size_counts_the_connections_in_use_as_psycopg_pool(mod, postgres):
    # min_size is connections kept open, in use or idle: with 2 of min_size=2 held the
    # pool stays at 2 (fastpool's drop-in used to open 2 more idle ones, as min_idle does).
    with mod.ConnectionPool(postgres.dsn, min_size=2, max_size=4, open=False) as pool:
        pool.wait(10)
        held = [pool.getconn(timeout=10) for _ in range(2)]
        time.sleep(0.5)  # time for an opener to make what it thinks is missing
        assert pool.get_stats()["pool_size"] == 2
        for c in held:
            pool.putconn(c)
        time.sleep(0.2)
        s = pool.get_stats()
        assert (s["pool_size"], s["pool_available"]) == (2, 2)
