"""Hooks (configure/check/reset), max_waiting, the richer stats, events and the name option,
exact on the fake driver and real on SQLite (issue 15). MariaDB: test_hooks_mariadb.py."""

from __future__ import annotations

import logging
import threading
import time

import pytest

import fastpool
from fastpool import ConfigError, DeadlineExceeded, PoolTimeout, TooManyWaiting
from fastpool.hooks import EVENTS, MULTIHOST_EVENTS, PoolEvent

from conftest import FakeDialect
from fakedb import FakeClock, FakeDriver, FakeError


def consistent(db: fastpool.Pool) -> None:
    s = db.stats()
    assert s.open == s.in_use + s.idle + db._counts()[13]
    assert 0 <= s.open <= (s.max_open or s.open)


# ---- configure ------------------------------------------------------------------------
def test_configure_runs_once_per_physical_connection(make_pool, driver):
    seen: list[int] = []
    db = make_pool(max_open=2, configure=lambda raw: seen.append(raw.id))
    for _ in range(5):
        with db.conn():
            pass
    with db.conn(), db.conn():
        pass
    assert seen == [1, 2]
    assert db.stats().connects == 2 == driver.opened


def test_configure_that_raises_closes_the_connection_and_reaches_the_caller(make_pool, driver):
    def configure(raw):  # type: ignore[no-untyped-def]
        raise FakeError("SET failed")

    db = make_pool(max_open=2, configure=configure, timeout=2)
    # Inline (timeout=0): the caller that connects gets the error itself.
    with pytest.raises(FakeError, match="SET failed"):
        db.conn(timeout=0)
    # Through the opener: the waiter of a starved pool gets it at once, not a timeout.
    start = time.monotonic()
    with pytest.raises(FakeError, match="SET failed"):
        db.conn()
    assert time.monotonic() - start < 1.5
    s = db.stats()
    assert s.connect_errors >= 2 and s.connects == 0
    assert (s.open, s.in_use, s.idle) == (0, 0, 0)
    assert driver.live == 0  # every connection it spoiled was closed
    db.configure = None
    assert db.query_row("SELECT 1") == (1,)
    consistent(db)


def test_configure_sets_session_state_on_sqlite():
    db = fastpool.open("sqlite://:memory:", max_open=2,
                       configure=lambda raw: raw.execute("PRAGMA cache_size = -4321"))
    try:
        assert db.query_row("PRAGMA cache_size") == (-4321,)
    finally:
        db.close()


# ---- check ------------------------------------------------------------------------------
def test_check_runs_on_connections_idle_past_check_after(make_pool, driver):
    clock = FakeClock()
    checked: list[int] = []

    def check(raw):  # type: ignore[no-untyped-def]
        checked.append(raw.id)
        return True

    db = make_pool(max_open=1, check=check, check_after=30.0, _clock=clock, max_idle_time=None,
                   max_lifetime=None)
    with db.conn():
        pass                       # a new connection is never checked
    with db.conn():
        pass                       # idle 0 s < 30 s
    assert checked == []
    clock.advance(31)
    with db.conn():
        pass
    assert checked == [1]
    db.check_after = None          # never
    clock.advance(1000)
    with db.conn():
        pass
    assert checked == [1]


@pytest.mark.parametrize("verdict", ["false", "raise"])
def test_check_that_fails_discards_and_the_caller_gets_another(make_pool, driver, caplog, verdict):
    events: list[PoolEvent] = []

    def check(raw):  # type: ignore[no-untyped-def]
        if raw.id == 1:
            if verdict == "raise":
                raise FakeError("stale session")
            return False
        return True

    db = make_pool(max_open=2, check=check)
    db.on("discard", events.append)
    with db.conn():
        pass
    with caplog.at_level(logging.WARNING, logger="fastpool"), db.conn() as c:
        assert c.raw.id == 2
    assert [(e.event, e.reason) for e in events] == [("discard", "check failed")]
    assert db.stats().bad_conns_discarded == 1
    assert driver.live == 1
    if verdict == "raise":
        assert "check hook raised FakeError: stale session" in caplog.text
    consistent(db)


def test_check_interrupted_closes_the_connection_and_propagates(make_pool, driver):
    def check(raw):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    db = make_pool(max_open=2, check=check)
    with db.conn():
        pass
    with pytest.raises(KeyboardInterrupt):
        db.conn()
    s = db.stats()
    assert (s.open, s.in_use, s.idle, s.bad_conns_discarded) == (0, 0, 0, 1)
    assert driver.live == 0


