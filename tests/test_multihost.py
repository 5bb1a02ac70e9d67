"""Host lists without a server: what open() refuses, and the HostSet's state machine (roles,
elections, waits, events) over hosts whose role a test sets. The real failovers are in
test_multihost_mariadb.py and test_multihost_patroni.py."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import fastpool
from fastpool import ConfigError, PoolTimeout
from fastpool.dialects.base import Dialect
from fastpool.multihost.hosts import CHECKING, DOWN, PRIMARY, REPLICA, UP, Host, HostSet

# ---- bad host lists and options: ConfigError at open() ---------------------------------------
BAD = [
    ("postgresql://app:pw@h1:5432,,h2/db", {}, "host 2 of the host list .* is empty"),
    ("postgresql://app:pw@h1:5432,h1/db", {}, "host h1:5432 is listed twice"),
    ("mysql://app:pw@h1:3306,H1:3306/db", {}, "listed twice"),
    ("mysql://app:pw@h1:33o6,h2/db", {}, "port of host 1 .* is not a number"),
    ("mysql://app:pw@h1:99999,h2/db", {}, "from 1 to 65535"),
    ("postgresql://app:pw@h1,h2/db", {"target": "master"}, "target must be one of"),
    ("postgresql://app:pw@h1,h2/db?target_session_attrs=leader", {}, "target_session_attrs must"),
    ("postgresql://app:pw@/db", {"hosts": []}, "hosts is empty"),
    ("postgresql://app:pw@/db", {"hosts": [("h1", 5432), ("h1", 5432)]}, "listed twice"),
    ("postgresql://app:pw@/db", {"hosts": [("h1", "5432")]}, "must be an int from 1 to 65535"),
    ("postgresql://app:pw@/db", {"hosts": "h1,h2"}, "list of .host, port. pairs"),
    ("postgresql://app:pw@h0/db", {"hosts": [("h1", 5432)]}, "give the hosts once"),
    ("postgresql://app:pw@h1,h2/db", {"recheck": 0}, "recheck must be > 0"),
    ("postgresql://app:pw@h1,h2/db", {"load_balance": "round-robin"}, "load_balance must be"),
    ("postgresql://app:pw@h1,h2/db", {"replica_fallback": "yes"}, "replica_fallback must be"),
    ("postgresql://app:pw@h1,h2/db", {"max_replica_lag": -1}, "max_replica_lag must be >= 0"),
    ("postgresql://app:pw@h1,h2/db", {"replica_max_open": -1}, "replica_max_open must be >= 0"),
    ("sqlite://:memory:", {"target": "primary"}, "a host list needs postgresql:// or mysql://"),
]


@pytest.mark.parametrize(("url", "options", "message"), BAD)
def test_a_bad_host_list_is_a_config_error_at_open(url: str, options: dict[str, Any],
                                                    message: str) -> None:
    pytest.importorskip("psycopg" if url.startswith("postgresql") else "MySQLdb"
                        if url.startswith("mysql") else "sqlite3")
    with pytest.raises(ConfigError, match=message) as ei:
        fastpool.open(url, **options)
    assert "pw@" not in str(ei.value)


def test_a_host_list_opens_lazily_and_says_what_it_knows() -> None:
    pytest.importorskip("psycopg")
    db = fastpool.open("postgresql://app:pw@h1:5433,h2/db?target_session_attrs=prefer-standby",
                       max_replica_lag=5)
    try:
        assert db.target == "prefer-replica"  # type: ignore[attr-defined]
        assert db.hosts == ("h1:5433", "h2:5432")  # type: ignore[attr-defined]
        hosts = db.stats().hosts
        assert [(h.address, h.role, h.state, h.open) for h in hosts] == [
            ("h1:5433", "unknown", "unknown", 0), ("h2:5432", "unknown", "unknown", 0)]
        assert "pw" not in repr(db) and "h2:5432 unknown" in repr(db)
    finally:
        db.close()


def test_one_host_with_a_target_is_a_host_list_of_one() -> None:
    pytest.importorskip("MySQLdb")
    db = fastpool.open("mysql://app:pw@db1:3307/shop", target="primary")
    try:
        assert db.hosts == ("db1:3307",)  # type: ignore[attr-defined]
    finally:
        db.close()


# ---- the HostSet over hosts a test controls ---------------------------------------------------
class RoleDialect(Dialect):
    """Probes answer what the test set in ``roles[address]``: True (primary), False
    (replica) or an exception (down)."""

    name = "roles"

    def __init__(self, roles: dict[str, Any], address: str) -> None:
        self.roles = roles
        self.address = address
        self.probes = 0

    def probe_role(self, raw: Any) -> tuple[bool, float | None]:
        self.probes += 1
        role = self.roles[self.address]
        if isinstance(role, BaseException):
            raise role
        return bool(role), None if role else 0.5

    def close(self, raw: Any) -> None:
        pass


def make_hosts(roles: dict[str, Any]) -> list[Host]:
    hosts = []
    for address in roles:
        d = RoleDialect(roles, address)

        def connect(d: RoleDialect = d) -> object:
            if isinstance(d.roles[d.address], BaseException):
                raise d.roles[d.address]
            return object()

        name, port = address.split(":")
        hosts.append(Host(name, int(port), d, connect))
    return hosts


@pytest.fixture
def hostset():  # type: ignore[no-untyped-def]
    made: list[HostSet] = []

    def make(roles: dict[str, Any], **kw: Any) -> tuple[HostSet, list[tuple[str, str, Any]]]:
        events: list[tuple[str, str, Any]] = []
        lost: list[str] = []
        hs = HostSet(make_hosts(roles), recheck=kw.pop("recheck", 30.0),
                     load_balance=kw.pop("load_balance", "least-used"),
                     emit=lambda e, a, r: events.append((e, a, r)),
                     primary_lost=lambda h: lost.append(h.address),
                     primary_found=lambda h: None)
        hs.lost = lost  # type: ignore[attr-defined]
        made.append(hs)
        return hs, events

    yield make
    for hs in made:
        hs.close()


def test_pick_waits_for_the_first_probes_then_returns_the_primary(hostset) -> None:  # type: ignore[no-untyped-def]
    roles: dict[str, Any] = {"a:1": False, "b:2": True}
    hs, events = hostset(roles)
    assert hs.pick(PRIMARY, 5.0).address == "b:2"
    assert hs.pick(REPLICA, 5.0).address == "a:1"
    assert events == []  # first findings are no changes


def test_a_failover_moves_the_primary_and_is_told(hostset) -> None:  # type: ignore[no-untyped-def]
    roles: dict[str, Any] = {"a:1": True, "b:2": False}
    hs, events = hostset(roles)
    assert hs.pick(PRIMARY, 5.0).address == "a:1"
    roles["a:1"] = OSError("connection refused")
    roles["b:2"] = True
    hs.suspect(hs.hosts[0], "a test")
    assert hs.pick(PRIMARY, 5.0).address == "b:2"
    assert ("failover", "b:2", "from a:1") in events
    assert ("role_changed", "b:2", "replica -> primary") in events
    assert ("host_down", "a:1", "OSError: connection refused") in events
    assert hs.lost == ["a:1"]  # type: ignore[attr-defined]


def test_without_a_primary_pick_times_out_naming_every_host(hostset) -> None:  # type: ignore[no-untyped-def]
    roles: dict[str, Any] = {"a:1": False, "b:2": ConnectionRefusedError("refused")}
    hs, _ = hostset(roles)
    started = time.monotonic()
    with pytest.raises(PoolTimeout) as ei:
        hs.pick(PRIMARY, 0.5)
    assert 0.45 <= time.monotonic() - started < 3
    msg = str(ei.value)
    assert "a:1 replica" in msg and "b:2 down (ConnectionRefusedError: refused)" in msg, msg


def test_a_caller_waiting_for_a_primary_gets_it_when_a_replica_is_promoted(hostset) -> None:  # type: ignore[no-untyped-def]
    roles: dict[str, Any] = {"a:1": False, "b:2": False}
    hs, events = hostset(roles)
    got: list[str] = []
    t = threading.Thread(target=lambda: got.append(hs.pick(PRIMARY, 10.0).address))
    t.start()
    time.sleep(0.3)
    assert got == []
    roles["b:2"] = True  # promoted: a watcher probes every FAST_RECHECK while one waits
    t.join(5)
    assert got == ["b:2"]
    assert ("role_changed", "b:2", "replica -> primary") in events
    assert not [e for e in events if e[0] == "failover"]  # there was no primary before


def test_a_suspect_host_takes_no_new_connection_until_probed_again(hostset) -> None:  # type: ignore[no-untyped-def]
    roles: dict[str, Any] = {"a:1": True}
    hs, _ = hostset(roles)
    host = hs.pick(PRIMARY, 5.0)
    probes = host.dialect.probes  # type: ignore[attr-defined]
    hs.suspect(host, "a test")
    assert host.state in (CHECKING, UP)
    assert hs.pick(PRIMARY, 5.0) is host
    assert host.state == UP and host.dialect.probes > probes  # type: ignore[attr-defined]
    assert hs.lost == []  # type: ignore[attr-defined]  # a suspicion is not a loss


def test_replicas_past_the_lag_bound_are_skipped(hostset) -> None:  # type: ignore[no-untyped-def]
    roles: dict[str, Any] = {"a:1": True, "b:2": False, "c:3": False}
    hs, _ = hostset(roles)
    hs.pick(PRIMARY, 5.0)
    hs.replicas_now(None, 5.0)  # every host probed once (the primary may come first)
    hs.probed(hs.hosts[1], False, 10.0)
    hs.probed(hs.hosts[2], False, 0.2)
    assert [h.address for h in hs.replicas_now(1.0, 1.0)] == ["c:3"]
    assert [h.address for h in hs.replicas_now(None, 1.0)] == ["b:2", "c:3"]
    assert hs.pick("prefer-replica", 1.0, max_lag=0.1).address == "a:1"  # none qualifies
    hs.probed(hs.hosts[2], None, error=OSError("gone"))
    assert hs.hosts[2].state == DOWN and hs.replicas_now(None, 1.0) == [hs.hosts[1]]


def test_least_used_balances_by_the_count_given(hostset) -> None:  # type: ignore[no-untyped-def]
    roles: dict[str, Any] = {"a:1": True, "b:2": False, "c:3": False}
    hs, _ = hostset(roles)
    hs.pick(PRIMARY, 5.0)
    hs.replicas_now(None, 5.0)  # every host probed once (the primary may come first)
    busy = {"b:2": 3, "c:3": 1}
    assert hs.pick(REPLICA, 1.0, in_use=lambda h: busy[h.address]).address == "c:3"
    busy["c:3"] = 5
    assert hs.pick(REPLICA, 1.0, in_use=lambda h: busy[h.address]).address == "b:2"


def test_fastpool_aio_takes_a_host_list_and_refuses_a_bad_one() -> None:
    pytest.importorskip("asyncpg")
    import fastpool.aio

    db = fastpool.aio.open("postgresql://app:pw@h1,h2:5433/db?driver=asyncpg",
                           target="prefer-replica")
    assert db.hosts == ("h1:5432", "h2:5433")  # type: ignore[attr-defined]
    assert db.target == "prefer-replica"  # type: ignore[attr-defined]
    assert [h.state for h in db.stats().hosts] == ["unknown", "unknown"]
    assert "pw" not in repr(db) and repr(db).startswith("<fastpool.aio.Pool")
    with pytest.raises(ConfigError, match="listed twice") as ei:
        fastpool.aio.open("postgresql://app:pw@h1,h1/db?driver=asyncpg")
    assert "pw" not in str(ei.value)


def test_a_host_list_dropped_unclosed_is_collected_and_its_watchers_end() -> None:
    pytest.importorskip("psycopg")
    import gc
    import weakref

    # Nothing listens on these ports: the watchers keep probing (down) until the pool goes.
    db = fastpool.open("postgresql://app:pw@127.0.0.1:1,127.0.0.1:2/db?connect_timeout=1",
                       timeout=0.3)
    # The caller's own wait ends first ("known"), or the opener's connect, whose error goes
    # to the caller left with nothing ("within"): either names every host.
    with pytest.raises(PoolTimeout,
                       match=r"no primary host (known|within [0-9.]+s): 127.0.0.1:1 .*; 127.0.0.1:2 "):
        db.ping()
    assert any(t.name.startswith("fastpool-host") for t in threading.enumerate())
    ref = weakref.ref(db)
    del db
    deadline = time.monotonic() + 15
    while ref() is not None:  # an opener thread may hold it until its connect gives up
        assert time.monotonic() < deadline, gc.get_referrers(ref())
        gc.collect()
        time.sleep(0.05)
    while any(t.name.startswith("fastpool-host") for t in threading.enumerate()):
        assert time.monotonic() < deadline, [t.name for t in threading.enumerate()]
        time.sleep(0.05)
