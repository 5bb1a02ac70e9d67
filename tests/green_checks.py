"""What the gevent and eventlet scenarios share (imported after they have patched)."""

from __future__ import annotations

import time
from typing import Any, Callable

import fastpool

RUNNING_SLEEPS = ("SELECT COUNT(*) FROM information_schema.processlist"
                  " WHERE info LIKE 'SELECT SLEEP(5)%'")


def cancel_by_deadline(db: fastpool.Pool, sleep: Callable[[float], Any]) -> dict:
    """fastpool.deadline(0.5) around SELECT SLEEP(5); then, 0.3 s later (sleeping
    cooperatively), how many such statements still run on the server."""
    t0 = time.perf_counter()
    try:
        with fastpool.deadline(0.5):
            db.query_row("SELECT SLEEP(5)")
        outcome = "returned"
    except fastpool.DeadlineExceeded as exc:
        outcome = type(exc).__name__
    took = time.perf_counter() - t0
    sleep(0.3)
    running = db.query_row(RUNNING_SLEEPS)
    return {"outcome": outcome, "took": took, "still_running": running[0] if running else None}
