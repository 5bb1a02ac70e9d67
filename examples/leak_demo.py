"""The seed's bug, side by side: a loop that returns from inside `for row in rows`.

    python examples/leak_demo.py [--dsn mysql://...] [--calls 300]

Without --dsn it uses a SQLite file in a temp dir (removed at exit). For each pool it
prints, every tenth of the calls, how many connections are open and how many callers timed
out waiting. The default takes about 15 s, nearly all of it the Go-style pool's callers
waiting out their 50 ms timeouts once it is exhausted; --calls makes it longer.
"Go-style" is a pool whose streaming rows give their connection back only at EOF or
close(), as Go's database/sql does: every early return leaks one connection, until the
pool is exhausted and every request waits out its timeout (the 504s).
"""

from __future__ import annotations

import argparse
import queue
import sys
import tempfile
import warnings
from pathlib import Path

import fastpool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.support import GoStylePool  # noqa: E402  (the same pool the benchmark uses)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", help="mysql://user:pw@host:port/db (default: a SQLite file)")
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--max-open", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fastpool-leak-demo-") as scratch:
        if args.dsn:
            run(args, args.dsn, "%s")
        else:
            run(args, f"sqlite:///{Path(scratch) / 'leak.db'}", "?")


def run(args: argparse.Namespace, dsn: str, mark: str) -> None:
    db = fastpool.open(dsn, max_open=args.max_open, timeout=0.05)
    db.execute("DROP TABLE IF EXISTS ranger_user")
    db.execute("CREATE TABLE ranger_user (id INT PRIMARY KEY, name VARCHAR(40))")
    for i in range(1, 101):
        db.execute(f"INSERT INTO ranger_user VALUES ({mark}, {mark})", (i, f"user{i}"))
    sql = f"SELECT id, name FROM ranger_user WHERE id > {mark}"

    connect = db._connect  # the same driver connect() fastpool uses
    go = GoStylePool(connect, args.max_open, timeout=0.05)
    print(f"Calling, {args.calls} times, a handler that returns from inside `for row in rows`,"
          f" through each pool (max_open={args.max_open}, timeout=50 ms):\n", flush=True)

    def get_user_list_go():  # type: ignore[no-untyped-def]
        for row in go.query(sql, (1,)):
            return row  # rows never closed

    def get_user_list_fastpool():  # type: ignore[no-untyped-def]
        for row in db.query(sql, (1,), stream=True):
            return row  # rows never closed: reclaimed when dropped

    step = max(args.calls // 10, 1)
    print(f"{'calls':>6}  {'Go-style open':>13} {'Go-style 504s':>13}  {'fastpool open':>13} {'fastpool 504s':>13}")
    go_fail = fp_fail = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastpool.ConnectionLeakWarning)
        for n in range(1, args.calls + 1):
            try:
                get_user_list_go()
            except queue.Empty:
                go_fail += 1
            try:
                get_user_list_fastpool()
            except fastpool.PoolTimeout:
                fp_fail += 1
            if n % step == 0:
                print(f"{n:>6}  {go.open:>13} {go_fail:>13}  {db.stats().open:>13} {fp_fail:>13}",
                      flush=True)
    s = db.stats()
    print(f"\nfastpool: {s.leaks_reclaimed} dropped Rows reclaimed, {s.open} connection(s) open, "
          f"{s.in_use} in use.")
    db.close()


if __name__ == "__main__":
    main()
