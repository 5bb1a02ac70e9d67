from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from mariadb_server import MariaDBServer  # noqa: E402

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