def test_a_hanging_check_is_bounded_by_the_deadline(tmp_path):
    forever = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
               " SELECT count(*) FROM c")
    db = fastpool.open(f"sqlite:///{tmp_path}/h.db", max_open=2,
                       check=lambda raw: raw.execute(forever).fetchall())
    try:
        db.check = None
        assert db.query_row("SELECT 1") == (1,)   # one idle connection to check
        db.check = lambda raw: raw.execute(forever).fetchall()
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded), fastpool.deadline(0.3):
            db.query_row("SELECT 1")
        assert time.monotonic() - start < 3
        s = db.stats()
        assert s.statements_cancelled == 1 and s.in_use == 0
        db.check = None
        assert db.query_row("SELECT 2") == (2,)
        consistent(db)
    finally:
        db.close()


# ---- reset ------------------------------------------------------------------------------
@pytest.mark.parametrize("verdict", [False, "raise"])
def test_reset_that_fails_discards_but_the_result_reaches_the_caller(make_pool, driver, verdict):
    events: list[PoolEvent] = []

    def reset(raw):  # type: ignore[no-untyped-def]
        if verdict == "raise":
            raise FakeError("cannot reset")
        return False

    db = make_pool(max_open=2, reset=reset)
    db.on("discard", events.append)
    assert db.query_row("SELECT 1") == (1,)
    with db.conn() as c:
        c.execute("SELECT 1")
    assert [e.reason for e in events] == ["reset failed", "reset failed"]
    assert driver.opened == 2 and driver.live == 0
    assert db.stats().bad_conns_discarded == 2
    consistent(db)


def test_reset_runs_at_every_give_back_after_fastpools_own(make_pool, driver):
    order: list[str] = []

    class Dialect(FakeDialect):
        def reset(self, raw):  # type: ignore[no-untyped-def]
            order.append("fastpool")

    db = make_pool(max_open=1, driver=Dialect(), reset=lambda raw: order.append("hook"))
    with db.conn() as c:
        c.raw.commit()        # raw access: fastpool rolls it back before pooling it
    db.execute("SELECT 1")
    assert order == ["fastpool", "hook", "hook"]
    assert db.stats().checkins == 2


# ---- options ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["configure", "check", "reset"])
def test_a_hook_that_is_not_callable_is_refused_and_changes_nothing(make_pool, name):
    db = make_pool(max_open=2)
    with pytest.raises(ConfigError, match=name):
        make_pool(**{name: "SELECT 1"})
    with db.conn():
        before = db._counts()
        with pytest.raises(ConfigError, match=name):
            setattr(db, name, 42)
        assert getattr(db, name) is None and db._counts() == before


def test_name_defaults_to_the_url_without_password_and_shows_everywhere():
    db = fastpool.open("sqlite:///:memory:")
    try:
        assert db.name == "sqlite:///:memory:"
        db.name = "orders-primary"
        assert db.stats().name == "orders-primary"
        assert repr(db).startswith("<fastpool.Pool 'orders-primary' open")
        with pytest.raises(ConfigError, match="name"):
            db.name = "two\nlines"
        assert db.name == "orders-primary"
    finally:
        db.close()


# ---- max_waiting ------------------------------------------------------------------------
def test_max_waiting_refuses_at_once_and_serves_those_queued(make_pool):
    db = make_pool(max_open=1, max_waiting=1, timeout=10)
    held = db.conn()
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(db.query_row("SELECT 1")))
    t.start()
    deadline = time.monotonic() + 5
    while db.stats().waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    start = time.monotonic()
    with pytest.raises(TooManyWaiting, match="max_waiting=1") as ei:
        db.conn()
    assert isinstance(ei.value, PoolTimeout)
    assert time.monotonic() - start < 1.0   # refused, not timed out
    held.close()
    t.join(5)
    assert got == [(1,)]
    s = db.stats()
    assert (s.waits_refused, s.timeouts, s.in_use) == (1, 0, 0)
    consistent(db)


def test_max_waiting_zero_still_lets_callers_wait_for_a_connect_made_for_them(make_pool, driver):
    driver.connect_delay = 0.05
    db = make_pool(max_open=2, max_waiting=0)
    with db.conn(), db.conn():     # both wait for the opener: the pool is not full
        with pytest.raises(TooManyWaiting):
            db.conn()             # now it is
    assert db.stats().waits_refused == 1


# ---- stats --------------------------------------------------------------------------------
def test_stats_count_connects_use_and_waits(make_pool, driver):
    driver.connect_delay = 0.02
    db = make_pool(max_open=1, timeout=10)
    c = db.conn()
    result: list[float] = []

    def waiter() -> None:
        start = time.monotonic()
        with db.conn():
            result.append(time.monotonic() - start)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    c.close()
    t.join(5)
    s = db.stats()
    assert (s.connects, s.connect_errors, s.checkins, s.wait_count) == (1, 0, 2, 1)
    assert s.connect_time >= 0.02
    assert s.use_time >= 0.1            # the first holder kept it ~0.2 s (coarse clock)
    assert 0.1 <= s.wait_max <= result[0] + 0.05
    assert s.wait_max == pytest.approx(s.wait_duration)
    assert s.wait_max * 0.75 <= s.wait_p50 <= s.wait_max and s.wait_p99 == s.wait_p50
    assert db.stats(reset=True).wait_max == s.wait_max
    after = db.stats()
    assert (after.wait_p50, after.wait_p99, after.wait_max) == (0.0, 0.0, 0.0)
    assert after.wait_count == 1        # counters run from the start, as Go's do


