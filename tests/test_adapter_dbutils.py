"""fastpool.dbutils.PooledDB against DBUtils' own PooledDB: the same scenarios run on both,
with the same assertions, on the real MariaDB and on SQLite."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from threads import run_threads

dbutils_pooled = pytest.importorskip("dbutils.pooled_db", reason="DBUtils is not installed")
import fastpool.dbutils as fp_pooled  # noqa: E402

IMPLS = {"dbutils": dbutils_pooled, "fastpool": fp_pooled}

# DBUtils pings with ping(False), which mysqlclient deprecates; as an error (our strict
# warning filter) DBUtils would take every connection for dead.
pytestmark = pytest.mark.filterwarnings("ignore:The reconnect parameter of ping:DeprecationWarning")


@pytest.fixture(params=list(IMPLS))
def impl(request):  # type: ignore[no-untyped-def]
    return IMPLS[request.param]


@pytest.fixture
def mysql(mariadb):  # type: ignore[no-untyped-def]
    MySQLdb = pytest.importorskip("MySQLdb")
    from fastpool.url import parse_url

    return MySQLdb, parse_url(mariadb.dsn).connect_kwargs


def one(conn, sql, params=None):  # type: ignore[no-untyped-def]
    cur = conn.cursor()
    if params is None:
        cur.execute(sql)
    else:
        cur.execute(sql, params)
    row = cur.fetchone()
    cur.close()
    return row


def test_import_line_is_the_only_change(impl):
    for name in ("PooledDB", "PooledDBError", "InvalidConnection", "InvalidConnectionError",
                 "NotSupportedError", "TooManyConnections", "TooManyConnectionsError"):
        assert hasattr(impl, name), name
    assert issubclass(impl.TooManyConnections, impl.PooledDBError)


def test_basic_use_and_reuse_mysql(impl, mysql):
    MySQLdb, kw = mysql
    pool = impl.PooledDB(MySQLdb, maxconnections=2, **kw)
    c = pool.connection()
    (cid,) = one(c, "SELECT CONNECTION_ID()")
    assert one(c, "SELECT @@autocommit") == (0,)  # the driver's own default is kept
    c.close()
    c = pool.connection()
    assert one(c, "SELECT CONNECTION_ID()") == (cid,)
    c.close()
    pool.close()


def test_not_blocking_raises_too_many_connections(impl, mysql):
    MySQLdb, kw = mysql
    pool = impl.PooledDB(MySQLdb, maxconnections=2, blocking=False, **kw)
    a, b = pool.connection(), pool.connection()
    t0 = time.monotonic()
    with pytest.raises(impl.TooManyConnections):
        pool.connection()
    assert time.monotonic() - t0 < 1.0
    a.close()
    c = pool.connection()  # a slot is free again
    c.close()
    b.close()
    pool.close()


def test_blocking_waits_until_a_connection_is_returned(impl, mysql):
    MySQLdb, kw = mysql
    pool = impl.PooledDB(MySQLdb, maxconnections=1, blocking=True, **kw)
    held = pool.connection()
    got = []

    def waiter() -> None:
        c = pool.connection()
        got.append(time.monotonic())
        c.close()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    assert not got
    released = time.monotonic()
    held.close()
    t.join(5)
    assert got and got[0] >= released
    pool.close()


def test_setsession_runs_on_each_new_connection(impl, mysql):
    MySQLdb, kw = mysql
    pool = impl.PooledDB(MySQLdb, maxconnections=3, setsession=["SET @fp_session = 7"], **kw)
    conns = [pool.connection() for _ in range(3)]
    assert [one(c, "SELECT @fp_session") for c in conns] == [(7,)] * 3
    for c in conns:
        c.close()
    pool.close()


def test_reset_rolls_back_uncommitted_work_on_close(impl, mysql):
    MySQLdb, kw = mysql
    pool = impl.PooledDB(MySQLdb, maxconnections=1, **kw)
    c = pool.connection()
    cur = c.cursor()
    cur.execute("CREATE TABLE IF NOT EXISTS dbu_reset (n INT) ENGINE=InnoDB")
    cur.execute("DELETE FROM dbu_reset")
    c.commit()
    cur.execute("INSERT INTO dbu_reset VALUES (1)")  # not committed
    c.close()
    c = pool.connection()
    assert one(c, "SELECT COUNT(*) FROM dbu_reset") == (0,)
    cur = c.cursor()
    cur.execute("INSERT INTO dbu_reset VALUES (2)")
    c.commit()
    c.close()
    c = pool.connection()
    assert one(c, "SELECT COUNT(*) FROM dbu_reset") == (1,)
    c.close()
    pool.close()


def test_maxusage_reconnects_after_that_many_statements(impl, mysql):
    MySQLdb, kw = mysql
    pool = impl.PooledDB(MySQLdb, maxconnections=1, maxusage=3, **kw)
    c = pool.connection()
    ids = [one(c, "SELECT CONNECTION_ID()")[0] for _ in range(7)]
    c.close()
    pool.close()
    assert ids[0] == ids[1] == ids[2]
    assert ids[3] != ids[2] and ids[3] == ids[4] == ids[5]
    assert ids[6] != ids[5]


def test_killed_idle_connection_is_replaced_at_checkout(impl, mysql):
    MySQLdb, kw = mysql
    pool = impl.PooledDB(MySQLdb, maxconnections=2, ping=1, **kw)
    c = pool.connection()
    (cid,) = one(c, "SELECT CONNECTION_ID()")
    c.close()
    killer = MySQLdb.connect(autocommit=True, **kw)
    killer.cursor().execute(f"KILL {int(cid)}")
    killer.close()
    time.sleep(0.2)
    c = pool.connection()
    (new_id,) = one(c, "SELECT CONNECTION_ID()")
    assert new_id != cid
    c.close()
    pool.close()


def test_closed_connection_is_invalid(impl, mysql):
    MySQLdb, kw = mysql
    pool = impl.PooledDB(MySQLdb, maxconnections=1, **kw)
    c = pool.connection()
    c.close()
    c.close()  # harmless
    with pytest.raises(impl.InvalidConnection):
        c.cursor()
    pool.close()


def test_mincached_opens_connections_up_front(impl):
    opened = []

    def creator():  # type: ignore[no-untyped-def]
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        opened.append(conn)
        return conn

    pool = impl.PooledDB(creator, mincached=3, maxcached=5)
    assert len(opened) == 3
    conns = [pool.connection() for _ in range(3)]
    assert len(opened) == 3  # served from the cache
    for c in conns:
        c.close()
    pool.close()


def test_close_closes_idle_connections_and_the_pool_stays_usable(impl):
    made = []

    def creator():  # type: ignore[no-untyped-def]
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        made.append(conn)
        return conn

    pool = impl.PooledDB(creator, maxconnections=2)
    c = pool.connection()
    c.close()
    pool.close()
    with pytest.raises(sqlite3.ProgrammingError):
        made[0].execute("SELECT 1")  # really closed
    c = pool.connection()
    assert one(c, "SELECT 1") == (1,)
    c.close()
    pool.close()


def test_module_without_threadsafety_is_refused(impl):
    class NotThreadSafe:
        threadsafety = 0

        @staticmethod
        def connect():  # type: ignore[no-untyped-def]
            return sqlite3.connect(":memory:")

    with pytest.raises(impl.NotSupportedError):
        impl.PooledDB(NotThreadSafe)


def test_threads_exhausting_the_pool_all_finish(impl, mysql):
    MySQLdb, kw = mysql
    pool = impl.PooledDB(MySQLdb, maxconnections=2, blocking=True, **kw)
    done = []

    def worker(_n: int) -> None:
        for _ in range(15):
            c = pool.connection()
            assert one(c, "SELECT 1") == (1,)
            c.close()
        done.append(1)

    errors = run_threads(worker, 8, timeout=30)
    assert not errors and len(done) == 8
    pool.close()


@pytest.mark.parametrize("name", list(IMPLS))
def test_statement_that_may_have_run_is_rerun_by_dbutils_but_not_by_fastpool(name):
    # The deliberate difference: the first connection's statement "runs" (it is logged),
    # then the connection fails. DBUtils re-executes on a new connection; fastpool replaces
    # the connection but raises, since the error does not prove the statement never ran.
    impl = IMPLS[name]
    executed: list[str] = []
    made: list[int] = []

    class Cursor:
        def __init__(self, n: int) -> None:
            self.n = n

        def execute(self, sql, params=None):  # type: ignore[no-untyped-def]
            executed.append(sql)
            if self.n == 1:
                raise sqlite3.OperationalError("lost connection after sending")

        def close(self) -> None:
            pass

    class Conn:
        threadsafety = 1

        def __init__(self) -> None:
            made.append(1)
            self.n = len(made)

        def cursor(self):  # type: ignore[no-untyped-def]
            return Cursor(self.n)

        def rollback(self) -> None:
            pass

        def commit(self) -> None:
            pass

        def close(self) -> None:
            pass

    pool = impl.PooledDB(Conn, maxconnections=2, failures=(sqlite3.OperationalError,), ping=0)
    c = pool.connection()
    cur = c.cursor()
    if name == "dbutils":
        cur.execute("INSERT INTO ledger VALUES (1)")
        # DBUtils 3.2.0 re-ran it on a second cursor, then on a new connection: 3 times.
        assert len(executed) >= 2 and set(executed) == {"INSERT INTO ledger VALUES (1)"}
    else:
        with pytest.raises(sqlite3.OperationalError):
            cur.execute("INSERT INTO ledger VALUES (1)")
        assert executed == ["INSERT INTO ledger VALUES (1)"]
        cur = c.cursor()
        cur.execute("SELECT 1")  # the connection was replaced: the next statement works
        assert len(made) == 2
    c.close()
    pool.close()


# ---- the differences a user hit, now gone (each runs on both implementations) ------------
def test_every_public_name_of_dbutils_pooled_db_imports():
    public = {n for n in dir(dbutils_pooled) if not n.startswith("_")}
    missing = sorted(n for n in public if not hasattr(fp_pooled, n))
    assert not missing, missing
    exec("from fastpool.dbutils import PooledDB, SharedDBConnection, PooledSharedDBConnection, connect",
         {})


def _package_driver():  # type: ignore[no-untyped-def]
    """A DB-API driver in a package, its connection class two modules down (as
    mysql.connector.connection_cext): the error classes live in `pkg.driver`, not in `pkg`."""
    import types

    pkg = types.ModuleType("fp_pkg")
    drv = types.ModuleType("fp_pkg.driver")
    impl = types.ModuleType("fp_pkg.driver.impl")

    class Error(Exception):
        pass

    class OperationalError(Error):
        pass

    class InterfaceError(Error):
        pass

    class InternalError(Error):
        pass

    class Cursor:  # no __iter__: DBUtils falls back to fetchone()
        def __init__(self) -> None:
            self.rows: list[tuple[int]] = []

        def execute(self, sql, params=None):  # type: ignore[no-untyped-def]
            if sql == "fail":
                raise OperationalError("statement failed")
            self.rows = [(1,), (2,), (3,)]

        def fetchone(self):  # type: ignore[no-untyped-def]
            return self.rows.pop(0) if self.rows else None

        def close(self) -> None:
            pass

    class Connection:
        def cursor(self):  # type: ignore[no-untyped-def]
            return Cursor()

        def commit(self) -> None:
            pass

        def rollback(self) -> None:
            pass

        def close(self) -> None:
            pass

    Connection.__module__ = Cursor.__module__ = "fp_pkg.driver.impl"
    for cls in (Error, OperationalError, InterfaceError, InternalError):
        cls.__module__ = "fp_pkg.driver"
        setattr(drv, cls.__name__, cls)
    drv.connect = lambda: Connection()  # type: ignore[attr-defined]
    drv.threadsafety = 2  # type: ignore[attr-defined]
    impl.Connection = Connection  # type: ignore[attr-defined]
    import sys

    sys.modules.update({"fp_pkg": pkg, "fp_pkg.driver": drv, "fp_pkg.driver.impl": impl})
    return drv


def test_creator_function_of_a_driver_in_a_package(impl):
    drv = _package_driver()

    def creator():  # type: ignore[no-untyped-def]
        return drv.connect()

    pool = impl.PooledDB(creator, maxconnections=2)
    db = pool.connection()
    cur = db.cursor()
    with pytest.raises(drv.OperationalError):  # the driver's error, not AttributeError
        cur.execute("fail")
    cur = db.cursor()
    cur.execute("SELECT")
    assert list(cur) == [(1,), (2,), (3,)]  # a cursor without __iter__ still iterates
    assert db.threadsafety() == 2  # the module's, though the creator is a function
    assert db.dbapi() is drv
    db.close()


def test_dbapi_connection_dbapi_cursor_and_no_failover(impl):
    pool = impl.PooledDB(sqlite3, 0, 0, 0, 1, False, None, None, True, None, 1, None, ":memory:", check_same_thread=False)
    db = pool.connection()
    assert isinstance(db.dbapi_connection, sqlite3.Connection)
    cur = db.cursor()
    assert isinstance(cur.dbapi_cursor, sqlite3.Cursor)
    with cur.no_failover() as same:
        assert same is cur
        with pytest.raises(sqlite3.OperationalError):
            cur.execute("SELECT * FROM no_such_table")
    cur.close()
    db.close()


def test_a_closed_cursor_lets_go_of_its_connection(impl):
    pool = impl.PooledDB(sqlite3, 0, 0, 0, 1, False, None, None, True, None, 1, None, ":memory:", check_same_thread=False)
    db = pool.connection()
    cur = db.cursor()
    cur.execute("SELECT 1")
    cur.close()
    del db  # the closed cursor must not keep it checked out
    db = pool.connection()  # TooManyConnections if it did
    db.close()


def test_del_pool_closes_its_idle_connections_at_once(impl):
    opened: list[sqlite3.Connection] = []

    def creator():  # type: ignore[no-untyped-def]
        c = sqlite3.connect(":memory:", check_same_thread=False)
        opened.append(c)
        return c

    creator.threadsafety = 1  # type: ignore[attr-defined]
    pool = impl.PooledDB(creator, mincached=2, maxcached=2)
    assert len(opened) == 2
    del pool  # no gc.collect(): DBUtils closes at once
    for c in opened:
        with pytest.raises(sqlite3.ProgrammingError):
            c.execute("SELECT 1")


def test_brand_new_connections_are_not_pinged(impl):
    pings: list[int] = []

    def ping(con):  # type: ignore[no-untyped-def]
        pings.append(1)
        return True

    pool = impl.PooledDB(sqlite3, 2, 0, 0, 0, False, None, None, True, None, ping, None, ":memory:", check_same_thread=False)
    assert len(pings) == 0  # the connections opened up front
    pool.connection().close()
    assert len(pings) == 1  # one taken from the idle cache


def test_a_connection_that_breaks_inside_a_transaction_is_replaced_after_one_error(impl, mysql, mariadb):
    MySQLdb, kw = mysql
    pool = impl.PooledDB(MySQLdb, maxconnections=2, **kw)
    db = pool.connection()
    db.begin()
    (cid,) = one(db, "SELECT CONNECTION_ID()")
    killer = MySQLdb.connect(autocommit=True, **kw)
    killer.cursor().execute(f"KILL {int(cid)}")
    killer.close()
    time.sleep(0.1)
    cur = db.cursor()
    with pytest.raises(MySQLdb.OperationalError):
        cur.execute("SELECT 1")  # raised once: the transaction is gone with its connection
    (new_cid,) = one(db, "SELECT CONNECTION_ID()")  # execute, cursor() and rollback work again
    assert new_cid != cid
    db.rollback()
    db.close()


def test_cursor_on_a_connection_that_broke_while_held_reopens(impl, mysql):
    MySQLdb, kw = mysql
    pool = impl.PooledDB(MySQLdb, maxconnections=2, ping=0, **kw)
    db = pool.connection()
    raw = db.dbapi_connection if hasattr(db, "dbapi_connection") else db._con._con
    raw.close()  # broken under the holder's feet
    (n,) = one(db, "SELECT 7")  # cursor() reopens instead of raising
    assert n == 7
    db.close()


def test_creator_function_returning_mysql_connector_connections(impl, mariadb):
    """The user's report: with a creator *function* returning mysql-connector-python
    connections every statement error became "Could not determine failure exceptions"."""
    connector = pytest.importorskip("mysql.connector", reason="mysql-connector-python is not installed")
    from fastpool.url import parse_url

    kw = parse_url(mariadb.dsn).connect_kwargs

    def creator():  # type: ignore[no-untyped-def]
        return connector.connect(host=kw["host"], port=kw["port"], user=kw["user"],
                                 password=kw["password"], database=kw["database"])

    pool = impl.PooledDB(creator, maxconnections=2)
    db = pool.connection()
    cur = db.cursor()
    with pytest.raises(connector.Error):  # the driver's own error class
        cur.execute("SELECT * FROM no_such_table_at_all")
    cur = db.cursor()
    cur.execute("SELECT 41 + 1")
    assert cur.fetchall() == [(42,)]
    assert db.threadsafety() == connector.threadsafety
    db.close()
