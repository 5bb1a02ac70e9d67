"""fastpool.aio on asyncpg (postgresql://...?driver=asyncpg), against the throwaway
PostgreSQL (and PgBouncer) the test session starts: statements, rows (buffered and
streamed), transactions, the give-back rule, cancelled tasks, behind_pooler, and
SQLAlchemy's async engine on asyncpg with fastpool's queue pool."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import pytest

import fastpool
import fastpool.aio
from aio_scenarios import (
    Server, cancellation_storm, cut_blackhole_recovery, leak_stays_on_one_connection,
    longest_loop_stall_with_64_tasks, timeouts_and_deadlines,
)
from test_aio_postgresql import running

pytest.importorskip("greenlet")
asyncpg = pytest.importorskip("asyncpg", reason="asyncpg is not installed")


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main())


def url(postgres: Any) -> str:
    return postgres.dsn + ("&" if "?" in postgres.dsn else "?") + "driver=asyncpg"


def test_statements_rows_and_transactions(postgres) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with fastpool.aio.open(url(postgres), max_open=2) as db:
            assert await db.query_row("SELECT 1, $1::text", ("x",)) == (1, "x")
            rows = await db.query("SELECT g FROM generate_series(1, 5) g")
            assert rows.columns == ("g",) and list(rows) == [(i,) for i in range(1, 6)]
            await db.execute("CREATE TABLE IF NOT EXISTS apg_t (a int)")
            try:
                async with db.transaction() as tx:
                    res = await tx.execute("INSERT INTO apg_t VALUES ($1), ($2)", (1, 2))
                    assert res.rowcount == 2
                with pytest.raises(ZeroDivisionError):
                    async with db.transaction() as tx:
                        await tx.execute("INSERT INTO apg_t VALUES (3)")
                        1 / 0
                assert await db.query_row("SELECT count(*) FROM apg_t") == (2,)
            finally:
                await db.execute("DROP TABLE apg_t")
            s = db.stats()
            assert s.in_use == 0 and s.open <= 2 and s.bad_conns_discarded == 0

    run(main)


def test_query_row_and_execute_take_one_driver_call_with_the_same_results(postgres, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The native route asks the face for the whole statement (asyncpg's fetchrow, or the
    # command status for execute) instead of making a cursor: same rows, rowcounts, errors.
    import fastpool._bridge
    from fastpool.dialects import postgresql

    assert postgresql.STATEMENT_ROW == fastpool._bridge.STATEMENT_ROW
    calls = []
    run_statement = postgresql.AsyncpgFace.run_statement

    def counted(self, sql, params, mode):  # type: ignore[no-untyped-def]
        calls.append(mode)
        return run_statement(self, sql, params, mode)

    monkeypatch.setattr(postgresql.AsyncpgFace, "run_statement", counted)

    async def main() -> None:
        async with fastpool.aio.open(url(postgres), max_open=1) as db:
            await db.ping()  # the connect (through the bridge): the route needs an idle one
            calls.clear()
            assert await db.query_row("SELECT $1::int + 1, 'a' AS b", (41,)) == (42, "a")
            assert await db.query_row("SELECT 1 WHERE false") is None
            await db.execute("CREATE TEMP TABLE IF NOT EXISTS apg_one (a int)")
            assert (await db.execute("INSERT INTO apg_one SELECT generate_series(1, 3)")).rowcount == 3
            assert (await db.execute("UPDATE apg_one SET a = a WHERE a > $1", (1,))).rowcount == 2
            assert await db.query_row("UPDATE apg_one SET a = a WHERE false") is None
            with pytest.raises(asyncpg.PostgresSyntaxError):
                await db.query_row("SELEC 1")
            with pytest.raises(asyncpg.UndefinedTableError):
                await db.execute("DELETE FROM apg_missing")
            assert await db.query_row("SELECT 7") == (7,)  # the connection stayed good
            s = db.stats()
            assert s.open == 1 and s.bad_conns_discarded == 0 and s.in_use == 0

    run(main)
    assert calls.count(1) == 5 and calls.count(0) == 4, str(calls)


def test_a_transaction_left_open_is_rolled_back_at_give_back(postgres) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with fastpool.aio.open(url(postgres), max_open=1) as db:
            async with db.conn() as c:
                await c.execute("BEGIN")
                await c.execute("CREATE TEMP TABLE apg_left (a int)")
            # The one connection again: its transaction was rolled back, so no table.
            assert await db.query_row("SELECT to_regclass('pg_temp.apg_left') IS NULL") == (True,)
            assert db.stats().open == 1

    run(main)


def test_a_cancelled_task_leaves_no_statement_running(postgres) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with fastpool.aio.open(url(postgres), max_open=2) as db:
            task = asyncio.create_task(db.query_row("SELECT pg_sleep(5), 'apg-cancel-marker'"))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.3)
            left = await db.query_row(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                " AND query LIKE '%apg-cancel-' || 'marker%'")
            assert left == (0,)
            assert db.stats().in_use == 0

    run(main)


def test_the_url_names_the_driver_or_says_why_not(postgres) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(fastpool.ConfigError, match="not an asyncio driver|asyncio"):
        fastpool.open(url(postgres))
    with pytest.raises(fastpool.ConfigError, match="known: psycopg, asyncpg"):
        fastpool.aio.open(postgres.dsn + "?driver=pg8000")


def test_behind_pgbouncer_statements_run_and_session_state_is_refused(pgbouncer) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with fastpool.aio.open(url(pgbouncer) + "&behind_pooler=true", max_open=4) as db:
            async def worker(i: int) -> None:
                for j in range(40):
                    # The same statement again and again: with asyncpg's statement cache
                    # on, a named prepared statement would land on another server session.
                    assert await db.query_row("SELECT $1::int + $2::int", (i, j)) == (i + j,)
                    async with db.transaction() as tx:
                        await tx.execute("SET LOCAL statement_timeout = '5s'")  # LOCAL: fine
                        await tx.query_row("SELECT pg_advisory_xact_lock($1)", (2000 + i,))

            await asyncio.gather(*(worker(i) for i in range(8)))
            for _ in range(3):  # a stream's cursor and its transaction, one server session
                async with db.query("SELECT g FROM generate_series(1, 1500) g", stream=True) as rows:
                    assert [r[0] async for r in rows] == list(range(1, 1501))
            for sql in ("SET search_path TO public", "LISTEN fp_jobs",
                        "SELECT pg_advisory_lock(7)", "CREATE TEMP TABLE fp_tmp (x int)"):
                with pytest.raises(fastpool.SessionStateError, match="behind_pooler"):
                    await db.execute(sql)
            assert await db.query_row("SELECT 2") == (2,)
            s = db.stats()
            assert s.in_use == 0 and s.bad_conns_discarded == 0

    run(main)


def test_a_cancellation_storm_leaves_nothing_running_and_loses_nothing(postgres) -> None:  # type: ignore[no-untyped-def]
    """64 tasks on 8 connections, cancelled 0.3 s into pg_sleep, through fastpool.aio and
    through the asyncpg drop-in: no statement left on the server, every connection back."""
    import fastpool.asyncpg as fa

    marker = "apg-storm-" + "marker"
    sql = f"SELECT pg_sleep(5), '{marker}'"
    running = ("SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
               " AND query LIKE '%apg-storm-' || 'marker%'")

    async def storm(make: Callable[[], Awaitable[Any]]) -> None:
        tasks = [asyncio.create_task(make()) for _ in range(64)]
        await asyncio.sleep(0.3)
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)

    async def main() -> None:
        async with fastpool.aio.open(url(postgres), max_open=8) as db:
            await storm(lambda: db.query_row(sql))
            until = asyncio.get_running_loop().time() + 5
            while await db.query_row(running) != (0,):
                assert asyncio.get_running_loop().time() < until, "statements left running"
                await asyncio.sleep(0.05)
            s = db.stats()
            assert s.in_use == 0 and s.open <= 8
        async with fa.create_pool(postgres.dsn, min_size=0, max_size=8) as pool:
            async def one() -> None:
                async with pool.acquire() as con:
                    await con.fetchval(sql)

            await storm(one)
            await storm(lambda: pool.fetchval(sql))
            until = asyncio.get_running_loop().time() + 5
            while await pool.fetchval(running) != 0:
                assert asyncio.get_running_loop().time() < until, "statements left running"
                await asyncio.sleep(0.05)
            assert pool.get_size() <= 8
            # Every slot is back: all 8 can be held at once.
            held = [await pool.acquire(timeout=5) for _ in range(8)]
            assert all([await c.fetchval("SELECT 1") == 1 for c in held])
            for c in held:
                await pool.release(c)

    run(main)


def test_sqlalchemys_async_engine_on_asyncpg_with_fastpools_queue_pool(postgres) -> None:  # type: ignore[no-untyped-def]
    sa_async = pytest.importorskip("sqlalchemy.ext.asyncio")
    from sqlalchemy import text

    from fastpool.sqlalchemy import FastAsyncQueuePool

    async def main() -> None:
        engine = sa_async.create_async_engine(
            postgres.dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
            poolclass=FastAsyncQueuePool, pool_size=2, max_overflow=0)
        try:
            async def q(i: int) -> int:
                async with engine.connect() as c:
                    return int((await c.execute(text("SELECT :i + 1"), {"i": i})).scalar_one())

            assert await asyncio.gather(*(q(i) for i in range(20))) == [i + 1 for i in range(20)]
            async with engine.begin() as c:
                await c.execute(text("SELECT 1"))
            assert engine.pool.checkedout() == 0
        finally:
            await engine.dispose()

    run(main)


def test_streamed_rows_come_from_a_server_side_cursor(postgres) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with fastpool.aio.open(url(postgres), max_open=1) as db:
            n = 0
            async with db.query("SELECT g, g * 2 AS twice FROM generate_series(1, 2000) g",
                                stream=True) as rows:
                assert rows.columns == ("g", "twice")
                async for row in rows:
                    n += 1
                    assert row[1] == 2 * row[0] and row["twice"] == 2 * row[0]
            assert n == 2000
            # Outside a transaction the stream opened its own; it is committed, not left.
            await db.execute("CREATE TABLE IF NOT EXISTS apg_stream (a int)")
            try:
                async with db.query("INSERT INTO apg_stream SELECT g FROM generate_series(1, 3) g"
                                    " RETURNING a", stream=True) as rows:
                    assert [r[0] async for r in rows] == [1, 2, 3]
                assert await db.query_row("SELECT count(*) FROM apg_stream") == (3,)
                # Inside the caller's transaction: that transaction decides.
                with pytest.raises(ZeroDivisionError):
                    async with db.transaction() as tx:
                        async with tx.query("INSERT INTO apg_stream VALUES (9) RETURNING a",
                                            stream=True) as rows:
                            assert [r[0] async for r in rows] == [9]
                        1 / 0
                assert await db.query_row("SELECT count(*) FROM apg_stream") == (3,)
            finally:
                await db.execute("DROP TABLE apg_stream")
            # A stream left after a few rows: its connection comes back clean.
            async with db.query("SELECT g FROM generate_series(1, 100000) g", stream=True) as rows:
                async for _row in rows:
                    break
            assert await db.query_row("SELECT 1") == (1,)
            s = db.stats()
            assert s.open == 1 and s.in_use == 0 and s.bad_conns_discarded == 0
            with pytest.raises(asyncpg.PostgresError):
                async with db.query("SELECT 1 / 0", stream=True) as rows:
                    pass
            assert await db.query_row("SELECT 2") == (2,)

    run(main)


# ---- fastpool.aio's scenarios (tests/aio_scenarios.py), on asyncpg ------------------------
def server(dsn: str, admin_dsn: str | None = None) -> Server:
    return Server(dsn + ("&" if "?" in dsn else "?") + "driver=asyncpg",
                  lambda s, mark: f"SELECT pg_sleep({s}) /* {mark} */", "SELECT $1::int",
                  "SELECT g FROM generate_series(1, 600) g",
                  lambda mark: running(admin_dsn or dsn, mark))


def test_scenario_cancellation_storm(postgres) -> None:  # type: ignore[no-untyped-def]
    run(lambda: cancellation_storm(server(postgres.dsn)))


def test_scenario_timeouts_and_deadlines_end_the_statement_on_the_server(postgres) -> None:  # type: ignore[no-untyped-def]
    run(lambda: timeouts_and_deadlines(server(postgres.dsn)))


def test_scenario_the_seeds_leak_in_async_form_stays_on_one_connection(postgres) -> None:  # type: ignore[no-untyped-def]
    # 600 rows, streamed: each call leaves its stream unread.
    run(lambda: leak_stays_on_one_connection(server(postgres.dsn), 2000))


def test_scenario_faults_cut_blackhole_and_recovery(postgres, pg_proxied) -> None:  # type: ignore[no-untyped-def]
    proxy, make = pg_proxied
    run(lambda: cut_blackhole_recovery(server(make.dsn, postgres.dsn), proxy))


def test_scenario_the_loop_never_stalls_with_64_tasks(postgres) -> None:  # type: ignore[no-untyped-def]
    stall = run(lambda: longest_loop_stall_with_64_tasks(server(postgres.dsn)))
    assert stall < 0.25, f"the loop stalled for {stall:.3f}s"


def test_record_class_is_honoured(postgres) -> None:  # type: ignore[no-untyped-def]
    class Row(asyncpg.Record):  # type: ignore[misc, name-defined]
        def first(self) -> Any:
            return self[0]

    async def main() -> None:
        async with fastpool.aio.open(url(postgres), max_open=1, record_class=Row) as db:
            row = await db.query_row("SELECT 7 AS n")
            assert type(row) is Row and row.first() == 7 and row["n"] == 7
            assert all(type(r) is Row for r in await db.query("SELECT g FROM generate_series(1, 3) g"))
            async with db.query("SELECT 1", stream=True) as rows:
                assert [type(r) for r in [r async for r in rows]] == [Row]

    run(main)
    with pytest.raises(fastpool.ConfigError, match="record_class"):
        fastpool.aio.open(url(postgres), record_class=tuple)
    with pytest.raises(fastpool.ConfigError, match="asyncpg's"):
        fastpool.aio.open(postgres.dsn, record_class=asyncpg.Record)
