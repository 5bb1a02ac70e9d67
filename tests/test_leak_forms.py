"""Every way code leaves a connection-holding object behind, on SQLite: each is reclaimed,
counted and reported, and the pool keeps serving.

The shapes here are the ones the simple "drop the last reference" test does not reach:
an object kept alive by a reference cycle (the commonest: a frame kept by a caught
exception's traceback), a Conn dropped with its streaming Rows open, a transaction block
that ends mid-stream, a pool dropped without close().
"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
import warnings
import weakref
from contextlib import closing
from typing import Any

import pytest
from threads import opener_done

import fastpool
from fastpool import ConnectionLeakWarning

sa = pytest.importorskip("sqlalchemy")


@pytest.fixture
def db(tmp_path):  # type: ignore[no-untyped-def]
    pool = fastpool.open(f"sqlite:///{tmp_path / 'leak.db'}", max_open=2, timeout=1.0)
    pool.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    for i in range(1, 6):
        pool.execute("INSERT INTO t VALUES (?)", (i,))
    yield pool
    s = pool.stats()
    assert s.in_use == 0, s
    pool.close()


def _open(db: fastpool.Pool, what: str) -> Any:
    """A connection holder of each kind, as user code makes it."""
    if what == "tx":
        return db.begin()
    if what == "conn":
        return db.conn()
    rows = db.query("SELECT id FROM t", stream=True)
    next(rows)
    return rows


@pytest.mark.parametrize("what", ["tx", "conn", "rows"])
def test_a_holder_kept_by_a_caught_exception_frame_is_reclaimed(db, what):
    # frame -> err -> traceback -> frame: only the collector frees the holder in the frame.
    def handler() -> str:
        holder = _open(db, what)
        try:
            db.execute("INSERT INTO no_such_table VALUES (1)")
        except sqlite3.OperationalError as e:
            err = e  # noqa: F841 - the cycle of the story
            return "failed"
        raise AssertionError(holder)

    for _ in range(3):  # one more than max_open: without the reclaim, the third times out
        with pytest.warns(ConnectionLeakWarning, match=r"test_leak_forms.py:\d+ was dropped"):
            assert handler() == "failed"
            gc.collect()
    s = db.stats()
    assert (s.leaks_reclaimed, s.in_use) == (3, 0), s
    assert db.query_row("SELECT count(*) FROM t") == (5,)


def test_a_collected_cycle_through_a_holder_leaves_the_pool_whole(db):
    # The collector clears what is in a cycle; the record's driver connection must come
    # back with it (it used to come back None, and every later statement failed).
    class Holder:
        def __init__(self) -> None:
            self.tx = db.begin()
            self.tx.execute("INSERT INTO t VALUES (100)")
            self.me = self

    for _ in range(3):
        Holder()
        with pytest.warns(ConnectionLeakWarning, match="a Tx opened at"):
            gc.collect()
    for _ in range(4):  # every pooled connection, each still a real one
        assert db.query_row("SELECT count(*) FROM t") == (5,)  # the inserts rolled back
    with db.conn() as c1, db.conn() as c2:
        assert c1.raw is not None and c2.raw is not None
    assert db.stats().leaks_reclaimed == 3


def test_a_conn_dropped_with_its_stream_open_is_reclaimed(db):
    def first_row() -> Any:
        c = db.conn()
        for row in c.query("SELECT id FROM t", stream=True):
            return row
        return None

    for _ in range(3):
        with pytest.warns(ConnectionLeakWarning, match="a Conn opened at"):
            assert first_row() == (1,)
    assert db.stats().leaks_reclaimed == 3


def test_a_rows_kept_past_its_conn_keeps_the_conn_until_it_goes(db):
    # The Rows holds its Conn (not the reverse): reading on after the Conn's name is gone.
    def stream() -> Any:
        c = db.conn()
        return c.query("SELECT id FROM t", stream=True)

    rows = stream()
    assert next(rows) == (1,)
    assert db.stats().in_use == 1
    # At the last row the Rows lets its Conn go, and the Conn, never closed, is reclaimed.
    with pytest.warns(ConnectionLeakWarning, match="a Conn opened at"):
        assert [r[0] for r in rows] == [2, 3, 4, 5]
    assert db.stats().in_use == 0


@pytest.mark.parametrize("end", ["return", "explicit"])
def test_a_transaction_ending_mid_stream_commits(db, end):
    def work() -> Any:
        with db.transaction() as tx:
            tx.execute("INSERT INTO t VALUES (200)")
            rows = tx.query("SELECT id FROM t ORDER BY id", stream=True)
            first = next(rows)
            if end == "explicit":
                tx.commit()
                assert not rows.holds_result  # ended by the commit
            return first

    assert work() == (1,)
    assert db.query_row("SELECT count(*) FROM t WHERE id = 200") == (1,)
    assert db.stats().leaks_reclaimed == 0


def test_a_transaction_failing_mid_stream_rolls_back(db):
    with pytest.raises(KeyError):
        with db.transaction() as tx:
            tx.execute("INSERT INTO t VALUES (300)")
            rows = tx.query("SELECT id FROM t", stream=True)
            next(rows)
            raise KeyError("boom")
    assert db.query_row("SELECT count(*) FROM t WHERE id = 300") == (0,)
    tx = db.begin()
    rows = tx.query("SELECT id FROM t", stream=True)
    next(rows)
    tx.rollback()
    assert db.stats().in_use == 0


def test_a_dropped_sqlalchemy_engine_closes_its_connections(tmp_path):
    from fastpool.sqlalchemy import FastQueuePool

    closed: list[int] = []

    class Conn(sqlite3.Connection):
        def close(self) -> None:
            closed.append(1)
            super().close()

    def creator() -> sqlite3.Connection:
        return sqlite3.connect(tmp_path / "e.db", factory=Conn, check_same_thread=False)

    for _ in range(5):
        engine = sa.create_engine("sqlite://", creator=creator, poolclass=FastQueuePool)
        with engine.connect() as c:
            c.execute(sa.text("SELECT 1"))
        del engine, c
    gc.collect()
    # The core's free list is visited by the collector, so the cycle the engine's records
    # make with their pool is found, and the pool closes its idle connections.
    assert len(closed) == 5


def test_a_dropped_pool_closes_its_idle_connections(tmp_path):
    opened: list[Any] = []

    class Conn(sqlite3.Connection):
        closed = False

        def close(self) -> None:
            self.closed = True
            super().close()

    def connect() -> sqlite3.Connection:
        c = sqlite3.connect(tmp_path / "p.db", factory=Conn, check_same_thread=False)
        opened.append(c)
        return c

    pool = fastpool.Pool(connect, max_open=3)
    with pool.conn() as a, pool.conn() as b:
        a.execute("SELECT 1")
        b.execute("SELECT 1")
    opener_done(pool)  # its thread holds the pool until its step ends
    del pool, a, b
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gc.collect()
    assert [c.closed for c in opened] == [True, True]


def test_a_dropped_aio_pool_is_freed_and_closes_its_idle_connections(tmp_path):
    # In a thread of its own, so that the bridge makes its greenlet for this pool's first
    # call: greenlet keeps a greenlet's start arguments while it runs, and a bridged one
    # runs for good -- the first call's bound method kept the whole pool alive.
    pytest.importorskip("greenlet")  # fastpool.aio's bridge (none for free-threaded 3.13 yet)
    aiosqlite = pytest.importorskip("aiosqlite")
    import fastpool.aio

    out: dict[str, Any] = {}

    async def main() -> None:
        db = fastpool.aio.Pool(lambda: aiosqlite.connect(tmp_path / "p.db"), max_open=3)
        closed: list[Any] = []
        async with db.conn() as a, db.conn() as b:
            await a.query_row("SELECT 1")
            await b.query_row("SELECT 1")
        db.on("close", closed.append)
        ref = weakref.ref(db)
        del db, a, b
        gc.collect()
        out["freed"] = ref() is None
        for _ in range(100):  # the closes are tasks on this loop
            if len(closed) == 2:
                break
            await asyncio.sleep(0.01)
        out["closed"] = len(closed)

    t = threading.Thread(target=asyncio.run, args=(main(),))
    t.start()
    t.join(30)
    assert out == {"freed": True, "closed": 2}


def _writes_are_visible_to_another_writer(path: Any) -> None:
    other = sqlite3.connect(path, timeout=0.2)
    try:
        assert other.execute("SELECT count(*) FROM t").fetchall() == [(1,)]
        other.execute("INSERT INTO t VALUES (2)")  # no "database is locked"
        other.commit()
    finally:
        other.close()


def test_a_users_own_sqlite3_connect_is_put_in_autocommit(tmp_path):
    path = tmp_path / "own.db"
    db = fastpool.Pool(lambda: sqlite3.connect(path, check_same_thread=False))
    try:
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (1)")
        _writes_are_visible_to_another_writer(path)
        with db.transaction() as tx:  # explicit transactions still commit
            tx.execute("INSERT INTO t VALUES (3)")
        with db.transaction() as tx:
            tx.execute("INSERT INTO t VALUES (4)")
            tx.rollback()
    finally:
        db.close()
    with closing(sqlite3.connect(path)) as check:  # sqlite3's own `with` only commits
        assert sorted(check.execute("SELECT x FROM t")) == [(1,), (2,), (3,)]


def test_a_users_own_aiosqlite_connect_is_put_in_autocommit(tmp_path):
    import asyncio

    pytest.importorskip("greenlet")  # fastpool.aio's bridge (none for free-threaded 3.13 yet)
    aiosqlite = pytest.importorskip("aiosqlite")
    import fastpool.aio

    path = tmp_path / "own-aio.db"

    async def main() -> None:
        db = fastpool.aio.Pool(lambda: aiosqlite.connect(path))
        try:
            await db.execute("CREATE TABLE t (x)")
            await db.execute("INSERT INTO t VALUES (1)")
            _writes_are_visible_to_another_writer(path)
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES (3)")
        finally:
            await db.close()

    asyncio.run(main())
    with closing(sqlite3.connect(path)) as check:  # sqlite3's own `with` only commits
        assert sorted(check.execute("SELECT x FROM t")) == [(1,), (2,), (3,)]


def test_a_pool_timeout_names_who_holds_the_connections_longest(db):
    # A forgotten getconn() and a forgotten stream: the PoolTimeout (and stats()) name the
    # lines that took them and for how long, the longest first.
    import re
    import time

    forgotten = db.getconn()  # the line a reader must find
    time.sleep(0.05)
    stream = db.query("SELECT id FROM t", stream=True)
    next(stream)
    with pytest.raises(fastpool.PoolTimeout) as ei:
        db.conn(timeout=0.05)
    msg = str(ei.value)
    conn_at = re.search(r"a Conn opened at (\S+test_leak_forms.py):(\d+) for (\d+\.\d)s", msg)
    rows_at = re.search(r"a streaming Rows opened at \S+test_leak_forms.py:(\d+)", msg)
    assert conn_at and rows_at, msg
    assert msg.index("a Conn") < msg.index("a streaming Rows")  # the longest first
    assert int(conn_at.group(2)) + 2 == int(rows_at.group(1))
    holders = db.stats().holders
    assert [h[1].split(" opened at")[0] for h in holders] == ["a Conn", "a streaming Rows"]
    assert holders[0][0] >= holders[1][0] >= 0
    stream.close()
    db.putconn(forgotten)
    assert db.stats().holders == ()
