"""Instructions per operation, counted by callgrind: the noise-free view of the comparison.

    python -m bench.instructions                 # every workload (needs valgrind)
    python -m bench.instructions rows_raw_cursor rows_fastpool_streaming

Wall-clock ratios on a shared machine swing by tens of percent between runs (the SQLite
100k-row group has read anywhere from 0.7x to 1.3x). Callgrind counts the instructions a
process executes, which agree to within 1% from run to run whatever else the machine is
doing.
Each workload runs in a child process twice, for a few and for many repetitions; the
difference divided by the difference in repetitions is the cost of one operation, with
start-up, imports and warm-up cancelled out. Cache misses and lock contention are not
counted, so this complements the timed suites, it does not replace them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

from .support import ROWS, FakeConn, count_rows, read_rows, run_select1, sqlite_backend

ROOT = Path(__file__).resolve().parent.parent


Setup = tuple[Callable[[], Any], Callable[[], Any]]  # (one operation, close)


@dataclass(frozen=True)
class Workload:
    group: str
    reps: tuple[int, int]  # (few, many); the difference is what gets counted
    # Builds the pools: -> (op, close). For an asyncio workload (aio=True) an async
    # function returning (async op, async close), all run in one event loop.
    setup: Callable[[], Any]
    server: str | None = None  # "mysql" | "postgres": the server it needs
    aio: bool = False


def _fastpool_with_conn() -> Setup:
    import fastpool

    db = fastpool.Pool(FakeConn, max_open=4)

    def op() -> None:
        with db.conn():
            pass

    return op, db.close


def _fastpool_getconn_putconn() -> Setup:
    import fastpool

    db = fastpool.Pool(FakeConn, max_open=4)
    return (lambda: db.putconn(db.getconn())), db.close


def _fastpool_getconn_putconn_observed(how: str) -> Setup:
    # The cost of being watched: a no-op checkout/checkin listener, or the OpenTelemetry
    # exporter (its three histograms listen to connect/checkout/checkin) with an SDK
    # reader, as a service would run it.
    import fastpool

    db = fastpool.Pool(FakeConn, max_open=4)
    if how == "listener":
        db.on("checkout", lambda ev: None)
        db.on("checkin", lambda ev: None)
    else:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        from fastpool.exporters.opentelemetry import instrument

        instrument(db, meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
                   per_checkout=how == "otel_per_checkout")
    return (lambda: db.putconn(db.getconn())), db.close


def _lifoqueue_get_put() -> Setup:
    q: queue.LifoQueue[FakeConn] = queue.LifoQueue()
    q.put(FakeConn())
    return (lambda: q.put(q.get())), (lambda: None)


def _sqlalchemy_queuepool() -> Setup:
    from sqlalchemy.pool import QueuePool

    pool = QueuePool(FakeConn, pool_size=4, max_overflow=0)
    return (lambda: pool.connect().close()), pool.dispose


def _dbutils_pooleddb() -> Setup:
    from dbutils.pooled_db import PooledDB

    creator = types.SimpleNamespace(connect=FakeConn, threadsafety=1)
    pool = PooledDB(creator, mincached=1, maxcached=4, maxconnections=4, ping=0,
                    failures=(ConnectionError,))
    return (lambda: pool.connection().close()), pool.close


def _sqlite_raw(kind: str) -> Setup:
    backend = sqlite_backend()
    conn = backend.connect()
    # partial, not a lambda: one Python frame per operation, as for fastpool's lambdas.
    if kind == "select1":
        return partial(run_select1, conn), conn.close
    return partial(read_rows, conn, backend.rows_sql), conn.close


def _sqlite_fastpool(kind: str) -> Setup:
    import fastpool

    backend = sqlite_backend()
    db = fastpool.open(backend.dsn)
    if kind == "select1":
        return (lambda: db.query_row("SELECT 1")), db.close
    if kind == "select1_deadline":
        # Statements inside a deadline block: each registers with the watcher and leaves.
        block = fastpool.deadline(10**6)
        block.__enter__()

        def close() -> None:
            block.__exit__(None, None, None)
            db.close()

        return (lambda: db.query_row("SELECT 1")), close
    if kind == "select1_statement_timeout":
        db.statement_timeout = 10**6
        return (lambda: db.query_row("SELECT 1")), db.close
    return (lambda: count_rows(db.query(backend.rows_sql, stream=kind == "streaming"))), db.close


# ---- on a server: MariaDB (mysqlclient, asyncmy) and PostgreSQL (psycopg) -------------
# Only the client's instructions are counted (the server is another process), so these
# say what each layer costs in the caller's process. The "bridged" workloads run the bare
# driver's statement inside fastpool.aio's bridge (a greenlet, each awaitable stepped),
# with no pool: what the bridge alone adds. Reading down a group: the bare driver, the
# driver + the bridge, a checkout + give-back through the pool, the whole statement.
def _dsn(server: str) -> str:
    return os.environ[_DSN_ENV[server]]


_DSN_ENV = {"mysql": "FASTPOOL_INSTR_MYSQL_DSN", "postgres": "FASTPOOL_INSTR_PG_DSN"}


def _mysql_kwargs() -> dict[str, Any]:
    from fastpool.url import parse_url

    return dict(parse_url(_dsn("mysql")).connect_kwargs)


def _mysql_select1(kind: str) -> Setup:
    import fastpool

    if kind == "raw":
        import MySQLdb

        conn = MySQLdb.connect(**_mysql_kwargs(), autocommit=True)
        return partial(run_select1, conn), conn.close
    # "hostlist": the same server as a host list of one (target=), to count what
    # following a primary costs a statement.
    db = fastpool.open(_dsn("mysql"), max_open=4,
                       **({"target": "primary"} if kind == "hostlist" else {}))
    return (lambda: db.query_row("SELECT 1")), db.close


def _pg_select1(kind: str) -> Setup:
    import psycopg

    dsn = _dsn("postgres")
    if kind == "raw":
        conn = psycopg.connect(dsn, autocommit=True)
        return (lambda: conn.execute("SELECT 1").fetchone()), conn.close
    if kind in ("fastpool", "hostlist"):
        import fastpool

        db = fastpool.open(dsn, max_open=4, **({"target": "primary"} if kind == "hostlist" else {}))
        return (lambda: db.query_row("SELECT 1")), db.close
    if kind == "fastpool_dropin":
        import fastpool.psycopg

        pool = fastpool.psycopg.ConnectionPool(dsn, min_size=1, max_size=4, open=True,
                                              kwargs={"autocommit": True})
    else:
        import psycopg_pool

        pool = psycopg_pool.ConnectionPool(dsn, min_size=1, max_size=4, open=True,
                                           kwargs={"autocommit": True})

    def op() -> Any:
        with pool.connection() as c:
            return c.execute("SELECT 1").fetchone()

    return op, pool.close


async def _asyncmy_select1(cur: Any) -> Any:
    await cur.execute("SELECT 1")
    return await cur.fetchone()


async def _aio_asyncmy(kind: str) -> Any:
    import asyncmy

    import fastpool.aio

    if kind in ("raw", "bridged"):
        kw = _mysql_kwargs()
        kw["db"] = kw.pop("database", None) or kw.pop("db", None)
        conn = await asyncmy.connect(**kw, autocommit=True)

        async def close() -> None:
            conn.close()

        if kind == "raw":
            async def op() -> Any:
                async with conn.cursor() as cur:
                    return await _asyncmy_select1(cur)
            return op, close
        return _bridged(conn), close
    if kind == "pool":
        kw = _mysql_kwargs()
        kw["db"] = kw.pop("database", None) or kw.pop("db", None)
        pool = await asyncmy.create_pool(minsize=1, maxsize=4, autocommit=True, **kw)

        async def op() -> Any:
            async with pool.acquire() as conn:
                async with conn.cursor() as cur:
                    return await _asyncmy_select1(cur)

        async def close_pool() -> None:
            pool.close()
            await pool.wait_closed()

        return op, close_pool
    db = fastpool.aio.open(_dsn("mysql") + ("&" if "?" in _dsn("mysql") else "?") + "driver=asyncmy",
                           max_open=4)
    return _fastpool_aio_op(db, kind), db.close


async def _aio_asyncmy_64(kind: str) -> Any:
    """64 tasks at once on a pool of 4 (one operation: all 64 requests, most of which wait
    for a connection): what waiting costs, per pool."""
    import asyncio

    op, close = await _aio_asyncmy(kind)

    async def op64() -> Any:
        rows = await asyncio.gather(*[op() for _ in range(64)])
        return rows[0]

    return op64, close


def _bridged(conn: Any) -> Any:
    import asyncio

    from fastpool.aio.adapt import SyncConnection
    from fastpool.aio.bridge import call

    # The bare driver's statement as fastpool's blocking code runs it (SyncConnection:
    # each call's awaitable stepped in the greenlet), with no pool around it.
    raw = SyncConnection(conn, asyncio.get_running_loop())

    def op() -> Any:
        return call(run_select1, raw)

    return op


def _fastpool_aio_op(db: Any, kind: str) -> Any:
    if kind == "checkout":
        async def checkout() -> None:
            async with db.conn():
                pass
        return checkout
    return lambda: db.query_row("SELECT 1")


async def _aio_psycopg(kind: str) -> Any:
    import psycopg

    import fastpool.aio

    dsn = _dsn("postgres")
    if kind in ("raw", "bridged"):
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)

        if kind == "raw":
            async def op() -> Any:
                cur = await conn.execute("SELECT 1")
                return await cur.fetchone()
            return op, conn.close
        return _bridged(conn), conn.close
    if kind == "pool":
        import psycopg_pool

        pool = psycopg_pool.AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False,
                                                kwargs={"autocommit": True})
        await pool.open()

        async def op() -> Any:
            async with pool.connection() as c:
                cur = await c.execute("SELECT 1")
                return await cur.fetchone()

        return op, pool.close
    db = fastpool.aio.open(dsn, max_open=4)
    return _fastpool_aio_op(db, kind), db.close


async def _aio_asyncpg(kind: str) -> Any:
    import asyncpg

    import fastpool.aio
    import fastpool.asyncpg

    dsn = _dsn("postgres")
    if kind == "raw":
        conn = await asyncpg.connect(dsn)
        return (lambda: conn.fetchval("SELECT 1")), conn.close
    if kind in ("pool", "dropin", "pool_cycle", "dropin_cycle"):
        mod = asyncpg if kind.startswith("pool") else fastpool.asyncpg
        pool = await mod.create_pool(dsn, min_size=1, max_size=4)
        if kind.endswith("_cycle"):
            async def cycle() -> None:
                async with pool.acquire():
                    pass
            return cycle, pool.close
        return (lambda: pool.fetchval("SELECT 1")), pool.close
    db = fastpool.aio.open(dsn + ("&" if "?" in dsn else "?") + "driver=asyncpg", max_open=4)
    return _fastpool_aio_op(db, kind), db.close


def _on(group: str, setup: Callable[[str], Any], kind: str,
        reps: tuple[int, int] = (300, 1_200)) -> Workload:
    """A workload on a server: its group says which (MariaDB or PostgreSQL) and whether
    it runs on an event loop."""
    return Workload(group, reps, partial(setup, kind),
                    "postgres" if "PostgreSQL" in group else "mysql", group.startswith("asyncio"))


CHECKOUT = "checkout+checkin (no I/O)"
SELECT1 = "SELECT 1 per request (SQLite)"
ROWS_GROUP = f"iterate {ROWS // 1000}k rows (SQLite)"
MYSQL = "SELECT 1 per request (mysqlclient, MariaDB)"
AIO_MYSQL = "asyncio SELECT 1 (asyncmy, MariaDB)"
AIO_MYSQL_64 = "asyncio: 64 tasks on 4 connections, per 64 SELECT 1 (asyncmy, MariaDB)"
PG = "SELECT 1 per request (psycopg, PostgreSQL)"
AIO_PG = "asyncio SELECT 1 (psycopg AsyncConnection, PostgreSQL)"
AIO_APG = "asyncio fetchval SELECT 1 (asyncpg, PostgreSQL)"
AIO_APG_CYCLE = "asyncio acquire + release, nothing run (asyncpg, PostgreSQL)"

WORKLOADS: dict[str, Workload] = {
    "lifoqueue_get_put": Workload(CHECKOUT, (1_000, 6_000), _lifoqueue_get_put),
    "fastpool_getconn_putconn": Workload(CHECKOUT, (1_000, 6_000), _fastpool_getconn_putconn),
    "fastpool_with_conn": Workload(CHECKOUT, (1_000, 6_000), _fastpool_with_conn),
    "fastpool_getconn_putconn_listeners": Workload(
        CHECKOUT, (1_000, 6_000), lambda: _fastpool_getconn_putconn_observed("listener")),
    "fastpool_getconn_putconn_otel": Workload(
        CHECKOUT, (1_000, 6_000), lambda: _fastpool_getconn_putconn_observed("otel")),
    "fastpool_getconn_putconn_otel_per_checkout": Workload(
        CHECKOUT, (200, 1_200), lambda: _fastpool_getconn_putconn_observed("otel_per_checkout")),
    "dbutils_pooleddb": Workload(CHECKOUT, (1_000, 6_000), _dbutils_pooleddb),
    "sqlalchemy_queuepool": Workload(CHECKOUT, (1_000, 6_000), _sqlalchemy_queuepool),
    "select1_raw_cursor": Workload(SELECT1, (500, 2_000), lambda: _sqlite_raw("select1")),
    "select1_fastpool_query_row": Workload(SELECT1, (500, 2_000), lambda: _sqlite_fastpool("select1")),
    "select1_fastpool_in_deadline": Workload(SELECT1, (500, 2_000), lambda: _sqlite_fastpool("select1_deadline")),
    "select1_fastpool_statement_timeout": Workload(
        SELECT1, (500, 2_000), lambda: _sqlite_fastpool("select1_statement_timeout")),
    "rows_raw_cursor": Workload(ROWS_GROUP, (1, 2), lambda: _sqlite_raw("rows")),
    "rows_fastpool_streaming": Workload(ROWS_GROUP, (1, 2), lambda: _sqlite_fastpool("streaming")),
    "rows_fastpool_buffered": Workload(ROWS_GROUP, (1, 2), lambda: _sqlite_fastpool("buffered")),
    "select1_raw_mysqlclient": _on(MYSQL, _mysql_select1, "raw"),
    "select1_fastpool_mysqlclient": _on(MYSQL, _mysql_select1, "fastpool"),
    "select1_fastpool_mysqlclient_hostlist": _on(MYSQL, _mysql_select1, "hostlist"),
    "aio_select1_raw_asyncmy": _on(AIO_MYSQL, _aio_asyncmy, "raw"),
    "aio_select1_bridged_asyncmy": _on(AIO_MYSQL, _aio_asyncmy, "bridged"),
    "aio_checkout_fastpool_asyncmy": _on(AIO_MYSQL, _aio_asyncmy, "checkout"),
    "aio_select1_fastpool_asyncmy": _on(AIO_MYSQL, _aio_asyncmy, "fastpool"),
    "aio_select1_asyncmy_pool": _on(AIO_MYSQL, _aio_asyncmy, "pool"),
    "aio_64_tasks_asyncmy_pool": _on(AIO_MYSQL_64, _aio_asyncmy_64, "pool", (20, 80)),
    "aio_64_tasks_fastpool_asyncmy": _on(AIO_MYSQL_64, _aio_asyncmy_64, "fastpool", (20, 80)),
    "select1_raw_psycopg": _on(PG, _pg_select1, "raw"),
    "select1_fastpool_psycopg": _on(PG, _pg_select1, "fastpool"),
    "select1_fastpool_psycopg_hostlist": _on(PG, _pg_select1, "hostlist"),
    "select1_fastpool_psycopg_dropin": _on(PG, _pg_select1, "fastpool_dropin"),
    "select1_psycopg_pool": _on(PG, _pg_select1, "pool"),
    "aio_select1_raw_psycopg": _on(AIO_PG, _aio_psycopg, "raw"),
    "aio_select1_bridged_psycopg": _on(AIO_PG, _aio_psycopg, "bridged"),
    "aio_checkout_fastpool_psycopg": _on(AIO_PG, _aio_psycopg, "checkout"),
    "aio_select1_fastpool_psycopg": _on(AIO_PG, _aio_psycopg, "fastpool"),
    "aio_select1_psycopg_pool": _on(AIO_PG, _aio_psycopg, "pool"),
    "aio_select1_raw_asyncpg": _on(AIO_APG, _aio_asyncpg, "raw"),
    "aio_select1_fastpool_asyncpg_dropin": _on(AIO_APG, _aio_asyncpg, "dropin"),
    "aio_select1_fastpool_asyncpg": _on(AIO_APG, _aio_asyncpg, "fastpool"),
    "aio_select1_asyncpg_pool": _on(AIO_APG, _aio_asyncpg, "pool"),
    "aio_cycle_asyncpg_pool": _on(AIO_APG_CYCLE, _aio_asyncpg, "pool_cycle"),
    "aio_cycle_fastpool_asyncpg_dropin": _on(AIO_APG_CYCLE, _aio_asyncpg, "dropin_cycle"),
}
# Each group's first workload is the reference its ratios are taken to.


def run_child(name: str, reps: int) -> None:
    """The measured process: build, warm up (caches, lazy imports), then repeat. What it
    makes in temp dirs (the SQLite file) goes under a scratch dir removed at the end."""
    scratch = tempfile.mkdtemp(prefix="fastpool-instructions-")
    tempfile.tempdir = scratch
    try:
        w = WORKLOADS[name]
        if w.aio:
            import asyncio

            async def run() -> None:
                op, close = await w.setup()
                await op()
                await op()
                for _ in range(reps):
                    await op()
                await close()

            asyncio.run(run())
        else:
            op, close = w.setup()
            op()
            op()
            for _ in range(reps):
                op()
            close()
    finally:
        tempfile.tempdir = None
        shutil.rmtree(scratch, ignore_errors=True)


_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def count_instructions(name: str, reps: int, valgrind: str) -> int:
    cmd = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null",
           sys.executable, "-m", "bench.instructions", "--child", name, str(reps)]
    env = dict(os.environ, PYTHONHASHSEED="0")  # string hashing the same in every run
    env.update(_SERVERS)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    found = _COLLECTED.search(proc.stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"{name}: callgrind run failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return int(found.group(1))


def per_operation(names: list[str], valgrind: str) -> dict[str, float]:
    """Instructions per operation of each workload. The children run side by side, one per
    core: what callgrind counts hardly depends on what else the machine is doing."""
    runs = [(name, reps) for name in names for reps in WORKLOADS[name].reps]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counted = dict(zip(runs, pool.map(lambda run: count_instructions(*run, valgrind), runs)))
    result = {}
    for name in names:
        few, many = WORKLOADS[name].reps
        result[name] = (counted[name, many] - counted[name, few]) / (many - few)
    return result


def report(counts: dict[str, float]) -> str:
    lines = ["instructions per operation, counted by callgrind"]
    groups: dict[str, list[str]] = {}
    for name in WORKLOADS:
        if name in counts:
            groups.setdefault(WORKLOADS[name].group, []).append(name)
    for group, names in groups.items():
        reference = next(n for n in WORKLOADS if WORKLOADS[n].group == group)
        base = counts.get(reference)
        lines.append("")
        lines.append(f"{group} (ratio to {reference})" if base else group)
        for name in names:
            ratio = f"   {counts[name] / base:5.2f}x" if base else ""
            lines.append(f"  {name:<34}{counts[name]:>14,.0f}{ratio}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD",
                        help=f"which to count (default: all): {', '.join(WORKLOADS)}")
    parser.add_argument("--mysql-dsn", default=os.environ.get("FASTPOOL_BENCH_DSN"),
                        help="MariaDB/MySQL for the mysql workloads (default: $FASTPOOL_BENCH_DSN,"
                             " else a throwaway server when mariadbd is here)")
    parser.add_argument("--pg-dsn", default=os.environ.get("FASTPOOL_BENCH_PG_DSN"),
                        help="PostgreSQL for the psycopg workloads (default: $FASTPOOL_BENCH_PG_DSN,"
                             " else a throwaway server when postgres is here)")
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "REPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child[0], int(args.child[1]))
        return 0
    unknown = [n for n in args.workloads if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    names = args.workloads or list(WORKLOADS)
    with contextlib.ExitStack() as stack:
        for server, dsn in (("mysql", args.mysql_dsn), ("postgres", args.pg_dsn)):
            if any(WORKLOADS[n].server == server for n in names):
                found = dsn or stack.enter_context(_throwaway(server))
                if found:
                    _SERVERS[_DSN_ENV[server]] = found
        left = [n for n in names if WORKLOADS[n].server and _DSN_ENV[WORKLOADS[n].server] not in _SERVERS]
        if left:
            print(f"no server for {', '.join(left)}: left out", file=sys.stderr)
        names = [n for n in names if n not in left]
        print("counting under callgrind, one child per core (a few minutes) ...", file=sys.stderr)
        print(report(per_operation(names, valgrind)))
    return 0


# DSN environment variables handed to the children: the servers this run uses.
_SERVERS: dict[str, str] = {}


@contextlib.contextmanager
def _throwaway(server: str) -> Iterator[str | None]:
    """A throwaway MariaDB or PostgreSQL for the run (the test suite's), if its binaries
    and driver are here; else None."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        if server == "mysql":
            from mariadb_server import MariaDBServer as Server
        else:
            from pg_server import PostgresServer as Server
        s = Server()
        s.start()
    except Exception as exc:  # no binaries, no driver: those workloads are left out
        print(f"no throwaway {server} server ({type(exc).__name__}: {exc})", file=sys.stderr)
        yield None
        return
    try:
        yield s.dsn
    finally:
        s.cleanup()


if __name__ == "__main__":
    sys.exit(main())
