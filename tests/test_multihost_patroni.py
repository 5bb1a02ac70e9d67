"""A host list on PostgreSQL under Patroni on etcd: a switchover through Patroni's REST API
and a failover after the primary's Patroni and postmaster are killed, under load; a
replica stopped; a replica blackholed (a real TCP proxy). The pool is never restarted."""

from __future__ import annotations

import time
from typing import Any

import pytest

import fastpool

from faultproxy import FaultProxy
from patroni_cluster import DATABASE, PASSWORD, USER, Node, PatroniCluster
from replication_load import AsyncWorkload, Workload, events_of, writer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(patroni: PatroniCluster) -> PatroniCluster:
    with fastpool.open(patroni.dsn) as db:
        db.execute("CREATE TABLE IF NOT EXISTS writes (id bigserial PRIMARY KEY, who text, n bigint)")
    return patroni


def switch_over(cluster: PatroniCluster, old: Node) -> tuple[Node, float]:
    """Half a second of load, a switchover, a second of load after it: (the new leader,
    when it first took a write)."""
    time.sleep(0.5)
    cluster.switchover()
    new = cluster.wait_leader(60, not_=old)
    took_writes = time.monotonic()
    time.sleep(1.0)
    return new, took_writes


def rows(db: fastpool.Pool) -> set[tuple[str, int]]:
    return {(who, int(n)) for who, n in db.query("SELECT who, n FROM writes")}


def addr(node: Node) -> str:
    return f"127.0.0.1:{node.port}"


def wait_for(cond: Any, timeout: float, what: Any) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what()
        time.sleep(0.05)


def test_a_switchover_under_load(cluster: PatroniCluster) -> None:
    db = fastpool.open(cluster.dsn, timeout=30)
    seen = events_of(db)
    old = cluster.leader()
    assert old is not None
    load = Workload(writer(db), workers=4, prefix="switch").start()
    try:
        new, took_writes = switch_over(cluster, old)
    finally:
        load.stop()
    try:
        # Patroni stops the old primary with a fast shutdown: a statement it ends gets the
        # server's 57P01 and runs again on the new primary. A commit then waiting for the
        # synchronous standby is told "canceling the wait for synchronous replication" and
        # the connection closes with no error reply: it committed locally, so its caller
        # gets the error (at most one per writer); a retry would write it twice.
        assert len(load.errors) <= load.workers, load.error_kinds()
        for kind in load.error_kinds():
            assert "server closed the connection unexpectedly" in kind, kind
        back = load.first_ack_after(took_writes)
        assert back is not None and back < 1.0, back
        assert load.missing(rows(db)) == []
        assert ("failover", addr(new), f"from {addr(old)}") in seen
        assert db.query_row("SELECT inet_server_port()") == (new.port,)
        cluster.wait_replicas(60)
    finally:
        db.close()


def test_a_replica_stopped_and_started_again(cluster: PatroniCluster) -> None:
    db = fastpool.open(cluster.dsn, timeout=30, recheck=0.5)
    seen = events_of(db)
    leader = cluster.leader()
    replica, other = [n for n in cluster.nodes if n is not leader]

    def read_ports(k: int = 20) -> set[int]:
        return {db.replicas.query_row("SELECT inet_server_port()")[0] for _ in range(k)}

    assert read_ports() <= {replica.port, other.port}
    load = Workload(writer(db), workers=2, prefix="stop").start()
    try:
        replica.stop()
        wait_for(lambda: ("host_down", addr(replica)) in [(e, h) for e, h, _ in seen], 10,
                 db.stats)
        # Reads go to the replica left; writes never noticed.
        assert read_ports() == {other.port}
        replica.start()
        wait_for(lambda: ("host_up", addr(replica)) in [(e, h) for e, h, _ in seen], 60,
                 db.stats)
        wait_for(lambda: replica.port in read_ports(), 30, db.stats)
    finally:
        load.stop()
        if replica.proc is None:
            replica.start()  # whatever failed, the next test needs the cluster whole
    try:
        assert load.errors == [], load.error_kinds()
        assert load.missing(rows(db)) == []
        cluster.wait_replicas(60)
    finally:
        db.close()


