"""Per-request SELECT 1 and 100k-row iteration: fastpool beside every peer, one run.

    pytest bench/test_query.py --benchmark-group-by=group

Targets: query_row("SELECT 1") <= 1.05x a raw persistent connection; iterating 100k rows
through Rows <= 1.0x a raw cursor (aim 0.7x).
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

import fastpool

from .support import LifoQueuePool, count_rows, measure, need_mysql, read_rows, run_select1

# DBUtils pings with ping(False), which mysqlclient deprecates: under the project's strict
# warning filter that warning would be an error, DBUtils would take every connection for
# dead and reconnect on each request, and its figures would be wrong.
pytestmark = pytest.mark.filterwarnings("ignore:The reconnect parameter of ping:DeprecationWarning")

SELECT1 = "SELECT 1 per request"
ROWS = "iterate 100k rows"
N = 200  # requests per round


def select1_via(connect: Callable[[], Any]) -> Callable[[], Any]:
    """One request through a pool whose connections go back on close(): take one, SELECT 1,
    close it."""

    def request() -> Any:
        conn = connect()
        try:
            return run_select1(conn)
        finally:
            conn.close()

    return request


@pytest.fixture(scope="module")
def raw(backend):  # type: ignore[no-untyped-def]
    conn = backend.connect()
    yield conn
    conn.close()


# ---- SELECT 1 -------------------------------------------------------------------------
@pytest.mark.benchmark(group=SELECT1)
def test_select1_raw_connection(benchmark, raw):
    """The floor: one persistent connection, no pool."""
    measure(benchmark, lambda: run_select1(raw), iterations=N, rounds=30)
    assert run_select1(raw) == (1,)


@pytest.mark.benchmark(group=SELECT1)
def test_select1_fastpool_query_row(benchmark, backend):
    db = fastpool.open(backend.dsn, max_open=4)
    measure(benchmark, lambda: db.query_row("SELECT 1"), iterations=N, rounds=30)
    assert db.query_row("SELECT 1") == (1,)
    db.close()


@pytest.mark.benchmark(group=SELECT1)
def test_select1_lifoqueue_pool(benchmark, backend):
    pool = LifoQueuePool(backend.connect, 4)

    def request():  # type: ignore[no-untyped-def]
        conn = pool.get()
        try:
            return run_select1(conn)
        finally:
            pool.put(conn)

    measure(benchmark, request, iterations=N, rounds=30)
    pool.close()


@pytest.mark.benchmark(group=SELECT1)
def test_select1_sqlalchemy_engine(benchmark, backend):
    sa = pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed")
    engine = sa.create_engine(backend.sa_url, pool_size=4)
    stmt = sa.text("SELECT 1")

    def request():  # type: ignore[no-untyped-def]
        with engine.connect() as c:
            return c.execute(stmt).fetchone()

    measure(benchmark, request, iterations=N, rounds=30)
    engine.dispose()


@pytest.mark.benchmark(group=SELECT1)
def test_select1_sqlalchemy_raw_connection(benchmark, backend):
    sa = pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed")
    engine = sa.create_engine(backend.sa_url, pool_size=4)
    measure(benchmark, select1_via(engine.raw_connection), iterations=N, rounds=30)
    engine.dispose()


@pytest.mark.benchmark(group=SELECT1)
def test_select1_dbutils_pooleddb(benchmark, backend):
    pooled_db = pytest.importorskip("dbutils.pooled_db", reason="DBUtils is not installed")
    pool = pooled_db.PooledDB(backend.module, maxconnections=4, **backend.kwargs)  # its defaults
    measure(benchmark, select1_via(pool.connection), iterations=N, rounds=30)
    pool.close()


@pytest.mark.benchmark(group=SELECT1)
def test_select1_mysql_connector_pool(benchmark, backend):
    need_mysql(backend)
    pooling = pytest.importorskip("mysql.connector.pooling", reason="mysql-connector-python is not installed")
    kw = backend.kwargs
    pool = pooling.MySQLConnectionPool(
        pool_size=4, host=kw.get("host"), port=kw.get("port", 3306), user=kw.get("user"),
        password=kw.get("password"), database=kw.get("database"), autocommit=True,
    )
    measure(benchmark, select1_via(pool.get_connection), iterations=N, rounds=30)


@pytest.mark.benchmark(group=SELECT1)
def test_select1_connect_per_request(benchmark, backend):
    measure(benchmark, select1_via(backend.connect), iterations=20, rounds=20)


# ---- 100k rows --------------------------------------------------------------------------
@pytest.mark.benchmark(group=ROWS)
def test_rows_raw_cursor(benchmark, raw, backend):
    def run() -> int:
        return read_rows(raw, backend.rows_sql)

    measure(benchmark, run, iterations=1, rounds=10)
    assert run() == 100_000


@pytest.mark.benchmark(group=ROWS)
def test_rows_raw_sscursor(benchmark, raw, backend):
    need_mysql(backend)
    from MySQLdb.cursors import SSCursor

    def run() -> int:
        return read_rows(raw, backend.rows_sql, SSCursor)

    measure(benchmark, run, iterations=1, rounds=10)


@pytest.mark.benchmark(group=ROWS)
def test_rows_fastpool_buffered(benchmark, backend):
    db = fastpool.open(backend.dsn, max_open=2)
    measure(benchmark, lambda: count_rows(db.query(backend.rows_sql)), iterations=1, rounds=10)
    assert count_rows(db.query(backend.rows_sql)) == 100_000
    db.close()


@pytest.mark.benchmark(group=ROWS)
def test_rows_fastpool_streaming(benchmark, backend):
    db = fastpool.open(backend.dsn, max_open=2)
    measure(benchmark, lambda: count_rows(db.query(backend.rows_sql, stream=True)), iterations=1, rounds=10)
    assert count_rows(db.query(backend.rows_sql, stream=True)) == 100_000
    assert db.stats().in_use == 0
    db.close()
