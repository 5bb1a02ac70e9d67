"""The query layer on SQLite and the fake driver: Rows, Tx, Conn, leak reclaim, retries."""

from __future__ import annotations

import gc
import logging
import sqlite3
import time
import warnings

import pytest
from conftest import FakeDialect
from fakedb import FakeDriver, FakeError
from threads import run_threads

import fastpool
from fastpool import ConnectionLeakWarning, FastpoolError
from fastpool.dialects import ERR_BROKEN, ERR_OK, ERR_RETRY


@pytest.fixture
def db(tmp_path):  # type: ignore[no-untyped-def]
    pool = fastpool.open(f"sqlite:///{tmp_path / 'q.db'}", max_open=3)
    pool.execute("CREATE TABLE user (id INTEGER PRIMARY KEY, name TEXT)")
    for i in range(1, 21):
        pool.execute("INSERT INTO user (id, name) VALUES (?, ?)", (i, f"u{i}"))
    yield pool
    s = pool.stats()
    assert s.in_use == 0, s
    pool.close()


def test_execute_returns_result(db):
    r = db.execute("INSERT INTO user (name) VALUES (?)", ("new",))
    assert (r.rowcount, r.lastrowid) == (1, 21)
    r = db.execute("UPDATE user SET name = 'x' WHERE id <= ?", (5,))
    assert r.rowcount == 5


def test_query_row(db):
    assert db.query_row("SELECT name FROM user WHERE id = ?", (7,)) == ("u7",)
    assert db.query_row("SELECT name FROM user WHERE id = ?", (999,)) is None
    assert db.stats().in_use == 0


def test_buffered_query_gives_the_connection_back_before_returning(db):
    rows = db.query("SELECT id, name FROM user WHERE id > ?", (1,))
    assert db.stats().in_use == 0
    assert not rows.holds_connection
    assert rows.columns == ("id", "name")
    assert next(rows) == (2, "u2")
    assert rows.fetchone() == (3, "u3")
    assert rows.fetchmany(2) == [(4, "u4"), (5, "u5")]
    assert len(rows.fetchall()) == 15
    assert rows.fetchone() is None
    rows.close()
    rows.close()  # twice is harmless


def test_streaming_query_holds_until_eof_then_releases(db):
    rows = db.query("SELECT id FROM user ORDER BY id", stream=True)
    assert rows.holds_connection and db.stats().in_use == 1
    got = [r[0] for r in rows]
    assert got == list(range(1, 21))
    assert not rows.holds_connection and db.stats().in_use == 0


def test_streaming_empty_result_releases_on_first_next(db):
    rows = db.query("SELECT id FROM user WHERE id > 1000", stream=True)
    assert list(rows) == []
    assert db.stats().in_use == 0


@pytest.mark.parametrize("how", ["break", "return", "raise"])
def test_leaving_a_with_block_early_releases(db, how):
    def run() -> None:
        with db.query("SELECT id FROM user", stream=True) as rows:
            for row in rows:
                if how == "break":
                    break
                if how == "return":
                    return
                raise KeyError("boom")

    if how == "raise":
        with pytest.raises(KeyError):
            run()
    else:
        run()
    s = db.stats()
    assert s.in_use == 0 and s.leaks_reclaimed == 0


@pytest.mark.parametrize("how", ["break", "return", "raise"])
def test_dropped_streaming_rows_are_reclaimed_with_a_warning_naming_the_line(db, how):
    def run():  # type: ignore[no-untyped-def]
        for row in db.query("SELECT id FROM user", stream=True):  # the opening line
            if how == "break":
                break
            if how == "return":
                return row
            raise KeyError("boom")
        return None

    with pytest.warns(ConnectionLeakWarning) as rec:
        if how == "raise":
            with pytest.raises(KeyError):
                run()
        else:
            run()
        gc.collect()  # the exception's traceback may hold the frame
    assert db.stats().leaks_reclaimed == 1 and db.stats().in_use == 0
    msg = str(rec[0].message)
    assert "streaming Rows" in msg and "test_query.py:" in msg
    assert rec[0].filename.endswith("test_query.py")
    opening = run.__code__.co_firstlineno + 1
    assert rec[0].lineno == opening


def test_the_seed_loop_keeps_one_connection(db):
    def get_user_list():  # type: ignore[no-untyped-def]
        for row in db.query("SELECT id, name FROM user WHERE id > ?", (1,)):
            return row

    for _ in range(2000):
        assert get_user_list() == (2, "u2")
    s = db.stats()
    assert s.open == 1 and s.in_use == 0 and s.leaks_reclaimed == 0


def test_transaction_commits_on_success_and_rolls_back_on_error(db):
    with db.transaction() as tx:
        tx.execute("INSERT INTO user (id, name) VALUES (100, 'a')")
        assert tx.query_row("SELECT name FROM user WHERE id = 100") == ("a",)
    assert db.query_row("SELECT name FROM user WHERE id = 100") == ("a",)
    with pytest.raises(ZeroDivisionError):
        with db.transaction() as tx:
            tx.execute("INSERT INTO user (id, name) VALUES (101, 'b')")
            1 / 0
    assert db.query_row("SELECT name FROM user WHERE id = 101") is None
    assert tx.done


