"""A model-based proof that no way of leaving a connection-holding object loses the
connection (Hypothesis' RuleBasedStateMachine, on SQLite through the URL and through the
user's own ``sqlite3.connect``).

Every object that can hold a connection - a ``Conn``, a ``Tx``, a streaming ``Rows`` of
the pool or of a ``Conn``, a buffered ``Rows``, ``conn.raw`` and ``conn.cursor()`` - is
taken and left in every way code leaves things: closed properly, dropped, an exception in
a ``with`` block (``KeyboardInterrupt`` too), caught in an object cycle, kept by a frame
that kept its caught exception, held by a generator never resumed, held by a thread that
ends; with ``gc.collect()`` at arbitrary points. The automatic collector is off during a
run, so the model knows what is garbage and not yet collected. After every step:

* ``open == in_use + idle + opening``;
* ``in_use`` is what the model still holds plus its uncollected garbage;
* ``leaks_reclaimed`` counts exactly the holders dropped unfinished, each warned once
  (``ConnectionLeakWarning``);
* no two holders share a driver connection;
* the pool still serves a statement.
"""

from __future__ import annotations

import gc
import sqlite3
import threading
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import fastpool
from fastpool import ConnectionLeakWarning

MAX_OPEN = 4
KINDS = ["conn", "tx", "stream", "conn_stream", "buffered", "raw", "cursor"]
WAYS = ["close", "drop", "with_error", "with_interrupt", "cycle", "kept_exception",
        "generator", "thread"]


@dataclass
class Held:
    kind: str
    obj: Any          # what user code holds: the Conn / Tx / Rows
    conn: Any = None  # for conn_stream / raw / cursor: the Conn the thing came from

    def holds_connection(self) -> bool:
        return self.kind not in ("buffered",)

    def leaks_when_dropped(self) -> bool:
        return self.kind != "buffered"


class Box:
    """An object in a reference cycle with itself."""

    def __init__(self, held: Any) -> None:
        self.held = held
        self.me = self


def _kept_by_a_frame(held: Any) -> None:
    # The frame keeps `held` and `err`; err's traceback keeps the frame: a cycle.
    try:
        raise ValueError("handled")
    except ValueError as e:
        err = e  # noqa: F841


def _generator(held: Any) -> Any:
    yield held


def _abandon(box: list[Any], way: str) -> bool:
    """Leave the one object in `box` (the caller's only reference) the way `way` says:
    in an object cycle, kept by a frame with its caught exception, held by a generator
    never resumed, or dropped by a thread that ends. True when only the collector can free
    it now (a cycle), False when it is gone already."""
    if way == "cycle":
        Box(box.pop())
        return True
    if way == "kept_exception":
        _kept_by_a_frame(box.pop())
        return True
    if way == "generator":
        g = _generator(box.pop())
        next(g)
        del g  # never resumed: its frame goes with it
        return False
    if way == "thread":
        t = threading.Thread(target=box.clear)  # the thread drops the last reference
        t.start()
        t.join()
        return False
    raise ValueError(way)


