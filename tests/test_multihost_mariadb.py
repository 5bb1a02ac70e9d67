"""A host list on real MariaDB replication (GTID, semi-synchronous), promoted in SQL as an
orchestrator does: a switchover and a crash under load, a user who bypasses read_only,
reads on the replica within a lag bound."""

from __future__ import annotations

import importlib.util
import time
from typing import Any

import pytest

import fastpool
from fastpool import PoolTimeout

from mariadb_replication import ADMIN_USER, MariaDBPair
from replication_load import (AsyncWorkload, Workload, child_result, events_of, ready_child,
                              writer)

pytestmark = pytest.mark.slow


def rows_on(pair: MariaDBPair, server: Any) -> set[tuple[str, int]]:
    pair.sql(server, "FLUSH TABLES")
    return {(who, int(n)) for who, n in pair.sql(server, "SELECT who, n FROM fastpool_test.writes")}


def server_id(pair: MariaDBPair, server: Any) -> int:
    return int(pair.sql(server, "SELECT @@server_id")[0][0])


def test_a_switchover_under_load_costs_no_caller_an_error(mariadb_pair: MariaDBPair) -> None:
    pair = mariadb_pair
    db = fastpool.open(pair.dsn(), timeout=20)
    seen = events_of(db)
    old, new = pair.primary, pair.replica
    load = Workload(writer(db), workers=4, prefix="switch").start()
    try:
        time.sleep(0.5)
        promoted = pair.switchover()
        time.sleep(1.0)
    finally:
        load.stop()
    try:
        assert load.errors == [], load.error_kinds()
        back = load.first_ack_after(promoted)
        assert back is not None and back < 1.0, back
        assert load.missing(rows_on(pair, new)) == []
        addr = f"127.0.0.1:{new.port}"
        assert ("failover", addr, f"from 127.0.0.1:{old.port}") in seen
        assert db.stats().hosts[[h.address for h in db.stats().hosts].index(addr)].role == "primary"
        # Writes went on, on the new primary: the pool follows it without a restart.
        assert db.query_row("SELECT @@server_id") == (server_id(pair, new),)
    finally:
        db.close()


def test_a_user_with_read_only_admin_sends_no_write_to_the_demoted_server(mariadb_pair: MariaDBPair) -> None:
    # READ_ONLY ADMIN lets this user write on a read_only server: the demoted primary
    # would take the writes and lose them when it follows the new one. The orchestrator
    # ends such users' sessions; the pool must then not reconnect there.
    pair = mariadb_pair
    db = fastpool.open(pair.dsn(user=ADMIN_USER), timeout=20)
    new = pair.replica
    load = Workload(writer(db), workers=4, prefix="admin").start()
    try:
        time.sleep(0.5)
        pair.switchover(kill_sessions_of=ADMIN_USER)
        time.sleep(1.0)
    finally:
        load.stop()
    try:
        # Statements in flight when their sessions were killed may fail; none other.
        assert len(load.errors) <= load.workers, load.error_kinds()
        assert len(load.acked) > 100
        assert load.missing(rows_on(pair, new)) == []
    finally:
        db.close()


def test_reads_go_to_the_replica_and_to_the_primary_past_the_lag_bound(mariadb_pair: MariaDBPair) -> None:
    pair = mariadb_pair
    db = fastpool.open(pair.dsn(), recheck=0.2, max_replica_lag=5.0)
    strict = fastpool.open(pair.dsn(), recheck=0.2, max_replica_lag=5.0, replica_fallback=False,
                           timeout=0.5)
    primary_id, replica_id = server_id(pair, pair.primary), server_id(pair, pair.replica)
    try:
        assert db.query_row("SELECT @@server_id") == (primary_id,)
        assert {db.replicas.query_row("SELECT @@server_id") for _ in range(5)} == {(replica_id,)}
        with db.replicas.conn() as c:
            assert c.query_row("SELECT @@server_id") == (replica_id,)
        # Replication stopped: Seconds_Behind_Master is NULL, the lag unknown, so the
        # replica no longer qualifies; reads go to the primary, or wait and time out.
        pair.sql(pair.replica, "STOP SLAVE SQL_THREAD")
        try:
            deadline = time.monotonic() + 5
            while db.replicas.query_row("SELECT @@server_id") != (primary_id,):
                assert time.monotonic() < deadline, db.stats().hosts
                time.sleep(0.05)
            with pytest.raises(PoolTimeout, match="no replica host"):
                strict.replicas.query_row("SELECT 1")
        finally:
            pair.sql(pair.replica, "START SLAVE SQL_THREAD")
        deadline = time.monotonic() + 5
        while db.replicas.query_row("SELECT @@server_id") != (replica_id,):
            assert time.monotonic() < deadline, db.stats().hosts
            time.sleep(0.05)
        hosts = {h.address: h for h in db.stats().hosts}
        replica = hosts[f"127.0.0.1:{pair.replica.port}"]
        assert replica.role == "replica" and replica.lag is not None and replica.lag <= 5.0
        assert replica.open >= 1
    finally:
        db.close()
        strict.close()


