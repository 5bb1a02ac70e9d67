"""fastpool.aiomysql beside aiomysql's own pool, on the real MariaDB: the same scenario
through both must be seen the same way by their user (sizes, acquire and release, the
context managers, clear, close), except where fastpool is meant to differ: a task cancelled
mid-statement leaves nothing running on the server.

aiomysql's own pool tests need root over TLS with its bundled certificates, or a Unix
socket; they are not run here yet (see the README).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

import fastpool
import fastpool.aiomysql as fam
from aio_checks import running_on_server
from fastpool.url import parse_url

pytest.importorskip("greenlet")
aiomysql = pytest.importorskip("aiomysql")
MySQLdb = pytest.importorskip("MySQLdb", reason="mysqlclient is not installed")

_markers = itertools.count(1)


@pytest.fixture
def kw(mariadb) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    k = parse_url(mariadb.dsn).connect_kwargs
    return {"host": k["host"], "port": int(k["port"]), "user": k["user"],
            "password": k["password"], "db": k["database"]}


def running(kw: dict[str, Any], marker: str) -> int:
    return running_on_server(lambda: MySQLdb.connect(host=kw["host"], port=kw["port"], user=kw["user"],
                                                     password=kw["password"]), marker)


async def scenario(mod: Any, kw: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    marker = f"dropin_{next(_markers)}"
    async with mod.create_pool(minsize=2, maxsize=4, autocommit=True, **kw) as pool:
        out.append(("sizes", pool.size, pool.freesize, pool.minsize, pool.maxsize, pool.echo))
        async with pool.acquire() as conn:
            async with conn.cursor() as cur:
                await cur.execute("SELECT 1")
                out.append(("row", await cur.fetchone()))
            out.append(("in use", pool.size, pool.freesize))
        out.append(("released", pool.size, pool.freesize))
        conns = [await pool.acquire() for _ in range(4)]
        out.append(("all four", pool.size, pool.freesize, len(set(map(id, conns)))))
        waiter = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0.05)
        out.append(("fifth waits", waiter.done()))
        pool.release(conns[0])
        fifth = await asyncio.wait_for(waiter, 5)
        out.append(("handed over", fifth is conns[0]))
        for c in [fifth, *conns[1:]]:
            pool.release(c)
        out.append(("all back", pool.size, pool.freesize))
        # A connection given back inside a transaction is closed, not pooled.
        conn = await pool.acquire()
        await conn.begin()
        pool.release(conn)
        out.append(("in transaction: closed", conn.closed, pool.size, pool.freesize))
        await pool.clear()
        out.append(("clear", pool.size, pool.freesize))

        async def sleeper() -> None:
            async with pool.acquire() as c:
                async with c.cursor() as cur:
                    await cur.execute(f"SELECT SLEEP(3) /* {marker} */")

        t = asyncio.create_task(sleeper())
        await asyncio.sleep(0.3)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        await asyncio.sleep(0.5)
        out.append(("left running after a cancel", running(kw, marker)))
    out.append(("closed", pool.closed))
    return out


def test_the_same_scenario_reads_the_same_through_both(kw) -> None:  # type: ignore[no-untyped-def]
    theirs = asyncio.run(scenario(aiomysql, kw))
    ours = asyncio.run(scenario(fam, kw))
    differ = [(a, b) for a, b in zip(theirs, ours) if a != b]
    # The one intended difference: aiomysql leaves the cancelled statement running.
    assert differ == [(("left running after a cancel", 1), ("left running after a cancel", 0))]
    assert len(theirs) == len(ours)


def test_bad_sizes_misuse_and_recycle(kw) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(fastpool.ConfigError, match="minsize"):
        fam.create_pool(minsize=-1, **kw).__await__().send(None)
    with pytest.raises(fastpool.ConfigError, match="maxsize"):
        fam.create_pool(minsize=5, maxsize=2, **kw).__await__().send(None)

    async def main() -> None:
        pool = await fam.create_pool(minsize=0, maxsize=2, pool_recycle=1, autocommit=True, **kw)
        other = await aiomysql.connect(autocommit=True, **kw)
        with pytest.raises(fastpool.FastpoolError, match="not in use from this pool"):
            pool.release(other)
        other.close()
        conn = await pool.acquire()
        first = conn.server_thread_id
        pool.release(conn)
        with pytest.raises(fastpool.FastpoolError):
            pool.release(conn)  # twice
        await asyncio.sleep(1.2)  # past pool_recycle: a new connection
        conn = await pool.acquire()
        assert conn.server_thread_id != first
        pool.terminate()
        assert conn.closed
        await pool.wait_closed()
        assert pool.closed and pool.size == 0
        with pytest.raises(RuntimeError, match="after closing"):
            await pool.acquire()

    asyncio.run(main())


def test_waiting_tasks_are_served_in_arrival_order(kw) -> None:  # type: ignore[no-untyped-def]
    async def main() -> list[int]:
        order: list[int] = []
        async with fam.create_pool(minsize=1, maxsize=1, autocommit=True, **kw) as pool:
            pool.fastpool.sync._set_handoff_after(0)  # strict hand-off: exactly in order
            holder = await pool.acquire()

            async def waiter(i: int) -> None:
                async with pool.acquire():
                    order.append(i)

            tasks = []
            for i in range(10):
                tasks.append(asyncio.create_task(waiter(i)))
                await asyncio.sleep(0.01)
            pool.release(holder)
            await asyncio.gather(*tasks)
        return order

    assert asyncio.run(main()) == list(range(10))