class LeakMachine(RuleBasedStateMachine):
    make_pool: Callable[[Any], fastpool.Pool]
    ph = "?"  # the driver's placeholder

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self._dir = tempfile.TemporaryDirectory()
        self.path = f"{self._dir.name}/m.db"
        self.db = self.make_pool(self.path)
        # A table of its own: the servers' table-driven runs share a database.
        self.t = f"leak_{uuid.uuid4().hex[:12]}"
        self.db.execute(f"CREATE TABLE {self.t} (id INTEGER PRIMARY KEY)")
        for i in range(1, 6):
            self.db.execute(f"INSERT INTO {self.t} VALUES ({self.ph})", (i,))
        self.held: list[Held] = []
        self.garbage = 0          # holders in uncollected cycles
        self.leaks = 0            # holders dropped unfinished: reclaims expected so far
        self._gc_was_enabled = gc.isenabled()
        gc.collect(0)  # from here on every object of the run stays young
        gc.disable()
        self._warnings = warnings.catch_warnings(record=True)
        self.warned = self._warnings.__enter__()
        warnings.simplefilter("always")

    # ---- taking -------------------------------------------------------------------
    def in_use(self) -> int:
        return sum(1 for h in self.held if h.holds_connection()) + self.garbage

    @precondition(lambda self: self.in_use() < MAX_OPEN)
    @rule(kind=st.sampled_from(KINDS))
    def take(self, kind: str) -> None:
        db = self.db
        if kind == "conn":
            h = Held(kind, db.conn())
        elif kind == "tx":
            tx = db.begin()
            tx.query_row(f"SELECT count(*) FROM {self.t}")  # reads only: SQLite has one writer
            h = Held(kind, tx)
        elif kind == "stream":
            rows = db.query(f"SELECT id FROM {self.t}", stream=True)
            assert next(rows) is not None
            h = Held(kind, rows)
        elif kind == "conn_stream":
            c = db.conn()
            rows = c.query(f"SELECT id FROM {self.t}", stream=True)
            assert next(rows) is not None
            h = Held(kind, rows, c)
        elif kind == "buffered":
            h = Held(kind, db.query(f"SELECT id FROM {self.t}"))
        elif kind == "raw":
            c = db.conn()
            cur = c.raw.cursor()
            cur.execute("BEGIN")  # dirty: must be rolled back when it comes back
            cur.execute(f"SELECT count(*) FROM {self.t}")
            cur.fetchall()
            h = Held(kind, c.raw, c)
        else:
            c = db.conn()
            cur = c.cursor()
            cur.execute(f"SELECT id FROM {self.t}")
            cur.fetchall()
            h = Held(kind, cur, c)
        self.held.append(h)

    # ---- leaving ------------------------------------------------------------------
    def _finish(self, h: Held) -> None:
        if h.kind in ("conn", "raw", "cursor", "conn_stream"):
            if h.kind == "conn_stream":
                h.obj.close()
            (h.conn or h.obj).close()
        elif h.kind == "tx":
            h.obj.rollback()
        elif h.kind == "stream":
            list(h.obj)  # read to the end: given back at the last row
            assert not h.obj.holds_connection

    def _owner(self, h: Held) -> Any:
        """The object whose finalizer reclaims: the Conn behind raw / cursor."""
        return h.conn if h.kind in ("raw", "cursor") else h.obj

    @precondition(lambda self: self.held)
    @rule(i=st.integers(0, 20), way=st.sampled_from(WAYS))
    def leave(self, i: int, way: str) -> None:
        h = self.held.pop(i % len(self.held))
        leaks = h.leaks_when_dropped()
        if way == "close":
            self._finish(h)
        elif way in ("with_error", "with_interrupt"):
            exc = KeyError if way == "with_error" else KeyboardInterrupt
            target = h.conn or h.obj  # the Conn gives back; its stream ends inside
            try:
                with target:
                    if h.kind == "conn_stream":
                        with h.obj:
                            raise exc("in the block")
                    raise exc("in the block")
            except exc:
                pass
        elif way == "drop":
            del h
            if leaks:
                self.leaks += 1
        else:
            box = [self._owner(h)]
            del h
            if _abandon(box, way):
                self.garbage += leaks
            else:
                self.leaks += leaks

    @rule()
    def collect(self) -> None:
        gc.collect(0)  # the run's own objects: all still young (the collector is off)
        self.leaks += self.garbage
        self.garbage = 0

    @precondition(lambda self: any(h.kind == "conn" for h in self.held))
    @rule(i=st.integers(0, 20))
    def use_a_conn(self, i: int) -> None:
        conns = [h for h in self.held if h.kind == "conn"]
        c = conns[i % len(conns)].obj
        assert c.query_row(f"SELECT count(*) FROM {self.t}")[0] >= 5

    # ---- invariants -----------------------------------------------------------------
    @invariant()
    def counts_add_up(self) -> None:
        s = self.db.stats()
        assert s.open == s.in_use + s.idle + s.opening, s
        assert s.in_use == self.in_use(), (s, self.held, self.garbage)
        assert s.leaks_reclaimed == self.leaks, (s, self.leaks)
        warned = [w for w in self.warned if issubclass(w.category, ConnectionLeakWarning)]
        assert len(warned) == self.leaks, [str(w.message) for w in warned]

    @invariant()
    def no_connection_has_two_holders(self) -> None:
        raws = []
        for h in self.held:
            if h.kind == "raw":
                raws.append(id(h.obj))
            elif h.kind in ("conn", "tx", "cursor", "conn_stream"):
                rec = (h.conn or h.obj)._record
                assert rec is not None and rec.raw is not None
                raws.append(id(rec.raw))
        assert len(raws) == len(set(raws))

    @invariant()
    def the_pool_serves(self) -> None:
        if self.in_use() < MAX_OPEN:
            assert self.db.query_row(f"SELECT count(*) FROM {self.t}")[0] >= 5

    def teardown(self) -> None:
        try:
            for h in self.held:
                self._finish(h)
            self.held.clear()
            gc.collect(0)  # the run's own objects: all still young (the collector is off)
            self.leaks += self.garbage
            self.garbage = 0
            s = self.db.stats()
            assert (s.in_use, s.leaks_reclaimed) == (0, self.leaks), s
        finally:
            self._warnings.__exit__(None, None, None)
            if self._gc_was_enabled:
                gc.enable()
            try:
                self.db.execute(f"DROP TABLE {self.t}")
            finally:
                self.db.close()
                self._dir.cleanup()