def test_a_switchover_under_gevent(mariadb_pair: MariaDBPair, tmp_path: Any) -> None:
    # gunicorn's gevent worker: monkey.patch_all(), PyMySQL; the host watchers are
    # greenlets then, and nothing may block the hub.
    pytest.importorskip("gevent")
    pytest.importorskip("pymysql")
    import json

    pair = mariadb_pair
    new = pair.replica
    proc = gevent_writers(pair, tmp_path / "acked.json")
    pair.switchover()
    result = child_result(proc)
    assert result["errors"] == [], result["errors"][:5]
    assert result["after_switch"] > 50 and result["server_id"] == server_id(pair, new)
    assert result["longest_gap"] < 0.5, result  # the hub kept running
    acked = {(w, n) for w, n in json.loads((tmp_path / "acked.json").read_text())}
    assert len(acked) == result["acked"] and acked <= rows_on(pair, new)


def test_django_follows_the_primary_and_reads_on_the_replica(mariadb_pair: MariaDBPair) -> None:
    pytest.importorskip("django")
    import json
    from pathlib import Path

    from mariadb_replication import APP_USER, PASSWORD

    pair = mariadb_pair
    base = {"ENGINE": "fastpool.django.mysql", "NAME": "fastpool_test", "USER": APP_USER,
            "PASSWORD": PASSWORD, "PORT": "3306", "CONN_MAX_AGE": 0,
            "HOST": ",".join(f"127.0.0.1:{s.port}" for s in pair.servers)}
    databases = {"default": {**base, "OPTIONS": {"pool": {"max_open": 4, "timeout": 20}}},
                 "replica": {**base, "OPTIONS": {"pool": {"target": "prefer-replica",
                                                          "max_open": 4, "recheck": 0.5}},
                             "TEST": {"MIRROR": "default"}}}
    proc = ready_child(Path(__file__).with_name("django_replicas.py"), json.dumps(databases))
    old, new = pair.primary, pair.replica
    pair.switchover()
    r = child_result(proc)
    assert (r["read_alias"], r["write_alias"]) == ("replica", "default"), r
    assert r["primary_before"] == server_id(pair, old) == r["replica_after"], r
    assert r["replica_before"] == server_id(pair, new) == r["primary_after"], r
    # Django runs each statement on a connection it holds, which the pool cannot move:
    # the first write after the switchover, on an idle connection to the demoted server,
    # is refused (1290) and its request gets the error; the pool learns from it, and every
    # later one goes to the new primary.
    assert len(r["errors"]) <= 1 and all("1290" in e for e in r["errors"]), r["errors"]
    assert r["written_before"] == 100 and r["written_after"] == 100 - len(r["errors"])
    rows = rows_on(pair, new)
    assert len({("django-after", n) for n in range(100)} & rows) == r["written_after"]


def test_fastpool_aio_on_asyncmy_through_a_switchover(mariadb_pair: MariaDBPair) -> None:
    pytest.importorskip("asyncmy")
    import fastpool.aio

    pair = mariadb_pair
    old, new = pair.primary, pair.replica
    seen: dict[str, Any] = {}

    async def open_pool() -> tuple[Any, Any]:
        db = fastpool.aio.open(pair.dsn(driver="asyncmy"), timeout=20, max_open=8)
        seen["replica_before"] = await db.replicas.query_row("SELECT @@server_id")

        async def write(who: str, n: int) -> None:
            await db.execute("INSERT INTO writes (who, n) VALUES (%s, %s)", (who, n))

        async def close() -> None:
            seen["primary"] = await db.query_row("SELECT @@server_id")
            seen["replica"] = await db.replicas.query_row("SELECT @@server_id")
            seen["hosts"] = {h.address: h.role for h in db.stats().hosts}
            await db.close()

        return write, close

    load = AsyncWorkload(open_pool, workers=8, prefix="task").start()
    try:
        time.sleep(0.5)
        promoted = pair.switchover()
        time.sleep(1.0)
    finally:
        load.stop()
    assert load.errors == [], load.error_kinds()
    back = load.first_ack_after(promoted)
    assert back is not None and back < 1.0, back
    assert load.missing(rows_on(pair, new)) == []
    assert seen["replica_before"] == (server_id(pair, new),)
    assert seen["primary"] == (server_id(pair, new),) and seen["replica"] == (server_id(pair, old),)
    assert seen["hosts"] == {f"127.0.0.1:{new.port}": "primary", f"127.0.0.1:{old.port}": "replica"}


