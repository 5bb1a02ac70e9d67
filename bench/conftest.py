from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from mariadb_server import MariaDBServer, binaries  # noqa: E402


@pytest.fixture(scope="session")
def mysql_dsn():  # type: ignore[no-untyped-def]
    """FASTPOOL_BENCH_DSN, else a throwaway MariaDB started here, else skip."""
    pytest.importorskip("MySQLdb", reason="mysqlclient is not installed")
    dsn = os.environ.get("FASTPOOL_BENCH_DSN")
    if dsn:
        yield dsn
        return
    if binaries() is None:
        pytest.skip("no MariaDB binaries and no FASTPOOL_BENCH_DSN")
    server = MariaDBServer()
    try:
        server.start()
        yield server.dsn
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def mysql_kwargs(mysql_dsn):  # type: ignore[no-untyped-def]
    from fastpool.url import parse_url

    return parse_url(mysql_dsn).connect_kwargs