class URLPool(LeakMachine):
    @staticmethod
    def make_pool(path: str) -> fastpool.Pool:  # type: ignore[override]
        return fastpool.open(f"sqlite:///{path}", max_open=MAX_OPEN, timeout=1.0)


class OwnConnectPool(LeakMachine):
    @staticmethod
    def make_pool(path: str) -> fastpool.Pool:  # type: ignore[override]
        return fastpool.Pool(lambda: sqlite3.connect(path, check_same_thread=False),
                             max_open=MAX_OPEN, timeout=1.0)


SETTINGS = settings(max_examples=40, stateful_step_count=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
TestLeakModelURL = URLPool.TestCase
TestLeakModelURL.settings = SETTINGS
TestLeakModelOwnConnect = OwnConnectPool.TestCase
TestLeakModelOwnConnect.settings = SETTINGS


def _each_pair(machine: type[LeakMachine], kind: str, way: str) -> None:
    m = machine()
    try:
        m.take(kind)
        m.leave(0, way)
        m.counts_add_up()
        m.no_connection_has_two_holders()
        m.collect()
        m.counts_add_up()
        m.the_pool_serves()
    finally:
        m.teardown()


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_left_each_way(kind, way):
    # The table of every pair, once each (the machine above draws sequences of them).
    _each_pair(URLPool, kind, way)


def _server_machine(dsn: str, ph: str) -> type[LeakMachine]:
    class OnServer(LeakMachine):
        @staticmethod
        def make_pool(path: str) -> fastpool.Pool:  # type: ignore[override]
            return fastpool.open(dsn, max_open=MAX_OPEN, timeout=5.0)

    OnServer.ph = ph
    return OnServer


# The same table on the real servers: a dropped holder there has a session, a result on
# the wire (a stream left mid-way) and a transaction to roll back.
@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_left_each_way_on_mariadb(mariadb, kind, way):
    _each_pair(_server_machine(mariadb.dsn, "%s"), kind, way)


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_left_each_way_on_postgresql(postgres, kind, way):
    _each_pair(_server_machine(postgres.dsn, "%s"), kind, way)


# ---- the drop-ins: their connections left every way, on SQLite -------------------------
DROP_IN_KINDS = ["dbutils_conn", "dbutils_cursor", "sqlalchemy_conn", "sqlalchemy_raw",
                 "sqlalchemy_session"]
DROP_IN_WAYS = ["close", "drop", "with_error", "cycle", "kept_exception", "generator", "thread"]


def _drop_in(kind: str, path: str) -> tuple[Any, Callable[[], Any], Callable[[], Any]]:
    """(the drop-in's pool, its core pool, take) for one kind."""
    if kind.startswith("dbutils"):
        from fastpool.dbutils import PooledDB

        pool = PooledDB(sqlite3.connect, maxconnections=2, database=path,
                        check_same_thread=False, isolation_level=None)
        core = pool._pool

        def take() -> Any:
            c = pool.connection(shareable=False)
            if kind == "dbutils_cursor":
                cur = c.cursor()
                cur.execute("SELECT 1")
                return cur
            return c

        return pool, (lambda: core), take
    sa = pytest.importorskip("sqlalchemy")
    from sqlalchemy.orm import Session

    from fastpool.sqlalchemy import FastQueuePool

    engine = sa.create_engine(f"sqlite:///{path}", poolclass=FastQueuePool, pool_size=2,
                              max_overflow=0, pool_timeout=2)

    def take_sa() -> Any:
        if kind == "sqlalchemy_raw":
            return engine.raw_connection()
        if kind == "sqlalchemy_session":
            s = Session(engine)
            s.execute(sa.text("SELECT 1"))
            return s
        c = engine.connect()
        c.execute(sa.text("SELECT 1"))
        return c

    return engine, (lambda: engine.pool._fp), take_sa


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")
@pytest.mark.parametrize("way", DROP_IN_WAYS)
@pytest.mark.parametrize("kind", DROP_IN_KINDS)
def test_each_drop_in_connection_left_each_way(tmp_path, kind, way):
    # What the drop-in hands out goes back to the core however it is left; after a
    # collection nothing is in use and the pool serves its whole size again.
    pool, core, take = _drop_in(kind, str(tmp_path / "d.db"))
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        held = take()
        assert core().stats().in_use == 1
        if way == "close":
            held.close()
        elif way == "with_error":
            with pytest.raises(KeyError):
                with held:
                    raise KeyError("in the block")
        elif way != "drop":
            box = [held]
            del held
            _abandon(box, way)
        held = None  # the test's own reference goes too
        gc.collect(0)
        s = core().stats()
        assert s.in_use == 0 and s.open == s.idle + s.opening, s
        both = [take(), take()]  # the whole size again, nothing lost
        assert core().stats().in_use == 2
        for h in both:
            h.close()
    finally:
        if was_enabled:
            gc.enable()
        if kind.startswith("dbutils"):
            pool.close()
        else:
            pool.dispose()


# ---- asyncio: fastpool.aio's holders left every way, tasks cancelled at each await -----
AIO_KINDS = ["conn", "tx", "stream"]
AIO_WAYS = ["close", "drop", "cycle", "kept_exception", "cancel_while_holding",
            "cancel_inside_async_with", "cancel_mid_statement"]
SLOW_SQLITE = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
               " SELECT count(*) FROM c")


