"""The comparison's report: ratios to the group's reference, contended and leak tables."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).parent.parent))  # after site-packages: fastpool stays the installed one

from bench.__main__ import report  # noqa: E402


def bench(name, group, median, minimum=None, extra=None):  # type: ignore[no-untyped-def]
    return {"name": name, "group": group, "extra_info": extra or {},
            "stats": {"median": median, "min": minimum or median}}


def test_report_gives_ratios_to_the_reference_and_the_tails():
    data = {
        "machine_info": {"python_version": "3.11.7", "cpu": {"brand_raw": "TestCPU"}},
        "fastpool_backend": "SQLite 3.x",
        "benchmarks": [
            bench("test_lifoqueue_get_put", "checkout+checkin (no I/O)", 2e-6),
            bench("test_fastpool_with_conn", "checkout+checkin (no I/O)", 5e-7, 4e-7),
            bench("test_contended_fastpool", "contended: 16 threads share 4 connections", 3.0,
                  extra={"requests_per_s": 9000.0, "p50_ms": 1.5, "p99_ms": 2.5, "max_ms": 14.0,
                         "fewest_requests_by_one_thread": 1700}),
            bench("test_leak_go_style_pool", "leak: x", 0.01,
                  extra={"failed_calls": 297, "open_after": 4}),
        ],
    }
    text = report(data)
    assert "TestCPU" in text and "SQLite 3.x" in text
    assert "fastpool_with_conn" in text and "0.25x / 0.20x" in text
    assert "lifoqueue_get_put" in text and "1.00x / 1.00x" in text
    line = next(ln for ln in text.splitlines() if "contended_fastpool" in ln)
    assert "9000" in line and "14.0ms" in line and line.rstrip().endswith("1700")
    line = next(ln for ln in text.splitlines() if "leak_go_style_pool" in ln)
    assert line.split()[-2:] == ["297", "4"]
