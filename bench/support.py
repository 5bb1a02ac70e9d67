"""What the benchmark suites share."""

from __future__ import annotations

from typing import Any, Callable


class FakeConn:
    """Just enough of a DB-API connection for every pool to hold it (no I/O)."""

    threadsafety = 1  # DBUtils asks the creator

    def close(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def commit(self) -> None:
        pass

    def cursor(self) -> Any:
        raise NotImplementedError


def measure(benchmark: Any, fn: Callable[[], Any], iterations: int = 2000, rounds: int = 50) -> Any:
    """Time one call of fn, averaged over `iterations` calls per round, so the timer's own
    cost is amortised away."""
    return benchmark.pedantic(fn, iterations=iterations, rounds=rounds, warmup_rounds=2)


# ---- one request, the same for every contender ------------------------------------------
def run_select1(conn: Any) -> Any:
    """SELECT 1 through a DB-API connection, as a request handler would; the row."""
    cur = conn.cursor()
    cur.execute("SELECT 1")
    row = cur.fetchone()
    cur.close()
    return row


def count_rows(rows: Any) -> int:
    n = 0
    for _row in rows:
        n += 1
    return n


def read_rows(conn: Any, sql: str, *cursor_class: Any) -> int:
    """Iterate a query's rows through a raw cursor (of cursor_class, if given)."""
    cur = conn.cursor(*cursor_class)
    cur.execute(sql)
    n = count_rows(cur)
    cur.close()
    return n


# ---- the database the comparison runs on ------------------------------------------------
import os  # noqa: E402
import queue  # noqa: E402
import sqlite3  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

ROWS = 100_000


@dataclass
class Backend:
    """Everything a suite needs to talk to one database through every contender."""

    name: str  # "MariaDB 10.11.x" or "SQLite 3.x"
    kind: str  # "mysql" or "sqlite"
    dsn: str  # a fastpool URL
    sa_url: str  # a SQLAlchemy URL
    module: Any  # the DB-API module (DBUtils' creator)
    kwargs: dict[str, Any] = field(repr=False)  # its connect() arguments
    rows_sql: str = ""
    mark: str = "%s"  # the driver's placeholder

    def connect(self) -> Any:
        """A raw driver connection in autocommit, as fastpool keeps its own."""
        conn = self.module.connect(**self.kwargs)
        if self.kind == "mysql":
            conn.autocommit(True)
        return conn


def need_mysql(backend: Backend) -> None:
    import pytest

    if backend.kind != "mysql":
        pytest.skip(f"needs MySQL/MariaDB (running on {backend.name})")


def mysql_backend(dsn: str) -> Backend:
    import MySQLdb

    from fastpool.url import parse_url

    kwargs = parse_url(dsn).connect_kwargs
    probe = MySQLdb.connect(**kwargs)
    version = probe.get_server_info()
    probe.close()
    return Backend(
        name=f"MariaDB/MySQL {version}", kind="mysql", dsn=dsn,
        sa_url=dsn.replace("mysql://", "mysql+mysqldb://", 1), module=MySQLdb, kwargs=kwargs,
        rows_sql=f"SELECT seq, seq * 2 FROM seq_1_to_{ROWS}", mark="%s",
    )


def choose_backend() -> tuple[str, str]:
    """Which database the comparison runs on, and why: ("dsn" | "mariadb" | "sqlite",
    reason). FASTPOOL_BENCH_BACKEND=sqlite forces SQLite; FASTPOOL_BENCH_DSN names a
    server; else a throwaway MariaDB when its binaries and mysqlclient are here."""
    import os
    import sys

    if os.environ.get("FASTPOOL_BENCH_BACKEND") == "sqlite":
        return "sqlite", "SQLite, as asked (--sqlite)"
    if os.environ.get("FASTPOOL_BENCH_DSN"):
        return "dsn", "the MySQL/MariaDB server given with --dsn"
    try:
        import MySQLdb  # noqa: F401
    except ImportError:
        return "sqlite", ("SQLite, the embedded default: mysqlclient is not installed"
                          " (apt-get install libmariadb-dev pkg-config, then run again)")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from mariadb_server import binaries

    if binaries() is None:
        return "sqlite", ("SQLite, the embedded default: no MariaDB server here"
                          " (apt-get install mariadb-server, or pass --dsn)")
    return "mariadb", "a throwaway MariaDB server started for this run (mariadbd is here)"


def sqlite_backend() -> Backend:
    # Under the run's scratch directory (python -m bench removes it on every exit path).
    path = Path(tempfile.mkdtemp(prefix="fastpool-bench-")) / "bench.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return Backend(
        name=f"SQLite {sqlite3.sqlite_version} (file, WAL)", kind="sqlite",
        dsn=f"sqlite:///{path}", sa_url=f"sqlite:///{path}", module=sqlite3,
        kwargs={"database": str(path), "check_same_thread": False, "isolation_level": None},
        rows_sql=(f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {ROWS}) "
                  "SELECT n, n * 2 FROM s"),
        mark="?",
    )


# ---- naive pools, the way people write them ----------------------------------------------
class LifoQueuePool:
    """A naive pool: a queue.LifoQueue of connections, a blocking get() with a timeout."""

    def __init__(self, connect: Callable[[], Any], size: int) -> None:
        self._q: queue.LifoQueue = queue.LifoQueue()
        for _ in range(size):
            self._q.put(connect())

    def get(self, timeout: float | None = None) -> Any:
        return self._q.get(timeout=timeout)

    def put(self, conn: Any) -> None:
        self._q.put(conn)

    def close(self) -> None:
        while not self._q.empty():
            self._q.get_nowait().close()


class GoStylePool:
    """Go's database/sql release rule: streaming rows give their connection back only when
    the last row is read or close() is called; a dropped iterator leaks it."""

    def __init__(self, connect: Callable[[], Any], max_open: int, timeout: float) -> None:
        self._connect, self._max_open, self._timeout = connect, max_open, timeout
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self.open = 0
        self._lock = threading.Lock()

    def _get(self) -> Any:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self.open < self._max_open:
                self.open += 1
                return self._connect()
        return self._idle.get(timeout=self._timeout)  # queue.Empty: the caller's "504"

    def query(self, sql: str, params: tuple) -> Any:
        conn = self._get()
        cur = conn.cursor()
        cur.execute(sql, params)
        for row in cur:
            yield row
        cur.close()
        self._idle.put(conn)  # reached only when the rows run out


def tails(latencies: list[list[float]], completed: list[int], seconds: float) -> dict[str, Any]:
    """Throughput and latency tails of a contended run: each worker's request latencies
    (seconds) and the requests it completed inside the window."""
    import statistics

    every = sorted(x for per in latencies for x in per)
    q = statistics.quantiles(every, n=100)
    return {
        "requests_per_s": sum(completed) / seconds,
        "p50_ms": q[49] * 1e3,
        "p99_ms": q[98] * 1e3,
        "max_ms": every[-1] * 1e3,
        "fewest_requests_by_one_thread": min(completed),
        "seconds": seconds,
    }


def bench_seconds() -> float:
    """How long each contended run lasts (FASTPOOL_BENCH_SECONDS, default 3)."""
    return float(os.environ.get("FASTPOOL_BENCH_SECONDS", "3"))
