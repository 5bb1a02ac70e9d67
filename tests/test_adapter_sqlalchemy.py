"""FastQueuePool against SQLAlchemy's QueuePool: the same scenarios on both, with the
same assertions, on the real MariaDB and on SQLite."""

from __future__ import annotations

import time

import pytest
from threads import run_threads

sa = pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed")
from sqlalchemy import event, text  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column  # noqa: E402
from sqlalchemy.pool import QueuePool  # noqa: E402

from fastpool.sqlalchemy import FastQueuePool  # noqa: E402

# mysqlclient deprecates ping(reconnect); SQLAlchemy's MySQLdb dialect may still pass it.
pytestmark = pytest.mark.filterwarnings("ignore:The reconnect parameter of ping:DeprecationWarning")


@pytest.fixture(params=[QueuePool, FastQueuePool], ids=["QueuePool", "FastQueuePool"])
def poolclass(request):  # type: ignore[no-untyped-def]
    return request.param


@pytest.fixture
def mysql_url(mariadb):  # type: ignore[no-untyped-def]
    pytest.importorskip("MySQLdb")
    return mariadb.dsn.replace("mysql://", "mysql+mysqldb://", 1)


@pytest.fixture
def engines():  # type: ignore[no-untyped-def]
    made = []

    def make(url, **kw):  # type: ignore[no-untyped-def]
        e = sa.create_engine(url, **kw)
        made.append(e)
        return e

    yield make
    for e in made:
        e.dispose()


def cid(conn) -> int:  # type: ignore[no-untyped-def]
    return conn.execute(text("SELECT CONNECTION_ID()")).scalar_one()


def test_create_engine_passes_the_pool_arguments(poolclass, engines, tmp_path):
    e = engines(f"sqlite:///{tmp_path / 'a.db'}", poolclass=poolclass, pool_size=3,
                max_overflow=2, pool_timeout=7, pool_recycle=99, pool_pre_ping=True,
                pool_use_lifo=True, pool_reset_on_return="rollback")
    assert type(e.pool) is poolclass
    assert (e.pool.size(), e.pool.timeout(), e.pool._recycle, e.pool._pre_ping) == (3, 7, 99, True)


def test_status_matches_queuepool_step_by_step(poolclass, engines, mysql_url):
    e = engines(mysql_url, poolclass=poolclass, pool_size=2, max_overflow=2, pool_timeout=0.3)
    seen = [e.pool.status()]
    conns = []
    for _ in range(4):
        conns.append(e.connect())
        conns[-1].execute(text("SELECT 1"))
        seen.append(e.pool.status())
    for c in conns:
        c.close()
        seen.append(e.pool.status())
    assert seen == [
        "Pool size: 2  Connections in pool: 0 Current Overflow: -2 Current Checked out connections: 0",
        "Pool size: 2  Connections in pool: 0 Current Overflow: -1 Current Checked out connections: 1",
        "Pool size: 2  Connections in pool: 0 Current Overflow: 0 Current Checked out connections: 2",
        "Pool size: 2  Connections in pool: 0 Current Overflow: 1 Current Checked out connections: 3",
        "Pool size: 2  Connections in pool: 0 Current Overflow: 2 Current Checked out connections: 4",
        "Pool size: 2  Connections in pool: 1 Current Overflow: 2 Current Checked out connections: 3",
        "Pool size: 2  Connections in pool: 2 Current Overflow: 2 Current Checked out connections: 2",
        "Pool size: 2  Connections in pool: 2 Current Overflow: 1 Current Checked out connections: 1",
        "Pool size: 2  Connections in pool: 2 Current Overflow: 0 Current Checked out connections: 0",
    ]


def test_exhausted_pool_times_out_with_sqlalchemys_error(poolclass, engines, mysql_url):
    e = engines(mysql_url, poolclass=poolclass, pool_size=1, max_overflow=0, pool_timeout=0.3)
    held = e.connect()
    t0 = time.monotonic()
    with pytest.raises(sa.exc.TimeoutError, match=r"QueuePool limit of size 1 overflow 0 reached"):
        e.connect()
    assert 0.25 <= time.monotonic() - t0 < 3
    held.close()
    with e.connect() as c:
        assert c.execute(text("SELECT 1")).scalar_one() == 1


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "sa_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(40))