def test_begin_commit_rollback_and_use_after_finish(db):
    tx = db.begin()
    tx.execute("INSERT INTO user (id, name) VALUES (200, 'c')")
    tx.rollback()
    assert db.query_row("SELECT 1 FROM user WHERE id = 200") is None
    with pytest.raises(FastpoolError, match="finished"):
        tx.execute("SELECT 1")
    tx = db.begin()
    tx.execute("INSERT INTO user (id, name) VALUES (201, 'd')")
    tx.commit()
    assert db.query_row("SELECT name FROM user WHERE id = 201") == ("d",)


def test_dropped_tx_is_rolled_back_and_reported(db):
    def work() -> None:
        tx = db.begin()
        tx.execute("INSERT INTO user (id, name) VALUES (300, 'lost')")

    with pytest.warns(ConnectionLeakWarning, match=r"a Tx opened at .*test_query.py:\d+ was dropped"):
        work()
    assert db.query_row("SELECT 1 FROM user WHERE id = 300") is None
    s = db.stats()
    assert s.leaks_reclaimed == 1 and s.in_use == 0


def test_dropped_conn_with_open_transaction_is_rolled_back(db):
    def work() -> None:
        c = db.conn()
        c.execute("BEGIN")
        c.execute("INSERT INTO user (id, name) VALUES (400, 'x')")

    with pytest.warns(ConnectionLeakWarning, match="a Conn opened at"):
        work()
    assert db.query_row("SELECT 1 FROM user WHERE id = 400") is None


def test_conn_given_back_mid_transaction_is_rolled_back(db):
    with db.conn() as c:
        c.execute("BEGIN")
        c.execute("INSERT INTO user (id, name) VALUES (500, 'x')")
    assert db.query_row("SELECT 1 FROM user WHERE id = 500") is None
    with db.conn() as c:
        cur = c.cursor()  # raw DB-API access: reset on give-back too
        cur.execute("BEGIN")
        cur.execute("INSERT INTO user (id, name) VALUES (501, 'x')")
    assert db.query_row("SELECT 1 FROM user WHERE id = 501") is None


def test_pool_level_begin_is_not_leaked_to_the_next_caller(db):
    db.execute("BEGIN")
    db.execute("INSERT INTO user (id, name) VALUES (600, 'x')")  # autocommit again
    with db.conn() as c:
        assert not c.raw.in_transaction


def test_conn_keeps_session_state_and_refuses_work_while_a_stream_is_open(db):
    with db.conn() as c:
        c.execute("CREATE TEMP TABLE scratch (x)")
        c.execute("INSERT INTO scratch VALUES (1)")
        assert c.query_row("SELECT x FROM scratch") == (1,)
        rows = c.query("SELECT id FROM user", stream=True)
        assert next(rows) == (1,)
        with pytest.raises(FastpoolError, match="streaming Rows is still open"):
            c.execute("SELECT 1")
        rows.close()
        assert c.query_row("SELECT 2") == (2,)
        rows = c.query("SELECT id FROM user", stream=True)
        assert len(list(rows)) == 20  # EOF ends the result; the Conn keeps the connection
        assert db.stats().in_use == 1
        assert c.query_row("SELECT 3") == (3,)
    assert db.stats().in_use == 0


def test_sql_errors_reach_the_caller_unchanged_and_the_pool_stays_whole(db):
    for call in (db.execute, db.query_row, db.query):
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            call("SELECT * FROM nope")
    s = db.stats()
    assert s.in_use == 0 and s.bad_conns_discarded == 0 and s.open == 1
    assert db.query_row("SELECT 1") == (1,)


def test_threads_mixing_everything_end_with_nothing_in_use(db):
    def worker(n: int) -> None:
        for i in range(50):
            k = (n + i) % 5
            if k == 0:
                db.query_row("SELECT name FROM user WHERE id = ?", (i % 20 + 1,))
            elif k == 1:
                for _ in db.query("SELECT id FROM user", stream=True):
                    break  # dropped: reclaimed
            elif k == 2:
                with db.transaction() as tx:
                    tx.execute("UPDATE user SET name = name WHERE id = ?", (1,))
            elif k == 3:
                with db.conn() as c:
                    c.query_row("SELECT 1")
            else:
                list(db.query("SELECT id FROM user WHERE id < 5"))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConnectionLeakWarning)
        errors = run_threads(worker, 8)
        gc.collect()
    assert not errors, errors[:3]
    s = db.stats()
    assert s.in_use == 0 and s.open <= 3 and s.leaks_reclaimed > 0


