"""fastpool on a real PostgreSQL through psycopg 3: statements, the reset rule read from the
transaction status, dead connections, error classes, server-side cancel for deadlines,
the seed's leak, and faults from the TCP proxy."""

from __future__ import annotations

import signal
import threading
import time
import warnings
from typing import Any

import pytest

import fastpool
from fastpool.dialects.postgresql import PostgreSQLDialect
from pg_server import terminate_backend
from threads import run_threads

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")


class CountingConnection(psycopg.Connection):  # type: ignore[misc]
    """psycopg's own connection, counting what the pool asks of it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rollbacks = 0
        self.statements: list[str] = []

    def rollback(self) -> None:
        self.rollbacks += 1
        super().rollback()

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        cur = super().cursor(*args, **kwargs)
        outer = self

        class Recording:
            def __getattr__(self, name: str) -> Any:
                return getattr(cur, name)

            def execute(self, sql: Any, params: Any = None, **kw: Any) -> Any:
                outer.statements.append(str(sql))
                cur.execute(sql, params, **kw)
                return self

            def stream(self, sql: Any, params: Any = None, **kw: Any) -> Any:
                outer.statements.append(str(sql))
                return cur.stream(sql, params, **kw)

        return Recording()


def counting_pool(postgres, **options):  # type: ignore[no-untyped-def]
    def connect() -> CountingConnection:
        return CountingConnection.connect(postgres.dsn, autocommit=True)

    return fastpool.Pool(connect, driver="postgresql", **options)


def running(postgres, marker: str) -> int:  # type: ignore[no-untyped-def]
    """Statements carrying marker still running on the server (another session's view)."""
    with psycopg.connect(postgres.dsn, autocommit=True) as c:
        row = c.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                        " AND query LIKE %s AND pid <> pg_backend_pid()", (f"%{marker}%",)).fetchone()
        return int(row[0])


def backend_pid(db: fastpool.Pool) -> int:
    return int(db.query_row("SELECT pg_backend_pid()")[0])


# ---- statements ----------------------------------------------------------------------
def test_statements_rows_streams_and_transactions(pg_pool):
    db = pg_pool(max_open=3)
    db.execute("DROP TABLE IF EXISTS fp_items")
    db.execute("CREATE TABLE fp_items (id int PRIMARY KEY, name text)")
    res = db.execute("INSERT INTO fp_items SELECT g, 'n' || g FROM generate_series(1, 1000) g")
    assert res.rowcount == 1000 and res.lastrowid is None  # PostgreSQL: RETURNING instead
    assert db.query_row("SELECT name FROM fp_items WHERE id = %s", (7,)) == ("n7",)
    assert db.query_row("SELECT 1 WHERE false") is None
    rows = db.query("SELECT id FROM fp_items WHERE id <= %s ORDER BY id", (3,))
    assert rows.columns == ("id",) and list(rows) == [(1,), (2,), (3,)]
    assert sum(1 for _ in db.query("SELECT id FROM fp_items", stream=True)) == 1000
    with db.transaction() as tx:
        tx.execute("UPDATE fp_items SET name = 'x' WHERE id = 1")
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.execute("UPDATE fp_items SET name = 'y' WHERE id = 1")
        raise RuntimeError("roll it back")
    assert db.query_row("SELECT name FROM fp_items WHERE id = 1") == ("x",)
    tx = db.begin()
    tx.execute("DELETE FROM fp_items WHERE id = 2")
    tx.commit()
    assert db.query_row("SELECT count(*) FROM fp_items") == (999,)
    s = db.stats()
    assert s.in_use == 0 and s.bad_conns_discarded == 0 and db.driver == "postgresql"


def test_postgres_scheme_and_libpq_parameters(postgres):
    dsn = postgres.dsn.replace("postgresql://", "postgres://", 1) + "?application_name=fp_test"
    db = fastpool.open(dsn, max_open=1)
    try:
        assert db.query_row("SELECT current_setting('application_name')") == ("fp_test",)
    finally:
        db.close()
    with pytest.raises(fastpool.ConfigError, match="invalid connection option"):
        fastpool.open(postgres.dsn + "?no_such_libpq_option=1")
    with pytest.raises(fastpool.ConfigError, match="driver"):
        fastpool.open(postgres.dsn + "?driver=asyncpg")