def test_orm_session_round_trip(poolclass, engines, mysql_url):
    e = engines(mysql_url, poolclass=poolclass, pool_size=2)
    Base.metadata.drop_all(e)
    Base.metadata.create_all(e)
    with Session(e) as s:
        s.add_all([Item(id=1, name="a"), Item(id=2, name="b")])
        s.commit()
    with Session(e) as s:
        assert [i.name for i in s.scalars(sa.select(Item).order_by(Item.id))] == ["a", "b"]
        s.get(Item, 1).name = "changed"
        s.rollback()
    with Session(e) as s:
        assert s.get(Item, 1).name == "a"
    assert e.pool.checkedout() == 0


def test_reset_on_return_rolls_back(poolclass, engines, mysql_url):
    e = engines(mysql_url, poolclass=poolclass, pool_size=1, max_overflow=0)
    with e.begin() as c:
        c.execute(text("CREATE TABLE IF NOT EXISTS sa_reset (n INT) ENGINE=InnoDB"))
        c.execute(text("DELETE FROM sa_reset"))
    c = e.connect()
    c.execute(text("INSERT INTO sa_reset VALUES (1)"))
    c.close()  # never committed
    with e.connect() as c:
        assert c.execute(text("SELECT COUNT(*) FROM sa_reset")).scalar_one() == 0


def test_pre_ping_after_kill(poolclass, engines, mysql_url, mariadb):
    e = engines(mysql_url, poolclass=poolclass, pool_size=1, pool_pre_ping=True)
    with e.connect() as c:
        old = cid(c)
    import MySQLdb

    from fastpool.url import parse_url

    killer = MySQLdb.connect(autocommit=True, **parse_url(mariadb.dsn).connect_kwargs)
    killer.cursor().execute(f"KILL {old}")
    killer.close()
    time.sleep(0.2)
    with e.connect() as c:
        assert cid(c) != old
        assert c.execute(text("SELECT 1")).scalar_one() == 1


def test_recycle_replaces_old_connections(poolclass, engines, mysql_url):
    e = engines(mysql_url, poolclass=poolclass, pool_size=1, pool_recycle=1)
    with e.connect() as c:
        old = cid(c)
    with e.connect() as c:
        assert cid(c) == old
    time.sleep(1.2)
    with e.connect() as c:
        assert cid(c) != old


def test_pool_events_fire_the_same(poolclass, engines, mysql_url):
    e = engines(mysql_url, poolclass=poolclass, pool_size=2)
    counts = {"connect": 0, "checkout": 0, "checkin": 0}
    for name in counts:
        event.listen(e, name, lambda *a, _n=name: counts.__setitem__(_n, counts[_n] + 1))
    for _ in range(3):
        with e.connect() as c:
            c.execute(text("SELECT 1"))
    a, b = e.connect(), e.connect()
    a.close()
    b.close()
    assert counts == {"connect": 2, "checkout": 5, "checkin": 5}


def test_dispose_and_recreate_keep_class_and_listeners(poolclass, engines, mysql_url):
    e = engines(mysql_url, poolclass=poolclass, pool_size=2)
    connects = []
    event.listen(e, "connect", lambda *a: connects.append(1))
    with e.connect() as c:
        c.execute(text("SELECT 1"))
    e.dispose()
    assert type(e.pool) is poolclass
    with e.connect() as c:
        c.execute(text("SELECT 1"))
    assert len(connects) == 2  # the listener survived recreate()
    before = e.pool.status()
    e.pool.dispose()
    assert e.pool.checkedin() == 0 and "Connections in pool: 1" in before


def test_raw_connection(poolclass, engines, mysql_url):
    e = engines(mysql_url, poolclass=poolclass, pool_size=1)
    raw = e.raw_connection()
    cur = raw.cursor()
    cur.execute("SELECT 41 + 1")
    assert cur.fetchone() == (42,)
    cur.close()
    raw.close()
    assert e.pool.checkedout() == 0 and e.pool.checkedin() == 1