def test_reads_spread_over_the_replicas_and_skip_one_past_the_lag_bound(cluster: PatroniCluster) -> None:
    import threading
    from collections import Counter

    leader = cluster.leader()
    assert leader is not None
    replicas = [n for n in cluster.nodes if n is not leader and n.proc is not None]
    assert len(replicas) == 2
    db = fastpool.open(cluster.dsn, recheck=0.2, max_replica_lag=1.0, max_open=8)
    try:
        db.execute("INSERT INTO writes (who, n) VALUES ('lag', 0)")
        seen: Counter[int] = Counter()
        lock = threading.Lock()

        def reader() -> None:
            for _ in range(150):
                port = db.replicas.query_row("SELECT inet_server_port()")[0]
                with lock:
                    seen[port] += 1

        threads = [threading.Thread(target=reader) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # Least used first: within 20% of an even share, none on the primary.
        assert set(seen) == {n.port for n in replicas}, seen
        for n in replicas:
            assert abs(seen[n.port] - 600) <= 120, seen
        # One replica stops replaying while the primary writes: a query there holds a lock
        # that the replay of an ACCESS EXCLUSIVE lock must wait for (up to
        # max_standby_streaming_delay, 30 s): its lag grows past the bound, and it gets none.
        # (pg_wal_replay_pause() would not do: Patroni resumes a paused replay.)
        import psycopg

        paused = replicas[0]
        reader = psycopg.connect(host=str(paused.dir), port=paused.port, user="postgres",
                                 dbname=DATABASE)
        try:
            reader.execute("SELECT count(*) FROM writes").fetchone()  # in a transaction: locked
            with db.transaction() as tx:
                tx.execute("LOCK TABLE writes IN ACCESS EXCLUSIVE MODE")
            deadline = time.monotonic() + 15
            while True:
                db.execute("INSERT INTO writes (who, n) VALUES ('lag', 1)")
                lag = {h.address: h.lag for h in db.stats().hosts}[addr(paused)]
                if lag is not None and lag > 1.0:
                    break
                assert time.monotonic() < deadline, db.stats().hosts
                time.sleep(0.1)
            ports = Counter(db.replicas.query_row("SELECT inet_server_port()")[0] for _ in range(50))
            assert ports == Counter({replicas[1].port: 50}), ports
        finally:
            reader.close()
    finally:
        db.close()


def test_a_blackholed_replica_costs_the_writers_nothing(cluster: PatroniCluster) -> None:
    leader = cluster.leader()
    replica = next(n for n in cluster.nodes if n is not leader)
    proxy = FaultProxy("127.0.0.1", replica.port).start()
    hosts = f"127.0.0.1:{leader.port},127.0.0.1:{proxy.port}"
    db = fastpool.open(f"postgresql://{USER}:{PASSWORD}@{hosts}/{DATABASE}?connect_timeout=2",
                       timeout=30, recheck=0.5)
    seen = events_of(db)
    try:
        assert db.replicas.query_row("SELECT inet_server_port()") == (replica.port,)
        load = Workload(writer(db), workers=2, prefix="hole").start()
        try:
            proxy.blackhole()
            started = time.monotonic()
            # The watcher's probe gets no answer: cut after the probe timeout, and the
            # reconnect times out (connect_timeout=2): the host is down.
            wait_for(lambda: ("host_down", f"127.0.0.1:{proxy.port}") in
                     [(e, h) for e, h, _ in seen], 15, db.stats)
            assert time.monotonic() - started < 12
            assert db.replicas.query_row("SELECT inet_server_port()") == (leader.port,)
            proxy.restore()
            wait_for(lambda: ("host_up", f"127.0.0.1:{proxy.port}") in
                     [(e, h) for e, h, _ in seen], 15, db.stats)
        finally:
            load.stop()
        assert load.errors == [], load.error_kinds()
        assert len(load.acked) > 50
    finally:
        db.close()
        proxy.close()


def test_fastpool_aio_on_asyncpg_through_a_switchover(cluster: PatroniCluster) -> None:
    pytest.importorskip("asyncpg")
    import fastpool.aio

    old = cluster.leader()
    assert old is not None
    replicas_before = {n.port for n in cluster.nodes if n is not old}
    seen: dict[str, Any] = {}

    async def open_pool() -> tuple[Any, Any]:
        db = fastpool.aio.open(cluster.dsn + "?driver=asyncpg", timeout=30, max_open=8)
        seen["replica_port"] = (await db.replicas.query_row("SELECT inet_server_port()"))[0]

        async def write(who: str, n: int) -> None:
            await db.execute("INSERT INTO writes (who, n) VALUES ($1, $2)", (who, n))

        async def close() -> None:
            seen["primary_port"] = (await db.query_row("SELECT inet_server_port()"))[0]
            await db.close()

        return write, close

    load = AsyncWorkload(open_pool, workers=8, prefix="apg").start()
    try:
        new, took_writes = switch_over(cluster, old)
    finally:
        load.stop()
    try:
        assert seen["replica_port"] in replicas_before and seen["primary_port"] == new.port
        # As with threads: only commits caught waiting for the synchronous standby fail.
        assert len(load.errors) <= load.workers, load.error_kinds()
        for kind in load.error_kinds():
            assert kind.startswith("ConnectionDoesNotExistError"), kind
        back = load.first_ack_after(took_writes)
        assert back is not None and back < 1.0, back
        with fastpool.open(cluster.dsn) as db:
            assert load.missing(rows(db)) == []
    finally:
        cluster.wait_replicas(60)


def test_the_primary_killed_under_load(cluster: PatroniCluster) -> None:
    # Threads, and asyncio tasks on asyncpg, each through its own host-list pool.
    import importlib.util

    db = fastpool.open(cluster.dsn, timeout=40)
    seen = events_of(db)
    old = cluster.leader()
    assert old is not None
    loads = [Workload(writer(db), workers=4, prefix="kill").start()]
    if importlib.util.find_spec("asyncpg") is not None:
        from fastpool import aio

        async def open_aio() -> tuple[Any, Any]:
            adb = aio.open(cluster.dsn + "?driver=asyncpg", timeout=40)

            async def write(who: str, n: int) -> None:
                await adb.execute("INSERT INTO writes (who, n) VALUES ($1, $2)", (who, n))
            return write, adb.close

        loads.append(AsyncWorkload(open_aio, workers=4, prefix="kill-task").start())
    try:
        time.sleep(0.5)
        old.kill()  # kill -9 Patroni and the postmaster: the leader key expires (ttl 10)
        new = cluster.wait_leader(60, not_=old)
        took_writes = time.monotonic()
        time.sleep(1.0)
    finally:
        for load in loads:
            load.stop()
    try:
        have = rows(db)
        for load in loads:
            # Only statements in flight on the dead server may fail; the backends' own
            # "unexpected postmaster exit" replies (57P01) prove theirs did not commit.
            assert len(load.errors) <= load.workers, load.error_kinds()
            back = load.first_ack_after(took_writes)
            assert back is not None and back < 1.0, back
            assert load.missing(have) == []  # synchronous mode: acked is on the standby
        assert ("failover", addr(new), f"from {addr(old)}") in seen
        assert ("host_down", addr(old)) in [(e, h) for e, h, _ in seen]
    finally:
        db.close()
        old.start()  # back as a replica (pg_rewind), for whatever runs next
        cluster.wait_replicas(120)
