"""The façade: options, URLs, dialects, password masking, SQLite, live settings, fork."""

from __future__ import annotations

import logging
import os
import sqlite3

import pytest
from threads import opener_done

import fastpool
from fastpool import ConfigError, FastpoolError
from fastpool.url import mask_url, parse_url

SECRET = "s3cr3t-pw"


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"max_open": -1}, "max_open"),
        ({"max_idle": -2}, "max_idle"),
        ({"min_idle": -1}, "min_idle"),
        ({"max_open": 1.5}, "max_open"),
        ({"max_open": True}, "max_open"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": "30"}, "timeout"),
        ({"max_lifetime": 0}, "max_lifetime"),
        ({"max_idle_time": -5}, "max_idle_time"),
        ({"leak_timeout": 0}, "leak_timeout"),
        ({"max_opn": 3}, "max_opn"),
    ],
)
def test_bad_options_raise_config_error_naming_option_and_value(options, name):
    with pytest.raises(ConfigError) as ei:
        fastpool.open("sqlite://:memory:", **options)
    assert name in str(ei.value)
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, FastpoolError)
    assert repr(next(iter(options.values()))) in str(ei.value) or name == "max_opn"


def test_defaults_follow_the_api():
    db = fastpool.open("sqlite://:memory:")
    assert (db.max_open, db.max_idle, db.min_idle) == (10, 10, 0)
    assert (db.max_lifetime, db.max_idle_time, db.timeout, db.leak_timeout) == (3600.0, 300.0, 30.0, None)
    db.close()


def test_max_idle_above_max_open_is_clamped_not_refused():
    db = fastpool.open("sqlite://:memory:", max_open=2, max_idle=5)
    assert db.max_idle == 2
    db.close()


def test_bad_live_setting_is_refused_and_leaves_the_pool_intact():
    db = fastpool.open("sqlite://:memory:", max_open=3)
    with pytest.raises(ConfigError, match="max_open"):
        db.max_open = -1
    assert db.max_open == 3
    with pytest.raises(AttributeError):
        db.max_opne = 4  # a typo is an error, not a silent new attribute
    with db.conn():
        pass
    db.close()


@pytest.mark.parametrize(
    "url",
    ["nosuch://u:%s@h/db" % SECRET, "mysql://u:%s@h:notaport/db" % SECRET, "just-a-string", ""],
)
def test_bad_urls_raise_config_error_without_the_password(url):
    with pytest.raises(ConfigError) as ei:
        fastpool.open(url)
    assert SECRET not in str(ei.value)


def test_unknown_driver_name():
    with pytest.raises(ConfigError, match="unknown driver"):
        fastpool.Pool(lambda: None, driver="oracle9")


def test_mysql_url_parsing_passes_query_params_to_the_driver():
    u = parse_url(f"mysql://app:{SECRET}@127.0.0.1:3306/shop?charset=utf8mb4&connect_timeout=5")
    assert u.scheme == "mysql"
    assert u.connect_kwargs == {
        "host": "127.0.0.1", "port": 3306, "user": "app", "password": SECRET,
        "database": "shop", "charset": "utf8mb4", "connect_timeout": 5,
    }
    assert SECRET not in repr(u) and SECRET not in u.masked
    assert u.masked == "mysql://app:***@127.0.0.1:3306/shop?charset=utf8mb4&connect_timeout=5"


def test_percent_encoded_password_is_decoded():
    u = parse_url("mysql://app:p%40ss%3Aw@db/x")
    assert u.connect_kwargs["password"] == "p@ss:w"
    assert "p%40ss" not in u.masked


def test_sqlite_urls():
    assert parse_url("sqlite:///rel/path.db").connect_kwargs["database"] == "rel/path.db"
    assert parse_url("sqlite:////abs/path.db").connect_kwargs["database"] == "/abs/path.db"
    assert parse_url("sqlite://:memory:").connect_kwargs["database"] == ":memory:"
    assert parse_url("sqlite:///:memory:").connect_kwargs["database"] == ":memory:"
    with pytest.raises(ConfigError):
        parse_url("sqlite://host/x.db")


