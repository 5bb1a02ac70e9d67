"""Contended: 16 threads share 4 connections, each looping on SELECT 1 for a few seconds.
Reports throughput and the latency tails: p50, p99 and the longest single request, which
is where a pool that lets callers barge in starves someone (sqlalchemy#7679).

Targets: fastpool's longest wait <= 250 ms, throughput >= 1.2x SQLAlchemy's QueuePool and
>= 0.8x the naive LifoQueue pool.
"""

from __future__ import annotations

import statistics
import threading
import time
import warnings

import pytest

import fastpool

from .support import LifoQueuePool, bench_seconds

pytestmark = pytest.mark.filterwarnings("ignore:The reconnect parameter of ping:DeprecationWarning")

GROUP = "contended: 16 threads share 4 connections"
THREADS = 16
CONNS = 4


def select1(conn) -> None:  # type: ignore[no-untyped-def]
    cur = conn.cursor()
    cur.execute("SELECT 1")
    cur.fetchall()
    cur.close()


def run_contended(request, seconds: float) -> dict:  # type: ignore[no-untyped-def]
    """Run request() in THREADS threads for `seconds`; return throughput and tails."""
    latencies: list[list[float]] = [[] for _ in range(THREADS)]
    completed = [0] * THREADS
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS + 1)
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

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    window.append(time.perf_counter())
    start.wait()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    every = sorted(x for per in latencies for x in per)
    q = statistics.quantiles(every, n=100)
    return {
        "requests_per_s": sum(completed) / seconds,
        "p50_ms": q[49] * 1e3,
        "p99_ms": q[98] * 1e3,
        "max_ms": every[-1] * 1e3,
        "fewest_requests_by_one_thread": min(completed),
        "threads": THREADS,
        "connections": CONNS,
        "seconds": seconds,
    }


def contend(benchmark, request):  # type: ignore[no-untyped-def]
    result = {}

    def once() -> None:
        result.update(run_contended(request, bench_seconds()))

    benchmark.pedantic(once, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    return result


@pytest.mark.benchmark(group=GROUP)
def test_contended_fastpool(benchmark, backend):
    db = fastpool.open(backend.dsn, max_open=CONNS, timeout=60)
    r = contend(benchmark, lambda: db.query_row("SELECT 1"))
    s = db.stats()
    db.close()
    assert s.open <= CONNS and s.in_use == 0
    assert r["fewest_requests_by_one_thread"] > 0


@pytest.mark.benchmark(group=GROUP)
def test_contended_lifoqueue_pool(benchmark, backend):
    pool = LifoQueuePool(backend.connect, CONNS)

    def request() -> None:
        conn = pool.get(timeout=60)
        try:
            select1(conn)
        finally:
            pool.put(conn)

    contend(benchmark, request)
    pool.close()


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("poolclass", ["QueuePool", "FastQueuePool"])
def test_contended_sqlalchemy(benchmark, backend, poolclass):
    sa = pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed")
    if poolclass == "QueuePool":
        cls = sa.pool.QueuePool
    else:
        from fastpool.sqlalchemy import FastQueuePool as cls
    engine = sa.create_engine(backend.sa_url, poolclass=cls, pool_size=CONNS, max_overflow=0,
                              pool_timeout=60)
    stmt = sa.text("SELECT 1")

    def request() -> None:
        with engine.connect() as c:
            c.execute(stmt).fetchall()

    contend(benchmark, request)
    assert engine.pool.checkedout() == 0
    engine.dispose()


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("impl", ["DBUtils", "fastpool.dbutils"])
def test_contended_dbutils(benchmark, backend, impl):
    if impl == "DBUtils":
        mod = pytest.importorskip("dbutils.pooled_db", reason="DBUtils is not installed")
    else:
        import fastpool.dbutils as mod
    pool = mod.PooledDB(backend.module, maxconnections=CONNS, blocking=True, **backend.kwargs)

    def request() -> None:
        conn = pool.connection()
        try:
            select1(conn)
        finally:
            conn.close()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        contend(benchmark, request)
    pool.close()


@pytest.mark.benchmark(group=GROUP)
def test_contended_mysql_connector_pool(benchmark, backend):
    pytest.skip("mysql-connector's pool does not wait: get_connection() raises PoolError "
                "while all connections are in use, so 16 threads cannot share 4")
