"""fastpool's comparison: every peer beside fastpool, measured in one run.

    python -m bench                      # a throwaway MariaDB if its binaries are here, else SQLite
    python -m bench --dsn mysql://u:pw@host:3306/db
    python -m bench --sqlite             # the embedded default, no server
    python -m bench --update-docs        # also rewrite the benchmarks page's figures and chart

Runs the suites in bench/ under pytest-benchmark (its progress shows as it goes), prints one
table per group with each contender's ratio to the group's reference, the contended run's
throughput and latency tails, and the leak scenario's failures; writes a PNG chart. Exits
non-zero only when something failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import pytest

from .chart import fmt_time, write_html

HERE = Path(__file__).parent
ROOT = HERE.parent
# The reference each timing group's ratios are taken against (the floor, or the original).
REFERENCE = {
    "checkout+checkin (no I/O)": "test_lifoqueue_get_put",
    "SELECT 1 per request": "test_select1_raw_connection",
    "iterate 100k rows": "test_rows_raw_cursor",
    "SQLAlchemy pool checkout+checkin (no I/O)": "test_sa_pool_cycle[QueuePool]",
    "SQLAlchemy engine SELECT 1": "test_sa_engine_select1[QueuePool]",
    "DBUtils checkout+checkin (no I/O)": "test_dbutils_cycle[DBUtils]",
    "DBUtils SELECT 1": "test_dbutils_select1[DBUtils]",
    "async: SELECT 1 from one task (200 per round)": "test_async_select1[raw-asyncmy]",
    "postgresql: SELECT 1 per request": "test_pg_select1[raw]",
    "postgresql: asyncio SELECT 1 from one task (200 per round)": "test_pg_async_select1[raw]",
    "asyncpg: fetchval SELECT 1 from one task (200 per round)": "test_asyncpg_select1[raw]",
    "asyncpg: acquire + release, nothing run (200 per round)": "test_asyncpg_cycle[asyncpg-pool]",
}
CONTENDED = "contended: 16 threads share 4 connections"
SCALE = "scale: 16, 64 and 256 threads share 16 connections"
TASKS = "async: 64 tasks share 4 connections"
STORM = "async: 64 tasks cancelled 0.3 s into SELECT SLEEP(2), pool of 8"
PG_CONTENDED = "postgresql: 16 threads share 4 connections"
PG_TASKS = "postgresql: 64 tasks share 4 connections"
PG_FLEET = "postgresql fleet: 8 processes x pool of 10, 20 server connections"
APG_TASKS = "asyncpg: 64 tasks share 4 connections"
APG_STORM = "asyncpg: 64 tasks cancelled 0.3 s into pg_sleep(2), pool of 8"
LEAK_PREFIX = "leak:"
FAILOVER = "failover: 8 writers through a switchover and a crash"
FIGURES_START, FIGURES_END = "<!-- bench:start -->", "<!-- bench:end -->"
BENCHMARKS_PAGE = ROOT / "docs" / "benchmarks.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--dsn", help="run against this mysql:// database")
    where.add_argument("--sqlite", action="store_true", help="run on SQLite, even if MariaDB is here")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each contended run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results",
                        help="where the JSON, the raw tables and the chart go (default: bench/results)")
    parser.add_argument("--verbose", action="store_true",
                        help="also show pytest-benchmark's own output and tables (always in"
                             " OUT/pytest-benchmark.txt)")
    parser.add_argument("--update-docs", action="store_true",
                        help="rewrite the figures of docs/benchmarks.md and docs/comparison.png from this run")
    args, rest = parser.parse_known_args(argv)
    if args.dsn:
        os.environ["FASTPOOL_BENCH_DSN"] = args.dsn
    if args.sqlite:
        os.environ["FASTPOOL_BENCH_BACKEND"] = "sqlite"
    os.environ["FASTPOOL_BENCH_SECONDS"] = str(args.seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    # Everything the run makes in temp dirs (the SQLite file, the throwaway server's data
    # dir) goes under one scratch dir, removed on every exit path: a normal end, a failure,
    # Ctrl-C, SIGTERM or SIGHUP.
    scratch = tempfile.mkdtemp(prefix="fastpool-compare-")
    # As root the throwaway PostgreSQL and PgBouncer run as nobody (they refuse root), in
    # dirs of their own under this one: nobody must be able to pass through it (mkdtemp
    # makes it 0700, and initdb then could not read its password file).
    os.chmod(scratch, 0o711)
    tempfile.tempdir = scratch
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    try:
        return run(args, rest)
    except KeyboardInterrupt:
        print("\ninterrupted: the temporary files and the server are removed", file=sys.stderr)
        return 130
    finally:
        _cleanup(scratch)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _cleanup(scratch: str) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from mariadb_server import LIVE
    from pg_server import LIVE as PG_LIVE

    for server in [*LIVE, *PG_LIVE]:
        server.cleanup()  # type: ignore[attr-defined]
    tempfile.tempdir = None
    shutil.rmtree(scratch, ignore_errors=True)


def run(args: argparse.Namespace, rest: list[str]) -> int:
    from .support import choose_backend

    _kind, why = choose_backend()
    print(f"fastpool comparison: database: {why}", flush=True)
    out = args.out / "bench.json"
    raw = args.out / "pytest-benchmark.txt"
    print(f"running the suites in bench/ (pytest-benchmark); its raw tables go to {raw}",
          flush=True)
    pytest_args = [
        str(HERE), "-p", "no:cacheprovider", "--benchmark-group-by=group",
        "--benchmark-columns=min,median,ops", f"--benchmark-json={out}", "-rs", *rest,
    ]
    if args.verbose:
        code = pytest.main(pytest_args)
    else:
        from .progress import ProgressPlugin

        plugin = ProgressPlugin(sys.stderr)
        # pytest's own output, pytest-benchmark's tables and its log lines ("Wrote
        # benchmark data ...", on sys.stderr) to the file; the bars keep the real stderr,
        # taken above, which --capture=sys leaves alone.
        with raw.open("w") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
            code = pytest.main([*pytest_args, "--capture=sys", "-q"], plugins=[plugin])
        if plugin.failed:
            print(f"failed: {', '.join(plugin.failed)} (details in {raw})", file=sys.stderr)
    if code not in (0, 5) or not out.exists():
        if not args.verbose:
            print(f"the suites failed (exit {int(code)}); pytest's output is in {raw}", file=sys.stderr)
        return int(code) or 1
    data = json.loads(out.read_text())
    text = report(data)
    print("\n" + text)
    chart = args.out / "comparison.png"
    drawn = plot(data, chart)
    page = args.out / "comparison.html"
    write_html(page, text, chart if drawn else None)
    print()
    if drawn:
        print(f"chart:  {chart}")
    print(f"report: {page} (the summary and the chart in one file)")
    print(f"raw pytest-benchmark tables: {raw}; data: {out}")
    if args.update_docs:
        docs_chart = ROOT / "docs" / "comparison.png"
        docs_chart.parent.mkdir(exist_ok=True)
        if plot(data, docs_chart):
            update_figures(text)
            print(f"{BENCHMARKS_PAGE.relative_to(ROOT)} and {docs_chart.relative_to(ROOT)} updated")
    return 0


# ---- the report ----------------------------------------------------------------------------
def by_group(data: dict) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for b in data["benchmarks"]:
        groups.setdefault(b["group"], []).append(b)
    return groups


def versions() -> str:
    names = ["mysqlclient", "SQLAlchemy", "DBUtils", "mysql-connector-python", "asyncmy",
             "aiomysql", "psycopg", "psycopg-pool", "asyncpg"]
    found = []
    for n in names:
        try:
            found.append(f"{n} {metadata.version(n)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def backend_name(data: dict) -> str:
    return data.get("fastpool_backend", os.environ.get("FASTPOOL_BENCH_BACKEND_NAME", "?"))


def report(data: dict) -> str:
    mi = data["machine_info"]
    lines = [
        f"fastpool comparison, {datetime.date.today().isoformat()}: "
        f"{mi.get('cpu', {}).get('brand_raw', platform.processor() or '?')}, "
        f"{os.cpu_count()} cores, Python {mi['python_version']}, {platform.system()}",
        f"database: {backend_name(data)}; {versions()}",
    ]
    for group, benches in by_group(data).items():
        if group in (CONTENDED, TASKS, PG_CONTENDED, PG_TASKS, APG_TASKS):
            unit = "task" if group in (TASKS, PG_TASKS, APG_TASKS) else "thread"
            lines += contended_table(benches, group, unit)
        elif group == PG_FLEET:
            lines += fleet_table(benches)
        elif group in (STORM, APG_STORM):
            lines += storm_table(benches, group)
        elif group == SCALE:
            lines += scale_table(benches)
        elif group.startswith(LEAK_PREFIX):
            lines += leak_table(group, benches)
        elif group == FAILOVER:
            lines += failover_table(benches)
        else:
            lines += timing_table(group, benches)
    return "\n".join(lines)


def short(name: str) -> str:
    return re.sub(r"^test_", "", name)


def timing_table(group: str, benches: list[dict]) -> list[str]:
    ref_name = REFERENCE.get(group)
    ref = next((b for b in benches if b["name"] == ref_name), None)
    lines = [f"\n{group}" + (f" (ratio to {short(ref_name)}, median / min)" if ref else "")]
    for b in sorted(benches, key=lambda b: b["stats"]["median"]):
        med, low = b["stats"]["median"], b["stats"]["min"]
        ratio = (f"{med / ref['stats']['median']:6.2f}x / {low / ref['stats']['min']:.2f}x"
                 if ref else "")
        lines.append(f"  {short(b['name']):<40} {fmt_time(med):>10}  {ratio}")
    return lines


def contended_table(benches: list[dict], group: str = CONTENDED, unit: str = "thread") -> list[str]:
    lines = [f"\n{group}",
             f"  {'':<40} {'req/s':>8} {'p50':>8} {'p99':>8} {'longest':>9} {'fewest/' + unit:>14}"]
    for b in sorted(benches, key=lambda b: -b["extra_info"].get("requests_per_s", 0)):
        e = b["extra_info"]
        if not e:
            continue
        lines.append(f"  {short(b['name']):<40} {e['requests_per_s']:8.0f} {e['p50_ms']:6.2f}ms "
                     f"{e['p99_ms']:6.2f}ms {e['max_ms']:7.1f}ms {e['fewest_requests_by_one_thread']:14d}")
    return lines


def storm_table(benches: list[dict], group: str = STORM) -> list[str]:
    lines = [f"\n{group}",
             f"  {'':<40} {'cancelled':>9} {'in':>8} {'left running 1 s later':>23} {'wrong answers':>14}"
             f" {'errors after':>13} {'connections lost':>17}"]
    for b in benches:
        e = b["extra_info"]
        if "left_running" not in e:
            continue
        lost = f"{e['lost']:17d}" if "lost" in e else f"{'-':>17}"
        lines.append(f"  {short(b['name']):<40} {e['cancelled']:9d} {e['cancel_s'] * 1e3:6.1f}ms "
                     f"{e['left_running']:18d} of 8 {e['wrong_answers']:14d} {e['errors_after']:13d} {lost}")
    return lines


def fleet_table(benches: list[dict]) -> list[str]:
    lines = [f"\n{PG_FLEET}",
             f"  {'':<22} {'served':>7} {'errors':>7} {'p99':>9} {'longest':>9}"
             f" {'server conns (peak)':>20} {'connects failed':>16} {'outsider refused':>17}"]
    for b in benches:
        e = b["extra_info"]
        if "served" not in e:
            continue
        lines.append(f"  {short(b['name']):<22} {e['served']:7d} {e['errors']:7d} "
                     f"{e['p99_ms']:7.1f}ms {e['max_ms']:7.1f}ms {e['peak_server_connections']:20d} "
                     f"{e['connect_errors']:16d} {e['outsider_refused']:8d} of "
                     f"{e['outsider_refused'] + e['outsider_ok']:<4d}")
        if e.get("error_kinds"):
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(e["error_kinds"].items()))
            lines.append(f"  {'':<22} errors: {kinds}")
    return lines


def scale_rows(benches: list[dict]) -> dict[int, dict[str, dict]]:
    """{threads: {contender: extra_info}} of the scale group's runs."""
    rows: dict[int, dict[str, dict]] = {}
    for b in benches:
        e = b["extra_info"]
        if e and "contender" in e:
            rows.setdefault(int(e["threads"]), {})[e["contender"]] = e
    return dict(sorted(rows.items()))


