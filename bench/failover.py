"""Failover, measured: steady small writes from several threads through each pool while the
primary is switched over (planned) and then killed, on real replication.

    python -m bench.failover                 # both engines, every pool installed
    python -m bench.failover --engine postgresql --workers 8

PostgreSQL runs under Patroni on etcd (switchover through Patroni's REST API; the crash is
``kill -9`` of the leader's Patroni and postmaster, promoted once its lease expires).
MariaDB runs a GTID pair promoted in SQL as an orchestrator does; its pools connect as a
user holding READ_ONLY ADMIN (as root does), and the demotion ends that user's sessions,
so a pool that reconnects to the server it knows writes to the demoted one.

For each pool and event: seconds from the promotion until a write is acknowledged again,
the errors callers saw (by kind), acknowledged writes missing from the new primary
afterwards. The beds are the tests' (tests/patroni_cluster.py, tests/mariadb_replication.py).
"""

from __future__ import annotations

import argparse
import collections
import inspect
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from replication_load import AsyncWorkload, Workload  # noqa: E402

Writer = Callable[[str, int], Any]


# ---- the contenders: each opens a pool on the bed and returns (write, close) ----------------
def pg_fastpool(bed: Any) -> tuple[Writer, Callable[[], None]]:
    import fastpool

    db = fastpool.open(bed.dsn, max_open=8, timeout=30)

    def write(who: str, n: int) -> None:
        db.execute("INSERT INTO writes (who, n) VALUES (%s, %s)", (who, n))
    return write, db.close


def pg_psycopg_pool(bed: Any) -> tuple[Writer, Callable[[], None]]:
    from psycopg_pool import ConnectionPool

    from patroni_cluster import DATABASE, PASSWORD, USER

    hosts = ",".join("127.0.0.1" for _ in bed.nodes)
    ports = ",".join(str(n.port) for n in bed.nodes)
    pool = ConnectionPool(f"host={hosts} port={ports} dbname={DATABASE} user={USER}"
                          f" password={PASSWORD} target_session_attrs=read-write connect_timeout=2",
                          min_size=4, max_size=8, kwargs={"autocommit": True}, timeout=30,
                          check=ConnectionPool.check_connection, open=True)

    def write(who: str, n: int) -> None:
        with pool.connection() as c:
            c.execute("INSERT INTO writes (who, n) VALUES (%s, %s)", (who, n))
    return write, pool.close


def pg_sqlalchemy(bed: Any) -> tuple[Writer, Callable[[], None]]:
    import sqlalchemy

    from patroni_cluster import DATABASE, PASSWORD, USER

    # SQLAlchemy's psycopg dialect passes a host list to libpq (host=h:p&host=h:p).
    hosts = "&".join(f"host=127.0.0.1:{n.port}" for n in bed.nodes)
    engine = sqlalchemy.create_engine(
        f"postgresql+psycopg://{USER}:{PASSWORD}@/{DATABASE}?{hosts}"
        "&target_session_attrs=read-write&connect_timeout=2",
        pool_size=8, pool_pre_ping=True, isolation_level="AUTOCOMMIT")
    return _engine_writer(engine)


def _engine_writer(engine: Any) -> tuple[Writer, Callable[[], None]]:
    # A SQLAlchemy engine's write, a connection checked out per statement as a request
    # would, and its close.
    import sqlalchemy

    statement = sqlalchemy.text("INSERT INTO writes (who, n) VALUES (:who, :n)")

    def write(who: str, n: int) -> None:
        with engine.connect() as c:
            c.execute(statement, {"who": who, "n": n})
    return write, engine.dispose


async def pg_asyncpg_pool(bed: Any) -> tuple[Any, Any]:
    import asyncpg

    from patroni_cluster import DATABASE, PASSWORD, USER

    hosts = ",".join(f"127.0.0.1:{n.port}" for n in bed.nodes)
    pool = await asyncpg.create_pool(f"postgresql://{USER}:{PASSWORD}@{hosts}/{DATABASE}",
                                     target_session_attrs="primary", min_size=4, max_size=8,
                                     timeout=2)

    async def write(who: str, n: int) -> None:
        await pool.execute("INSERT INTO writes (who, n) VALUES ($1, $2)", who, n)
    return write, pool.close