# ---- retries and broken connections, with the fake driver -----------------------------
class RetryDialect(FakeDialect):
    def classify(self, exc):  # type: ignore[no-untyped-def]
        if not isinstance(exc, Exception):
            return ERR_BROKEN
        if isinstance(exc, FakeError):
            return {"never-sent": ERR_RETRY, "lost": ERR_BROKEN}.get(str(exc), ERR_OK)
        return ERR_OK


def failing_driver(errors_by_conn):  # type: ignore[no-untyped-def]
    """A FakeDriver whose connection number n fails its statements with errors_by_conn[n]."""
    drv = FakeDriver()

    def execute(cur, sql, params=None):  # type: ignore[no-untyped-def]
        err = errors_by_conn.get(cur.conn.id)
        if err:
            raise FakeError(err)
        cur.conn.statements.append(sql)
        cur.rows = [(cur.conn.id,)]
        cur.description = (("id",),)
        cur.rowcount = 1
        cur.lastrowid = None

    import fakedb

    class Cursor(fakedb.FakeCursor):
        description = None

        def execute(self, sql, params=None):  # type: ignore[no-untyped-def]
            execute(self, sql, params)

        def fetchone(self):  # type: ignore[no-untyped-def]
            return self.rows[0] if self.rows else None

    orig = drv.connect

    def connect():  # type: ignore[no-untyped-def]
        c = orig()
        c.cursor = lambda: Cursor(c)  # type: ignore[method-assign]
        return c

    drv.connect = connect  # type: ignore[method-assign]
    return drv


def test_never_sent_errors_retry_twice_pooled_then_once_fresh():
    drv = failing_driver({1: "never-sent", 2: "never-sent"})
    db = fastpool.Pool(drv.connect, driver=RetryDialect(), max_open=3)
    a, b = db.getconn(), db.getconn()
    a.close()
    b.close()  # connections 1 and 2 idle; both fail "never-sent"
    assert db.query_row("SELECT id") == (3,)  # the third try, on a new connection
    s = db.stats()
    assert s.bad_conns_discarded == 2 and s.open == 1 and s.in_use == 0
    assert drv.conns[0].closed and drv.conns[1].closed
    db.close()


def test_retries_stop_after_the_fresh_connection_fails_too():
    drv = failing_driver({1: "never-sent", 2: "never-sent", 3: "never-sent", 4: "never-sent"})
    db = fastpool.Pool(drv.connect, driver=RetryDialect(), max_open=3)
    with pytest.raises(FakeError, match="never-sent"):
        db.execute("UPDATE x")
    assert drv.opened == 3  # the first try, one more, and one fresh: then the error
    assert db.stats().bad_conns_discarded == 3 and db.stats().open == 0
    db.close()


def test_broken_connection_error_propagates_without_retry_and_is_closed():
    drv = failing_driver({1: "lost"})
    db = fastpool.Pool(drv.connect, driver=RetryDialect(), max_open=3)
    with pytest.raises(FakeError, match="lost"):
        db.execute("UPDATE x")  # it may have reached the server: never run twice
    assert drv.opened == 1 and drv.conns[0].closed
    s = db.stats()
    assert s.bad_conns_discarded == 1 and s.open == 0
    assert db.query_row("SELECT id") == (2,)
    db.close()


def test_plain_statement_error_keeps_the_connection():
    drv = failing_driver({1: "syntax"})
    db = fastpool.Pool(drv.connect, driver=RetryDialect(), max_open=3)
    with pytest.raises(FakeError, match="syntax"):
        db.execute("SELEC")
    s = db.stats()
    assert s.bad_conns_discarded == 0 and s.open == 1 and s.idle == 1
    db.close()


def test_broken_error_inside_a_conn_discards_it_on_give_back():
    drv = failing_driver({1: "lost"})
    db = fastpool.Pool(drv.connect, driver=RetryDialect(), max_open=3)
    with db.conn() as c:
        with pytest.raises(FakeError):
            c.execute("UPDATE x")
    assert drv.conns[0].closed and db.stats().open == 0
    db.close()


def test_leak_timeout_logs_the_holders_stack_once(caplog):
    drv = FakeDriver()
    db = fastpool.Pool(drv, driver=FakeDialect(), max_open=2, leak_timeout=0.05)

    def hold_too_long() -> fastpool.Conn:
        return db.getconn()  # the line the report must show

    with caplog.at_level(logging.WARNING, logger="fastpool"):
        c = hold_too_long()
        deadline = time.monotonic() + 5
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
    c.close()
    reports = [r for r in caplog.records if "has been held" in r.getMessage()]
    assert len(reports) == 1
    assert "hold_too_long" in reports[0].getMessage()
    db.leak_timeout = None
    with db.conn():
        pass
    assert db._held == {}
    db.close()


def test_a_holders_own_discard_is_not_counted_as_a_broken_connection(db):
    events = []
    db.on("discard", lambda e: events.append(e.reason))
    c = db.conn()
    c.discard()
    s = db.stats()
    assert (s.discarded, s.bad_conns_discarded) == (1, 0), s
    assert events == ["discarded by its holder"]
