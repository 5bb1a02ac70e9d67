"""Per-request SELECT 1 and 100k-row iteration on MariaDB: fastpool beside the peers.

    pytest bench/test_query.py --benchmark-group-by=group

Targets (issue 3): query_row("SELECT 1") <= 1.05x a raw persistent mysqlclient connection;
iterating 100k rows through Rows <= 1.0x a raw cursor (aim 0.7x).
"""

from __future__ import annotations

import pytest

# DBUtils pings with ping(False), which mysqlclient deprecates: under the project's strict
# warning filter that warning would be an error, DBUtils would take every connection for
# dead and reconnect on each request, and its figures would be wrong.
pytestmark = pytest.mark.filterwarnings("ignore:The reconnect parameter of ping:DeprecationWarning")

import fastpool

from .support import measure

SELECT1 = "SELECT 1 per request"
ROWS = "iterate 100k rows"
ROWS_SQL = "SELECT seq, seq * 2 FROM seq_1_to_100000"


@pytest.fixture(scope="module")
def raw(mysql_kwargs):  # type: ignore[no-untyped-def]
    import MySQLdb

    conn = MySQLdb.connect(autocommit=True, **mysql_kwargs)
    yield conn
    conn.close()


# ---- SELECT 1 -------------------------------------------------------------------------
@pytest.mark.benchmark(group=SELECT1)
def test_select1_raw_connection(benchmark, raw):
    def request():  # type: ignore[no-untyped-def]
        cur = raw.cursor()
        cur.execute("SELECT 1")
        row = cur.fetchone()
        cur.close()
        return row

    measure(benchmark, request, iterations=200, rounds=30)
    assert request() == (1,)


@pytest.mark.benchmark(group=SELECT1)
def test_select1_fastpool_query_row(benchmark, mysql_dsn):
    db = fastpool.open(mysql_dsn, max_open=4)
    measure(benchmark, lambda: db.query_row("SELECT 1"), iterations=200, rounds=30)
    assert db.query_row("SELECT 1") == (1,)
    db.close()


@pytest.mark.benchmark(group=SELECT1)
def test_select1_sqlalchemy_engine(benchmark, mysql_dsn):
    sa = pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed")
    url = mysql_dsn.replace("mysql://", "mysql+mysqldb://", 1)
    engine = sa.create_engine(url, pool_size=4)
    stmt = sa.text("SELECT 1")

    def request():  # type: ignore[no-untyped-def]
        with engine.connect() as c:
            return c.execute(stmt).fetchone()

    measure(benchmark, request, iterations=200, rounds=30)
    engine.dispose()


@pytest.mark.benchmark(group=SELECT1)
def test_select1_dbutils_pooleddb(benchmark, mysql_kwargs):
    pooled_db = pytest.importorskip("dbutils.pooled_db", reason="DBUtils is not installed")
    import MySQLdb

    pool = pooled_db.PooledDB(MySQLdb, maxconnections=4, autocommit=True, **mysql_kwargs)

    def request():  # type: ignore[no-untyped-def]
        conn = pool.connection()
        cur = conn.cursor()
        cur.execute("SELECT 1")
        row = cur.fetchone()
        cur.close()
        conn.close()
        return row

    measure(benchmark, request, iterations=200, rounds=30)
    pool.close()


# ---- 100k rows --------------------------------------------------------------------------
@pytest.mark.benchmark(group=ROWS)
def test_rows_raw_cursor(benchmark, raw):
    def run() -> int:
        cur = raw.cursor()
        cur.execute(ROWS_SQL)
        n = 0
        for _row in cur:
            n += 1
        cur.close()
        return n

    measure(benchmark, run, iterations=1, rounds=10)
    assert run() == 100_000


@pytest.mark.benchmark(group=ROWS)
def test_rows_raw_sscursor(benchmark, raw):
    from MySQLdb.cursors import SSCursor

    def run() -> int:
        cur = raw.cursor(SSCursor)
        cur.execute(ROWS_SQL)
        n = 0
        for _row in cur:
            n += 1
        cur.close()
        return n

    measure(benchmark, run, iterations=1, rounds=10)


@pytest.mark.benchmark(group=ROWS)
def test_rows_fastpool_buffered(benchmark, mysql_dsn):
    db = fastpool.open(mysql_dsn, max_open=2)

    def run() -> int:
        n = 0
        for _row in db.query(ROWS_SQL):
            n += 1
        return n

    measure(benchmark, run, iterations=1, rounds=10)
    assert run() == 100_000
    db.close()


@pytest.mark.benchmark(group=ROWS)
def test_rows_fastpool_streaming(benchmark, mysql_dsn):
    db = fastpool.open(mysql_dsn, max_open=2)

    def run() -> int:
        n = 0
        for _row in db.query(ROWS_SQL, stream=True):
            n += 1
        return n

    measure(benchmark, run, iterations=1, rounds=10)
    assert run() == 100_000
    assert db.stats().in_use == 0
    db.close()
