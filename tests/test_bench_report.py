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


def test_report_gives_the_scale_group_by_size_with_ratios_to_the_naive_pool():
    group = "scale: 16, 64 and 256 threads share 16 connections"

    def run(contender, threads, rps, longest, fewest):  # type: ignore[no-untyped-def]
        return bench(f"test_scale[{contender}-{threads}]", group, 3.0, extra={
            "contender": contender, "threads": threads, "requests_per_s": rps, "p50_ms": 1.0,
            "p99_ms": 9.0, "max_ms": longest, "fewest_requests_by_one_thread": fewest})

    data = {"machine_info": {"python_version": "3.11.7"}, "fastpool_backend": "x",
            "benchmarks": [run("fastpool", 16, 12000.0, 20.0, 900),
                           run("lifoqueue_pool", 16, 10000.0, 2000.0, 0),
                           run("fastpool", 256, 9000.0, 45.0, 50),
                           run("lifoqueue_pool", 256, 6000.0, 2100.0, 0)]}
    lines = report(data).splitlines()
    fp16 = next(ln for ln in lines if ln.split()[:2] == ["fastpool", "16"])
    assert "12000" in fp16 and "1.20x" in fp16 and "20.0ms" in fp16
    fp256 = next(ln for ln in lines if ln.split()[:2] == ["fastpool", "256"])
    assert "1.50x" in fp256 and fp256.rstrip().endswith("50")
    assert any("0.75x its throughput at 16" in ln for ln in lines)
