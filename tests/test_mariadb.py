"""The pool against a real MariaDB server (started by the test session, or FASTPOOL_TEST_DSN)."""

from __future__ import annotations

import os
import threading
import time

import pytest

import fastpool
from threads import run_threads

MySQLdb = pytest.importorskip("MySQLdb", reason="mysqlclient is not installed")


def query(conn: fastpool.Conn, sql: str, params=None):  # type: ignore[no-untyped-def]
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return cur.fetchall()
    finally:
        cur.close()


def admin(mariadb):  # type: ignore[no-untyped-def]
    """A plain driver connection outside any pool, for KILL and processlist."""
    kwargs = fastpool.url.parse_url(mariadb.dsn).connect_kwargs
    return MySQLdb.connect(autocommit=True, **kwargs)


def our_sessions(mariadb, db_name: str = "fastpool_test") -> int:  # type: ignore[no-untyped-def]
    a = admin(mariadb)
    cur = a.cursor()
    cur.execute(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
        (db_name,),
    )
    (n,) = cur.fetchone()
    a.close()
    return int(n)


def test_checkout_uses_mysqlclient_in_autocommit_and_reuses_the_connection(mysql_pool):
    db = mysql_pool(max_open=2)
    with db.conn() as c:
        assert isinstance(c.raw, MySQLdb.connections.Connection)
        ((one, autocommit),) = query(c, "SELECT 1, @@autocommit")
        assert (one, autocommit) == (1, 1)
        (cid,) = query(c, "SELECT CONNECTION_ID()")[0]
    with db.conn() as c:
        assert query(c, "SELECT CONNECTION_ID()")[0][0] == cid
    assert db.driver == "mysql"
    assert db.stats().open == 1


def test_session_state_survives_within_a_dedicated_conn(mysql_pool):
    db = mysql_pool(max_open=1)
    with db.conn() as c:
        query(c, "SET @x = 41")
        assert query(c, "SELECT @x + 1") == ((42,),)


def test_wrong_password_error_comes_from_the_driver_without_the_password(mariadb):
    bad = mariadb.dsn.replace(":fp-test-secret@", ":wrong-Pa55word@")
    if bad == mariadb.dsn:
        pytest.skip("FASTPOOL_TEST_DSN has another password layout")
    db = fastpool.open(bad, max_open=1)
    with pytest.raises(MySQLdb.OperationalError) as ei:
        db.ping()
    assert "wrong-Pa55word" not in str(ei.value)
    assert "wrong-Pa55word" not in repr(db)
    s = db.stats()
    assert (s.open, s.in_use) == (0, 0)
    db.close()


def test_killed_idle_connections_are_replaced_invisibly(mariadb, mysql_pool):
    db = mysql_pool(max_open=3)
    conns = [db.getconn() for _ in range(3)]
    ids = [query(c, "SELECT CONNECTION_ID()")[0][0] for c in conns]
    for c in conns:
        c.close()
    a = admin(mariadb)
    for cid in ids:
        a.cursor().execute(f"KILL {int(cid)}")
    a.close()
    time.sleep(0.2)  # let the server's FIN reach the client sockets
    for _ in range(3):
        with db.conn() as c:
            assert query(c, "SELECT 1") == ((1,),)
            assert query(c, "SELECT CONNECTION_ID()")[0][0] not in ids
    s = db.stats()
    assert s.bad_conns_discarded == 3
    assert s.open == 1 and s.in_use == 0


def test_wait_timeout_expiry_is_invisible(mysql_pool):
    db = mysql_pool(max_open=2)
    with db.conn() as c:
        query(c, "SET SESSION wait_timeout = 1")
        old = query(c, "SELECT CONNECTION_ID()")[0][0]
    time.sleep(2.5)  # the server closes the idle session
    with db.conn() as c:
        assert query(c, "SELECT CONNECTION_ID()")[0][0] != old
    assert db.stats().bad_conns_discarded == 1