def test_password_is_masked_in_repr_and_errors(postgres):
    secret = "not-the-Password-9"
    bad = postgres.dsn.replace(":fp-test-secret@", f":{secret}@", 1)
    db = fastpool.open(bad, max_open=1, timeout=2)
    try:
        assert secret not in repr(db) and secret not in db.name
        with pytest.raises(psycopg.OperationalError) as err:
            db.query_row("SELECT 1")
        assert secret not in str(err.value)
        assert db.stats().open == 0
    finally:
        db.close()


# ---- give-back: reset only when dirty, read from the transaction status --------------
def test_a_clean_connection_goes_back_without_a_round_trip(postgres):
    db = counting_pool(postgres, max_open=1)
    try:
        for i in range(50):
            assert db.query_row("SELECT %s::int", (i,)) == (i,)
        with db.conn() as c:
            c.execute("SELECT 1")
        with db.conn() as c:
            conn = c.raw
        assert conn.rollbacks == 0
        assert conn.statements.count("SELECT 1") >= 1
        assert not [s for s in conn.statements if s.upper().startswith(("ROLLBACK", "DISCARD", "RESET"))]
    finally:
        db.close()


def test_a_transaction_left_open_is_rolled_back_and_the_connection_kept(postgres):
    db = counting_pool(postgres, max_open=1)
    try:
        db.execute("DROP TABLE IF EXISTS fp_left")
        db.execute("CREATE TABLE fp_left (x int)")
        pid = backend_pid(db)
        with db.conn() as c:
            c.raw.execute("BEGIN")
            c.raw.execute("INSERT INTO fp_left VALUES (1)")
            conn = c.raw
        assert conn.rollbacks == 1
        assert db.query_row("SELECT count(*) FROM fp_left") == (0,)
        # A failed transaction (INERROR) too: rolled back, not discarded.
        with db.conn() as c:
            c.raw.execute("BEGIN")
            with pytest.raises(psycopg.errors.UndefinedTable):
                c.raw.execute("SELECT * FROM fp_no_such_table")
            assert c.raw.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        assert conn.rollbacks == 2
        assert backend_pid(db) == pid and db.stats().bad_conns_discarded == 0
    finally:
        db.close()


def test_a_connection_given_back_mid_statement_is_discarded(pg_pool, postgres):
    db = pg_pool(max_open=1)
    pid = backend_pid(db)
    with db.conn() as c:
        # Sent at the protocol level and never read: the connection is ACTIVE.
        c.raw.pgconn.send_query(b"SELECT pg_sleep(0.3) /* fp_midstatement */")
        assert c.raw.info.transaction_status == psycopg.pq.TransactionStatus.ACTIVE
    s = db.stats()
    assert s.bad_conns_discarded == 1 and s.open == 0
    assert backend_pid(db) != pid


def test_a_streaming_rows_closed_early_is_cancelled_and_its_connection_kept(pg_pool, postgres):
    db = pg_pool(max_open=1)
    pid = backend_pid(db)
    marker = "fp_stream_early"
    rows = db.query(f"SELECT g, pg_sleep(0.001) /* {marker} */ FROM generate_series(1, 100000) g",
                    stream=True)
    assert next(iter(rows))[0] == 1
    started = time.monotonic()
    rows.close()
    assert time.monotonic() - started < 5
    assert running(postgres, marker) == 0
    assert backend_pid(db) == pid and db.stats().bad_conns_discarded == 0


# ---- dead connections and errors ------------------------------------------------------
def test_a_connection_killed_on_the_server_is_replaced_at_checkout_unseen(pg_pool, postgres):
    db = pg_pool(max_open=2)
    pid = backend_pid(db)
    terminate_backend(postgres.dsn, pid)
    assert db.query_row("SELECT 1") == (1,)  # the caller never sees the dead one
    s = db.stats()
    assert s.bad_conns_discarded == 1 and backend_pid(db) != pid


def test_statement_errors_keep_the_connection(pg_pool):
    db = pg_pool(max_open=1)
    pid = backend_pid(db)
    with pytest.raises(psycopg.errors.SyntaxError):
        db.query_row("SELEC 1")
    with pytest.raises(psycopg.errors.DivisionByZero):
        db.query_row("SELECT 1 / 0")
    with pytest.raises(psycopg.errors.UndefinedTable):
        db.execute("DELETE FROM fp_no_such_table")
    assert backend_pid(db) == pid and db.stats().bad_conns_discarded == 0