async def pg_fastpool_aio(bed: Any) -> tuple[Any, Any]:
    import fastpool.aio

    db = fastpool.aio.open(bed.dsn + "?driver=asyncpg", max_open=8, timeout=30)

    async def write(who: str, n: int) -> None:
        await db.execute("INSERT INTO writes (who, n) VALUES ($1, $2)", (who, n))
    return write, db.close


def my_fastpool(bed: Any) -> tuple[Writer, Callable[[], None]]:
    import fastpool

    from mariadb_replication import ADMIN_USER

    db = fastpool.open(bed.dsn(user=ADMIN_USER), max_open=8, timeout=30)

    def write(who: str, n: int) -> None:
        db.execute("INSERT INTO writes (who, n) VALUES (%s, %s)", (who, n))
    return write, db.close


async def my_fastpool_aio(bed: Any) -> tuple[Any, Any]:
    import fastpool.aio

    from mariadb_replication import ADMIN_USER

    db = fastpool.aio.open(bed.dsn(user=ADMIN_USER, driver="asyncmy"), max_open=8, timeout=30)

    async def write(who: str, n: int) -> None:
        await db.execute("INSERT INTO writes (who, n) VALUES (%s, %s)", (who, n))
    return write, db.close


def my_sqlalchemy_pymysql(bed: Any) -> tuple[Writer, Callable[[], None]]:
    return my_sqlalchemy(bed, "pymysql")


def my_sqlalchemy(bed: Any, driver: str = "mysqldb") -> tuple[Writer, Callable[[], None]]:
    import sqlalchemy

    from mariadb_replication import ADMIN_USER, PASSWORD

    # No Python MySQL driver takes a host list: the pool knows the primary it started with.
    engine = sqlalchemy.create_engine(
        f"mysql+{driver}://{ADMIN_USER}:{PASSWORD}@127.0.0.1:{bed.primary.port}/fastpool_test",
        pool_size=8, pool_pre_ping=True, isolation_level="AUTOCOMMIT")
    return _engine_writer(engine)


CONTENDERS: dict[str, list[tuple[str, Callable[[Any], Any], str]]] = {
    "postgresql": [("fastpool, host list", pg_fastpool, "fastpool"),
                   ("psycopg_pool, libpq target_session_attrs=read-write", pg_psycopg_pool,
                    "psycopg_pool"),
                   ("SQLAlchemy + psycopg, libpq host list", pg_sqlalchemy, "sqlalchemy"),
                   ("fastpool.aio on asyncpg, host list", pg_fastpool_aio, "fastpool_aio"),
                   ("asyncpg's pool, target_session_attrs=primary", pg_asyncpg_pool,
                    "asyncpg_pool")],
    # fastpool and its first peer first: the comparison's quick run takes only those two.
    "mariadb": [("fastpool, host list", my_fastpool, "fastpool"),
                ("SQLAlchemy + mysqlclient, one host (no driver takes a list)", my_sqlalchemy,
                 "sqlalchemy"),
                ("fastpool.aio on asyncmy, host list", my_fastpool_aio, "fastpool_aio"),
                ("SQLAlchemy + PyMySQL, one host", my_sqlalchemy_pymysql, "sqlalchemy_pymysql")],
}


# ---- the beds and their events ----------------------------------------------------------------
class PostgresBed:
    def __init__(self) -> None:
        from patroni_cluster import PatroniCluster

        self.cluster = PatroniCluster(2)
        self.cluster.start()
        import fastpool

        with fastpool.open(self.cluster.dsn) as db:
            db.execute("CREATE TABLE writes (id bigserial PRIMARY KEY, who text, n bigint)")
        self.handle = self.cluster

    def switchover(self) -> float:
        old = self.cluster.leader()
        self.cluster.switchover()
        return self._promoted(old)

    def crash(self) -> float:
        old = self.cluster.leader()
        assert old is not None
        old.kill()
        return self._promoted(old)

    def _promoted(self, old: Any) -> float:
        # When the new leader first takes a write, polled every 20 ms.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for n in self.cluster.nodes:
                if n is old or n.proc is None:
                    continue
                try:
                    with n.superuser() as conn:
                        if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                            return time.monotonic()
                except Exception:
                    pass
            time.sleep(0.02)
        raise RuntimeError("no new primary")

    def rows(self) -> set[tuple[str, int]]:
        import psycopg

        from patroni_cluster import DATABASE

        leader = self.cluster.leader()
        assert leader is not None
        with psycopg.connect(host=str(leader.dir), port=leader.port, user="postgres",
                             dbname=DATABASE) as conn:
            return {(w, int(n)) for w, n in conn.execute("SELECT who, n FROM writes")}

    def close(self) -> None:
        self.cluster.cleanup()


