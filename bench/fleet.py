"""The fleet run: many processes, each with its own pool, against one PostgreSQL whose
connection budget is smaller than the sum of the pools, directly and through PgBouncer in
transaction mode. What each process's callers get (served, errors, latency) and what the
server sees (its client connections, sampled over time).

Each process is a fresh interpreter (multiprocessing's spawn), as separate machines'
services would be; its threads loop on a short statement through fastpool for the run.
"""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
from typing import Any

STATEMENT = "SELECT pg_sleep(0.002)"  # a short request that holds its connection a moment


def _process(dsn: str, pool_size: int, threads: int, seconds: float, behind_pooler: bool,
             start_at: float, out: Any) -> None:  # pragma: no cover - runs in a child
    import fastpool

    db = fastpool.open(dsn, max_open=pool_size, timeout=2.0, behind_pooler=behind_pooler)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    served = [0]
    lock = threading.Lock()
    while time.time() < start_at:
        time.sleep(0.005)
    stop = time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                db.query_row(STATEMENT)
            except Exception as exc:
                # The kind of failure, and for the server's refusals its reason.
                text = str(exc).splitlines()[0] if str(exc) else ""
                key = type(exc).__name__ + (": too many clients" if "too many clients" in text
                                            else "")
                with lock:
                    errors[key] = errors.get(key, 0) + 1
                time.sleep(0.01)
                continue
            t1 = time.perf_counter()
            with lock:
                served[0] += 1
                latencies.append(t1 - t0)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    s = db.stats()
    db.close()
    out.put({"served": served[0], "errors": errors, "latencies": latencies,
             "connects": s.connects, "connect_errors": s.connect_errors})


def _outsider(dsn: str, stop: threading.Event, tally: dict[str, int]) -> None:
    """Another client of the same database while the fleet runs (a new deploy, a cron job,
    an operator's psql): a fresh connection and one statement every 100 ms."""
    import psycopg

    while not stop.wait(0.1):
        try:
            with psycopg.connect(dsn, connect_timeout=2, prepare_threshold=None) as c:
                c.execute("SELECT 1")
            tally["ok"] = tally.get("ok", 0) + 1
        except psycopg.Error as exc:
            key = "too many clients" if "too many clients" in str(exc) else type(exc).__name__
            tally[key] = tally.get(key, 0) + 1


def run_fleet(dsn: str, count_connections: Any, *, processes: int = 8, pool_size: int = 10,
              threads: int = 10, seconds: float = 3.0, behind_pooler: bool = False) -> dict[str, Any]:
    """Run the fleet against dsn; count_connections() -> the server's client connections
    now, sampled every 50 ms while it runs; meanwhile an outsider tries to connect."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 2.0  # every interpreter started and imported by then
    procs = [ctx.Process(target=_process, args=(dsn, pool_size, threads, seconds, behind_pooler,
                                                start_at, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    series: list[tuple[float, int]] = []
    while time.time() < start_at:
        time.sleep(0.01)
    t0 = time.monotonic()
    outsider: dict[str, int] = {}
    stop = threading.Event()
    probe = threading.Thread(target=_outsider, args=(dsn, stop, outsider))
    probe.start()
    results = []
    while len(results) < processes:
        series.append((time.monotonic() - t0, count_connections()))
        try:
            results.append(out.get(timeout=0.05))
        except Exception:  # queue.Empty: sample again
            if time.monotonic() - t0 > seconds + 60:
                break
    stop.set()
    probe.join(10)
    for p in procs:
        p.join(30)
    latencies = sorted(x for r in results for x in r["latencies"])
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return {
        "processes": processes, "pool_size": pool_size, "threads": threads, "seconds": seconds,
        "served": sum(r["served"] for r in results),
        "errors": sum(errors.values()), "error_kinds": errors,
        "p50_ms": q[49] * 1e3, "p99_ms": q[98] * 1e3,
        "max_ms": latencies[-1] * 1e3 if latencies else 0.0,
        "peak_server_connections": max((n for _t, n in series), default=0),
        "series": [(round(t, 3), n) for t, n in series[::2]],
        "processes_reported": len(results),
        "connects": sum(r["connects"] for r in results),
        "connect_errors": sum(r["connect_errors"] for r in results),
        "outsider_ok": outsider.get("ok", 0),
        "outsider_refused": sum(v for k, v in outsider.items() if k != "ok"),
    }
