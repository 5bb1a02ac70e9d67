"""The other half of the 504 story: a gateway gives up, the database work goes on.

    python examples/deadline_story.py [--dsn mysql://...] [--seconds 5]

A service with 16 workers shares a pool of 4 MariaDB connections. Its gateway gives up on a
request after 1 s (a 504). One request in eight runs a statement that takes 5 s
(SELECT SLEEP(5)); the others are quick. Run twice:

* without deadlines, the slow statements hold the pool's connections long after their
  callers are gone, and the quick requests queue behind them and miss the gateway too;
* with ``fastpool.deadline(1.0)`` around each request, a slow statement is cancelled on
  the server at 1 s (KILL QUERY), its connection freed, and the quick requests keep flowing.

Without --dsn it uses FASTPOOL_TEST_DSN, or starts a throwaway MariaDB (mariadb-install-db
+ mariadbd in a temp dir, as the tests do). Prints one table row per run; "still running"
counts the slow statements still on the server a second after every caller's gateway has
given up.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import fastpool

GATEWAY = 1.0  # seconds the gateway waits for a response
WORKERS = 16
POOL = 4
MARK = "deadline-story"
SETTLE = 1.0  # seconds after the last gateway gave up that "still running" is counted


def request(db: fastpool.Pool, n: int) -> None:
    if n % 8 == 0:
        db.query_row(f"SELECT SLEEP(5) /* {MARK} */")
    else:
        db.query_row(f"SELECT %s /* {MARK} */", (n,))


def run(dsn: str, seconds: float, use_deadlines: bool) -> dict[str, Any]:
    db = fastpool.open(dsn, max_open=POOL, timeout=30)
    db.query_row("SELECT 1")
    lock = threading.Lock()
    latencies: list[float] = []
    in_time = errors = 0
    counter = iter(range(10**9))
    stop_at = time.monotonic() + seconds

    def worker() -> None:
        nonlocal in_time, errors
        while time.monotonic() < stop_at:
            with lock:
                n = next(counter)
            start = time.monotonic()
            ok = True
            try:
                if use_deadlines:
                    with fastpool.deadline(GATEWAY):
                        request(db, n)
                else:
                    request(db, n)
            except (fastpool.DeadlineExceeded, fastpool.PoolTimeout):
                ok = False
            took = time.monotonic() - start
            with lock:
                latencies.append(took)
                if ok and took <= GATEWAY:
                    in_time += 1
                elif not ok:
                    errors += 1

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    # A second after the last request's gateway has given up (time for the cancels to
    # land on a busy machine, and well before a 5 s statement would end by itself),
    # whatever still runs on the server is work for callers that are gone.
    time.sleep(seconds + GATEWAY + SETTLE)
    still_running = _running_on_server(dsn)
    for t in threads:
        t.join(30)
    stats = db.stats()
    db.close()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    return {
        "mode": "fastpool.deadline(1.0)" if use_deadlines else "no deadline",
        "requests": len(latencies), "in_time": in_time, "p99": p99,
        "still_running": still_running, "cancelled": stats.statements_cancelled,
    }


def _running_on_server(dsn: str) -> int:
    import MySQLdb

    from fastpool.url import parse_url

    conn = MySQLdb.connect(autocommit=True, **parse_url(dsn).connect_kwargs)
    try:
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE %s"
                    " AND ID <> CONNECTION_ID()", (f"%SLEEP(5) /* {MARK}%",))
        (n,) = cur.fetchone()
        return int(n)
    finally:
        conn.close()


@contextlib.contextmanager
def database(dsn: str | None) -> Iterator[str]:
    if dsn or os.environ.get("FASTPOOL_TEST_DSN"):
        yield dsn or os.environ["FASTPOOL_TEST_DSN"]
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from mariadb_server import MariaDBServer, binaries

    if binaries() is None:
        sys.exit("no --dsn and no MariaDB binaries (apt-get install mariadb-server)")
    server = MariaDBServer()
    try:
        print("starting a throwaway MariaDB ...", flush=True)
        server.start()
        yield server.dsn
    finally:
        server.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", help="mysql://user:pw@host:port/db (default: a throwaway MariaDB)")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    args = ap.parse_args()
    with database(args.dsn) as dsn:
        print(f"{WORKERS} workers, a pool of {POOL}, gateway timeout {GATEWAY:g}s, "
              f"1 request in 8 runs SELECT SLEEP(5); {args.seconds:g}s per run\n")
        print(f"{'mode':<24}{'requests':>9}{'in time':>9}{'share':>8}{'p99 (s)':>9}"
              f"{'still running':>15}{'cancelled':>11}")
        for use in (False, True):
            r = run(dsn, args.seconds, use)
            share = r["in_time"] / r["requests"] if r["requests"] else 0.0
            print(f"{r['mode']:<24}{r['requests']:>9}{r['in_time']:>9}{share:>8.0%}{r['p99']:>9.2f}"
                  f"{r['still_running']:>15}{r['cancelled']:>11}", flush=True)


if __name__ == "__main__":
    main()