def scale_table(benches: list[dict]) -> list[str]:
    lines = [f"\n{SCALE} (ratio: req/s to lifoqueue_pool's at the same size)",
             f"  {'':<24} {'threads':>7} {'req/s':>8} {'ratio':>6} {'p99':>8} {'longest':>9}"
             f" {'fewest/thread':>14}"]
    for threads, runs in scale_rows(benches).items():
        ref = runs.get("lifoqueue_pool", {}).get("requests_per_s")
        for name, e in sorted(runs.items(), key=lambda kv: -kv[1]["requests_per_s"]):
            ratio = f"{e['requests_per_s'] / ref:5.2f}x" if ref else ""
            lines.append(f"  {name:<24} {threads:7d} {e['requests_per_s']:8.0f} {ratio:>6} "
                         f"{e['p99_ms']:6.2f}ms {e['max_ms']:7.1f}ms "
                         f"{e['fewest_requests_by_one_thread']:14d}")
    fp = {t: r["fastpool"]["requests_per_s"] for t, r in scale_rows(benches).items() if "fastpool" in r}
    if fp and min(fp) != max(fp):
        lines.append(f"  fastpool at {max(fp)} threads: {fp[max(fp)] / fp[min(fp)]:.2f}x its "
                     f"throughput at {min(fp)}")
    return lines