@pytest.mark.parametrize("exc, kind", [
    (psycopg.errors.SyntaxError("x"), "ok"),
    (psycopg.errors.QueryCanceled("x"), "ok"),  # ours: the statement ended, the session is fine
    (psycopg.errors.AdminShutdown("x"), "broken"),
    (psycopg.errors.ConnectionFailure("x"), "broken"),
    (psycopg.OperationalError("consuming input failed: server closed the connection"), "broken"),
    (psycopg.OperationalError("the connection is closed"), "retry"),  # refused before sending
    (psycopg.InterfaceError("x"), "broken"),
    (KeyboardInterrupt(), "broken"),
    (fastpool.SessionStateError("x"), "ok"),
])
def test_errors_are_classified_from_psycopg_classes_and_sqlstates(exc, kind):
    from fastpool.dialects import ERR_BROKEN, ERR_OK, ERR_RETRY

    expected = {"ok": ERR_OK, "broken": ERR_BROKEN, "retry": ERR_RETRY}[kind]
    assert PostgreSQLDialect().classify(exc) == expected


# ---- deadlines: cancelled on the server --------------------------------------------------
@pytest.mark.parametrize("how", ["deadline", "statement_timeout"])
def test_a_statement_past_its_deadline_is_cancelled_on_the_server(pg_pool, postgres, how):
    db = pg_pool(max_open=1, **({"statement_timeout": 0.3} if how == "statement_timeout" else {}))
    pid = backend_pid(db)
    marker = f"fp_deadline_{how}"
    started = time.monotonic()
    with pytest.raises(fastpool.DeadlineExceeded) as err:
        if how == "deadline":
            with fastpool.deadline(0.3):
                db.query_row(f"SELECT pg_sleep(5) /* {marker} */")
        else:
            db.query_row(f"SELECT pg_sleep(5) /* {marker} */")
    took = time.monotonic() - started
    assert isinstance(err.value.__cause__, psycopg.errors.QueryCanceled)
    assert took < 0.3 + 0.5, took  # the cancel lands within ~100 ms (slack for this machine)
    assert running(postgres, marker) == 0
    s = db.stats()
    assert s.deadlines_exceeded == 1 and s.statements_cancelled == 1
    # The cancel left the session clean: the connection is kept.
    assert backend_pid(db) == pid and s.bad_conns_discarded == 0


def test_a_deadline_inside_a_transaction_cancels_and_rolls_back(pg_pool, postgres):
    db = pg_pool(max_open=1)
    db.execute("DROP TABLE IF EXISTS fp_dl_tx")
    db.execute("CREATE TABLE fp_dl_tx (x int)")
    with pytest.raises(fastpool.DeadlineExceeded), fastpool.deadline(0.3), db.transaction() as tx:
        tx.execute("INSERT INTO fp_dl_tx VALUES (1)")
        tx.execute("SELECT pg_sleep(5) /* fp_dl_tx */")
    assert running(postgres, "fp_dl_tx") == 0
    assert db.query_row("SELECT count(*) FROM fp_dl_tx") == (0,)
    assert db.stats().in_use == 0


# ---- the seed's leak ---------------------------------------------------------------------
def test_the_seeds_leak_keeps_one_connection(pg_pool):
    db = pg_pool(max_open=4, timeout=0.5)
    db.execute("DROP TABLE IF EXISTS fp_users")
    db.execute("CREATE TABLE fp_users (id int PRIMARY KEY, name text)")
    db.execute("INSERT INTO fp_users SELECT g, 'u' || g FROM generate_series(1, 50) g")

    def get_user_list():  # type: ignore[no-untyped-def]
        for row in db.query("SELECT id, name FROM fp_users WHERE id > %s", (1,), stream=True):
            return row  # the leak: the rows are never read to the end nor closed

    line = get_user_list.__code__.co_firstlineno + 1

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2000):
            assert get_user_list() is not None
    s = db.stats()
    assert s.open == 1 and s.in_use == 0 and s.timeouts == 0
    assert s.leaks_reclaimed >= 1999
    leak = [w for w in caught if issubclass(w.category, fastpool.ConnectionLeakWarning)]
    assert leak and f"test_postgresql.py:{line} " in str(leak[0].message)


