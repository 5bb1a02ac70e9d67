"""The seed's leak: a loop that returns from inside `for row in rows`, called again and
again, through each pool. Reports time per call, calls that failed for want of a
connection (the 504s), and connections open afterwards."""

from __future__ import annotations

import gc
import queue
import warnings
from typing import Any

import pytest

import fastpool

from .support import GoStylePool

pytestmark = pytest.mark.filterwarnings("ignore:The reconnect parameter of ping:DeprecationWarning")

GROUP = "leak: return inside `for row in rows` (300 calls)"
CALLS = 300
MAX_OPEN = 4
TABLE_ROWS = 50


@pytest.fixture(scope="module")
def table(backend):  # type: ignore[no-untyped-def]
    db = fastpool.open(backend.dsn, max_open=1)
    db.execute("DROP TABLE IF EXISTS ranger_user")
    db.execute("CREATE TABLE ranger_user (id INT PRIMARY KEY, name VARCHAR(40))")
    for i in range(1, TABLE_ROWS + 1):
        db.execute(f"INSERT INTO ranger_user VALUES ({backend.mark}, {backend.mark})", (i, f"user{i}"))
    db.close()
    return f"SELECT id, name FROM ranger_user WHERE id > {backend.mark}"


def run_calls(benchmark, call, failure, open_now):  # type: ignore[no-untyped-def]
    """CALLS calls; extra_info gets the failures and, every tenth of the way, the series
    (calls so far, connections open, calls failed) that the chart draws."""
    failed = [0]
    done = [0]
    series: list[tuple[int, int, int]] = [(0, open_now(), 0)]
    step = CALLS // 30

    def one() -> None:
        try:
            call()
        except failure:
            failed[0] += 1
        done[0] += 1
        if done[0] % step == 0:
            series.append((done[0], open_now(), failed[0]))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # leak warnings: the point of the exercise
        benchmark.pedantic(one, rounds=1, iterations=CALLS)
    benchmark.extra_info["calls"] = CALLS
    benchmark.extra_info["failed_calls"] = failed[0]
    benchmark.extra_info["series"] = series
    return failed[0]


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streaming"])
def test_leak_fastpool(benchmark, backend, table, stream):
    db = fastpool.open(backend.dsn, max_open=MAX_OPEN, timeout=0.01)
    # The first connection opened unhurried, as the Go-style pool's connect is unbounded:
    # the 10 ms bound is for waiting on a leaked pool, not for a connect on a busy machine
    # (CI saw one first connect to MariaDB take longer than that).
    db.ping(timeout=10)

    def get_user_list():  # type: ignore[no-untyped-def]
        for row in db.query(table, (1,), stream=stream):
            return row

    failed = run_calls(benchmark, get_user_list, fastpool.PoolTimeout, lambda: db.stats().open)
    s = db.stats()
    benchmark.extra_info["open_after"] = s.open
    db.close()
    assert failed == 0 and s.open == 1 and s.in_use == 0


@pytest.mark.benchmark(group=GROUP)
def test_leak_go_style_pool(benchmark, backend, table):
    pool = GoStylePool(backend.connect, MAX_OPEN, timeout=0.01)

    def get_user_list():  # type: ignore[no-untyped-def]
        for row in pool.query(table, (1,)):
            return row

    failed = run_calls(benchmark, get_user_list, queue.Empty, lambda: pool.open)
    benchmark.extra_info["open_after"] = pool.open
    assert failed > CALLS // 2  # every connection leaked, then nearly every call failed


@pytest.mark.benchmark(group=GROUP)
def test_leak_sqlalchemy_engine(benchmark, backend, table):
    sa = pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed")
    engine = sa.create_engine(backend.sa_url, pool_size=MAX_OPEN, max_overflow=0, pool_timeout=0.01)
    sql = sa.text(table.replace(backend.mark, ":id"))

    def get_user_list():  # type: ignore[no-untyped-def]
        conn = engine.connect()  # never closed
        for row in conn.execute(sql, {"id": 1}):
            return row

    def open_now() -> int:
        return int(engine.pool.checkedin() + engine.pool.checkedout())

    run_calls(benchmark, get_user_list, sa.exc.TimeoutError, open_now)
    benchmark.extra_info["open_after"] = open_now()
    engine.dispose()