def test_wait_percentiles_over_many_waits(make_pool):
    # 20 waits of ~0.01 s and 1 of ~0.3 s: p50 near the short ones, max the long one.
    db = make_pool(max_open=1, timeout=10)

    def one_wait(hold: float) -> None:
        c = db.conn()
        t = threading.Thread(target=lambda: db.conn().close())
        t.start()
        while db.stats().waiting < 1:
            time.sleep(0.001)
        time.sleep(hold)
        c.close()
        t.join(5)

    for _ in range(20):
        one_wait(0.01)
    one_wait(0.3)
    s = db.stats()
    assert s.wait_count == 21
    assert s.wait_p50 < 0.2 <= s.wait_max
    assert s.wait_p50 <= s.wait_p99 <= s.wait_max


# ---- events -------------------------------------------------------------------------------
def test_every_event_reaches_its_listeners(make_pool):
    seen: list[tuple[str, object]] = []
    db = make_pool(connect=FakeDriver(with_socket=True), max_open=1, timeout=0.05)
    for event in EVENTS:
        db.on(event, lambda e: seen.append((e.event, e.reason)))
    with db.conn() as c:
        with pytest.raises(PoolTimeout):
            db.conn()
        c.raw.server_close()                 # the server closes it while it is idle
    db.execute("SELECT 1")                   # found dead at checkout: discarded

    def leak() -> None:
        c = db.conn()
        del c

    with pytest.warns(fastpool.ConnectionLeakWarning):
        leak()
    db.close()
    assert seen[:2] == [("connect", None), ("checkout", None)]
    for event in [("timeout", "timeout"), ("checkin", None), ("discard", "dead"),
                  ("leak", None), ("close", None)]:
        assert event in seen, event
    # A one-host pool emits every event but a host list's.
    assert {k for k, _ in seen} == set(EVENTS) - MULTIHOST_EVENTS


def test_a_listener_that_raises_is_logged_and_the_pool_goes_on(make_pool, caplog):
    db = make_pool(max_open=1)

    def bad(event):  # type: ignore[no-untyped-def]
        raise RuntimeError("listener bug")

    for event in EVENTS:
        db.on(event, bad)
    with caplog.at_level(logging.ERROR, logger="fastpool"):
        for _ in range(3):
            assert db.query_row("SELECT 1") == (1,)
    assert "a listener of 'checkout' raised" in caplog.text
    assert db.stats().in_use == 0
    assert db.off("checkout", bad) and not db.off("checkout", bad)


def test_events_carry_the_waits_and_holds(make_pool):
    got: list[PoolEvent] = []
    db = make_pool(max_open=1, name="p1")
    db.on("checkout", got.append)
    db.on("checkin", got.append)
    with db.conn():
        time.sleep(0.05)
    out, back = got
    assert (out.event, out.pool, back.event) == ("checkout", "p1", "checkin")
    assert out.seconds is not None and out.seconds >= 0
    assert back.seconds is not None and back.seconds >= 0.04


def test_on_refuses_unknown_events_and_non_callables(make_pool):
    db = make_pool()
    with pytest.raises(ConfigError, match="unknown event 'chekout'"):
        db.on("chekout", print)
    with pytest.raises(ConfigError, match="callable"):
        db.on("checkout", "print")
    assert db._holder_hook is None and db._event_hook is None


def test_no_listener_no_hook_leaves_the_core_slots_empty(make_pool):
    db = make_pool()
    assert (db._check_hook, db._reset_hook, db._event_hook, db._holder_hook) == (None,) * 4
    fn = db.on("discard", print)
    assert db._event_hook is not None and db._holder_hook is None
    db.off("discard", fn)
    assert db._event_hook is None


def test_sqlite_round_trip_with_everything_on(tmp_path):
    events: list[str] = []
    db = fastpool.open(f"sqlite:///{tmp_path}/x.db", max_open=2, check_after=0,
                       configure=lambda raw: raw.execute("PRAGMA foreign_keys = ON"),
                       check=lambda raw: raw.execute("SELECT 1").fetchone() == (1,),
                       reset=lambda raw: None)
    for event in EVENTS:
        db.on(event, lambda e: events.append(e.event))
    try:
        for i in range(10):
            assert db.query_row("PRAGMA foreign_keys") == (1,)
        s = db.stats()
        assert s.connects == 1 and s.checkins == 10 and s.bad_conns_discarded == 0
        assert events.count("checkout") == 10 and events.count("connect") == 1
    finally:
        db.close()
    assert events[-1] == "close"
