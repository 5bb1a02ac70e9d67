"""The query layer against the real MariaDB: the seed's leak, streaming, transactions,
dead connections, retries, errors, and threads mixing it all."""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
import warnings

import pytest

import fastpool
from fastpool import ConnectionLeakWarning
from fastpool.dialects import MySQLDialect
from threads import run_threads

MySQLdb = pytest.importorskip("MySQLdb", reason="mysqlclient is not installed")


@pytest.fixture
def db(mysql_pool):  # type: ignore[no-untyped-def]
    pool = mysql_pool(max_open=5)
    pool.execute("DROP TABLE IF EXISTS ranger_user")
    pool.execute("CREATE TABLE ranger_user (id INT PRIMARY KEY, name VARCHAR(40)) ENGINE=InnoDB")
    pool.execute("INSERT INTO ranger_user SELECT seq, CONCAT('user', seq) FROM seq_1_to_50")
    yield pool
    assert pool.stats().in_use == 0


def get_user_list(db, stream):  # type: ignore[no-untyped-def]
    for row in db.query("SELECT id, name FROM ranger_user WHERE id > %s", (1,), stream=stream):
        return row  # rows never closed: in Go, one leaked connection per request


def test_seed_loop_buffered_10000_calls_one_connection(db):
    for _ in range(10_000):
        assert get_user_list(db, False) == (2, "user2")
    s = db.stats()
    assert s.open == 1 and s.in_use == 0 and s.leaks_reclaimed == 0 and s.wait_count == 0


def test_seed_loop_streaming_10000_calls_reclaimed_with_a_warning_each(db):
    # Objects an earlier test left in reference cycles are reclaimed (and warned about) by
    # whichever collection runs next: run it now, and count only this loop's warnings, the
    # ones naming get_user_list's line (on a free-threaded build one came from elsewhere).
    gc.collect()
    line = get_user_list.__code__.co_firstlineno + 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(10_000):
            assert get_user_list(db, True) == (2, "user2")
    leaks = [w for w in caught if issubclass(w.category, ConnectionLeakWarning)]
    ours = [w for w in leaks if w.filename.endswith("test_query_mariadb.py") and w.lineno == line]
    assert len(ours) == 10_000, [(w.filename, w.lineno, str(w.message)[:120])
                                 for w in leaks if w not in ours][:5]
    s = db.stats()
    assert s.open == 1 and s.in_use == 0 and s.leaks_reclaimed == 10_000 and s.wait_count == 0
    # Still clean: the connection answers a fresh query correctly.
    assert db.query_row("SELECT COUNT(*) FROM ranger_user") == (50,)


def test_streaming_100k_rows_release_at_eof(db):
    rows = db.query("SELECT seq FROM seq_1_to_100000", stream=True)
    assert db.stats().in_use == 1
    total = 0
    for (n,) in rows:
        total += n
    assert total == 100_000 * 100_001 // 2
    assert db.stats().in_use == 0
    assert db.stats().bad_conns_discarded == 0


def test_dropped_stream_with_much_left_closes_the_connection_instead(db):
    def peek():  # type: ignore[no-untyped-def]
        for row in db.query("SELECT seq FROM seq_1_to_1000000", stream=True):
            return row

    with pytest.warns(ConnectionLeakWarning):
        assert peek() == (1,)
    s = db.stats()
    assert s.in_use == 0 and s.leaks_reclaimed == 1 and s.bad_conns_discarded == 1
    assert db.query_row("SELECT 1") == (1,)


@pytest.mark.parametrize("how", ["break", "return", "raise"])
def test_with_block_releases_on_break_return_raise(db, how):
    def run() -> None:
        with db.query("SELECT id FROM ranger_user", stream=True) as rows:
            for _ in rows:
                if how == "break":
                    break
                if how == "return":
                    return
                raise KeyError

    if how == "raise":
        with pytest.raises(KeyError):
            run()
    else:
        run()
    s = db.stats()
    assert s.in_use == 0 and s.leaks_reclaimed == 0 and s.bad_conns_discarded == 0
    assert db.query_row("SELECT 1") == (1,)  # the connection was drained, not out of sync