@pytest.mark.parametrize("way", AIO_WAYS)
@pytest.mark.parametrize("kind", AIO_KINDS)
def test_each_aio_holder_left_each_way(tmp_path, kind, way):
    pytest.importorskip("greenlet")  # fastpool.aio's bridge (none for free-threaded 3.13 yet)
    pytest.importorskip("aiosqlite")
    import asyncio

    import fastpool.aio

    async def take(db: Any) -> Any:
        if kind == "conn":
            return await db.getconn()
        if kind == "tx":
            return await db.begin()
        # More rows than a trip through the bridge reads (512): the stream stays open.
        rows = db.query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
                        " WHERE x < 2000) SELECT x FROM c", stream=True)
        assert await rows.__anext__() == (1,)
        return rows

    async def end(h: Any) -> None:
        if kind == "tx":
            await h.rollback()
        else:
            await h.close()

    async def main() -> tuple[int, Any]:
        db = fastpool.aio.open(f"sqlite:///{tmp_path / 'a.db'}", max_open=2, timeout=2)
        leaks = 0
        try:
            await db.execute("SELECT 1")
            started = asyncio.Event()

            async def holder_task(use_with: bool, mid_statement: bool) -> None:
                h = await take(db)
                if use_with and kind != "stream":
                    async with h:
                        started.set()
                        await asyncio.sleep(10)
                if mid_statement and kind != "stream":
                    started.set()
                    await h.query_row(SLOW_SQLITE)
                started.set()
                await asyncio.sleep(10)

            if way == "close":
                await end(await take(db))
            elif way == "drop":
                h = await take(db)
                del h
                leaks = 1
            elif way in ("cycle", "kept_exception"):
                assert _abandon([await take(db)], way)
                gc.collect()
                leaks = 1
            else:
                task = asyncio.create_task(holder_task(way == "cancel_inside_async_with",
                                                       way == "cancel_mid_statement"))
                await started.wait()
                await asyncio.sleep(0.05)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                del task
                # Left without async with: the task's frame drops it, a leak; inside
                # async with the exit gives it back. A stream has no with here.
                leaks = 0 if way == "cancel_inside_async_with" and kind != "stream" else 1
            for _ in range(50):  # the reclaim runs as a task on this loop
                await asyncio.sleep(0.01)
                s = db.stats()
                if s.in_use == 0 and s.leaks_reclaimed >= leaks:
                    break
            s = db.stats()
            assert s.in_use == 0 and s.open == s.idle + s.opening, s
            both = [await db.getconn(), await db.getconn()]  # the whole size again
            for c in both:
                await c.close()
            return leaks, s
        finally:
            await db.close()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        leaks, s = asyncio.run(main())
    warned = [w for w in caught if issubclass(w.category, ConnectionLeakWarning)]
    assert s.leaks_reclaimed == leaks == len(warned), (s, [str(w.message) for w in warned])


