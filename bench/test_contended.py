"""Contended: 16 threads share 4 connections, each looping on SELECT 1 for a few seconds.
Reports throughput and the latency tails: p50, p99 and the longest single request, which
is where a pool that lets callers barge in without bound starves someone (sqlalchemy#7679).

Scale: the same at 16, 64 and 256 threads on 16 connections, for fastpool, the naive
LifoQueue pool, SQLAlchemy's QueuePool and DBUtils.

Targets: fastpool >= 1.2x the LifoQueue pool's throughput in every run, its longest wait
<= 50 ms, and its throughput at 256 threads >= 0.6x that at 16.
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
    every = sorted(x for per in latencies for x in per)
    q = statistics.quantiles(every, n=100)
    return {
        "requests_per_s": sum(completed) / seconds,
        "p50_ms": q[49] * 1e3,
        "p99_ms": q[98] * 1e3,
        "max_ms": every[-1] * 1e3,
        "fewest_requests_by_one_thread": min(completed),
        "threads": threads,
        "connections": conns,
        "seconds": seconds,
    }


def contend(benchmark, request, threads=THREADS, conns=CONNS):  # type: ignore[no-untyped-def]
    result = {}

    def once() -> None:
        result.update(run_contended(request, bench_seconds(), threads, conns))

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


# ---- scale: 16, 64 and 256 threads on 16 connections -----------------------------------
def _scale_request(backend, contender, conns):  # type: ignore[no-untyped-def]
    """(request, close) for one contender with a pool of `conns`."""
    if contender == "fastpool":
        db = fastpool.open(backend.dsn, max_open=conns, timeout=60)
        return (lambda: db.query_row("SELECT 1")), db.close
    if contender == "lifoqueue_pool":
        pool = LifoQueuePool(backend.connect, conns)

        def request() -> None:
            conn = pool.get(timeout=60)
            try:
                select1(conn)
            finally:
                pool.put(conn)

        return request, pool.close
    if contender == "QueuePool":
        sa = pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed")
        engine = sa.create_engine(backend.sa_url, poolclass=sa.pool.QueuePool, pool_size=conns,
                                  max_overflow=0, pool_timeout=60)
        stmt = sa.text("SELECT 1")

        def request() -> None:
            with engine.connect() as c:
                c.execute(stmt).fetchall()

        return request, engine.dispose
    mod = pytest.importorskip("dbutils.pooled_db", reason="DBUtils is not installed")
    pdb = mod.PooledDB(backend.module, maxconnections=conns, blocking=True, **backend.kwargs)

    def request() -> None:
        conn = pdb.connection()
        try:
            select1(conn)
        finally:
            conn.close()

    return request, pdb.close


@pytest.mark.benchmark(group=SCALE)
@pytest.mark.parametrize("threads", SCALE_THREADS)
@pytest.mark.parametrize("contender", ["fastpool", "lifoqueue_pool", "QueuePool", "DBUtils"])
def test_scale(benchmark, backend, contender, threads):
    request, close = _scale_request(backend, contender, SCALE_CONNS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            r = contend(benchmark, request, threads, SCALE_CONNS)
    finally:
        close()
    benchmark.extra_info["contender"] = contender
    assert r["requests_per_s"] > 0
