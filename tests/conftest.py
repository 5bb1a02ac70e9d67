from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakedb import FakeClock, FakeDriver  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402
from mariadb_server import MariaDBServer, binaries  # noqa: E402
from pg_server import PgBouncer, PostgresServer, pg_bindir, pgbouncer_binary  # noqa: E402

import fastpool  # noqa: E402
from fastpool.dialects import Dialect  # noqa: E402
from fastpool.url import parse_url  # noqa: E402


class FakeDialect(Dialect):
    """The generic dialect, plus the fake connection's socket for the liveness poll."""

    name = "fake"

    def fileno(self, raw):  # type: ignore[no-untyped-def]
        try:
            return raw.fileno()
        except AttributeError:
            return -1


@pytest.fixture
def driver() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_pool(driver):  # type: ignore[no-untyped-def]
    pools = []

    def make(**options):  # type: ignore[no-untyped-def]
        options.setdefault("driver", FakeDialect())
        p = fastpool.Pool(options.pop("connect", driver), **options)
        pools.append(p)
        return p

    yield make
    for p in pools:
        p.close()


@pytest.fixture
def sigint_raises():  # type: ignore[no-untyped-def]
    """SIGINT raises KeyboardInterrupt in the main thread, whatever the process inherited:
    a shell without job control starts background jobs with SIGINT ignored, and Python then
    leaves it ignored, so the signals these tests send would never arrive."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


# ---- the real MariaDB ------------------------------------------------------------------
class _External:
    """A server named by the environment (only its DSN: not ours to stop or restart)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn


@pytest.fixture(scope="session")
def mariadb():  # type: ignore[no-untyped-def]
    """A MariaDB server: FASTPOOL_TEST_DSN if set, else a throwaway one started here.

    Yields an object with .dsn (and, for the throwaway one, stop/start/restart).
    """
    pytest.importorskip("MySQLdb", reason="mysqlclient is not installed")
    dsn = os.environ.get("FASTPOOL_TEST_DSN")
    if dsn:
        yield _External(dsn)
        return
    if binaries() is None:
        if os.environ.get("FASTPOOL_REQUIRE_MARIADB"):
            pytest.fail("FASTPOOL_REQUIRE_MARIADB is set but no MariaDB binaries were found")
        pytest.skip("no MariaDB binaries (apt-get install mariadb-server) and no FASTPOOL_TEST_DSN")
    server = MariaDBServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def mysql_pool(mariadb):  # type: ignore[no-untyped-def]
    pools = []

    def make(**options):  # type: ignore[no-untyped-def]
        p = fastpool.open(mariadb.dsn, **options)
        pools.append(p)
        return p

    yield make
    for p in pools:
        p.close()


# ---- a TCP proxy between the pool and the server, for faults ----------------------------
def server_port(dsn: str, default: int = 3306) -> int:
    return int(parse_url(dsn).connect_kwargs.get("port", default))


@pytest.fixture
def proxy(mariadb):  # type: ignore[no-untyped-def]
    host = parse_url(mariadb.dsn).connect_kwargs.get("host", "127.0.0.1")
    if not host.startswith("127."):
        pytest.skip("the fault proxy only runs on loopback")
    p = FaultProxy(host, server_port(mariadb.dsn)).start()
    yield p
    p.close()


@pytest.fixture
def proxied(mariadb, proxy):  # type: ignore[no-untyped-def]
    """A factory of pools whose connections go through the proxy."""
    dsn = mariadb.dsn.replace(f":{server_port(mariadb.dsn)}/", f":{proxy.port}/", 1)
    pools: list[fastpool.Pool] = []

    def make(query: str = "", **options):  # type: ignore[no-untyped-def]
        url = dsn + (("&" if "?" in dsn else "?") + query if query else "")
        db = fastpool.open(url, **options)
        pools.append(db)
        return db

    yield make
    for db in pools:
        db.close()


# ---- the real PostgreSQL, and PgBouncer in front of it -----------------------------------
def _missing(what: str, hint: str) -> None:
    if os.environ.get("FASTPOOL_REQUIRE_POSTGRES"):
        pytest.fail(f"FASTPOOL_REQUIRE_POSTGRES is set but {what} is missing")
    pytest.skip(f"{what} is missing ({hint})")


