"""The asyncpg group: fastpool.asyncpg (the drop-in) and fastpool.aio on asyncpg beside the
bare asyncpg connection, asyncpg's own pool and SQLAlchemy's async engine on asyncpg.
Runs when PostgreSQL and asyncpg are here.

- ``fetchval("SELECT 1")`` from one task, 200 per round;
- acquire + release with nothing run (the pools' own cost: asyncpg's pool resets at each
  release);
- 64 tasks share 4 connections.

Targets (issue 31): SELECT 1 <= 1.05x the bare connection; acquire + release <= 5 us;
64 tasks >= 1.2x asyncpg's pool's req/s, longest wait <= 50 ms, no task starved.
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import pytest

from .test_async import run_tasks, storm

SELECT1 = "asyncpg: fetchval SELECT 1 from one task (200 per round)"
CYCLE = "asyncpg: acquire + release, nothing run (200 per round)"
TASKS = "asyncpg: 64 tasks share 4 connections"

asyncpg = pytest.importorskip("asyncpg", reason="asyncpg is not installed")


def _need_greenlet() -> None:
    if importlib.util.find_spec("greenlet") is None:
        pytest.skip("fastpool.aio needs greenlet")


class Contender:
    """open(), request(), cycle(), close() for one contender, as contend() wants."""

    def __init__(self, pg: Any, name: str, conns: int) -> None:
        self.pg, self.name, self.conns = pg, name, conns
        self.pool: Any = None

    async def open(self) -> None:
        dsn, n = self.pg.dsn, self.conns
        if self.name == "raw":
            self.pool = await asyncpg.connect(dsn)
        elif self.name == "asyncpg-pool":
            self.pool = await asyncpg.create_pool(dsn, min_size=n, max_size=n)
        elif self.name == "fastpool.asyncpg":
            _need_greenlet()
            import fastpool.asyncpg

            self.pool = await fastpool.asyncpg.create_pool(dsn, min_size=n, max_size=n)
        elif self.name == "fastpool.aio":
            _need_greenlet()
            import fastpool.aio

            self.pool = fastpool.aio.open(dsn + ("&" if "?" in dsn else "?") + "driver=asyncpg",
                                          max_open=n, timeout=60)
            await self.pool.query_row("SELECT 1")
        elif self.name == "AsyncAdaptedQueuePool":
            sa = pytest.importorskip("sqlalchemy.ext.asyncio", reason="SQLAlchemy is not installed")
            self.pool = sa.create_async_engine(
                dsn.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=n,
                max_overflow=0, pool_timeout=60)
        else:
            raise ValueError(self.name)

    async def request(self, sql: str = "SELECT 1") -> Any:
        if self.name == "fastpool.aio":
            return await self.pool.query_row(sql)
        if self.name == "AsyncAdaptedQueuePool":
            from sqlalchemy import text

            async with self.pool.connect() as c:
                return (await c.execute(text(sql))).scalar()
        return await self.pool.fetchval(sql)

    async def cycle(self) -> None:
        async with self.pool.acquire():
            pass

    async def close(self) -> None:
        if self.name == "AsyncAdaptedQueuePool":
            await self.pool.dispose()
        else:
            await self.pool.close()


def _per_call(benchmark: Any, loop: asyncio.AbstractEventLoop, step: Any) -> None:
    async def batch() -> None:
        for _ in range(200):
            await step()

    loop.run_until_complete(batch())  # warm
    benchmark.pedantic(lambda: loop.run_until_complete(batch()), rounds=30, iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["per_call_s"] = benchmark.stats.stats.median / 200


@pytest.mark.benchmark(group=SELECT1)
@pytest.mark.parametrize("contender", ["raw", "fastpool.asyncpg", "fastpool.aio", "asyncpg-pool",
                                       "AsyncAdaptedQueuePool"])
def test_asyncpg_select1(benchmark, pg, contender):  # type: ignore[no-untyped-def]
    loop = asyncio.new_event_loop()
    c = Contender(pg, contender, 1)
    try:
        loop.run_until_complete(c.open())
        _per_call(benchmark, loop, c.request)
    finally:
        loop.run_until_complete(c.close())
        loop.close()


@pytest.mark.benchmark(group=CYCLE)
@pytest.mark.parametrize("contender", ["fastpool.asyncpg", "asyncpg-pool"])
def test_asyncpg_cycle(benchmark, pg, contender):  # type: ignore[no-untyped-def]
    loop = asyncio.new_event_loop()
    c = Contender(pg, contender, 1)
    try:
        loop.run_until_complete(c.open())
        _per_call(benchmark, loop, c.cycle)
    finally:
        loop.run_until_complete(c.close())
        loop.close()


@pytest.mark.benchmark(group=TASKS)
@pytest.mark.parametrize("contender", ["fastpool.asyncpg", "fastpool.aio", "asyncpg-pool",
                                       "AsyncAdaptedQueuePool"])
def test_asyncpg_tasks(benchmark, pg, contender):  # type: ignore[no-untyped-def]
    run_tasks(benchmark, lambda: Contender(pg, contender, 4))


# ---- the cancellation storm ------------------------------------------------------------------
STORM = "asyncpg: 64 tasks cancelled 0.3 s into pg_sleep(2), pool of 8"


async def _running(dsn: str, marker: str) -> int:
    con = await asyncpg.connect(dsn)
    try:
        return int(await con.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1"
            " AND pid <> pg_backend_pid()", f"%{marker}%"))
    finally:
        await con.close()


async def _usable(c: Contender, n: int) -> int:
    """How many of the pool's n connections can be had at once within 2 s (lost ones
    cannot)."""
    async def hold(gate: asyncio.Event) -> bool:
        try:
            if c.name == "AsyncAdaptedQueuePool":
                async with c.pool.connect():
                    await gate.wait()
            elif c.name == "fastpool.aio":
                async with c.pool.conn(timeout=2):
                    await gate.wait()
            else:
                async with c.pool.acquire(timeout=2):
                    await gate.wait()
            return True
        except Exception:
            return False

    gate = asyncio.Event()
    tasks = [asyncio.create_task(asyncio.wait_for(hold(gate), 2.5)) for _ in range(n)]
    await asyncio.sleep(2.2)
    gate.set()
    got = await asyncio.gather(*tasks, return_exceptions=True)
    return sum(g is True for g in got)


@pytest.mark.benchmark(group=STORM)
@pytest.mark.parametrize("contender", ["fastpool.asyncpg", "fastpool.aio", "asyncpg-pool",
                                       "AsyncAdaptedQueuePool"])
def test_asyncpg_cancel_storm(benchmark, pg, contender):  # type: ignore[no-untyped-def]
    result: dict[str, Any] = {}
    marker = f"storm_{contender.replace('-', '_').replace('.', '_')}"

    async def once() -> None:
        c = Contender(pg, contender, 8)
        await c.open()
        try:
            result.update(await storm(c, f"SELECT pg_sleep(2) /* {marker} */",
                                      lambda: _running(pg.dsn, marker)))
            result["lost"] = 8 - await _usable(c, 8)
        finally:
            await asyncio.wait_for(c.close(), 10)

    benchmark.pedantic(lambda: asyncio.run(once()), rounds=1, iterations=1)
    benchmark.extra_info.update(result)


# ---- the seed's leak, asyncpg form -----------------------------------------------------------
LEAK = "leak: asyncpg, return inside `async for row in rows` (300 calls)"
LEAK_SQL = "SELECT g FROM generate_series(1, 50) g"


@pytest.mark.benchmark(group=LEAK)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning",
                            "ignore::ResourceWarning")  # what the leaked sockets say
@pytest.mark.parametrize("contender", ["fastpool.asyncpg", "fastpool.aio", "asyncpg-pool",
                                       "AsyncAdaptedQueuePool"])
def test_asyncpg_leak(benchmark, pg, contender):  # type: ignore[no-untyped-def]
    """The handler returns from inside its row loop and never gives the connection back;
    each call bounded by wait_for(0.05 s), since asyncpg's pool would wait for ever."""
    from .test_leak import run_async_leak, sqlalchemy_leaker

    c = Contender(pg, contender, 4)
    if contender == "fastpool.aio":
        async def call() -> Any:
            async for row in c.pool.query(LEAK_SQL, stream=True):
                return row

        def open_now() -> int:
            return int(c.pool.stats().open)
    elif contender == "AsyncAdaptedQueuePool":
        call, open_now = sqlalchemy_leaker(c, LEAK_SQL, {})
    else:
        async def call() -> Any:
            con = await c.pool.acquire()  # never released
            async with con.transaction():
                async for row in con.cursor(LEAK_SQL):
                    return row

        def open_now() -> int:
            return int(c.pool.get_size())
    failed = run_async_leak(benchmark, c, call, open_now, 0.05, contender == "asyncpg-pool")
    if contender.startswith("fastpool"):
        assert failed < 15  # a leak would fail nearly every call
