"""fastpool's comparison: every peer beside fastpool, measured in one run.

    python -m bench                      # a throwaway MariaDB if its binaries are here, else SQLite
    python -m bench --dsn mysql://u:pw@host:3306/db
    python -m bench --sqlite             # the embedded default, no server
    python -m bench --update-readme      # also rewrite the README's figures and chart

Runs the suites in bench/ under pytest-benchmark (its progress shows as it goes), prints one
table per group with each contender's ratio to the group's reference, the contended run's
throughput and latency tails, and the leak scenario's failures; writes a PNG chart. Exits
non-zero only when something failed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import pytest

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
}
CONTENDED = "contended: 16 threads share 4 connections"
LEAK_PREFIX = "leak:"
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--dsn", help="run against this mysql:// database")
    where.add_argument("--sqlite", action="store_true", help="run on SQLite, even if MariaDB is here")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each contended run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results",
                        help="where the JSON and the chart go (default: bench/results)")
    parser.add_argument("--update-readme", action="store_true",
                        help="rewrite the README's figures and docs/comparison.png from this run")
    args, rest = parser.parse_known_args(argv)
    if args.dsn:
        os.environ["FASTPOOL_BENCH_DSN"] = args.dsn
    if args.sqlite:
        os.environ["FASTPOOL_BENCH_BACKEND"] = "sqlite"
    os.environ["FASTPOOL_BENCH_SECONDS"] = str(args.seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "bench.json"
    print("fastpool comparison: running the suites in bench/ (pytest-benchmark)...", flush=True)
    code = pytest.main([
        str(HERE), "-p", "no:cacheprovider", "--benchmark-group-by=group",
        "--benchmark-columns=min,median,ops", f"--benchmark-json={out}", "-rs", *rest,
    ])
    if code not in (0, 5) or not out.exists():
        return int(code) or 1
    data = json.loads(out.read_text())
    text = report(data)
    print("\n" + text)
    chart = args.out / "comparison.png"
    if plot(data, chart):
        print(f"\nchart: {chart}")
    if args.update_readme:
        docs_chart = ROOT / "docs" / "comparison.png"
        docs_chart.parent.mkdir(exist_ok=True)
        if plot(data, docs_chart):
            update_readme(text, data)
            print(f"README.md and {docs_chart.relative_to(ROOT)} updated")
    return 0


# ---- the report ----------------------------------------------------------------------------
def by_group(data: dict) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for b in data["benchmarks"]:
        groups.setdefault(b["group"], []).append(b)
    return groups


def versions() -> str:
    names = ["mysqlclient", "SQLAlchemy", "DBUtils", "mysql-connector-python"]
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
        if group == CONTENDED:
            lines += contended_table(benches)
        elif group.startswith(LEAK_PREFIX):
            lines += leak_table(group, benches)
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


def contended_table(benches: list[dict]) -> list[str]:
    lines = [f"\n{CONTENDED}",
             f"  {'':<40} {'req/s':>8} {'p50':>8} {'p99':>8} {'longest':>9} {'fewest/thread':>14}"]
    for b in sorted(benches, key=lambda b: -b["extra_info"].get("requests_per_s", 0)):
        e = b["extra_info"]
        if not e:
            continue
        lines.append(f"  {short(b['name']):<40} {e['requests_per_s']:8.0f} {e['p50_ms']:6.2f}ms "
                     f"{e['p99_ms']:6.2f}ms {e['max_ms']:7.1f}ms {e['fewest_requests_by_one_thread']:14d}")
    return lines


def leak_table(group: str, benches: list[dict]) -> list[str]:
    lines = [f"\n{group}", f"  {'':<40} {'per call':>10} {'failed':>7} {'open after':>11}"]
    for b in benches:
        e = b["extra_info"]
        lines.append(f"  {short(b['name']):<40} {fmt_time(b['stats']['median']):>10} "
                     f"{e.get('failed_calls', 0):7d} {e.get('open_after', 0):11d}")
    return lines


def fmt_time(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


# ---- the chart -------------------------------------------------------------------------------
def plot(data: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no chart)")
        return False
    benches = [b for b in by_group(data).get(CONTENDED, []) if b["extra_info"]]
    select1 = by_group(data).get("SELECT 1 per request", [])
    if not benches:
        return False
    benches.sort(key=lambda b: -b["extra_info"]["requests_per_s"])
    names = [short(b["name"]).replace("contended_", "") for b in benches]
    fig, axes = plt.subplots(1, 3 if select1 else 2, figsize=(16 if select1 else 11, 4.8))
    ax = axes[0]
    colors = ["tab:green" if "fastpool" in n.lower() or "fastqueuepool" in n.lower() else "tab:gray"
              for n in names]
    ax.barh(names, [b["extra_info"]["requests_per_s"] for b in benches], color=colors)
    ax.invert_yaxis()
    ax.set_title("contended throughput (req/s, higher is better)\n16 threads, 4 connections")
    ax = axes[1]
    y = range(len(names))
    for key, label, marker in (("p50_ms", "p50", "o"), ("p99_ms", "p99", "s"), ("max_ms", "longest", "x")):
        ax.scatter([b["extra_info"][key] for b in benches], list(y), label=label, marker=marker)
    ax.set_yticks(list(y), names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_title("contended latency (ms, log scale, lower is better)")
    # Below the plot: inside it would hide the far-right points, the starved callers.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, frameon=False)
    if select1:
        ax = axes[2]
        ref = next((b for b in select1 if b["name"] == REFERENCE["SELECT 1 per request"]), None)
        items = sorted(select1, key=lambda b: b["stats"]["median"])
        labels = [short(b["name"]).replace("select1_", "") for b in items]
        vals = [b["stats"]["median"] / ref["stats"]["median"] if ref else b["stats"]["median"] for b in items]
        ax.barh(labels, vals, color=["tab:green" if "fastpool" in n else "tab:gray" for n in labels])
        ax.invert_yaxis()
        ax.set_title("SELECT 1 per request\n(x a raw connection, lower is better)")
    fig.suptitle(f"fastpool comparison on {backend_name(data)}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def update_readme(text: str, data: dict) -> None:
    readme = ROOT / "README.md"
    body = readme.read_text()
    block = (f"{README_START}\nRegenerated by `python -m bench --update-readme`:\n\n"
             f"```\n{text}\n```\n\n![fastpool comparison](docs/comparison.png)\n{README_END}")
    if README_START in body:
        body = re.sub(re.escape(README_START) + ".*?" + re.escape(README_END),
                      lambda _m: block, body, flags=re.S)
    else:
        body = body.rstrip() + "\n\n" + block + "\n"
    readme.write_text(body)


if __name__ == "__main__":
    sys.exit(main())
