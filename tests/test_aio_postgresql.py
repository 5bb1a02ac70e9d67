"""fastpool.aio on the real PostgreSQL through psycopg's AsyncConnection: statements,
streams, cancellation that reaches the server, deadlines, the seed's leak, faults from the
TCP proxy, behind PgBouncer, and a loop that never stalls."""

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


def server(dsn: str, admin_dsn: str | None = None) -> Server:
    return Server(dsn, lambda s, mark: f"SELECT pg_sleep({s}) /* {mark} */", "SELECT %s::int",
                  "SELECT g FROM generate_series(1, 600) g",
                  lambda mark: running(admin_dsn or dsn, mark))


def test_a_cancellation_storm_leaves_nothing_running(postgres) -> None:  # type: ignore[no-untyped-def]
    run(lambda: cancellation_storm(server(postgres.dsn)))


def test_timeouts_and_deadlines_end_the_statement_on_the_server(postgres) -> None:  # type: ignore[no-untyped-def]
    # libpq's cancel request for deadlines: QueryCanceled answered, the connection kept.
    run(lambda: timeouts_and_deadlines(server(postgres.dsn)))


def test_the_seeds_leak_in_async_form_stays_on_one_connection(postgres) -> None:  # type: ignore[no-untyped-def]
    # 600 rows: more than one batch (512), so each call leaves a stream unread.
    run(lambda: leak_stays_on_one_connection(server(postgres.dsn), 2000))


def test_faults_cut_blackhole_and_recovery(postgres, pg_proxied) -> None:  # type: ignore[no-untyped-def]
    proxy, make = pg_proxied
    run(lambda: cut_blackhole_recovery(server(make.dsn, postgres.dsn), proxy))


def test_the_loop_never_stalls_with_64_tasks(postgres) -> None:  # type: ignore[no-untyped-def]
    stall = run(lambda: longest_loop_stall_with_64_tasks(server(postgres.dsn)))
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
