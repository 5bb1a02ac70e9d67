"""FastAsyncQueuePool beside SQLAlchemy's AsyncAdaptedQueuePool, under create_async_engine:
the same scenarios through both (aiosqlite without a server, asyncmy on MariaDB), and
what fastpool adds: waiting tasks served in arrival order, the loop never blocked."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

pytest.importorskip("greenlet")
sa = pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed")
from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402
from sqlalchemy.pool import AsyncAdaptedQueuePool  # noqa: E402

from fastpool.sqlalchemy import FastAsyncQueuePool, FastQueuePool  # noqa: E402
from aio_checks import LoopStall  # noqa: E402


@pytest.fixture(params=[AsyncAdaptedQueuePool, FastAsyncQueuePool],
                ids=["AsyncAdaptedQueuePool", "FastAsyncQueuePool"])
def poolclass(request):  # type: ignore[no-untyped-def]
    return request.param


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    pytest.importorskip("aiosqlite")
    return f"sqlite+aiosqlite:///{tmp_path / 'sa.db'}"


@pytest.fixture
def asyncmy_url(mariadb) -> str:  # type: ignore[no-untyped-def]
    pytest.importorskip("asyncmy")
    return mariadb.dsn.replace("mysql://", "mysql+asyncmy://", 1)


async def many_tasks(url: str, poolclass: Any) -> dict[str, Any]:
    engine = create_async_engine(url, poolclass=poolclass, pool_size=4, max_overflow=0,
                                 pool_timeout=30)
    async def worker(i: int) -> list[Any]:
        got = []
        for j in range(10):
            async with engine.connect() as c:
                got.append((await c.execute(text(f"SELECT {i * 100 + j}"))).scalar())
        return got

    async with LoopStall() as stall:
        results = await asyncio.gather(*[worker(i) for i in range(64)])
    pool = engine.pool
    out = {"answers_right": all(r == [i * 100 + j for j in range(10)] for i, r in enumerate(results)),
           "checkedout": pool.checkedout(), "size": pool.size(), "stall": stall.longest,
           "status": pool.status()}
    await engine.dispose()
    return out


def test_64_tasks_on_sqlite(sqlite_url, poolclass) -> None:  # type: ignore[no-untyped-def]
    r = asyncio.run(many_tasks(sqlite_url, poolclass))
    assert r["answers_right"] and r["checkedout"] == 0 and r["size"] == 4
    assert r["stall"] < 0.25, r


def test_64_tasks_on_mariadb(asyncmy_url, poolclass) -> None:  # type: ignore[no-untyped-def]
    r = asyncio.run(many_tasks(asyncmy_url, poolclass))
    assert r["answers_right"] and r["checkedout"] == 0 and r["size"] == 4
    assert r["stall"] < 0.25, r


def test_timeout_is_sqlalchemys_and_the_loop_runs_meanwhile(sqlite_url, poolclass) -> None:  # type: ignore[no-untyped-def]
    async def main() -> float:
        engine = create_async_engine(sqlite_url, poolclass=poolclass, pool_size=1,
                                     max_overflow=0, pool_timeout=0.3)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick = asyncio.create_task(ticker())
        async with engine.connect():
            started = time.monotonic()
            with pytest.raises(sa.exc.TimeoutError):
                async with engine.connect():
                    pass
            waited = time.monotonic() - started
        tick.cancel()
        await engine.dispose()
        assert ticks >= 10  # the loop ran while the second task waited
        return waited

    assert asyncio.run(main()) >= 0.29


def test_fast_async_pool_serves_tasks_in_arrival_order(sqlite_url) -> None:  # type: ignore[no-untyped-def]
    async def main() -> list[int]:
        engine = create_async_engine(sqlite_url, poolclass=FastAsyncQueuePool, pool_size=1,
                                     max_overflow=0)
        engine.pool._fp._set_handoff_after(0)  # strict hand-off: arrival order exactly
        order: list[int] = []
        holder = await engine.connect()

        async def waiter(i: int) -> None:
            async with engine.connect():
                order.append(i)

        tasks = []
        for i in range(12):
            tasks.append(asyncio.create_task(waiter(i)))
            await asyncio.sleep(0.01)
        await holder.close()
        await asyncio.gather(*tasks)
        await engine.dispose()
        return order

    assert asyncio.run(main()) == list(range(12))


def test_the_sync_pool_class_is_refused_by_an_async_engine(sqlite_url) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(sa.exc.ArgumentError, match="asyncio"):
        create_async_engine(sqlite_url, poolclass=FastQueuePool)
