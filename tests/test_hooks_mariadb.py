"""Hooks, max_waiting and events against the real MariaDB (issue 15)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

import fastpool
from fastpool import DeadlineExceeded, TooManyWaiting
from fastpool.url import parse_url

MySQLdb = pytest.importorskip("MySQLdb", reason="mysqlclient is not installed")


@pytest.fixture
def admin(mariadb):  # type: ignore[no-untyped-def]
    conn = MySQLdb.connect(autocommit=True, **parse_url(mariadb.dsn).connect_kwargs)
    yield conn
    conn.close()


def scalar(conn, sql, params=None):  # type: ignore[no-untyped-def]
    cur = conn.cursor()
    cur.execute(sql, params)
    (value,) = cur.fetchone()
    cur.close()
    return value


def test_configure_sets_session_state_once_per_physical_connection(mysql_pool):
    calls: list[int] = []

    def configure(raw):  # type: ignore[no-untyped-def]
        calls.append(raw.thread_id())
        cur = raw.cursor()
        cur.execute("SET SESSION time_zone = '+05:30', SESSION sql_mode = 'ANSI_QUOTES'")
        cur.close()

    db = mysql_pool(max_open=3, configure=configure)
    barrier = threading.Barrier(3)

    def worker() -> None:
        with db.conn() as c:
            barrier.wait(5)
            for _ in range(20):
                assert c.query_row("SELECT @@session.time_zone, @@session.sql_mode") == (
                    "+05:30", "ANSI_QUOTES")

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for _ in range(30):
        assert db.query_row("SELECT @@session.time_zone") == ("+05:30",)
    s = db.stats()
    assert len(calls) == len(set(calls)) == s.connects == 3
    assert s.connect_time > 0 and s.connect_errors == 0


def test_configure_error_from_the_server_closes_the_connection(mariadb, mysql_pool, admin):
    def configure(raw):  # type: ignore[no-untyped-def]
        cur = raw.cursor()
        cur.execute("SET SESSION no_such_variable = 1")

    db = mysql_pool(max_open=2, configure=configure, timeout=5)
    before = scalar(admin, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s",
                    (parse_url(mariadb.dsn).connect_kwargs["user"],))
    with pytest.raises(MySQLdb.OperationalError) as ei:
        db.query_row("SELECT 1")
    assert ei.value.args[0] == 1193  # unknown system variable: the server's own error
    s = db.stats()
    assert (s.open, s.in_use, s.connects) == (0, 0, 0) and s.connect_errors >= 1
    db.close()
    time.sleep(0.2)
    after = scalar(admin, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s",
                   (parse_url(mariadb.dsn).connect_kwargs["user"],))
    assert after <= before   # the spoiled connections were closed, not left open


def test_check_finds_a_session_the_pool_cannot_see(mysql_pool):
    # A session-level marker stands for state a check can see and the socket poll cannot
    # (a replica that fell behind, a role that changed): the check discards the connection.
    marker = uuid.uuid4().hex[:8]
    db = mysql_pool(max_open=1, check=lambda raw: scalar(raw, "SELECT @m IS NULL") == 1)
    with db.conn() as c:
        first = c.query_row("SELECT CONNECTION_ID()")
        c.execute("SET @m = %s", (marker,))
    with db.conn() as c:
        second = c.query_row("SELECT CONNECTION_ID()")
        assert c.query_row("SELECT @m") == (None,)
    assert first != second
    assert db.stats().bad_conns_discarded == 1


def test_reset_clears_what_a_request_left_behind(mysql_pool):
    def reset(raw):  # type: ignore[no-untyped-def]
        cur = raw.cursor()
        cur.execute("SET @cart = NULL")
        cur.close()

    db = mysql_pool(max_open=1, reset=reset)
    with db.conn() as c:
        cid = c.query_row("SELECT CONNECTION_ID()")
        c.execute("SET @cart = 'alice'")
    with db.conn() as c:
        assert c.query_row("SELECT CONNECTION_ID()") == cid          # the same connection
        assert c.query_row("SELECT @cart") == (None,)                 # made clean


def test_a_check_that_hangs_is_cancelled_at_the_deadline(mysql_pool, admin):
    marker = uuid.uuid4().hex[:8]
    db = mysql_pool(max_open=2)
    assert db.query_row("SELECT 1") == (1,)     # one idle connection for the check to run on
    db.check = lambda raw: scalar(raw, f"SELECT SLEEP(5) /* {marker} */") == 0
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded), fastpool.deadline(0.5):
        db.query_row("SELECT 1")
    assert time.monotonic() - start < 2.0
    db.check = None
    time.sleep(0.2)
    assert scalar(admin, "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
                  " WHERE INFO LIKE %s AND ID <> CONNECTION_ID()", (f"%{marker}%",)) == 0
    s = db.stats()
    assert s.statements_cancelled == 1 and s.in_use == 0 and s.bad_conns_discarded == 1
    assert db.query_row("SELECT 2") == (2,)


def test_a_reset_that_hangs_is_cancelled_and_the_result_still_arrives(mysql_pool):
    db = mysql_pool(max_open=1, statement_timeout=0.5,
                    reset=lambda raw: scalar(raw, "SELECT SLEEP(5)"))
    start = time.monotonic()
    assert db.query_row("SELECT 42") == (42,)
    assert time.monotonic() - start < 2.0
    s = db.stats()
    assert s.statements_cancelled == 1 and s.bad_conns_discarded == 1 and s.open == 0


def test_max_waiting_sheds_load_under_threads(mysql_pool):
    db = mysql_pool(max_open=2, max_waiting=2, timeout=10)
    refused = threading.Event()
    results: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            db.query_row("SELECT SLEEP(0.3)")
            outcome = "ok"
        except TooManyWaiting:
            outcome = "refused"
            refused.set()
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    # 2 run, at most 2 wait, the rest are refused at once; nobody times out.
    assert results.count("ok") >= 4 and results.count("refused") >= 1
    assert len(results) == 8
    s = db.stats()
    assert s.waits_refused == results.count("refused") and s.timeouts == 0
    assert s.in_use == 0 and s.open <= 2


def test_credential_rotation_recipe(mariadb, admin):
    # Pool(connect) with a connect that fetches the current token: connections opened
    # after a rotation use the new password, open ones keep working.
    user = f"rot_{uuid.uuid4().hex[:8]}"
    kwargs = parse_url(mariadb.dsn).connect_kwargs
    token = {"value": "first-token"}
    cur = admin.cursor()
    cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'first-token'")
    cur.execute(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY 'first-token'")
    try:
        def connect():  # type: ignore[no-untyped-def]
            return MySQLdb.connect(host=kwargs["host"], port=kwargs["port"], user=user,
                                   password=token["value"])

        db = fastpool.Pool(connect, max_open=2)
        try:
            held = db.conn()
            for host in ("%", "localhost"):
                cur.execute(f"ALTER USER '{user}'@'{host}' IDENTIFIED BY 'second-token'")
            token["value"] = "second-token"
            with db.conn() as c:          # a new connection: the new token
                assert c.query_row("SELECT CURRENT_USER()")[0].startswith(user)
            assert held.query_row("SELECT 1") == (1,)   # the old one still works
            held.close()
            assert db.stats().connect_errors == 0
            assert "second-token" not in repr(db) and "second-token" not in repr(db.stats())
        finally:
            db.close()
    finally:
        cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        cur.execute(f"DROP USER IF EXISTS '{user}'@'localhost'")
        cur.close()


def test_init_command_in_the_url_sets_each_new_session(mariadb):
    from urllib.parse import quote

    url = mariadb.dsn + ("&" if "?" in mariadb.dsn else "?") + "init_command=" + quote(
        "SET SESSION time_zone = '-03:00'")
    db = fastpool.open(url, max_open=2)
    try:
        with db.conn(), db.conn() as c:
            assert c.query_row("SELECT @@session.time_zone") == ("-03:00",)
        assert db.query_row("SELECT @@session.time_zone") == ("-03:00",)
        assert db.stats().connects == 2
    finally:
        db.close()
