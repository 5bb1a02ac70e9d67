from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from mariadb_server import MariaDBServer, binaries  # noqa: E402

from .support import mysql_backend, sqlite_backend  # noqa: E402


_USED: list[str] = []  # the backend's name, for the JSON report


def pytest_benchmark_update_json(config, benchmarks, output_json):  # type: ignore[no-untyped-def]
    output_json["fastpool_backend"] = _USED[0] if _USED else "none (no database suite ran)"


@pytest.fixture(scope="session")
def backend():  # type: ignore[no-untyped-def]
    for b in _backend():
        _USED.append(b.name)
        yield b


def _backend():  # type: ignore[no-untyped-def]
    """The database for the comparison: FASTPOOL_BENCH_DSN (a mysql:// URL); else a
    throwaway MariaDB when its binaries and mysqlclient are here; else a SQLite file.
    FASTPOOL_BENCH_BACKEND=sqlite forces SQLite."""
    dsn = os.environ.get("FASTPOOL_BENCH_DSN")
    if os.environ.get("FASTPOOL_BENCH_BACKEND") == "sqlite":
        yield sqlite_backend()
        return
    if dsn:
        yield mysql_backend(dsn)
        return
    try:
        import MySQLdb  # noqa: F401
    except ImportError:
        yield sqlite_backend()
        return
    if binaries() is None:
        yield sqlite_backend()
        return
    server = MariaDBServer()
    try:
        server.start()
        yield mysql_backend(server.dsn)
    finally:
        server.cleanup()


def pytest_report_header(config):  # type: ignore[no-untyped-def]
    return "fastpool bench: database from FASTPOOL_BENCH_DSN, else a throwaway MariaDB, else SQLite"