def test_transactions_commit_and_roll_back(db):
    with db.transaction() as tx:
        tx.execute("UPDATE ranger_user SET name = 'committed' WHERE id = 1")
    with pytest.raises(RuntimeError):
        with db.transaction() as tx:
            tx.execute("UPDATE ranger_user SET name = 'rolled back' WHERE id = 2")
            raise RuntimeError
    assert db.query_row("SELECT name FROM ranger_user WHERE id = 1") == ("committed",)
    assert db.query_row("SELECT name FROM ranger_user WHERE id = 2") == ("user2",)
    tx = db.begin()
    tx.execute("DELETE FROM ranger_user WHERE id = 3")
    tx.rollback()
    assert db.query_row("SELECT COUNT(*) FROM ranger_user") == (50,)


def test_dropped_tx_rolled_back_and_its_locks_released(db, mysql_pool):
    def abandon() -> None:
        tx = db.begin()
        tx.execute("UPDATE ranger_user SET name = 'leaked' WHERE id = 5")  # row lock held

    with pytest.warns(ConnectionLeakWarning, match="a Tx opened at"):
        abandon()
    other = mysql_pool(max_open=1)
    with other.transaction() as tx:  # would wait for the lock if it were still held
        tx.execute("SET SESSION innodb_lock_wait_timeout = 2")
        tx.execute("UPDATE ranger_user SET name = 'mine' WHERE id = 5")
    assert db.query_row("SELECT name FROM ranger_user WHERE id = 5") == ("mine",)


def test_conn_session_state_and_autocommit_restored(db):
    with db.conn() as c:
        c.execute("SET @x = 41")
        assert c.query_row("SELECT @x + 1") == (42,)
        c.execute("SET autocommit = 0")
        c.execute("UPDATE ranger_user SET name = 'uncommitted' WHERE id = 9")
    for _ in range(db.stats().idle + 1):
        with db.conn() as c:
            assert c.query_row("SELECT @@autocommit") == (1,)
    assert db.query_row("SELECT name FROM ranger_user WHERE id = 9") == ("user9",)


def test_sql_errors_reach_the_caller_with_the_drivers_class(db):
    with pytest.raises(MySQLdb.ProgrammingError):
        db.execute("SELEC nonsense")
    with pytest.raises(MySQLdb.IntegrityError):
        db.execute("INSERT INTO ranger_user VALUES (1, 'dup')")
    with pytest.raises(MySQLdb.ProgrammingError):
        db.query("SELECT * FROM no_such_table", stream=True)
    s = db.stats()
    assert s.in_use == 0 and s.bad_conns_discarded == 0
    assert db.query_row("SELECT 1") == (1,)


def test_killed_connections_invisible_to_query_row(db, mariadb):
    ids = set()
    conns = [db.conn() for _ in range(3)]
    for c in conns:
        ids.add(c.query_row("SELECT CONNECTION_ID()")[0])
        c.close()
    killer = MySQLdb.connect(autocommit=True, **fastpool.url.parse_url(mariadb.dsn).connect_kwargs)
    for cid in ids:
        killer.cursor().execute(f"KILL {int(cid)}")
    killer.close()
    time.sleep(0.2)
    for _ in range(5):
        assert db.query_row("SELECT 1") == (1,)
    assert db.stats().bad_conns_discarded == 3


class NoPollMySQL(MySQLDialect):
    """mysqlclient without the socket poll, so a dead connection reaches the statement."""

    def fileno(self, raw):  # type: ignore[no-untyped-def]
        return -1