def test_threads_exhausting_the_pool_all_finish(poolclass, engines, mysql_url):
    e = engines(mysql_url, poolclass=poolclass, pool_size=2, max_overflow=0, pool_timeout=30)
    def worker(_n: int) -> None:
        for _ in range(20):
            with e.connect() as c:
                assert c.execute(text("SELECT 1")).scalar_one() == 1

    errors = run_threads(worker, 8, timeout=60)
    assert not errors
    assert e.pool.checkedout() == 0 and e.pool.checkedin() == 2


def test_sqlite_file(poolclass, engines, tmp_path):
    e = engines(f"sqlite:///{tmp_path / 's.db'}", poolclass=poolclass, pool_size=2)
    with e.begin() as c:
        c.execute(text("CREATE TABLE t (x)"))
        c.execute(text("INSERT INTO t VALUES (1)"))
    with e.connect() as c:
        assert c.execute(text("SELECT x FROM t")).scalar_one() == 1
    assert e.pool.status() == (
        "Pool size: 2  Connections in pool: 1 Current Overflow: -1 Current Checked out connections: 0"
    )


# ---- differences a user hit, now gone (each runs on both pool classes) ---------------------
def test_pool_size_zero_means_no_limit(poolclass, engines, tmp_path):
    e = engines(f"sqlite:///{tmp_path / 'z.db'}", poolclass=poolclass, pool_size=0,
                max_overflow=1, pool_timeout=0.2)
    held = [e.connect() for _ in range(3)]  # past pool_size + max_overflow: no limit
    for c in held:
        assert c.execute(text("SELECT 1")).scalar_one() == 1
        c.close()


@pytest.mark.parametrize("use_lifo", [False, True])
def test_use_lifo_picks_the_newest_or_the_oldest_idle_connection(poolclass, use_lifo):
    made = []

    def creator():  # type: ignore[no-untyped-def]
        import sqlite3

        c = sqlite3.connect(":memory:", check_same_thread=False)
        made.append(c)
        return c

    pool = poolclass(creator, pool_size=3, max_overflow=0, use_lifo=use_lifo)
    conns = [pool.connect() for _ in range(3)]
    raws = [c.dbapi_connection for c in conns]
    for c in conns:  # returned in order: the first is the oldest idle one
        c.close()
    again = pool.connect()
    assert again.dbapi_connection is (raws[2] if use_lifo else raws[0])
    again.close()
    pool.dispose()


def test_pool_logging_goes_to_sqlalchemy_pool(poolclass, tmp_path):
    import logging

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.name)

    log = logging.getLogger("sqlalchemy.pool")
    handler, old = Keep(), log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        e = sa.create_engine(f"sqlite:///{tmp_path / 'l.db'}", poolclass=poolclass)
        with e.connect() as c:
            c.execute(text("SELECT 1"))
        e.dispose()
    finally:
        log.removeHandler(handler)
        log.setLevel(old)
    assert seen and all(name.startswith("sqlalchemy.pool.") for name in seen), seen


def test_dropped_engines_leave_no_session_on_the_server(poolclass, mysql_url, mariadb):
    # Five engines used once and dropped without dispose(): QueuePool's connections are
    # closed when the collector frees the pool, and so must FastQueuePool's (its records
    # point back at the pool: a cycle through the core's free list).
    import gc

    import MySQLdb

    from fastpool.url import parse_url

    watcher = MySQLdb.connect(autocommit=True, **parse_url(mariadb.dsn).connect_kwargs)
    try:
        ids = []
        for _ in range(5):
            e = sa.create_engine(mysql_url, poolclass=poolclass)
            with e.connect() as c:
                ids.append(cid(c))
            del e, c
        gc.collect()
        cur = watcher.cursor()
        deadline = time.monotonic() + 5
        while True:
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST")
            alive = set(ids) & {r[0] for r in cur.fetchall()}
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert not alive, f"{len(alive)} of 5 dropped engines' sessions still on the server"
    finally:
        watcher.close()
