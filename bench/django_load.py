"""Django under load: one ORM query per request, 16 client threads, on MariaDB.

    python -m bench.django_load [--dsn mysql://...] [--seconds 5] [--threads 16]

Serves tests/djangoproj (a view doing `Item.objects.get(pk=...)`) from a WSGI server with
a fixed pool of 16 worker threads (as gunicorn's gthread or waitress run Django), and
drives it with 16 client threads over keep-alive HTTP for --seconds, once per backend:

* Django's stock MySQL backend with CONN_MAX_AGE=0 (a new connection per request);
* the stock backend with CONN_MAX_AGE=60 (a persistent connection per worker thread);
* django-db-connection-pool (SQLAlchemy's QueuePool), pool of 4, if it is installed;
* fastpool.django.mysql, max_open=4.

Reports requests/s, p50 and p99 latency, the longest request, failed requests and the most
connections the server saw from the run (sampled every 20 ms). Each backend runs in its
own process; without --dsn a throwaway MariaDB is started (it needs mariadbd).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socketserver
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "tests" / "djangoproj"
DATABASE = "fastpool_bench_django"
ROWS = 100
CONFIGS = {
    "stock, CONN_MAX_AGE=0": {"FASTPOOL_DJANGO_ENGINE": "django.db.backends.mysql",
                              "FASTPOOL_DJANGO_CONN_MAX_AGE": "0"},
    "stock, CONN_MAX_AGE=60": {"FASTPOOL_DJANGO_ENGINE": "django.db.backends.mysql",
                               "FASTPOOL_DJANGO_CONN_MAX_AGE": "60"},
    "django-db-connection-pool, 4": {"FASTPOOL_DJANGO_ENGINE": "dj_db_conn_pool.backends.mysql"},
    "fastpool.django.mysql, max_open=4": {"FASTPOOL_DJANGO_ENGINE": "fastpool.django.mysql"},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", help="a mysql:// server whose user may create a database")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "django.json")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.dsn, args.seconds, args.threads)))
        return 0
    sys.path.insert(0, str(ROOT / "tests"))
    from mariadb_server import MariaDBServer, binaries

    server = None
    dsn = args.dsn
    if dsn is None:
        if binaries() is None:
            print("no MariaDB here (apt-get install mariadb-server) and no --dsn: nothing to run")
            return 1
        server = MariaDBServer()
        server.start()
        dsn = server.dsn
    try:
        results = {}
        for name, env in CONFIGS.items():
            if env["FASTPOOL_DJANGO_ENGINE"].startswith("dj_db_conn_pool"):
                try:
                    import dj_db_conn_pool  # noqa: F401
                except ImportError:
                    print(f"{name}: skipped (pip install django-db-connection-pool)")
                    continue
            print(f"{name}: {args.seconds:g} s under {args.threads} client threads ...", flush=True)
            proc = subprocess.run(
                [sys.executable, "-m", "bench.django_load", "--child", name, "--dsn", dsn,
                 "--seconds", str(args.seconds), "--threads", str(args.threads)],
                cwd=ROOT, capture_output=True, text=True, timeout=args.seconds * 4 + 120,
                env={**os.environ, **env},
            )
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-3000:])
                return 1
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        if server is not None:
            server.cleanup()
    print()
    print(table(results, args.threads))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    return 0


def table(results: dict[str, dict[str, Any]], threads: int) -> str:
    lines = [f"Django, one ORM query per request, {threads} client threads, 16 server threads",
             f"  {'':<36} {'req/s':>7} {'p50':>8} {'p99':>8} {'longest':>9} {'failed':>7}"
             f" {'server conns':>13}"]
    for name, r in results.items():
        lines.append(f"  {name:<36} {r['rps']:7.0f} {r['p50_ms']:6.2f}ms {r['p99_ms']:6.2f}ms"
                     f" {r['max_ms']:7.1f}ms {r['failed']:7d} {r['server_connections']:13d}")
    return "\n".join(lines)


# ---- one backend, in its own process -----------------------------------------------------------
class PooledWSGIServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """Requests handled by a fixed pool of worker threads (gthread-like), not one thread each."""

    allow_reuse_address = True
    request_queue_size = 128  # 16 clients connecting at once must not meet a full backlog
    workers = 16

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="wsgi-worker")

    def process_request(self, request: Any, client_address: Any) -> None:
        self._pool.submit(self.process_request_thread, request, client_address)

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def child(name: str, dsn: str, seconds: float, threads: int) -> dict[str, Any]:
    admin = _admin(dsn)  # creates the database
    sys.path.insert(0, str(PROJECT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "settings"
    os.environ["FASTPOOL_DJANGO_DSN"] = _with_database(dsn)
    os.environ.setdefault("FASTPOOL_DJANGO_POOL", '{"max_open": 4, "timeout": 30}')
    import django

    django.setup()
    from django.core.management import call_command
    from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer
    from django.core.wsgi import get_wsgi_application
    from django.db import connection, connections

    call_command("migrate", run_syncdb=True, verbosity=0)
    from shop.models import Item

    Item.objects.all().delete()
    Item.objects.bulk_create([Item(id=i, name=f"n{i}", qty=i) for i in range(1, ROWS + 1)])
    connections.close_all()

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    class Server(PooledWSGIServer, WSGIServer):
        pass

    httpd = Server(("127.0.0.1", 0), Quiet)
    httpd.set_app(get_wsgi_application())
    port = httpd.server_address[1]
    serving = threading.Thread(target=httpd.serve_forever, daemon=True)
    serving.start()

    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        cur = admin.cursor()
        while not stop.is_set():
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s",
                        (DATABASE,))
            peak[0] = max(peak[0], int(cur.fetchone()[0]))
            stop.wait(0.02)

    latencies: list[list[float]] = [[] for _ in range(threads)]
    failed = [0] * threads
    end = time.monotonic() + seconds

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = k
        while time.monotonic() < end:
            i = i % ROWS + 1
            t0 = time.perf_counter()
            try:
                conn.request("GET", f"/item/{i}")
                resp = conn.getresponse()
                body = resp.read()
                ok = resp.status == 200 and body.startswith(b"n")
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            latencies[k].append(time.perf_counter() - t0)
            if not ok:
                failed[k] += 1
        conn.close()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(client, range(threads)))
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join()
    httpd.shutdown()
    httpd.server_close()
    lat = sorted(x for per in latencies for x in per)
    pooled = getattr(connection, "pool", None)
    return {
        "name": name, "requests": len(lat), "rps": len(lat) / elapsed,
        "p50_ms": lat[len(lat) // 2] * 1e3, "p99_ms": lat[int(len(lat) * 0.99)] * 1e3,
        "max_ms": lat[-1] * 1e3, "failed": sum(failed), "server_connections": peak[0],
        "fastpool_open": pooled.stats().open if pooled is not None else None,
    }


def _with_database(dsn: str) -> str:
    base = dsn.split("?", 1)[0].rsplit("/", 1)[0]
    return f"{base}/{DATABASE}"


def _admin(dsn: str) -> Any:
    import MySQLdb

    from fastpool.url import parse_url

    kw = parse_url(dsn).connect_kwargs
    kw.pop("database", None)
    conn = MySQLdb.connect(autocommit=True, **kw)
    conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    return conn


if __name__ == "__main__":
    sys.exit(main())
