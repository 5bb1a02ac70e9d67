"""The examples run, and show what they claim."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_deadline_story_cancels_the_slow_statements_and_keeps_the_fast_ones_flowing(mariadb):
    res = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "deadline_story.py"), "--dsn", mariadb.dsn,
         "--seconds", "3"],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    rows = {}
    for line in res.stdout.splitlines():
        if line.startswith(("no deadline", "fastpool.deadline")):
            *mode, requests, in_time, _share, _p99, running, cancelled = line.split()
            rows[" ".join(mode)] = (int(requests), int(in_time), int(running), int(cancelled))
    plain, with_deadline = rows["no deadline"], rows["fastpool.deadline(1.0)"]
    assert with_deadline[2] == 0  # nothing of a gone caller still runs on the server
    assert with_deadline[3] > 0 and plain[3] == 0
    assert with_deadline[1] > 2 * plain[1]  # many more requests served within the gateway's 1 s


def test_the_fastapi_example_serves_requests_from_the_asyncpg_drop_in(postgres, monkeypatch):
    pytest.importorskip("asyncpg")
    testclient = pytest.importorskip("fastapi.testclient")
    monkeypatch.setenv("DATABASE_URL", postgres.dsn)
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    sys.modules.pop("fastapi_asyncpg", None)
    example = importlib.import_module("fastapi_asyncpg")
    with testclient.TestClient(example.app) as client:  # runs the lifespan: the pool opens
        for n in range(20):
            assert client.get(f"/double/{n}").json() == {"n": n, "double": 2 * n}
            assert client.get(f"/in-transaction/{n}").json() == {"n": n, "squared": n * n}
        stats = client.get("/stats").json()
        assert stats["in_use"] == 0 and 1 <= stats["open"] <= 10
        pool = example.app.state.pool
    assert pool.is_closing() and pool.get_size() == 0  # closed with the app