# ---- interrupts ---------------------------------------------------------------------------
def test_sigint_mid_statement_reaches_the_caller_and_ends_the_statement(pg_pool, postgres,
                                                                        sigint_raises):
    db = pg_pool(max_open=1)
    backend_pid(db)
    marker = "fp_sigint"
    timer = threading.Timer(0.3, lambda: signal.pthread_kill(threading.main_thread().ident,
                                                              signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        db.query_row(f"SELECT pg_sleep(5) /* {marker} */")
    assert time.monotonic() - started < 3
    timer.join()
    time.sleep(0.2)
    assert running(postgres, marker) == 0  # psycopg cancels on KeyboardInterrupt
    assert db.query_row("SELECT 7") == (7,)
    assert db.stats().in_use == 0


# ---- faults from the proxy ------------------------------------------------------------------
def test_cut_while_8_threads_share_4_connections(pg_proxied):
    proxy, make = pg_proxied
    db = make(max_open=4, timeout=3)
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    end = time.monotonic() + 2.5

    def cutter() -> None:
        for _ in range(3):
            time.sleep(0.6)
            proxy.cut()

    def worker(n: int) -> None:
        i = 0
        while time.monotonic() < end:
            i += 1
            token = f"t{n}-{i}"
            try:
                got = db.query_row("SELECT %s::text", (token,))
                assert got == (token,), (got, token)  # never another caller's answer
                what = "ok"
            except psycopg.OperationalError:
                what = "OperationalError"
            except fastpool.PoolTimeout:
                what = "PoolTimeout"
            with lock:
                outcomes[what] = outcomes.get(what, 0) + 1

    t = threading.Thread(target=cutter)
    t.start()
    errors = run_threads(worker, 8, timeout=30)
    t.join()
    print(f"\ncut x3 on PostgreSQL, 8 threads on 4 connections: {outcomes}")
    assert not errors, errors[:3]
    assert outcomes.get("ok", 0) > 0
    assert db.query_row("SELECT 'after'") == ("after",)
    s = db.stats()
    assert s.in_use == 0 and s.open <= 4 and s.bad_conns_discarded >= 1


def test_blackhole_under_a_deadline_frees_the_caller_and_ends_the_session(pg_proxied, postgres):
    proxy, make = pg_proxied
    db = make(max_open=2, timeout=2)
    pid = backend_pid(db)
    proxy.blackhole()
    started = time.monotonic()
    with pytest.raises(fastpool.DeadlineExceeded), fastpool.deadline(0.3):
        db.query_row("SELECT pg_sleep(10) /* fp_blackhole */")
    took = time.monotonic() - started
    proxy.restore()
    # The cancel request goes through the proxy too and cannot pass: after the grace the
    # socket is shut, which frees the caller at once.
    assert took < 1.5, took
    # The server still runs the statement; pg_terminate_backend over a side connection
    # ends the session once the network is back.
    deadline = time.monotonic() + 8
    alive = 1
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        with psycopg.connect(postgres.dsn, autocommit=True) as admin:
            alive = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                  (pid,)).fetchone()[0]
    assert not alive
    assert db.query_row("SELECT 1") == (1,)
    assert db.stats().in_use == 0


def test_server_down_at_start_then_up(pg_proxied):
    proxy, make = pg_proxied
    proxy.down()
    db = make(max_open=2, timeout=1)
    with pytest.raises((psycopg.OperationalError, fastpool.PoolTimeout)):
        db.query_row("SELECT 1")
    proxy.up()
    assert db.query_row("SELECT 1") == (1,)
    assert db.stats().in_use == 0


@pytest.mark.slow
def test_a_real_restart_under_8_threads(pg_pool, postgres):
    if not hasattr(postgres, "restart"):
        pytest.skip("FASTPOOL_TEST_PG_DSN: not restarting somebody else's server")
    db = pg_pool(max_open=4, timeout=5)
    assert db.query_row("SELECT 1") == (1,)
    stop = time.monotonic() + 4
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def worker(n: int) -> None:
        while time.monotonic() < stop:
            try:
                got = db.query_row("SELECT %s::int", (n,))
                assert got == (n,)
                what = "ok"
            except (psycopg.OperationalError, fastpool.PoolTimeout) as exc:
                what = type(exc).__name__
                time.sleep(0.05)
            with lock:
                seen[what] = seen.get(what, 0) + 1

    restarter = threading.Timer(1.0, postgres.restart)
    restarter.start()
    errors = run_threads(worker, 8, timeout=60)
    restarter.join()
    print(f"\nPostgreSQL restarted under 8 threads: {seen}")
    assert not errors, errors[:3]
    assert db.query_row("SELECT 2") == (2,)
    assert db.stats().in_use == 0
