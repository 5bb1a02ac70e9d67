"""The core under true parallelism: a free-threaded interpreter with the GIL off, against
the same interpreter with the GIL on, in one run.

    python -m bench.freethreaded                       # checkouts only
    python -m bench.freethreaded --dsn mysql://u:pw@127.0.0.1:3306/db   # and SELECT 1
    scripts/test-freethreaded --bench                  # in the project's 3.13t chroot

Needs a free-threaded build (3.13t or later). Each measurement runs in a child process of
this interpreter with PYTHON_GIL=1, then PYTHON_GIL=0, the rounds interleaved so that
whatever else the machine does falls on both; the median of the rounds is kept.

* checkouts: 8 threads share 4 connections with no I/O (getconn + putconn);
* SELECT 1: 16 threads share 4 MariaDB connections (mysqlclient), when --dsn or
  FASTPOOL_TEST_DSN names a server.

Every round also checks what the pool promises under parallelism: no connection held by
two threads at once (each holder takes a lock kept on the connection itself, without
waiting), the counts adding up in every stats() sampled meanwhile (open = in_use + idle +
opening, never above max_open), every checkout given back, no error. A failed check
makes the exit status 1; the speeds are reported, never asserted.

The exclusivity check must not serialise the threads it measures: a lock looked up in
one dict shared by every thread (as `ft_stress.py` does) makes `dict.get` take that
dict's per-object lock on every checkout under 3.13t, and the run then measures the dict.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
from typing import Any, Callable

import fastpool

from .support import FakeConn


class _Conn(FakeConn):
    """A connection with no I/O, carrying the lock its holder proves exclusivity with."""

    def __init__(self) -> None:
        self.held = threading.Lock()


WORKLOADS = {
    # name: (threads, connections, label)
    "checkouts": (8, 4, "checkouts/s, 8 threads on 4 connections (no I/O)"),
    "select1": (16, 4, "SELECT 1/s, 16 threads on 4 MariaDB connections"),
}


def _child(workload: str, seconds: float, dsn: str | None) -> dict[str, Any]:
    threads, conns, _label = WORKLOADS[workload]
    if workload == "checkouts":
        db = fastpool.Pool(_Conn, max_open=conns, timeout=60.0)
    else:
        db = fastpool.open(dsn, max_open=conns, timeout=60.0)
    bad: list[str] = []
    errors: list[str] = []
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def checkouts(i: int) -> None:
        n = 0
        end = stop_at[0]
        getconn, putconn, clock = db.getconn, db.putconn, time.monotonic
        while True:
            for _ in range(64):
                c = getconn()
                held = c.raw.held
                if held.acquire(False):
                    held.release()
                else:
                    bad.append("two holders of one connection")
                putconn(c)
            n += 64
            if clock() >= end:
                break
        counts[i] = n

    def select1(i: int) -> None:
        n = 0
        end = stop_at[0]
        query_row, clock = db.query_row, time.monotonic
        while clock() < end:
            for _ in range(8):
                if query_row("SELECT 1") != (1,):
                    bad.append("SELECT 1 returned something else")
            n += 8
        counts[i] = n

    body: Callable[[int], None] = checkouts if workload == "checkouts" else select1

    def worker(i: int) -> None:
        try:
            start.wait()
            body(i)
        except BaseException as exc:  # reported, and the round fails
            errors.append(f"{type(exc).__name__}: {exc}")

    samples = [0]
    done = threading.Event()

    def monitor() -> None:
        while not done.is_set():
            s = db.stats()
            samples[0] += 1
            if s.open != s.in_use + s.idle + s.opening:
                bad.append(f"open {s.open} != in_use {s.in_use} + idle {s.idle} + opening {s.opening}")
            if s.open > conns or s.in_use > conns:
                bad.append(f"above max_open: {s}")
            time.sleep(0.001)

    if workload == "select1":
        db.query_row("SELECT 1")  # the first connection opened before the clock starts
    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    mon = threading.Thread(target=monitor, daemon=True)
    mon.start()
    stop_at[0] = time.monotonic() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in pool:
        t.join(seconds + 60)
    elapsed = time.perf_counter() - t0
    done.set()
    mon.join(5)
    alive = sum(t.is_alive() for t in pool)
    s = db.stats()
    total = sum(counts)
    if alive:
        bad.append(f"{alive} threads still running a minute after the end (deadlock?)")
    if s.in_use != 0:
        bad.append(f"in_use {s.in_use} at the end")
    if not alive and s.checkins != total + (1 if workload == "select1" else 0):
        bad.append(f"checkins {s.checkins} != {total} operations")
    db.close()
    return {
        "gil": sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else True,
        "per_s": total / elapsed,
        "fewest_share": min(counts) / (total / threads) if total else 0.0,
        "waits": s.wait_count, "samples": samples[0], "errors": errors[:3], "bad": bad[:3],
    }


def _run_child(workload: str, gil: int, seconds: float, dsn: str | None) -> dict[str, Any]:
    env = dict(os.environ, PYTHON_GIL=str(gil))
    cmd = [sys.executable, "-m", "bench.freethreaded", "--child", workload,
           "--seconds", str(seconds)]
    if dsn:
        cmd += ["--dsn", dsn]
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    if bool(result["gil"]) != bool(gil):
        raise SystemExit(f"bench.freethreaded: asked PYTHON_GIL={gil}, the child ran with"
                         f" the GIL {'on' if result['gil'] else 'off'}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.freethreaded",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("FASTPOOL_TEST_DSN"),
                        help="a MariaDB/MySQL server for the SELECT 1 workload"
                             " (default: $FASTPOOL_TEST_DSN; none: that workload is left out)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per round (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="per GIL mode (default 3)")
    parser.add_argument("--child", choices=sorted(WORKLOADS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.seconds, args.dsn)))
        return 0
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        print(f"bench.freethreaded: {sys.executable} is not a free-threaded build"
              " (try scripts/test-freethreaded --bench)", file=sys.stderr)
        return 2
    workloads = ["checkouts"] + (["select1"] if args.dsn else [])
    print(f"{sys.executable} {sys.version.split()[0]}, {os.cpu_count()} CPUs;"
          f" {args.rounds} rounds of {args.seconds:g} s per GIL mode, interleaved; medians")
    failed = False
    for workload in workloads:
        runs: dict[int, list[dict[str, Any]]] = {1: [], 0: []}
        for _ in range(args.rounds):
            for gil in (1, 0):
                r = _run_child(workload, gil, args.seconds, args.dsn)
                runs[gil].append(r)
                for problem in r["errors"] + r["bad"]:
                    failed = True
                    print(f"  FAILED (GIL {'on' if gil else 'off'}): {problem}")
        on = statistics.median(r["per_s"] for r in runs[1])
        off = statistics.median(r["per_s"] for r in runs[0])
        share_on = min(r["fewest_share"] for r in runs[1])
        share_off = min(r["fewest_share"] for r in runs[0])
        print(f"{WORKLOADS[workload][2]}: GIL on {on:,.0f}, GIL off {off:,.0f}"
              f" = {off / on:.2f}x; the least-served thread got {share_on:.0%} (GIL on),"
              f" {share_off:.0%} (GIL off) of the mean;"
              f" stats sampled {sum(r['samples'] for r in runs[0] + runs[1]):,} times,"
              f" {'every check held' if not failed else 'a check FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