def test_max_open_holds_on_the_server_under_many_threads(mariadb, mysql_pool):
    db = mysql_pool(max_open=4, timeout=20)
    peak = [0]
    start = threading.Barrier(24)

    def worker(_n: int) -> None:
        start.wait()
        for _ in range(25):
            with db.conn() as c:
                query(c, "SELECT SLEEP(0.001)")
                peak[0] = max(peak[0], db.stats().in_use)

    errors = run_threads(worker, 24)
    assert not errors
    s = db.stats()
    assert s.open <= 4 and s.in_use == 0 and peak[0] <= 4
    assert s.wait_count > 0
    assert our_sessions(mariadb) <= 4


def test_server_restart_mid_run_recovers_by_itself(mariadb, mysql_pool):
    if not hasattr(mariadb, "restart"):
        pytest.skip("needs the throwaway server (FASTPOOL_TEST_DSN is set)")
    db = mysql_pool(max_open=3, timeout=0.5)
    conns = [db.getconn() for _ in range(3)]
    for c in conns:
        c.close()
    mariadb.stop()
    # While it is down: a caller fails fast with the driver's error, nothing hangs,
    # the pool stays whole.
    t0 = time.monotonic()
    with pytest.raises(MySQLdb.OperationalError):
        with db.conn() as c:
            query(c, "SELECT 1")
    assert time.monotonic() - t0 < 10
    s = db.stats()
    assert s.in_use == 0
    mariadb.start()
    for _ in range(5):
        with db.conn() as c:
            assert query(c, "SELECT 1") == ((1,),)
    s = db.stats()
    assert s.in_use == 0 and s.open >= 1 and s.bad_conns_discarded >= 3


def test_a_waiter_gets_the_connect_error_while_the_server_is_down(mariadb, mysql_pool):
    if not hasattr(mariadb, "restart"):
        pytest.skip("needs the throwaway server (FASTPOOL_TEST_DSN is set)")
    db = mysql_pool(max_open=1, timeout=30)
    held = db.getconn()
    results: dict = {}

    def waiter() -> None:
        try:
            results["w"] = db.getconn()
        except BaseException as exc:
            results["w"] = exc

    t = threading.Thread(target=waiter)
    t.start()
    while db.stats().waiting == 0:
        time.sleep(0.005)
    mariadb.stop()
    try:
        held.discard()  # broken by the outage; the opener cannot replace it
        t.join(10)
        # Not a blind 30 s wait: the opener's failed connect is handed to the waiter.
        assert isinstance(results["w"], MySQLdb.OperationalError), results["w"]
        assert results["w"].args[0] in (2002, 2003, 2013), results["w"]
        assert db.stats().in_use == 0
    finally:
        mariadb.start()
    with db.conn(timeout=10) as c:
        assert query(c, "SELECT 1") == ((1,),)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_opens_its_own_connection_and_spares_the_parents(mysql_pool):
    db = mysql_pool(max_open=2)
    with db.conn() as c:
        parent_id = query(c, "SELECT CONNECTION_ID()")[0][0]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with db.conn(timeout=5) as c:
                child_id = query(c, "SELECT CONNECTION_ID()")[0][0]
            code = 0 if child_id != parent_id else 3
        finally:
            os.write(w, bytes([code]))
            os._exit(code)  # no interpreter exit: inherited objects are not torn down here
    os.close(w)
    status = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    assert status == b"\x00"
    with db.conn(timeout=0) as c:  # the parent's connection is intact and still pooled
        assert query(c, "SELECT CONNECTION_ID()")[0][0] == parent_id
    assert db.stats().bad_conns_discarded == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_child_closing_what_it_inherited_does_not_break_the_parents_connection(mysql_pool):
    # The inherited socket was replaced by /dev/null in the child, so even closing the
    # inherited driver connection there (mysql_close sends COM_QUIT) reaches no server.
    from fastpool import pool as pool_module

    db = mysql_pool(max_open=1)
    with db.conn() as c:
        parent_id = query(c, "SELECT CONNECTION_ID()")[0][0]
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            db.close()
            inherited = list(pool_module._inherited)
            for raw in inherited:
                raw.close()
            code = 0 if inherited else 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    time.sleep(0.1)
    with db.conn(timeout=0) as c:
        assert query(c, "SELECT CONNECTION_ID()")[0][0] == parent_id
    assert db.stats().bad_conns_discarded == 0
