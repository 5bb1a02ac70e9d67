from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from mariadb_server import MariaDBServer  # noqa: E402
from pg_server import PgBouncer, PostgresServer, pg_bindir, pgbouncer_binary  # noqa: E402

from .support import choose_backend, mysql_backend, sqlite_backend  # noqa: E402


_USED: list[str] = []  # the backend's name, for the JSON report


def pytest_benchmark_update_json(config, benchmarks, output_json):  # type: ignore[no-untyped-def]
    output_json["fastpool_backend"] = _USED[0] if _USED else "none (no database suite ran)"


@pytest.fixture(scope="session")
def backend():  # type: ignore[no-untyped-def]
    for b in _backend():
        _USED.append(b.name)
        yield b


def _backend():  # type: ignore[no-untyped-def]
    """The database for the comparison, as support.choose_backend() decides."""
    kind, _why = choose_backend()
    if kind == "sqlite":
        yield sqlite_backend()
    elif kind == "dsn":
        yield mysql_backend(os.environ["FASTPOOL_BENCH_DSN"])
    else:
        server = MariaDBServer()
        try:
            server.start()
            yield mysql_backend(server.dsn)
        finally:
            server.cleanup()


def pytest_report_header(config):  # type: ignore[no-untyped-def]
    return "fastpool bench: database from FASTPOOL_BENCH_DSN, else a throwaway MariaDB, else SQLite"


# ---- PostgreSQL (bench/test_postgresql.py) ---------------------------------------------
class _ExternalPostgres:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn


def _need_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'fastpool[postgresql]')")


@pytest.fixture(scope="session")
def pg():  # type: ignore[no-untyped-def]
    """PostgreSQL for the comparison: FASTPOOL_BENCH_PG_DSN, else a throwaway server."""
    _need_psycopg()
    dsn = os.environ.get("FASTPOOL_BENCH_PG_DSN")
    if dsn:
        yield _ExternalPostgres(dsn)
        return
    if pg_bindir() is None:
        pytest.skip("no PostgreSQL here (apt-get install postgresql, or FASTPOOL_BENCH_PG_DSN)")
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def pg_fleet():  # type: ignore[no-untyped-def]
    """(a throwaway PostgreSQL that lets the application 20 connections, PgBouncer in
    transaction mode in front of it with default_pool_size 20)."""
    _need_psycopg()
    if pg_bindir() is None or pgbouncer_binary() is None:
        pytest.skip("the fleet run needs PostgreSQL and PgBouncer here (apt-get install"
                    " postgresql pgbouncer)")
    # 20 for the application; superuser_reserved_connections (3) for the sampler.
    server = PostgresServer(max_connections=23)
    bouncer = None
    try:
        server.start()
        bouncer = PgBouncer(server, pool_size=20)
        bouncer.start()
        yield server, bouncer
    finally:
        if bouncer is not None:
            bouncer.cleanup()
        server.cleanup()
