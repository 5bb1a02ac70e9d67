"""fastpool.aio on asyncpg (postgresql://...?driver=asyncpg), against the throwaway
PostgreSQL the test session starts. Work in progress (issue 31): statements, rows and
transactions, the give-back rule, a cancelled task."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import pytest

import fastpool
import fastpool.aio

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
