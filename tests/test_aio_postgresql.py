"""fastpool.aio on the real PostgreSQL through psycopg's AsyncConnection: statements,
streams, cancellation that reaches the server, deadlines, the seed's leak, faults from the
TCP proxy, behind PgBouncer, and a loop that never stalls."""

from __future__ import annotations

import asyncio
import time
import warnings
from typing import Any, Awaitable, Callable

import pytest

import fastpool
import fastpool.aio
from aio_checks import LoopStall

pytest.importorskip("greenlet")
psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main())  # type: ignore[arg-type]


def running(dsn: str, marker: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                        " AND query LIKE %s AND pid <> pg_backend_pid()", (f"%{marker}%",)).fetchone()
        return int(row[0])


def test_statements_streams_and_transactions(postgres) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with fastpool.aio.open(postgres.dsn, max_open=3) as db:
            assert db.driver == "psycopg_async"
            await db.execute("DROP TABLE IF EXISTS fp_aio_items")
            await db.execute("CREATE TABLE fp_aio_items (id int PRIMARY KEY, v text)")
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO fp_aio_items VALUES (%s, %s)", (1, "a"))
                await tx.execute("INSERT INTO fp_aio_items VALUES (%s, %s)", (2, "b"))
            with pytest.raises(RuntimeError):
                async with db.transaction() as tx:
                    await tx.execute("INSERT INTO fp_aio_items VALUES (3, 'c')")
                    raise RuntimeError("roll it back")
            rows = await db.query("SELECT id, v FROM fp_aio_items ORDER BY id")
            assert list(rows) == [(1, "a"), (2, "b")] and rows.columns == ("id", "v")
            n = 0
            async for (g,) in db.query("SELECT g FROM generate_series(1, 5000) g", stream=True):
                n += 1
                assert g == n
                if n == 100:
                    assert db.stats().in_use == 1
            assert n == 5000 and db.stats().in_use == 0
            async with db.conn() as c:
                await c.raw.execute("BEGIN")  # left open: rolled back at give-back
                await c.raw.execute("INSERT INTO fp_aio_items VALUES (9, 'z')")
            assert await db.query_row("SELECT count(*) FROM fp_aio_items") == (2,)
            await db.ping()
            s = db.stats()
            assert s.in_use == 0 and s.bad_conns_discarded == 0

    run(main)


def test_a_cancellation_storm_leaves_nothing_running(postgres) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with fastpool.aio.open(postgres.dsn, max_open=8) as db:
            tasks = [asyncio.create_task(db.query_row("SELECT pg_sleep(2) /* fp_storm */"))
                     for _ in range(64)]
            await asyncio.sleep(0.3)
            assert running(postgres.dsn, "fp_storm") == 8
            started = time.monotonic()
            for t in tasks:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert time.monotonic() - started < 1.0
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
            for _ in range(100):
                t = asyncio.create_task(db.query_row("SELECT pg_sleep(2) /* fp_storm */"))
                await asyncio.sleep(0.02)
                t.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await t
            await asyncio.sleep(1.0)
            assert running(postgres.dsn, "fp_storm") == 0
            answers = await asyncio.gather(*[db.query_row("SELECT %s::int", (i,)) for i in range(200)])
            assert answers == [(i,) for i in range(200)]
            s = db.stats()
            assert s.in_use == 0 and s.statements_cancelled >= 8
            assert s.open == s.in_use + s.idle + s.opening

    run(main)


def test_timeouts_and_deadlines_end_the_statement_on_the_server(postgres) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with fastpool.aio.open(postgres.dsn, max_open=2) as db:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await db.query_row("SELECT pg_sleep(3) /* fp_t1 */")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(db.execute("SELECT pg_sleep(3) /* fp_t2 */"), 0.3)
            assert time.monotonic() - started < 1.5
            await asyncio.sleep(0.3)
            assert running(postgres.dsn, "fp_t") == 0

            await db.query_row("SELECT 1")
            bad = db.stats().bad_conns_discarded
            started = time.monotonic()
            with fastpool.deadline(0.3), pytest.raises(fastpool.DeadlineExceeded) as err:
                await db.query_row("SELECT pg_sleep(3) /* fp_d1 */")
            assert isinstance(err.value.__cause__, psycopg.errors.QueryCanceled)
            assert time.monotonic() - started < 1.5
            assert running(postgres.dsn, "fp_d1") == 0
            db.statement_timeout = 0.3
            with pytest.raises(fastpool.DeadlineExceeded):
                await db.query_row("SELECT pg_sleep(3) /* fp_d2 */")
            db.statement_timeout = None
            assert await db.query_row("SELECT 7") == (7,)
            s = db.stats()
            assert s.deadlines_exceeded == 2 and s.statements_cancelled >= 4
            assert s.bad_conns_discarded == bad  # the cancel request left both clean

    run(main)