@pytest.fixture(scope="session")
def postgres():  # type: ignore[no-untyped-def]
    """A PostgreSQL server: FASTPOOL_TEST_PG_DSN if set, else a throwaway one started here
    (.dsn; the throwaway one also stop/start/restart and superuser())."""
    pytest.importorskip("psycopg", reason="psycopg is not installed")
    dsn = os.environ.get("FASTPOOL_TEST_PG_DSN")
    if dsn:
        yield _External(dsn)
        return
    if pg_bindir() is None:
        _missing("PostgreSQL (initdb, postgres)", "apt-get install postgresql, or set FASTPOOL_TEST_PG_DSN")
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def pgbouncer(postgres):  # type: ignore[no-untyped-def]
    """PgBouncer in transaction mode in front of the test PostgreSQL:
    FASTPOOL_TEST_PGBOUNCER_DSN if set, else a throwaway one."""
    dsn = os.environ.get("FASTPOOL_TEST_PGBOUNCER_DSN")
    if dsn:
        yield _External(dsn)
        return
    if not isinstance(postgres, PostgresServer) or pgbouncer_binary() is None:
        _missing("PgBouncer", "apt-get install pgbouncer, or set FASTPOOL_TEST_PGBOUNCER_DSN")
    bouncer = PgBouncer(postgres)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.cleanup()


@pytest.fixture
def pg_pool(postgres):  # type: ignore[no-untyped-def]
    pools = []

    def make(dsn: str | None = None, **options):  # type: ignore[no-untyped-def]
        p = fastpool.open(dsn or postgres.dsn, **options)
        pools.append(p)
        return p

    yield make
    for p in pools:
        p.close()


@pytest.fixture
def pg_proxied(postgres):  # type: ignore[no-untyped-def]
    """(a fault proxy in front of PostgreSQL, a factory of pools going through it)."""
    host = parse_url(postgres.dsn).connect_kwargs.get("host", "127.0.0.1")
    if not host.startswith("127."):
        pytest.skip("the fault proxy only runs on loopback")
    port = server_port(postgres.dsn, 5432)
    proxy = FaultProxy(host, port).start()
    dsn = postgres.dsn.replace(f":{port}/", f":{proxy.port}/", 1)
    pools: list[fastpool.Pool] = []

    def make(**options):  # type: ignore[no-untyped-def]
        db = fastpool.open(dsn, **options)
        pools.append(db)
        return db

    make.dsn = dsn  # type: ignore[attr-defined]  # the proxied URL, for fastpool.aio
    yield proxy, make
    for db in pools:
        db.close()
    proxy.close()


# ---- replication beds: a MariaDB GTID pair, PostgreSQL under Patroni on etcd ------------------
def _no_bed(what: str, hint: str) -> None:
    if os.environ.get("FASTPOOL_REQUIRE_REPLICATION"):
        pytest.fail(f"FASTPOOL_REQUIRE_REPLICATION is set but {what} is missing")
    pytest.skip(f"{what} is missing ({hint})")


@pytest.fixture(scope="module")
def mariadb_pair():  # type: ignore[no-untyped-def]
    """A throwaway MariaDB primary and replica (mariadb_replication.MariaDBPair), one per
    test module; tests leave it with a primary and a running replica."""
    pytest.importorskip("MySQLdb", reason="mysqlclient is not installed")
    if binaries() is None:
        _no_bed("MariaDB", "apt-get install mariadb-server")
    from mariadb_replication import MariaDBPair

    pair = MariaDBPair()
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()


@pytest.fixture(scope="module")
def patroni():  # type: ignore[no-untyped-def]
    """A throwaway PostgreSQL cluster of three nodes under Patroni on etcd
    (patroni_cluster.PatroniCluster), one per test module: a primary, its synchronous
    standby and one more replica."""
    pytest.importorskip("psycopg", reason="psycopg is not installed")
    import patroni_cluster

    if patroni_cluster.binaries() is None:
        _no_bed("Patroni, etcd or PostgreSQL", "apt-get install patroni etcd-server postgresql")
    cluster = patroni_cluster.PatroniCluster(3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "mariadb" in names or "tls" in names:  # tls: the TLS servers of test_tls_mariadb
            item.add_marker(pytest.mark.mariadb)
        if "postgres" in names:
            item.add_marker(pytest.mark.postgres)
        if "mariadb_pair" in names or "patroni" in names:
            item.add_marker(pytest.mark.replication)
