"""The drop-in adapters beside the originals they replace, in the same run.

    pytest bench/test_adapters.py --benchmark-group-by=group
"""

from __future__ import annotations

import sqlite3

import pytest

from .support import FakeConn, measure

# DBUtils pings with ping(False), which mysqlclient deprecates: under the project's strict
# warning filter that warning would be an error, DBUtils would take every connection for
# dead and reconnect on each request, and its figures would be wrong.
pytestmark = pytest.mark.filterwarnings("ignore:The reconnect parameter of ping:DeprecationWarning")

SA_CYCLE = "SQLAlchemy pool checkout+checkin (no I/O)"
SA_SELECT1 = "SQLAlchemy engine SELECT 1"
DBU_CYCLE = "DBUtils checkout+checkin (no I/O)"
DBU_SELECT1 = "DBUtils SELECT 1"


def sa_pool(name):  # type: ignore[no-untyped-def]
    pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed")
    if name == "QueuePool":
        from sqlalchemy.pool import QueuePool as cls
    else:
        from fastpool.sqlalchemy import FastQueuePool as cls
    return cls


def dbu(name):  # type: ignore[no-untyped-def]
    if name == "DBUtils":
        return pytest.importorskip("dbutils.pooled_db", reason="DBUtils is not installed")
    import fastpool.dbutils

    return fastpool.dbutils


@pytest.mark.parametrize("name", ["QueuePool", "FastQueuePool"])
@pytest.mark.benchmark(group=SA_CYCLE)
def test_sa_pool_cycle(benchmark, name):
    pool = sa_pool(name)(FakeConn, pool_size=4, max_overflow=0, reset_on_return=None)
    measure(benchmark, lambda: pool.connect().close(), iterations=500, rounds=30)
    assert pool.checkedout() == 0
    pool.dispose()


@pytest.mark.parametrize("name", ["QueuePool", "FastQueuePool"])
@pytest.mark.benchmark(group=SA_SELECT1)
def test_sa_engine_select1(benchmark, name, backend):
    import sqlalchemy as sa

    e = sa.create_engine(backend.sa_url, poolclass=sa_pool(name), pool_size=4)
    stmt = sa.text("SELECT 1")

    def request():  # type: ignore[no-untyped-def]
        with e.connect() as c:
            return c.execute(stmt).scalar_one()

    measure(benchmark, request, iterations=100, rounds=30)
    assert request() == 1
    e.dispose()


@pytest.mark.parametrize("name", ["DBUtils", "fastpool.dbutils"])
@pytest.mark.benchmark(group=DBU_CYCLE)
def test_dbutils_cycle(benchmark, name):
    mod = dbu(name)
    pool = mod.PooledDB(FakeConn, maxconnections=4, ping=0, reset=False,
                        failures=(sqlite3.OperationalError,))
    measure(benchmark, lambda: pool.connection().close(), iterations=500, rounds=30)
    pool.close()


@pytest.mark.parametrize("name", ["DBUtils", "fastpool.dbutils"])
@pytest.mark.benchmark(group=DBU_SELECT1)
def test_dbutils_select1(benchmark, name, backend):
    mod = dbu(name)
    pool = mod.PooledDB(backend.module, maxconnections=4, **backend.kwargs)  # DBUtils' defaults

    def request():  # type: ignore[no-untyped-def]
        conn = pool.connection()
        cur = conn.cursor()
        cur.execute("SELECT 1")
        row = cur.fetchone()
        cur.close()
        conn.close()
        return row

    measure(benchmark, request, iterations=100, rounds=30)
    assert tuple(request()) == (1,)
    pool.close()
