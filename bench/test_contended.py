"""Contended: 16 threads share 4 connections, each looping on SELECT 1 for a few seconds.
Reports throughput and the latency tails: p50, p99 and the longest single request, which
is where a pool that lets callers barge in without bound starves someone (sqlalchemy#7679).

Scale: the same at 16, 64 and 256 threads on 16 connections, for fastpool, the naive
LifoQueue pool, SQLAlchemy's QueuePool and DBUtils.

Targets: fastpool >= 1.2x the LifoQueue pool's throughput in every run, its longest wait
<= 50 ms, and its throughput at 256 threads >= 0.6x that at 16.
"""

from __future__ import annotations

import threading
import time
import warnings

import pytest

import fastpool

from .support import LifoQueuePool, bench_seconds, tails

pytestmark = pytest.mark.filterwarnings("ignore:The reconnect parameter of ping:DeprecationWarning")

GROUP = "contended: 16 threads share 4 connections"
THREADS = 16
CONNS = 4
SCALE = "scale: 16, 64 and 256 threads share 16 connections"
SCALE_CONNS = 16
SCALE_THREADS = (16, 64, 256)


def select1(conn) -> None:  # type: ignore[no-untyped-def]
    cur = conn.cursor()
    cur.execute("SELECT 1")
    cur.fetchall()
    cur.close()


def run_contended(request, seconds: float, threads: int = THREADS,  # type: ignore[no-untyped-def]
                  conns: int = CONNS) -> dict:
    """Run request() in `threads` threads for `seconds`; return throughput and tails."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    completed = [0] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)
    window: list[float] = []

    def worker(i: int) -> None:
        mine = latencies[i]
        start.wait()
        stop = window[0] + seconds
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop:
                    return
                request()
                t1 = time.perf_counter()
                mine.append(t1 - t0)  # a request that started in the window, however long
                if t1 <= stop:
                    completed[i] += 1
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    window.append(time.perf_counter())
    start.wait()
    for t in workers:
        t.join()
    if errors:
        raise errors[0]
    return {**tails(latencies, completed, seconds), "threads": threads, "connections": conns}


def contend(benchmark, request, threads=THREADS, conns=CONNS):  # type: ignore[no-untyped-def]
    result = {}

    def once() -> None:
        result.update(run_contended(request, bench_seconds(), threads, conns))

    benchmark.pedantic(once, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    return result


def pool_request(backend, contender: str, conns: int):  # type: ignore[no-untyped-def]
    """(request, pool, close) for one contender with `conns` connections: request() runs
    one SELECT 1 through the pool, as a request handler would."""
    if contender == "fastpool":
        db = fastpool.open(backend.dsn, max_open=conns, timeout=60)
        return (lambda: db.query_row("SELECT 1")), db, db.close
    if contender == "lifoqueue_pool":
        lifo = LifoQueuePool(backend.connect, conns)

        def request() -> None:
            conn = lifo.get(timeout=60)
            try:
                select1(conn)
            finally:
                lifo.put(conn)

        return request, lifo, lifo.close
    if contender in ("QueuePool", "FastQueuePool"):
        sa = pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed")
        if contender == "QueuePool":
            cls = sa.pool.QueuePool
        else:
            from fastpool.sqlalchemy import FastQueuePool as cls
        engine = sa.create_engine(backend.sa_url, poolclass=cls, pool_size=conns,
                                  max_overflow=0, pool_timeout=60)
        stmt = sa.text("SELECT 1")

        def request() -> None:
            with engine.connect() as c:
                c.execute(stmt).fetchall()

        return request, engine, engine.dispose
    if contender == "DBUtils":
        mod = pytest.importorskip("dbutils.pooled_db", reason="DBUtils is not installed")
    else:
        import fastpool.dbutils as mod
    pdb = mod.PooledDB(backend.module, maxconnections=conns, blocking=True, **backend.kwargs)

    def request() -> None:
        conn = pdb.connection()
        try:
            select1(conn)
        finally:
            conn.close()

    return request, pdb, pdb.close


def contend_with(benchmark, backend, contender: str, threads: int, conns: int,  # type: ignore[no-untyped-def]
                 check=None):
    """One contender's run; check(pool), if given, runs before the pool is closed."""
    request, pool, close = pool_request(backend, contender, conns)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # DBUtils' ping(reconnect)
            r = contend(benchmark, request, threads, conns)
        if check is not None:
            check(pool)
        return r
    finally:
        close()


@pytest.mark.benchmark(group=GROUP)
def test_contended_fastpool(benchmark, backend):
    def check(db) -> None:  # type: ignore[no-untyped-def]
        s = db.stats()
        assert s.open <= CONNS and s.in_use == 0

    r = contend_with(benchmark, backend, "fastpool", THREADS, CONNS, check)
    assert r["fewest_requests_by_one_thread"] > 0


@pytest.mark.benchmark(group=GROUP)
def test_contended_lifoqueue_pool(benchmark, backend):
    contend_with(benchmark, backend, "lifoqueue_pool", THREADS, CONNS)


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("poolclass", ["QueuePool", "FastQueuePool"])
def test_contended_sqlalchemy(benchmark, backend, poolclass):
    def check(engine) -> None:  # type: ignore[no-untyped-def]
        assert engine.pool.checkedout() == 0

    contend_with(benchmark, backend, poolclass, THREADS, CONNS, check)


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("impl", ["DBUtils", "fastpool.dbutils"])
def test_contended_dbutils(benchmark, backend, impl):
    contend_with(benchmark, backend, impl, THREADS, CONNS)


@pytest.mark.benchmark(group=GROUP)
def test_contended_mysql_connector_pool(benchmark, backend):
    pytest.skip("mysql-connector's pool does not wait: get_connection() raises PoolError "
                "while all connections are in use, so 16 threads cannot share 4")


# ---- scale: 16, 64 and 256 threads on 16 connections -----------------------------------
@pytest.mark.benchmark(group=SCALE)
@pytest.mark.parametrize("threads", SCALE_THREADS)
@pytest.mark.parametrize("contender", ["fastpool", "lifoqueue_pool", "QueuePool", "DBUtils"])
def test_scale(benchmark, backend, contender, threads):
    r = contend_with(benchmark, backend, contender, threads, SCALE_CONNS)
    benchmark.extra_info["contender"] = contender
    assert r["requests_per_s"] > 0
