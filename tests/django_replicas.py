"""Django on a host list, run by tests/test_multihost_mariadb.py in a fresh interpreter:

    python tests/django_replicas.py SETTINGS_JSON

The default alias follows the primary, the replica alias reads on a replica through
fastpool.django.ReplicaRouter. Writes ("request" cycles: a statement, then
connection.close() as Django's request_finished does) run until the test's line on stdin
(after its switchover), then some more; one JSON line on stdout says what happened.
"""

from __future__ import annotations

import json
import sys
import time

import django
from django.conf import settings

settings.configure(DATABASES=json.loads(sys.argv[1]),
                   DATABASE_ROUTERS=["fastpool.django.ReplicaRouter"], USE_TZ=True)
django.setup()

from django.db import connections, router  # noqa: E402


def server_id(alias: str) -> int:
    conn = connections[alias]
    with conn.cursor() as cur:
        cur.execute("SELECT @@server_id")
        value = int(cur.fetchone()[0])
    conn.close()
    return value


def writes(who: str, count: int, errors: list[str]) -> int:
    done = 0
    for n in range(count):
        conn = connections[router.db_for_write(None)]
        try:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO writes (who, n) VALUES (%s, %s)", (who, n))
            done += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
        finally:
            conn.close()
    return done


errors: list[str] = []
result = {"read_alias": router.db_for_read(None), "write_alias": router.db_for_write(None),
          "primary_before": server_id("default"), "replica_before": server_id("replica")}
result["written_before"] = writes("django-before", 100, errors)
print("READY", flush=True)
sys.stdin.readline()
result["written_after"] = writes("django-after", 100, errors)
result["primary_after"] = server_id("default")
# The replica alias learns the new roles from its own probes, every recheck seconds (its
# idle connections to the promoted host are retired then): reads until then are served by
# the host that was a replica, correct if no longer spread.
roles = [(h.address, h.role) for h in connections["default"].pool.stats().hosts]
deadline = time.monotonic() + 10
while [(h.address, h.role) for h in connections["replica"].pool.stats().hosts] != roles:
    assert time.monotonic() < deadline, "the replica alias never saw the switchover"
    time.sleep(0.05)
result["replica_after"] = server_id("replica")
result["errors"] = errors
result["hosts"] = [(h.address, h.role) for h in connections["default"].pool.stats().hosts]
for alias in ("default", "replica"):
    connections[alias].close_pool()
print(json.dumps(result), flush=True)