def test_statement_that_never_reached_the_server_is_retried_invisibly(mariadb):
    url = fastpool.url.parse_url(mariadb.dsn)
    connect = NoPollMySQL().connect_factory(url.connect_kwargs)
    db = fastpool.Pool(connect, driver=NoPollMySQL(), max_open=3)
    conns = [db.conn() for _ in range(2)]
    for c in conns:
        # Shut our side for writing: the next send fails with 2006, never reaching the server.
        s = socket.socket(fileno=os.dup(c.raw.fileno()))
        s.shutdown(socket.SHUT_WR)
        s.close()
        c.close()
    db.execute("DROP TABLE IF EXISTS retry_t")
    st = db.stats()
    assert st.bad_conns_discarded == 2  # both pooled tries failed with 2006...
    assert st.open == 1  # ...and the third, on a new connection, ran it once
    db.execute("CREATE TABLE retry_t (n INT)")
    db.execute("INSERT INTO retry_t VALUES (1)")
    assert db.query_row("SELECT COUNT(*) FROM retry_t") == (1,)
    db.close()


def test_restart_mid_run_threads_recover_nothing_hangs(db, mariadb):
    if not hasattr(mariadb, "restart"):
        pytest.skip("needs the throwaway server")
    stop = time.monotonic() + 4.0
    outcomes = {"ok": 0, "err": 0}
    lock = threading.Lock()
    db.timeout = 1.0

    def worker() -> None:
        while time.monotonic() < stop:
            try:
                assert db.query_row("SELECT 1") == (1,)
                key = "ok"
            except (MySQLdb.OperationalError, fastpool.PoolTimeout):
                key = "err"
                time.sleep(0.01)
            with lock:
                outcomes[key] += 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    mariadb.restart()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a caller hung"
    assert outcomes["ok"] > 0
    assert db.query_row("SELECT 1") == (1,)
    assert db.stats().in_use == 0


def test_threads_mixing_everything(db):
    def worker(n: int) -> None:
        for i in range(40):
            k = (n + i) % 6
            if k == 0:
                db.query_row("SELECT name FROM ranger_user WHERE id = %s", (i % 50 + 1,))
            elif k == 1:
                for _ in db.query("SELECT id FROM ranger_user", stream=True):
                    break
            elif k == 2:
                with db.transaction() as tx:
                    tx.execute("UPDATE ranger_user SET name = name WHERE id = %s", (n + 1,))
            elif k == 3:
                with db.conn() as c:
                    c.execute("SET @v = %s", (i,))
                    assert c.query_row("SELECT @v") == (i,)
            elif k == 4:
                try:
                    db.execute("SELEC broken")
                except MySQLdb.ProgrammingError:
                    pass
            else:
                assert len(db.query("SELECT id FROM ranger_user").fetchall()) == 50

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConnectionLeakWarning)
        errors = run_threads(worker, 12)
        gc.collect()
    assert not errors, errors[:3]
    s = db.stats()
    assert s.in_use == 0 and s.open <= 5


def test_global_wait_timeout_expiry_is_invisible(mariadb, mysql_pool):
    if not hasattr(mariadb, "restart"):
        pytest.skip("changes a global setting: only on the throwaway server")
    setter = mysql_pool(max_open=1)
    (old,) = setter.query_row("SELECT @@GLOBAL.wait_timeout")
    setter.execute("SET GLOBAL wait_timeout = 1")
    try:
        db = mysql_pool(max_open=3)
        conns = [db.conn() for _ in range(3)]  # new sessions: wait_timeout 1 s
        ids = {c.query_row("SELECT CONNECTION_ID()")[0] for c in conns}
        for c in conns:
            c.close()
        time.sleep(2.5)  # the server closes all three
        for _ in range(4):
            assert db.query_row("SELECT 1") == (1,)
        assert db.query_row("SELECT CONNECTION_ID()")[0] not in ids
        assert db.stats().bad_conns_discarded == 3
    finally:
        setter.execute("SET GLOBAL wait_timeout = %s", (int(old),))