def test_mask_url():
    assert mask_url(f"mysql://u:{SECRET}@h/d") == "mysql://u:***@h/d"
    assert mask_url("mysql://u@h/d") == "mysql://u@h/d"


def test_password_never_in_repr_stats_or_timeout_errors():
    pytest.importorskip("MySQLdb", reason="mysql:// needs mysqlclient")
    # The refused connect's error is handed to the waiting caller as soon as it fails; the
    # timeout only has to outlast that on a loaded machine.
    db = fastpool.open(f"mysql://app:{SECRET}@127.0.0.1:1/x?connect_timeout=1", max_open=1,
                       timeout=5)
    assert SECRET not in repr(db) and "mysql://app@127.0.0.1:1/x" in repr(db)
    assert SECRET not in repr(db.stats())
    import MySQLdb

    with pytest.raises(MySQLdb.OperationalError) as ei:  # the driver's own error: refused
        db.ping()
    assert SECRET not in str(ei.value)
    db.close()


def test_timeout_error_never_carries_the_password():
    db = fastpool.Pool(lambda: sqlite3.connect(":memory:", check_same_thread=False),
                       _display=mask_url(f"sqlite://u:{SECRET}@/x"), max_open=1,
                       timeout=0)
    held = db.getconn()
    with pytest.raises(fastpool.PoolTimeout) as ei:
        db.getconn()
    assert SECRET not in str(ei.value) and SECRET not in repr(db)
    held.close()
    db.close()


def test_mysql_url_without_mysqlclient_is_a_clear_config_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "MySQLdb", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"needs mysqlclient") as ei:
        fastpool.open(f"mysql://app:{SECRET}@db/x")
    assert SECRET not in str(ei.value)


def test_sqlite_memory_database_is_shared_by_the_pools_connections():
    with fastpool.open("sqlite://:memory:", max_open=2) as db:
        a = db.getconn()
        a.raw.execute("CREATE TABLE t (x)")
        a.raw.execute("INSERT INTO t VALUES (42)")
        with db.conn() as b:  # a second, different connection
            assert b.raw is not a.raw
            assert b.raw.execute("SELECT x FROM t").fetchall() == [(42,)]
        a.close()
        assert db.driver == "sqlite"


def test_sqlite_file_database_and_autocommit(tmp_path):
    path = tmp_path / "x.db"
    with fastpool.open(f"sqlite:///{path}", max_open=2) as db:
        with db.conn() as c:
            c.raw.execute("CREATE TABLE t (x)")
            c.raw.execute("INSERT INTO t VALUES (1)")
            assert not c.raw.in_transaction  # autocommit outside a transaction
    other = sqlite3.connect(path)
    assert other.execute("SELECT x FROM t").fetchall() == [(1,)]
    other.close()


def test_generic_connect_callable_and_dialect_guess(tmp_path):
    path = str(tmp_path / "g.db")
    db = fastpool.Pool(lambda: sqlite3.connect(path, check_same_thread=False))
    assert db.driver is None
    with db.conn() as c:
        c.raw.execute("SELECT 1")
    assert db.driver == "sqlite"
    db.ping()
    db.close()

    class Weird:
        def close(self) -> None:
            pass

    g = fastpool.Pool(Weird)
    with g.conn():
        pass
    assert g.driver == "generic"
    g.close()


def test_ping_opens_a_connection():
    with fastpool.open("sqlite://:memory:") as db:
        assert db.stats().open == 0
        db.ping()
        assert db.stats().open == 1


def test_with_pool_closes_it():
    with fastpool.open("sqlite://:memory:") as db:
        with db.conn():
            pass
    assert db.closed
    with pytest.raises(fastpool.PoolClosed):
        db.conn()
    assert "closed" in repr(db)


