"""Scenarios under gevent, each run in a fresh interpreter by tests/test_gevent.py:

    python tests/gevent_scenarios.py NAME DSN [PROXY_DSN]

monkey.patch_all() comes first, as gunicorn's gevent worker does; the result is one JSON
line on stdout. A scenario that hangs the hub never prints it (the test's timeout).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fastpool  # noqa: E402
from green_checks import cancel_by_deadline  # noqa: E402


class Ticker:
    """A greenlet that ticks every 10 ms: the longest gap between ticks is the longest
    time the hub was blocked."""

    def __init__(self) -> None:
        self.ticks = 0
        self.longest_gap = 0.0
        self._g = gevent.spawn(self._run)

    def _run(self) -> None:
        last = time.perf_counter()
        while True:
            gevent.sleep(0.01)
            now = time.perf_counter()
            self.longest_gap = max(self.longest_gap, now - last)
            last = now
            self.ticks += 1

    def stop(self) -> None:
        self._g.kill()


def sampled(db: fastpool.Pool, out: dict) -> gevent.Greenlet:
    """Samples stats() every 5 ms: the largest open count, and whether every snapshot had
    open == in_use + idle + opening."""
    out["max_open_seen"] = 0
    out["identity_broken"] = 0

    def run() -> None:
        while True:
            c = db._counts()
            out["max_open_seen"] = max(out["max_open_seen"], c[1])
            if c[1] != c[2] + c[3] + c[13]:
                out["identity_broken"] += 1
            gevent.sleep(0.005)

    return gevent.spawn(run)


def many_greenlets(dsn: str) -> dict:
    """64 greenlets on 4 connections, 3 x SELECT SLEEP(0.05) each."""
    db = fastpool.open(dsn, max_open=4, timeout=20)
    out: dict = {"errors": [], "first_served": []}
    sampler = sampled(db, out)
    ticker = Ticker()

    def task(i: int) -> None:
        try:
            for n in range(3):
                with db.conn() as c:
                    if n == 0:
                        out["first_served"].append(i)
                    c.execute("DO SLEEP(0.05)")
        except Exception as exc:
            out["errors"].append(f"{type(exc).__name__}: {exc}")

    t0 = time.perf_counter()
    greenlets = []
    for i in range(64):
        greenlets.append(gevent.spawn(task, i))
        gevent.sleep(0)  # each queues before the next starts: arrival order is 0..63
    gevent.joinall(greenlets, timeout=60)
    out["seconds"] = time.perf_counter() - t0
    sampler.kill()
    ticker.stop()
    s = db.stats()
    out.update(in_use=s.in_use, open=s.open, waiting=s.waiting, checkins=s.checkins,
               longest_hub_gap=ticker.longest_gap)
    db.close()
    return out


def timeout_while_held(dsn: str) -> dict:
    """The only connection held by another greenlet for 2 s; a checkout with timeout=0.5."""
    db = fastpool.open(dsn, max_open=1, timeout=20)
    holder_has_it = gevent.event.Event()

    def holder() -> None:
        with db.conn():
            holder_has_it.set()
            gevent.sleep(2.0)

    g = gevent.spawn(holder)
    holder_has_it.wait(10)
    ticker = Ticker()
    t0 = time.perf_counter()
    try:
        db.getconn(timeout=0.5).close()
        outcome = "got a connection"
    except fastpool.PoolTimeout as exc:
        outcome = type(exc).__name__
    waited = time.perf_counter() - t0
    ticks = ticker.ticks
    ticker.stop()
    g.join(10)
    row = db.query_row("SELECT 1")
    s = db.stats()
    db.close()
    return {"outcome": outcome, "waited": waited, "ticks_during_wait": ticks, "row": row,
            "timeouts": s.timeouts, "in_use": s.in_use, "longest_hub_gap": ticker.longest_gap}


def deadline_cancels(dsn: str) -> dict:
    """fastpool.deadline(0.5) around SELECT SLEEP(5): DeadlineExceeded, KILL QUERY sent by
    the watcher greenlet over PyMySQL, nothing left on the server."""
    db = fastpool.open(dsn, max_open=2, timeout=5)
    db.ping()
    ticker = Ticker()
    cancelled = cancel_by_deadline(db, gevent.sleep)
    ticker.stop()
    s = db.stats()
    db.close()
    return {**cancelled, "statements_cancelled": s.statements_cancelled, "in_use": s.in_use,
            "longest_hub_gap": ticker.longest_gap}


def faults(dsn: str) -> dict:
    """16 greenlets loop on SELECT 1 through the proxy for 4 s while the parent test cuts
    every connection and restarts the server (it starts when this prints "ready")."""
    db = fastpool.open(dsn, max_open=4, timeout=5)
    db.ping()
    out: dict = {"ok": 0, "errors": {}, "ok_after": []}
    sampler = sampled(db, out)
    stop = time.monotonic() + 4.0

    def task() -> None:
        while time.monotonic() < stop:
            try:
                db.query_row("SELECT 1")
                out["ok"] += 1
                out["ok_after"].append(time.monotonic())
            except Exception as exc:  # counted: the driver's error for calls in flight
                key = f"{type(exc).__name__} {exc.args[0] if exc.args else ''}".strip()
                out["errors"][key] = out["errors"].get(key, 0) + 1
                gevent.sleep(0.01)

    greenlets = [gevent.spawn(task) for _ in range(16)]
    print("ready", flush=True)
    gevent.joinall(greenlets, timeout=30)
    out["hung"] = sum(1 for g in greenlets if not g.dead)
    sampler.kill()
    out["last_ok"] = max(out.pop("ok_after") or [0.0])
    out["now"] = time.monotonic()
    out["token"] = db.query_row("SELECT 42")
    s = db.stats()
    out.update(in_use=s.in_use, open=s.open)
    db.close()
    return out


def django_requests(dsn: str) -> dict:
    """A gevent Django service: PyMySQL installed as MySQLdb, fastpool.django.mysql with a
    pool of 4, 64 greenlets each serving one request."""
    import pymysql

    pymysql.install_as_MySQLdb()
    import django
    from django.conf import settings

    from fastpool.url import parse_url

    kw = parse_url(dsn).connect_kwargs
    settings.configure(
        DATABASES={"default": {
            "ENGINE": "fastpool.django.mysql", "NAME": kw["database"], "USER": kw["user"],
            "PASSWORD": kw["password"], "HOST": kw["host"], "PORT": str(kw["port"]),
            "CONN_MAX_AGE": 0, "OPTIONS": {"pool": {"max_open": 4, "timeout": 20}},
        }},
        INSTALLED_APPS=[], USE_TZ=True,
    )
    django.setup()
    from django.db import close_old_connections, connection

    out: dict = {"ok": 0, "errors": []}

    def request() -> None:
        try:
            with connection.cursor() as cur:
                cur.execute("SELECT SLEEP(0.05)")
                cur.fetchall()
            out["ok"] += 1
        except Exception as exc:
            out["errors"].append(f"{type(exc).__name__}: {exc}")
        finally:
            close_old_connections()  # what request_finished runs
            connection.close()

    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(request) for _ in range(64)], timeout=60)
    out["seconds"] = time.perf_counter() - t0
    pool = connection.pool
    s = pool.stats()
    out.update(driver=pool.driver, open=s.open, in_use=s.in_use, connects=s.connects)
    pool.close()
    return out


def killed_holders(dsn: str) -> dict:
    """Greenlets holding a Conn, a Tx, a streaming Rows (each inside `with` and not), and
    one mid-statement, killed (GreenletExit at their switch point): every connection
    comes back; those left without `with` are reclaimed and warned once each."""
    import warnings

    db = fastpool.open(dsn, max_open=8, timeout=5)
    holding: list[gevent.event.Event] = []

    def hold(kind: str, use_with: bool, ready: gevent.event.Event) -> None:
        # `ready` once it holds what it should and sleeps: killed before that (a slow
        # machine), a stream is cut mid-read, which is not a leak but a broken connection.
        if kind == "mid_statement":
            with db.conn() as c:
                ready.set()
                c.query_row("SELECT SLEEP(3)")
        h = (db.conn() if kind == "conn" else db.begin() if kind == "tx"
             else db.query("SELECT seq FROM seq_1_to_5000", stream=True))
        if kind == "stream":
            next(h)
        ready.set()
        if use_with:
            with h:
                gevent.sleep(10)
        gevent.sleep(10)

    def spawn(kind: str, use_with: bool) -> gevent.Greenlet:
        holding.append(gevent.event.Event())
        return gevent.spawn(hold, kind, use_with, holding[-1])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        greenlets = [spawn(k, w) for k in ("conn", "tx", "stream") for w in (True, False)]
        greenlets.append(spawn("mid_statement", True))
        for ready in holding:
            ready.wait(10)
        gevent.sleep(0.1)  # the last one into its SLEEP(3) on the server
        s_before = db.stats()
        gevent.killall(greenlets, timeout=10)
        del greenlets
        gevent.sleep(0.2)
        s = db.stats()
        rows = [db.query_row("SELECT 1") for _ in range(8)]
    leaks = [str(w.message) for w in caught if "ConnectionLeakWarning" in w.category.__name__]
    db.close()
    return {"in_use_before": s_before.in_use, "in_use": s.in_use, "open": s.open,
            "idle": s.idle, "opening": s.opening, "leaks_reclaimed": s.leaks_reclaimed,
            "warned": len(leaks), "rows": len(rows)}


def default_driver(dsn: str) -> dict:
    """A plain mysql:// URL (no ?driver=) in a monkey-patched process: PyMySQL is picked,
    so a deadline ends SLEEP(3) on time while the hub keeps running; asking for mysqlclient
    by name warns, with the fix."""
    import warnings

    plain = dsn.replace("driver=pymysql", "").rstrip("?&")
    db = fastpool.open(plain, max_open=2, timeout=5)
    ticker = Ticker()
    t0 = time.perf_counter()
    try:
        with fastpool.deadline(0.3):
            db.query_row("SELECT SLEEP(3)")
        outcome = "returned"
    except fastpool.DeadlineExceeded:
        outcome = "DeadlineExceeded"
    took = time.perf_counter() - t0
    ticker.stop()
    driver = db.driver
    db.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fastpool.open(plain + ("&" if "?" in plain else "?") + "driver=mysqlclient").close()
    return {"driver": driver, "outcome": outcome, "took": took, "ticks": ticker.ticks,
            "warnings": [str(w.message) for w in caught]}


def hostlist_switchover(dsn: str) -> dict:
    """16 greenlets write through a host list while the test switches the primary over:
    "READY" on stdout once they run; the test's line on stdin once the new primary took
    writes; the acknowledged writes go to the file named by argv[3]."""
    from gevent.fileobject import FileObject

    db = fastpool.open(dsn, timeout=20, max_open=8)
    ticker = Ticker()
    acked: list[tuple[str, int]] = []
    errors: list[str] = []
    stop = gevent.event.Event()

    def writer(i: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                db.execute("INSERT INTO writes (who, n) VALUES (%s, %s)", (f"green{i}", n))
                acked.append((f"green{i}", n))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                gevent.sleep(0.01)

    greenlets = [gevent.spawn(writer, i) for i in range(16)]
    gevent.sleep(0.5)
    print("READY", flush=True)
    FileObject(sys.stdin, "r").readline()  # the switchover is done (cooperative read)
    before = len(acked)
    gevent.sleep(1.0)
    stop.set()
    gevent.joinall(greenlets, timeout=30)
    after_switch = len(acked) - before
    server = db.query_row("SELECT @@server_id")
    ticker.stop()
    db.close()
    Path(sys.argv[3]).write_text(json.dumps(acked))
    return {"acked": len(acked), "after_switch": after_switch, "errors": errors,
            "server_id": server[0] if server else None, "longest_gap": ticker.longest_gap}


if __name__ == "__main__":
    name, dsn = sys.argv[1], sys.argv[2]
    result = globals()[name](dsn)
    print(json.dumps(result, default=str), flush=True)