def test_the_seeds_leak_in_async_form_stays_on_one_connection(postgres) -> None:  # type: ignore[no-untyped-def]
    calls = 2000  # on a result longer than one batch (512 rows), so each call leaks

    async def main() -> None:
        async with fastpool.aio.open(postgres.dsn, max_open=10) as db:

            async def first() -> Any:
                async for row in db.query("SELECT g FROM generate_series(1, 600) g", stream=True):
                    return row
                return None

            peak = 0
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for _ in range(calls):
                    assert await first() == (1,)
                    peak = max(peak, db.stats().open)
                await db.query_row("SELECT 1")
            leaks = [w for w in caught if w.category is fastpool.ConnectionLeakWarning]
            assert peak == 1 and db.stats().connects == 1
            assert db.stats().leaks_reclaimed == calls == len(leaks)
            assert leaks[0].filename == __file__

    run(main)


def test_faults_cut_blackhole_and_recovery(pg_proxied) -> None:  # type: ignore[no-untyped-def]
    proxy, make = pg_proxied

    async def main() -> None:
        async with fastpool.aio.open(make.dsn, max_open=4) as db:
            await asyncio.gather(*[db.query_row("SELECT pg_sleep(0.05)") for _ in range(4)])
            assert db.stats().idle == 4
            assert proxy.cut() == 4
            await asyncio.sleep(0.1)
            answers = await asyncio.gather(*[db.query_row("SELECT %s::int", (i,)) for i in range(16)])
            assert answers == [(i,) for i in range(16)]
            assert db.stats().bad_conns_discarded >= 4

            proxy.blackhole()
            started = time.monotonic()
            with fastpool.deadline(0.5), pytest.raises(fastpool.DeadlineExceeded):
                await db.query_row("SELECT 1")
            assert time.monotonic() - started < 3.0
            proxy.restore()
            for _ in range(30):
                try:
                    assert await db.query_row("SELECT 5") == (5,)
                    break
                except Exception:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the pool did not recover after the network came back")
            s = db.stats()
            assert s.open == s.in_use + s.idle + s.opening and s.in_use == 0

    run(main)


def test_the_loop_never_stalls_with_64_tasks(postgres) -> None:  # type: ignore[no-untyped-def]
    async def main() -> float:
        async with LoopStall() as stall:
            db = fastpool.aio.open(postgres.dsn, max_open=4)

            async def worker() -> None:
                for _ in range(5):
                    await db.query_row("SELECT pg_sleep(0.01)")

            await asyncio.gather(*[worker() for _ in range(64)])
            assert db.stats().connects == 4
            await db.close()
        return stall.longest

    stall = run(main)
    assert stall < 0.25, f"the loop stalled for {stall:.3f}s"


def test_behind_pgbouncer(pgbouncer) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with fastpool.aio.open(pgbouncer.dsn + "?behind_pooler=true", max_open=4) as db:
            answers = await asyncio.gather(*[db.query_row("SELECT %s::int * 2", (i,))
                                             for i in range(300)])
            assert answers == [(i * 2,) for i in range(300)]
            with pytest.raises(fastpool.SessionStateError):
                await db.execute("SET search_path TO public")
            async with db.transaction() as tx:
                await tx.execute("SET LOCAL work_mem = '8MB'")
                assert await tx.query_row("SELECT current_setting('work_mem')") == ("8MB",)
            s = db.stats()
            assert s.in_use == 0 and s.bad_conns_discarded == 0

    run(main)