def test_opener_failure_is_logged_without_password(caplog):
    pytest.importorskip("MySQLdb", reason="mysqlclient is not installed")

    db = fastpool.open(f"mysql://app:{SECRET}@127.0.0.1:1/x?connect_timeout=1", max_open=1,
                       min_idle=1, timeout=0.01)
    with caplog.at_level(logging.WARNING, logger="fastpool"):
        import time

        deadline = time.monotonic() + 5
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.02)
    db.close()
    assert caplog.records, "the opener's failure was not logged"
    for rec in caplog.records:
        assert SECRET not in rec.getMessage()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_child_after_fork_never_reuses_or_closes_the_parents_connections():
    from fakedb import FakeDriver

    from conftest import FakeDialect

    drv = FakeDriver(with_socket=True)
    db = fastpool.Pool(drv, driver=FakeDialect(), max_open=2)
    a = db.getconn()
    a_raw = a.raw
    b = db.getconn()
    b.close()  # idle in the parent
    parent_idle = drv.conns[1]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            s = db.stats()
            with db.conn(timeout=1) as c:
                fresh = c.raw is not parent_idle and c.raw is not a_raw
            a.close()  # an inherited in-use connection given back in the child
            s2 = db.stats()
            ok = (s.open == 0 and fresh and s2.open == 1 and s2.idle == 1
                  and not parent_idle.closed and not a_raw.closed)
            code = 0 if ok else 2
        finally:
            os.write(w, bytes([code]))
            os._exit(code)
    os.close(w)
    status = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    assert status == b"\x00"
    # The parent's sockets still work: the child neither closed nor used them.
    for fc in (parent_idle, a_raw):
        fc._sock.send(b"x")
        assert fc._peer.recv(1) == b"x"
    with db.conn(timeout=0) as c:
        assert c.raw is parent_idle
    a.close()
    db.close()


def test_workers_do_not_keep_a_dropped_pool_alive(tmp_path):
    # Every worker is made with what it needs (the core, the façade's callables), all held
    # weakly: a pool dropped without close() is collected, workers and all.
    import gc
    import weakref

    db = fastpool.open(f"sqlite:///{tmp_path}/w.db", min_idle=1, max_lifetime=60,
                       leak_timeout=30, statement_timeout=5)
    with fastpool.deadline(5):
        db.query_row("SELECT 1")
    assert db._opener is not None and db._cleaner is not None
    assert db._leak_watcher is not None and db._deadline_watcher is not None
    opener_done(db)  # a worker mid-step holds the pool: the claim is about workers between steps
    ref = weakref.ref(db)
    del db
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("waits", [False, True])
def test_a_thread_pool_used_from_a_running_event_loop_warns_once(tmp_path, waits):
    import asyncio

    db = fastpool.open(f"sqlite:///{tmp_path / 'loop.db'}", max_open=1, timeout=0.05)

    async def handler() -> None:
        if waits:
            with db.conn():
                for _ in range(2):
                    with pytest.raises(fastpool.PoolTimeout):
                        db.query_row("SELECT 1")  # waits, blocking the loop
        else:
            for _ in range(70):  # checkouts are sampled: a connection's 1st, 65th, ...
                assert db.query_row("SELECT 1") == (1,)  # a statement blocking the loop

    try:
        db.query_row("SELECT 1")  # from no loop: nothing to say
        with pytest.warns(RuntimeWarning, match="fastpool.aio") as rec:
            asyncio.run(handler())
        assert len([w for w in rec if "event loop" in str(w.message)]) == 1
        assert db.stats().in_use == 0
    finally:
        db.close()


def test_a_users_sqlite3_connection_bound_to_its_thread_is_refused_with_the_fix(tmp_path):
    # sqlite3.connect()'s default check_same_thread=True binds a connection to the thread
    # that made it (here the opener's): every statement from another thread, and close(),
    # would fail. Refused at connect, saying what to pass; the pool stays whole.
    import sqlite3

    path = tmp_path / "bound.db"
    db = fastpool.Pool(lambda: sqlite3.connect(path), max_open=2, timeout=2)
    try:
        with pytest.raises(fastpool.ConfigError, match="check_same_thread=False"):
            db.query_row("SELECT 1")
        s = db.stats()
        assert s.connect_errors >= 1 and s.open == s.in_use + s.idle + s.opening, s
    finally:
        db.close()
    db = fastpool.Pool(lambda: sqlite3.connect(path, check_same_thread=False), max_open=2,
                       min_idle=1)
    try:
        assert db.query_row("SELECT 1") == (1,)
    finally:
        db.close()
