"""fastpool's comparison: run the bench/ suites with pytest-benchmark and print, per group,
each pool's time per operation and its ratio to the group's reference, from one run.

    python -m bench [--json FILE] [pytest-benchmark args...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).parent
# The reference each group's ratios are taken against.
REFERENCE = {
    "checkout+checkin (no I/O)": "test_lifoqueue_get_put",
    "SELECT 1 per request": "test_select1_raw_connection",
    "iterate 100k rows": "test_rows_raw_cursor",
    "SQLAlchemy pool checkout+checkin (no I/O)": "test_sa_pool_cycle[QueuePool]",
    "SQLAlchemy engine SELECT 1": "test_sa_engine_select1[QueuePool]",
    "DBUtils checkout+checkin (no I/O)": "test_dbutils_cycle[DBUtils]",
    "DBUtils SELECT 1": "test_dbutils_select1[DBUtils]",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also keep pytest-benchmark's JSON here")
    args, rest = parser.parse_known_args(argv)
    out = args.json or Path(tempfile.mkdtemp(prefix="fastpool-bench-")) / "bench.json"
    code = pytest.main([
        str(HERE), "-q", "-p", "no:cacheprovider", "--benchmark-group-by=group",
        "--benchmark-columns=min,median,ops", f"--benchmark-json={out}", *rest,
    ])
    if code != 0:
        return int(code)
    print(report(json.loads(out.read_text())))
    return 0


def report(data: dict) -> str:
    groups: dict[str, list[dict]] = {}
    for b in data["benchmarks"]:
        groups.setdefault(b["group"], []).append(b)
    lines = [f"fastpool comparison on {data['machine_info'].get('cpu', {}).get('brand_raw', '?')}, "
             f"Python {data['machine_info']['python_version']}"]
    for group, benches in groups.items():
        ref_name = REFERENCE.get(group)
        ref = next((b for b in benches if b["name"] == ref_name), None)
        lines.append(f"\n{group}" + (f"  (ratios to {ref_name})" if ref else ""))
        lines.append(f"  {'':<36} {'median':>13} {'min':>13}  {'median':>7} {'min':>7}")
        for b in sorted(benches, key=lambda b: b["stats"]["median"]):
            med, low = b["stats"]["median"], b["stats"]["min"]
            ratios = (f"{med / ref['stats']['median']:6.2f}x {low / ref['stats']['min']:6.2f}x"
                      if ref else "")
            lines.append(f"  {b['name']:<36} {med * 1e9:10.0f} ns {low * 1e9:10.0f} ns  {ratios}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