def leak_table(group: str, benches: list[dict]) -> list[str]:
    lines = [f"\n{group}", f"  {'':<40} {'per call':>10} {'failed':>7} {'open after':>11}"]
    for b in benches:
        e = b["extra_info"]
        lines.append(f"  {short(b['name']):<40} {fmt_time(b['stats']['median']):>10} "
                     f"{e.get('failed_calls', 0):7d} {e.get('open_after', 0):11d}")
    return lines


def failover_table(benches: list[dict]) -> list[str]:
    lines = [f"\n{FAILOVER} (python -m bench.failover for the full run)",
             f"  {'':<58} {'writes again':>12} {'errors':>7} {'lost':>12}"]
    for b in benches:
        e = b["extra_info"]
        back = "never" if e.get("back") is None else f"{e['back']:.2f} s"
        lines.append(f"  {e['engine'] + ' ' + e['event'] + ': ' + e['pool']:<58.58} {back:>12}"
                     f" {e['errors']:7d} {str(e['missing']) + ' of ' + str(e['acked']):>12}")
    return lines


# ---- the chart ---------------------------------------------------------------------------
def plot(data: dict, path: Path) -> bool:
    from .chart import plot as draw

    return draw(data, path, f"fastpool comparison on {backend_name(data)}", by_group(data),
                REFERENCE, CONTENDED, LEAK_PREFIX, scale_rows(by_group(data).get(SCALE, [])),
                TASKS, STORM, (PG_CONTENDED, PG_TASKS, PG_FLEET), FAILOVER)


def update_figures(text: str) -> None:
    """Put this run's summary between the markers of the benchmarks page (docs/)."""
    body = BENCHMARKS_PAGE.read_text()
    block = (f"{FIGURES_START}\nRegenerated by `python -m bench --update-docs`:\n\n"
             f"```\n{text}\n```\n\n![fastpool comparison](comparison.png)\n{FIGURES_END}")
    if FIGURES_START in body:
        body = re.sub(re.escape(FIGURES_START) + ".*?" + re.escape(FIGURES_END),
                      lambda _m: block, body, flags=re.S)
    else:
        body = body.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_PAGE.write_text(body)


if __name__ == "__main__":
    sys.exit(main())
