"""The examples run, and show what they claim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_leak_demo_shows_go_style_exhaustion_and_fastpool_at_one_connection():
    res = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "leak_demo.py"), "--calls", "200", "--max-open", "4"],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    last = [ln for ln in res.stdout.splitlines() if ln.strip().startswith("200")][0].split()
    calls, go_open, go_failed, fp_open, fp_failed = map(int, last)
    assert (calls, go_open, fp_open, fp_failed) == (200, 4, 1, 0)
    assert go_failed == 196  # every call after the fourth found no connection
    assert "200 dropped Rows reclaimed, 1 connection(s) open, 0 in use" in res.stdout