class MariaDBBed:
    def __init__(self) -> None:
        from mariadb_replication import MariaDBPair

        self.pair = MariaDBPair()
        self.pair.start()
        self.handle = self.pair

    def switchover(self) -> float:
        from mariadb_replication import ADMIN_USER

        return self.pair.switchover(kill_sessions_of=ADMIN_USER)

    def crash(self) -> float:
        return self.pair.crash_and_promote()

    def rows(self) -> set[tuple[str, int]]:
        self.pair.sql(self.pair.primary, "FLUSH TABLES")
        return {(w, int(n)) for w, n in self.pair.sql(self.pair.primary,
                                                       "SELECT who, n FROM fastpool_test.writes")}

    def close(self) -> None:
        self.pair.stop()


def run(engine: str, workers: int, before: float, after: float) -> list[dict[str, Any]]:
    results = []
    for label, opener, key in CONTENDERS[engine]:
        for event in ("switchover", "crash"):
            # A bed of its own per run: a pool that wrote to a demoted server has forked
            # the history (its writes are on no other server), and a pool of one host
            # must start on the primary the event then takes away.
            bed: Any = PostgresBed() if engine == "postgresql" else MariaDBBed()
            try:
                results.append(_one(engine, label, key, event, bed, opener, workers, before,
                                    after))
            except ImportError as exc:
                print(f"  {engine}: {label}: skipped ({exc})", file=sys.stderr)
                break
            finally:
                bed.close()
    return results


def _one(engine: str, label: str, key: str, event: str, bed: Any, opener: Any, workers: int,
         before: float, after: float) -> dict[str, Any]:
    prefix = f"{key}-{event}-"
    close: Any = None
    if inspect.iscoroutinefunction(opener):
        load: Workload = AsyncWorkload(lambda: opener(bed.handle), workers=workers,
                                       prefix=prefix).start()
    else:
        write, close = opener(bed.handle)
        load = Workload(write, workers=workers, prefix=prefix).start()
    try:
        try:
            time.sleep(before)
            promoted = getattr(bed, event)()
            time.sleep(after)
        finally:
            load.stop()
    finally:
        if close is not None:
            close()
    rows = bed.rows()
    # Writes again: the first write acknowledged after the promotion that the new primary
    # has (one acknowledged by the demoted server does not count: it is lost).
    on_new = [t for who, n, t in load.acked if t >= promoted and (who, n) in rows]
    back = min(on_new) - promoted if on_new else None
    kinds = collections.Counter(k.split(":")[0] for k in load.error_kinds())
    missing = load.missing(rows)
    print(f"  {engine} {event:10} {label}: writes again "
          f"{'never' if back is None else f'{back:.2f} s'} after the promotion,"
          f" {len(load.errors)} errors {dict(kinds)}, {len(missing)} of"
          f" {len(load.acked)} acknowledged writes missing", file=sys.stderr)
    return {"engine": engine, "pool": label, "event": event, "back": back,
            "errors": len(load.errors), "kinds": dict(kinds), "missing": len(missing),
            "acked": len(load.acked)}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| database | pool | event | writes again after the promotion | errors callers saw"
             " | acknowledged writes missing |", "|---|---|---|---|---|---|"]
    for r in results:
        back = "never" if r["back"] is None else f"{r['back']:.2f} s"
        kinds = ", ".join(f"{k} {v}" for k, v in r["kinds"].items())
        lines.append(f"| {r['engine']} | {r['pool']} | {r['event']} | {back} | {r['errors']}"
                     f"{f' ({kinds})' if kinds else ''} | {r['missing']} of {r['acked']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=("postgresql", "mariadb", "both"), default="both")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--before", type=float, default=1.0, help="seconds of load before the event")
    parser.add_argument("--after", type=float, default=2.0, help="seconds of load after the promotion")
    args = parser.parse_args(argv)
    engines = ("postgresql", "mariadb") if args.engine == "both" else (args.engine,)
    results: list[dict[str, Any]] = []
    for engine in engines:
        results += run(engine, args.workers, args.before, args.after)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