def test_the_exporters_label_each_host(mariadb_pair: MariaDBPair) -> None:
    pytest.importorskip("prometheus_client")
    pytest.importorskip("opentelemetry.sdk.metrics")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from prometheus_client import CollectorRegistry

    from fastpool.exporters.opentelemetry import instrument
    from fastpool.exporters.prometheus import PoolCollector

    pair = mariadb_pair
    db = fastpool.open(pair.dsn(), name="shop", recheck=0.2)
    try:
        db.execute("INSERT INTO writes (who, n) VALUES ('metrics', 1)")
        db.replicas.query_row("SELECT 1")
        primary, replica = f"127.0.0.1:{pair.primary.port}", f"127.0.0.1:{pair.replica.port}"
        # Right after a replica (re)joins, Seconds_Behind_Master is NULL for a moment.
        deadline = time.monotonic() + 15
        while {h.address: h.lag for h in db.stats().hosts}[replica] is None:
            assert time.monotonic() < deadline, (db.stats().hosts, pair._status(pair.replica))
            time.sleep(0.1)
        registry = CollectorRegistry()
        registry.register(PoolCollector(db))
        get = registry.get_sample_value
        assert get("fastpool_host_up", {"pool": "shop", "host": primary, "role": "primary"}) == 1
        assert get("fastpool_host_up", {"pool": "shop", "host": replica, "role": "replica"}) == 1
        assert get("fastpool_host_connections", {"pool": "shop", "host": replica,
                                                 "role": "replica", "state": "idle"}) == 1
        assert get("fastpool_replica_lag_seconds", {"pool": "shop", "host": replica}) is not None
        assert get("fastpool_replica_lag_seconds", {"pool": "shop", "host": primary}) is None

        reader = InMemoryMetricReader()
        instrument(db, meter_provider=MeterProvider(metric_readers=[reader]))
        points: dict[str, list[Any]] = {}
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    points.setdefault(m.name, []).extend(m.data.data_points)
        up = {(p.attributes["server.address"], p.attributes["fastpool.host.role"]): p.value
              for p in points["fastpool.host.up"]}
        assert up == {(primary, "primary"): 1, (replica, "replica"): 1}
        assert [p.attributes["server.address"] for p in points["fastpool.replica.lag"]] == [replica]
    finally:
        db.close()


def gevent_writers(pair: MariaDBPair, acked_file: Any) -> Any:
    """The gevent scenario's 16 greenlets writing through a host list (PyMySQL), READY;
    child_result() ends it after the event (gevent_scenarios.hostlist_switchover)."""
    from pathlib import Path

    return ready_child(Path(__file__).with_name("gevent_scenarios.py"), "hostlist_switchover",
                       pair.dsn(driver="pymysql"), str(acked_file))


def test_a_crash_fails_only_the_statements_in_flight_and_loses_nothing(
        mariadb_pair: MariaDBPair, tmp_path: Any) -> None:
    # Threads, asyncio tasks and gevent greenlets, each through its own host-list pool,
    # write through the same crash.
    pair = mariadb_pair
    db = fastpool.open(pair.dsn(), timeout=20)
    seen = events_of(db)
    old, new = pair.primary, pair.replica
    loads = [Workload(writer(db), workers=4, prefix="crash").start()]
    if importlib.util.find_spec("asyncmy") is not None:
        from fastpool import aio

        async def open_aio() -> tuple[Any, Any]:
            adb = aio.open(pair.dsn(driver="asyncmy"), timeout=20)

            async def write(who: str, n: int) -> None:
                await adb.execute("INSERT INTO writes (who, n) VALUES (%s, %s)", (who, n))
            return write, adb.close

        loads.append(AsyncWorkload(open_aio, workers=4, prefix="crash-task").start())
    green = None
    if all(importlib.util.find_spec(m) is not None for m in ("gevent", "pymysql")):
        green = gevent_writers(pair, tmp_path / "green.json")
    try:
        time.sleep(0.5)
        promoted = pair.crash_and_promote()
        time.sleep(1.5)
    finally:
        for load in loads:
            load.stop()
        green_result = child_result(green) if green is not None else None
    try:
        rows = rows_on(pair, new)
        for load in loads:
            # The statements on the killed server when it died: at most one per worker.
            assert len(load.errors) <= load.workers, load.error_kinds()
            for kind in load.error_kinds():
                assert kind.startswith("OperationalError: (2013") or "2006" in kind, kind
            back = load.first_ack_after(promoted)
            assert back is not None and back < 1.0, back
            assert load.missing(rows) == []  # semi-synchronous: acked is on both
        if green_result is not None:
            import json

            # 16 greenlets on a pool of 8: at most 8 statements were in flight.
            assert len(green_result["errors"]) <= 8, green_result["errors"]
            # The hub kept running (a looser bound than the switchover's: three pools, two
            # servers and a crash on two cores).
            assert green_result["after_switch"] > 50 and green_result["longest_gap"] < 1.0
            acked = {(w, n) for w, n in json.loads((tmp_path / "green.json").read_text())}
            assert acked <= rows
        assert ("host_down", f"127.0.0.1:{old.port}") in [(e, h) for e, h, _ in seen]
        # The old primary comes back read-only, following the new one: up, a replica.
        pair.rejoin_old_primary()
        deadline = time.monotonic() + 20
        while ("host_up", f"127.0.0.1:{old.port}") not in [(e, h) for e, h, _ in seen]:
            assert time.monotonic() < deadline, db.stats().hosts
            db.replicas.query_row("SELECT 1")
            time.sleep(0.1)
        assert {h.address: h.role for h in db.stats().hosts}[f"127.0.0.1:{old.port}"] == "replica"
    finally:
        db.close()
