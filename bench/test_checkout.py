"""Checkout + checkin with no I/O, fastpool beside the peers, in one run.

    pytest bench/test_checkout.py --benchmark-group-by=group

Target (issue 2): fastpool's cycle <= 0.25x the queue.LifoQueue get+put cycle.
"""

from __future__ import annotations

import collections
import queue

import pytest

import fastpool

from .support import FakeConn, measure

GROUP = "checkout+checkin (no I/O)"


@pytest.mark.benchmark(group=GROUP)
def test_fastpool_with_conn(benchmark):
    db = fastpool.Pool(FakeConn, max_open=4)

    def cycle() -> None:
        with db.conn():
            pass

    measure(benchmark, cycle)
    assert db.stats().in_use == 0 and db.stats().open == 1
    db.close()


@pytest.mark.benchmark(group=GROUP)
def test_fastpool_getconn_putconn(benchmark):
    db = fastpool.Pool(FakeConn, max_open=4)

    def cycle() -> None:
        db.putconn(db.getconn())

    measure(benchmark, cycle)
    db.close()


@pytest.mark.benchmark(group=GROUP)
def test_lifoqueue_get_put(benchmark):
    q: queue.LifoQueue = queue.LifoQueue()
    q.put(FakeConn())

    def cycle() -> None:
        c = q.get()
        q.put(c)

    measure(benchmark, cycle)


@pytest.mark.benchmark(group=GROUP)
def test_c_deque_pop_append_floor(benchmark):
    d = collections.deque([FakeConn()])

    def cycle() -> None:
        d.append(d.pop())

    measure(benchmark, cycle)


@pytest.mark.benchmark(group=GROUP)
def test_dbutils_pooleddb(benchmark):
    pooled_db = pytest.importorskip("dbutils.pooled_db", reason="DBUtils is not installed")
    import types

    creator = types.SimpleNamespace(connect=FakeConn, threadsafety=1)
    pool = pooled_db.PooledDB(creator, mincached=1, maxcached=4, maxconnections=4, ping=0,
                              failures=(ConnectionError,))

    def cycle() -> None:
        pool.connection().close()

    measure(benchmark, cycle)
    pool.close()


@pytest.mark.benchmark(group=GROUP)
def test_sqlalchemy_queuepool(benchmark):
    sa_pool = pytest.importorskip("sqlalchemy.pool", reason="SQLAlchemy is not installed")
    pool = sa_pool.QueuePool(FakeConn, pool_size=4, max_overflow=0)

    def cycle() -> None:
        pool.connect().close()

    measure(benchmark, cycle)
    pool.dispose()