@pytest.mark.benchmark(group=GROUP)
def test_leak_dbutils(benchmark, backend, table):
    pooled_db = pytest.importorskip("dbutils.pooled_db", reason="DBUtils is not installed")
    pool = pooled_db.PooledDB(backend.module, maxconnections=MAX_OPEN, **backend.kwargs)

    def get_user_list():  # type: ignore[no-untyped-def]
        conn = pool.connection()  # never closed
        cur = conn.cursor()
        cur.execute(table, (1,))
        for row in cur:
            return row

    def open_now() -> int:
        return int(pool._connections + len(pool._idle_cache))

    run_calls(benchmark, get_user_list, pooled_db.TooManyConnections, open_now)
    benchmark.extra_info["open_after"] = open_now()
    pool.close()


# ---- the same leak in async code ---------------------------------------------------------
# `async for row in rows: return row` through each async pool, the call bounded by
# wait_for(0.01 s): the drivers' own pools have no acquire timeout, so without it the
# first call after the last connection leaked would wait for ever.
ASYNC_GROUP = "leak: async, return inside `async for row in rows` (300 calls)"
ASYNC_CONTENDERS = ["fastpool-asyncmy", "fastpool-aiomysql", "asyncmy-pool", "aiomysql-pool",
                    "AsyncAdaptedQueuePool-asyncmy", "FastAsyncQueuePool-asyncmy"]


def sqlalchemy_leaker(c, sql: str, params: dict[str, Any]):  # type: ignore[no-untyped-def]
    """(call, open_now) for a contender whose pool (c.pool, made when it opens) is
    SQLAlchemy's async engine: call() opens a connection, streams sql and returns from
    inside the row loop, never closing the connection."""
    from sqlalchemy import text

    statement = text(sql)

    async def call():  # type: ignore[no-untyped-def]
        conn = await c.pool.connect()  # never closed
        result = await conn.stream(statement, params)
        async for row in result:
            return row

    def open_now() -> int:
        p = c.pool.pool
        return int(p.checkedin() + p.checkedout())

    return call, open_now


def _async_leaker(backend, contender, table):  # type: ignore[no-untyped-def]
    """(open, call, open_now, close) coroutine functions for one contender: call() runs
    the leaking handler once."""
    from .test_async import Contender

    c = Contender(backend, contender, MAX_OPEN)
    sql = table

    if contender.startswith("fastpool"):
        async def call():  # type: ignore[no-untyped-def]
            async for row in c.pool.query(sql, (1,), stream=True):
                return row

        def open_now() -> int:
            return int(c.pool.stats().open)
    elif "QueuePool" in contender:
        call, open_now = sqlalchemy_leaker(c, sql.replace(backend.mark, ":id"), {"id": 1})
    else:
        async def call():  # type: ignore[no-untyped-def]
            conn = await c.pool.acquire()  # never released
            cur = conn.cursor()
            if not hasattr(cur, "execute"):
                cur = await cur  # aiomysql
            await cur.execute(sql, (1,))
            for row in await cur.fetchall():
                return row

        def open_now() -> int:
            return int(c.pool.size)
    return c, call, open_now


@pytest.mark.benchmark(group=ASYNC_GROUP)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning",
                            "ignore::ResourceWarning")  # what the peers' leaked sockets say
@pytest.mark.parametrize("contender", ASYNC_CONTENDERS)
def test_leak_async(benchmark, backend, table, contender):  # type: ignore[no-untyped-def]
    from .support import need_mysql

    need_mysql(backend)
    pytest.importorskip("greenlet", reason="fastpool.aio needs greenlet")
    c, call, open_now = _async_leaker(backend, contender, table)
    failed = run_async_leak(benchmark, c, call, open_now, 0.01, contender.endswith("-pool"))
    if contender.startswith("fastpool"):
        # a call slower than the bound on a busy machine is a failure too, so a few are
        # tolerated; a leak would fail nearly all of them and keep MAX_OPEN open
        assert failed < CALLS // 20 and benchmark.extra_info["open_after"] == 1


def run_async_leak(benchmark, c, call, open_now, bound: float, terminate: bool) -> int:  # type: ignore[no-untyped-def]
    """CALLS leaking calls of contender c (open / close coroutines, a pool at c.pool), each
    bounded by wait_for(bound); returns the failed calls. terminate: close the pool with
    terminate() (a driver's pool whose close() would wait for the leaked connections)."""
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(c.open())

        def one() -> None:
            loop.run_until_complete(asyncio.wait_for(call(), bound))

        failed = run_calls(benchmark, one, (asyncio.TimeoutError, fastpool.PoolTimeout), open_now)
        benchmark.extra_info["open_after"] = open_now()
        return failed
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if terminate:
                c.pool.terminate()
            else:
                loop.run_until_complete(asyncio.wait_for(c.close(), 10))
            # the peers' connections are cleaned up by the garbage collector: let it run
            # while their loop is open, not at some later allocation
            gc.collect()
            loop.run_until_complete(asyncio.sleep(0.05))
        loop.close()
