"""The PostgreSQL group (psycopg 3): fastpool beside the bare connection, psycopg_pool and
SQLAlchemy's QueuePool, and the fleet run through PgBouncer. Runs when PostgreSQL is here
(FASTPOOL_BENCH_PG_DSN, else a throwaway server started for the run).

- SELECT 1 per request from one thread;
- 16 threads share 4 connections; 64 asyncio tasks share 4 connections;
- the fleet: 8 processes x a pool of 10, against a server that lets the application 20
  connections, directly and through PgBouncer in transaction mode (default_pool_size 20).

Targets (issue 21): SELECT 1 <= 1.05x the bare connection; >= 1.3x psycopg_pool's
throughput with no worse a longest wait.
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import pytest

import fastpool

from .fleet import run_fleet
from .support import bench_seconds, measure
from .test_async import run_tasks
from .test_contended import contend

SELECT1 = "postgresql: SELECT 1 per request"
CONTENDED = "postgresql: 16 threads share 4 connections"
TASKS = "postgresql: 64 tasks share 4 connections"
ONE_TASK = "postgresql: asyncio SELECT 1 from one task (200 per round)"
FLEET = "postgresql fleet: 8 processes x pool of 10, 20 server connections"

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")


def _sa_url(dsn: str, driver: str = "psycopg") -> str:
    return dsn.replace("postgresql://", f"postgresql+{driver}://", 1)


def sync_contender(pg: Any, name: str, conns: int) -> tuple[Any, Any]:
    """(request, close) for one contender: request() runs SELECT 1 as a handler would."""
    if name == "raw":
        conn = psycopg.connect(pg.dsn, autocommit=True)

        def request() -> Any:
            return conn.execute("SELECT 1").fetchone()

        return request, conn.close
    if name == "fastpool":
        db = fastpool.open(pg.dsn, max_open=conns, timeout=60)
        return (lambda: db.query_row("SELECT 1")), db.close
    if name in ("psycopg_pool", "fastpool.psycopg"):
        if name == "psycopg_pool":
            mod = pytest.importorskip("psycopg_pool", reason="psycopg_pool is not installed")
        else:
            import fastpool.psycopg as mod
        pool = mod.ConnectionPool(pg.dsn, min_size=conns, max_size=conns, timeout=60,
                                  kwargs={"autocommit": True}, open=True)
        pool.wait(30)

        def request() -> Any:
            with pool.connection() as conn:
                return conn.execute("SELECT 1").fetchone()

        return request, pool.close
    if name == "QueuePool":
        sa = pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed")
        engine = sa.create_engine(_sa_url(pg.dsn), pool_size=conns, max_overflow=0,
                                  pool_timeout=60)
        stmt = sa.text("SELECT 1")

        def request() -> Any:
            with engine.connect() as c:
                return c.execute(stmt).fetchone()

        return request, engine.dispose
    raise ValueError(name)


@pytest.mark.benchmark(group=SELECT1)
@pytest.mark.parametrize("contender", ["raw", "fastpool", "psycopg_pool", "fastpool.psycopg",
                                       "QueuePool"])
def test_pg_select1(benchmark, pg, contender):  # type: ignore[no-untyped-def]
    request, close = sync_contender(pg, contender, 1)
    try:
        request()
        measure(benchmark, request, iterations=200, rounds=30)
    finally:
        close()


@pytest.mark.benchmark(group=CONTENDED)
@pytest.mark.parametrize("contender", ["fastpool", "psycopg_pool", "fastpool.psycopg",
                                       "QueuePool"])
def test_pg_contended(benchmark, pg, contender):  # type: ignore[no-untyped-def]
    request, close = sync_contender(pg, contender, 4)
    try:
        r = contend(benchmark, request, 16, 4)
    finally:
        close()
    assert r["requests_per_s"] > 0


class TaskContender:
    """The asyncio side: open(), request(sql), close(), as bench/test_async.contend wants."""

    def __init__(self, pg: Any, name: str, conns: int) -> None:
        self.pg, self.name, self.conns = pg, name, conns
        self.pool: Any = None

    async def open(self) -> None:
        if self.name == "raw":
            self.pool = await psycopg.AsyncConnection.connect(self.pg.dsn, autocommit=True)
        elif self.name == "fastpool":
            self.pool = fastpool.aio.open(self.pg.dsn, max_open=self.conns, timeout=60)
            await self.pool.query_row("SELECT 1")
        elif self.name in ("psycopg_pool", "fastpool.psycopg"):
            if self.name == "psycopg_pool":
                mod = pytest.importorskip("psycopg_pool", reason="psycopg_pool is not installed")
            else:
                import fastpool.psycopg as mod
            self.pool = mod.AsyncConnectionPool(self.pg.dsn, min_size=self.conns,
                                                max_size=self.conns, timeout=60,
                                                kwargs={"autocommit": True}, open=False)
            await self.pool.open(wait=True)
        elif self.name == "AsyncAdaptedQueuePool":
            sa = pytest.importorskip("sqlalchemy.ext.asyncio", reason="SQLAlchemy is not installed")
            self.pool = sa.create_async_engine(_sa_url(self.pg.dsn), pool_size=self.conns,
                                               max_overflow=0, pool_timeout=60)
        else:
            raise ValueError(self.name)

    async def request(self, sql: str = "SELECT 1") -> Any:
        if self.name == "fastpool":
            return await self.pool.query_row(sql)
        if self.name == "raw":
            cur = await self.pool.execute(sql)
            return await cur.fetchone()
        if self.name == "AsyncAdaptedQueuePool":
            from sqlalchemy import text

            async with self.pool.connect() as c:
                return (await c.execute(text(sql))).fetchone()
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql)
            return await cur.fetchone()

    async def close(self) -> None:
        if self.name == "raw":
            await self.pool.close()
        elif self.name == "AsyncAdaptedQueuePool":
            await self.pool.dispose()
        else:
            await self.pool.close()


@pytest.mark.benchmark(group=ONE_TASK)
@pytest.mark.parametrize("contender", ["raw", "fastpool", "psycopg_pool", "fastpool.psycopg",
                                       "AsyncAdaptedQueuePool"])
def test_pg_async_select1(benchmark, pg, contender):  # type: ignore[no-untyped-def]
    if contender != "raw":
        if importlib.util.find_spec("greenlet") is None:
            pytest.skip("fastpool.aio needs greenlet")
        import fastpool.aio  # noqa: F401

    loop = asyncio.new_event_loop()
    c = TaskContender(pg, contender, 1)
    try:
        loop.run_until_complete(c.open())

        async def batch() -> None:
            for _ in range(200):
                await c.request()

        loop.run_until_complete(batch())  # warm
        benchmark.pedantic(lambda: loop.run_until_complete(batch()), rounds=30, iterations=1)
        if benchmark.stats is not None:  # None under --benchmark-disable
            benchmark.extra_info["per_call_s"] = benchmark.stats.stats.median / 200
    finally:
        loop.run_until_complete(c.close())
        loop.close()


@pytest.mark.benchmark(group=TASKS)
@pytest.mark.parametrize("contender", ["fastpool", "psycopg_pool", "fastpool.psycopg",
                                       "AsyncAdaptedQueuePool"])
def test_pg_tasks(benchmark, pg, contender):  # type: ignore[no-untyped-def]
    if importlib.util.find_spec("greenlet") is None:
        pytest.skip("fastpool.aio needs greenlet")
    import fastpool.aio  # noqa: F401

    run_tasks(benchmark, lambda: TaskContender(pg, contender, 4))


@pytest.mark.benchmark(group=FLEET)
@pytest.mark.parametrize("route", ["direct", "pgbouncer"])
def test_pg_fleet(benchmark, pg_fleet, route):  # type: ignore[no-untyped-def]
    server, bouncer = pg_fleet
    dsn = server.dsn if route == "direct" else bouncer.dsn
    admin = server.superuser()

    def count() -> int:
        row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'fastpool'"
                            " AND backend_type = 'client backend'").fetchone()
        return int(row[0])

    result: dict[str, Any] = {}
    try:
        benchmark.pedantic(lambda: result.update(run_fleet(
            dsn, count, seconds=bench_seconds(), behind_pooler=route == "pgbouncer")),
            rounds=1, iterations=1)
    finally:
        admin.close()
    benchmark.extra_info.update(result)
    benchmark.extra_info["route"] = route
    assert result["processes_reported"] == 8
    if route == "pgbouncer":
        assert result["errors"] == 0 and result["peak_server_connections"] <= 20
