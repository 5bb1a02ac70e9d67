"""fastpool under eventlet's monkey-patching, run in a fresh interpreter by
tests/test_gevent.py: ``python tests/eventlet_scenario.py DSN`` prints one JSON line.

64 green threads share 4 PyMySQL connections (3 x SELECT SLEEP(0.05) each), then a
deadline cancels a SELECT SLEEP(5) on the server.
"""

from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fastpool  # noqa: E402
from fastpool.green import patched  # noqa: E402
from green_checks import cancel_by_deadline  # noqa: E402


def main(dsn: str) -> dict:
    db = fastpool.open(dsn, max_open=4, timeout=20)
    errors: list[str] = []
    first_served: list[int] = []

    def task(i: int) -> None:
        try:
            for n in range(3):
                with db.conn() as c:
                    if n == 0:
                        first_served.append(i)
                    c.execute("DO SLEEP(0.05)")
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    t0 = time.perf_counter()
    green = eventlet.GreenPool(64)
    for i in range(64):
        green.spawn(task, i)
        eventlet.sleep(0)  # each queues before the next starts
    green.waitall()
    seconds = time.perf_counter() - t0
    checkins = db.stats().checkins
    cancelled = cancel_by_deadline(db, eventlet.sleep)
    s = db.stats()
    db.close()
    return {"patched": patched(), "seconds": seconds, "errors": errors,
            "first_served": first_served, "checkins": checkins, "in_use": s.in_use,
            **cancelled}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])), flush=True)
