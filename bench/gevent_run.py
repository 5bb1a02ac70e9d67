"""Pools under gevent, side by side: 64 greenlets share 4 PyMySQL connections, each runs
``SELECT SLEEP(0.05)`` three times (what a gunicorn gevent worker's requests look like).

    python -m bench.gevent_run --dsn mysql://u:pw@127.0.0.1:3306/db

Each pool runs in a fresh interpreter that calls ``monkey.patch_all()`` first. Reports the
run's wall time (2.4 s if the 4 connections never sit idle), errors, and the longest time
one greenlet waited for its connection.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

GREENLETS = 64
CONNS = 4
ROUNDS = 3
CONTENDERS = ["fastpool", "SQLAlchemy QueuePool", "DBUtils PooledDB"]


def _one(name: str, dsn: str) -> dict:
    from gevent import monkey

    monkey.patch_all()
    import time

    import gevent
    import pymysql

    import fastpool
    from fastpool.url import parse_url

    kw = parse_url(dsn).connect_kwargs

    def connect() -> pymysql.connections.Connection:
        return pymysql.connect(autocommit=True, **kw)

    if name == "fastpool":
        db = fastpool.open(dsn + ("&" if "?" in dsn else "?") + "driver=pymysql",
                           max_open=CONNS, timeout=20)
        get, put, close = db.getconn, (lambda c: c.close()), db.close
    elif name == "SQLAlchemy QueuePool":
        from sqlalchemy.pool import QueuePool

        qp = QueuePool(connect, pool_size=CONNS, max_overflow=0, timeout=20)
        get, put, close = qp.connect, (lambda c: c.close()), qp.dispose
    elif name == "DBUtils PooledDB":
        from dbutils.pooled_db import PooledDB

        pdb = PooledDB(pymysql, maxconnections=CONNS, blocking=True, autocommit=True, **kw)
        get, put, close = pdb.connection, (lambda c: c.close()), pdb.close
    else:
        raise SystemExit(f"unknown contender {name!r}")

    errors: list[str] = []
    longest = [0.0]

    def task() -> None:
        try:
            for _ in range(ROUNDS):
                t0 = time.perf_counter()
                c = get()
                longest[0] = max(longest[0], time.perf_counter() - t0)
                try:
                    cur = c.cursor()
                    cur.execute("SELECT SLEEP(0.05)")
                    cur.fetchall()
                    cur.close()
                finally:
                    put(c)
        except Exception as exc:
            errors.append(type(exc).__name__)

    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(task) for _ in range(GREENLETS)], timeout=120)
    seconds = time.perf_counter() - t0
    close()
    return {"name": name, "seconds": seconds, "errors": len(errors),
            "longest_wait": longest[0], "error_kinds": sorted(set(errors))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gevent_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", required=True, help="a mysql:// URL")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child's mode
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_one(args.one, args.dsn)))
        return 0
    print(f"{GREENLETS} greenlets, {CONNS} PyMySQL connections, {ROUNDS} x SELECT SLEEP(0.05) each")
    for name in CONTENDERS:
        proc = subprocess.run([sys.executable, "-m", "bench.gevent_run", "--dsn", args.dsn,
                               "--one", name], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            print(f"  {name:22s} failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {name:22s} {r['seconds']:6.2f} s   errors {r['errors']:3d} {r['error_kinds'] or ''}"
              f"   longest wait {r['longest_wait'] * 1e3:7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