# ---- drop-ins that lend the driver's own connection: psycopg_pool, aiomysql ------------
# Their users hold the bare driver connection (no fastpool object around it): one dropped
# without putconn()/release() dies, the driver's finalizer closes it, and its slot in the
# pool is reclaimed, counted and warned, naming the line that took it.
LENT_WAYS = ["give_back", "context", "drop", "cycle", "kept_exception", "generator", "thread"]


def _leave_lent(held: Any, way: str, give_back: Callable[[Any], Any]) -> bool:
    """Leave the lent connection `held` (the caller's last reference); True when it is a
    leak (never given back)."""
    if way == "give_back":
        give_back(held)
        return False
    if way == "drop":
        del held
        return True
    box = [held]
    del held
    _abandon(box, way)
    return True


@contextmanager
def _collector_off_warnings_kept() -> Iterator[list[warnings.WarningMessage]]:
    """The automatic collector off (the test says when to collect) and every warning kept."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        if was_enabled:
            gc.enable()


def _reclaimed(core: Any, leaked: bool, caught: list[warnings.WarningMessage], bad: int = 0) -> None:
    gc.collect()
    s = core.stats()
    assert s.in_use == 0 and s.open == s.idle + s.opening, s
    assert s.leaks_reclaimed == (1 if leaked else 0), s
    assert s.bad_conns_discarded == bad, s  # a leak is not a broken connection
    leaks = [w for w in caught if issubclass(w.category, ConnectionLeakWarning)]
    assert len(leaks) == (1 if leaked else 0), [str(w.message) for w in caught]
    if leaked:
        assert leaks[0].filename == __file__, leaks[0]
        assert "was dropped without" in str(leaks[0].message)


@pytest.mark.parametrize("way", LENT_WAYS)
def test_each_psycopg_pool_connection_left_each_way(postgres, way):
    from fastpool.psycopg import ConnectionPool

    pool = ConnectionPool(postgres.dsn, min_size=0, max_size=2, timeout=5, open=True)
    core = pool.fastpool
    try:
        with _collector_off_warnings_kept() as caught:
            if way == "context":
                with pytest.raises(KeyError):
                    with pool.connection() as c:
                        c.execute("SELECT 1")
                        raise KeyError("in the block")
                leaked = False
            else:
                c = pool.getconn()
                c.execute("BEGIN")  # a transaction open on the server when dropped
                assert core.stats().in_use == 1
                leaked = _leave_lent(c, way, pool.putconn)
            del c
            _reclaimed(core, leaked, caught)
        both = [pool.getconn(timeout=5), pool.getconn(timeout=5)]  # the whole size again
        assert both[0].execute("SELECT 1").fetchone() == (1,)
        for c in both:
            pool.putconn(c)
        assert core.stats().in_use == 0
    finally:
        pool.close()


@pytest.mark.parametrize("way", LENT_WAYS)
def test_each_async_psycopg_pool_connection_left_each_way(postgres, way):
    import asyncio

    pytest.importorskip("greenlet")  # fastpool.aio's bridge (none for free-threaded 3.13 yet)
    from fastpool.psycopg import AsyncConnectionPool

    async def main() -> None:
        pool = AsyncConnectionPool(postgres.dsn, min_size=0, max_size=2, timeout=5, open=False)
        await pool.open()
        core = pool.fastpool.sync
        try:
            with _collector_off_warnings_kept() as caught:
                if way == "context":
                    with pytest.raises(KeyError):
                        async with pool.connection() as c:
                            await c.execute("SELECT 1")
                            raise KeyError("in the block")
                    leaked = False
                else:
                    c = await pool.getconn()
                    await c.execute("BEGIN")
                    assert core.stats().in_use == 1
                    leaked = _leave_lent(c, way, lambda c: asyncio.ensure_future(pool.putconn(c)))
                    await asyncio.sleep(0.01)
                del c
                _reclaimed(core, leaked, caught)
            both = [await pool.getconn(timeout=5), await pool.getconn(timeout=5)]
            assert await (await both[0].execute("SELECT 1")).fetchone() == (1,)
            for c in both:
                await pool.putconn(c)
            assert core.stats().in_use == 0
        finally:
            await pool.close()

    asyncio.run(main())


@pytest.mark.parametrize("way", LENT_WAYS)
def test_each_aiomysql_connection_left_each_way(mariadb, way):
    import asyncio

    pytest.importorskip("greenlet")  # fastpool.aio's bridge (none for free-threaded 3.13 yet)
    pytest.importorskip("aiomysql")
    import fastpool.aiomysql as fam
    from fastpool.url import parse_url

    k = parse_url(mariadb.dsn).connect_kwargs
    kw = {"host": k["host"], "port": int(k["port"]), "user": k["user"],
          "password": k["password"], "db": k["database"]}

    async def main() -> None:
        pool = await fam.create_pool(minsize=0, maxsize=2, **kw)
        core = pool.fastpool.sync
        try:
            with _collector_off_warnings_kept() as caught:
                if way == "context":
                    with pytest.raises(KeyError):
                        async with pool.acquire() as c:
                            async with c.cursor() as cur:
                                await cur.execute("SELECT 1")
                            raise KeyError("in the block")
                    leaked = False
                else:
                    c = await pool.acquire()
                    await c.begin()
                    assert core.stats().in_use == 1
                    leaked = _leave_lent(c, way, pool.release)
                del c
                # Given back inside its transaction: closed, as aiomysql does.
                _reclaimed(core, leaked, caught, 1 if way == "give_back" else 0)
                assert len(pool._used) == 0
            both = [await pool.acquire(), await pool.acquire()]
            async with both[0].cursor() as cur:
                await cur.execute("SELECT 1")
                assert await cur.fetchone() == (1,)
            for c in both:
                pool.release(c)
            assert core.stats().in_use == 0
            pool.close()
            await asyncio.wait_for(pool.wait_closed(), 5)  # no dropped one is waited for
        finally:
            pool.terminate()

    asyncio.run(main())
