"""Unit tests of the core state machine through the façade, with a fake driver and clock."""

from __future__ import annotations

import signal
import sys
import threading
import time
import warnings

import pytest
from fakedb import FakeError
from threads import run_threads

import fastpool
from fastpool import FastpoolError, PoolClosed, PoolTimeout


needs_pthread_kill = pytest.mark.skipif(
    not hasattr(signal, "pthread_kill"), reason="delivering SIGINT to a thread needs signal.pthread_kill")
needs_socket_poll = pytest.mark.skipif(
    sys.platform == "win32", reason="the liveness poll of idle sockets is POSIX-only (poll())")


def wait_until(cond, timeout=5.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.002)
    raise AssertionError("condition not reached in time")


def start_waiter(pool, results, key, timeout=5.0):  # type: ignore[no-untyped-def]
    """Start a thread that waits for a connection; return once it is queued."""
    before = pool.stats().waiting

    def run() -> None:
        try:
            results[key] = pool.getconn(timeout=timeout)
        except BaseException as exc:  # recorded for the test to look at
            results[key] = exc

    t = threading.Thread(target=run)
    t.start()
    wait_until(lambda: pool.stats().waiting == before + 1)
    return t


def test_opening_is_lazy(make_pool, driver):
    pool = make_pool(max_open=3)
    assert driver.opened == 0
    assert pool.stats().open == 0
    with pool.conn():
        assert driver.opened == 1


def test_free_list_is_lifo(make_pool):
    pool = make_pool(max_open=3)
    a, b = pool.getconn(), pool.getconn()
    raw_a, raw_b = a.raw, b.raw
    pool.putconn(a)
    pool.putconn(b)  # b is the newest idle one
    c = pool.getconn()
    assert c.raw is raw_b
    d = pool.getconn()
    assert d.raw is raw_a
    c.close()
    d.close()


def test_max_open_is_never_exceeded_and_timeout_zero_fails_at_once(make_pool, driver):
    pool = make_pool(max_open=2)
    held = [pool.getconn(), pool.getconn()]
    t0 = time.monotonic()
    with pytest.raises(PoolTimeout) as ei:
        pool.getconn(timeout=0)
    assert time.monotonic() - t0 < 1.0
    assert "max_open=2" in str(ei.value) and "in_use=2" in str(ei.value)
    s = pool.stats()
    assert (s.open, s.in_use, s.idle, s.timeouts) == (2, 2, 0, 1)
    assert driver.opened == 2
    for c in held:
        c.close()


def test_waiting_times_out_with_stats_in_message(make_pool):
    pool = make_pool(max_open=1, timeout=0.05)
    c = pool.getconn()
    with pytest.raises(PoolTimeout, match=r"timed out after 0\.0\d+s .*open=1"):
        pool.getconn()
    s = pool.stats()
    assert s.wait_count == 1 and s.timeouts == 1 and s.wait_duration >= 0.04
    assert s.waiting == 0
    c.close()


def test_waiters_are_served_first_come_first_served(make_pool):
    pool = make_pool(max_open=1)
    held = pool.getconn()
    results: dict = {}
    threads = [start_waiter(pool, results, i) for i in range(5)]
    order = []
    for i in range(5):
        # Give back; the longest waiter (i) must get it, nobody else.
        held.close()
        wait_until(lambda: i in results)
        assert set(results) == set(range(i + 1))
        held = results[i]
        assert isinstance(held, fastpool.Conn)
        order.append(i)
    held.close()
    for t in threads:
        t.join()
    assert order == list(range(5))
    assert pool.stats().in_use == 0


def hand_over(held, pool, results, key, t):  # type: ignore[no-untyped-def]
    """Give `held` back: it must go straight to waiter `key` (thread t), so a newcomer
    finds nothing to take; returns the waiter's Conn."""
    held.close()
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0)
    t.join(5)
    assert isinstance(results.get(key), fastpool.Conn)
    return results[key]


def test_strict_hand_off_a_newcomer_cannot_take_a_connection_handed_to_a_waiter(make_pool):
    pool = make_pool(max_open=1)
    pool._set_handoff_after(0)  # no barging at all
    held = pool.getconn()
    results: dict = {}
    t = start_waiter(pool, results, "w")
    hand_over(held, pool, results, "w", t).close()  # to the waiter, not the free list


def test_bounded_barging_a_newcomer_may_barge_only_until_a_waiter_starves(make_pool, clock):
    # The injected clock makes the bound exact: the waiter is passed over while it has
    # waited less than HANDOFF_AFTER (10 ms), and never after.
    pool = make_pool(max_open=1, _clock=clock)
    held = pool.getconn()
    results: dict = {}
    t = start_waiter(pool, results, "w", timeout=None)
    held.close()  # the waiter has waited 0 s: to the free list, for whoever asks first
    barger = pool.getconn(timeout=0)
    assert pool._waiters_starving() == 0 and "w" not in results
    clock.advance(0.011)  # now it has waited past the bound
    wait_until(lambda: pool._waiters_starving() == 1)
    hand_over(barger, pool, results, "w", t)  # straight to the starving waiter
    s = pool.stats()
    assert (s.wait_count, s.in_use, s.idle, s.waiting) == (1, 1, 0, 0)
    assert pool._waiters_starving() == 0
    results["w"].close()


def test_a_giver_hands_over_once_the_head_has_waited_the_bound_before_its_timer_fires(
        make_pool, clock):
    # The waiter sleeps in real time until its starvation time (5 s of the injected
    # clock, so 5 real seconds): it has not marked itself starving when the clock passes
    # the bound. The giver reads the head's age itself and hands over: no newcomer can
    # take the connection, and the waiter is served at once, not at its timer.
    pool = make_pool(max_open=1, _clock=clock)
    pool._set_handoff_after(5.0)
    held = pool.getconn()
    results: dict = {}
    t = start_waiter(pool, results, "w", timeout=None)
    clock.advance(5.1)
    assert pool._waiters_starving() == 0
    hand_over(held, pool, results, "w", t)
    s = pool.stats()
    assert (s.wait_count, s.in_use, s.idle, s.waiting) == (1, 1, 0, 0)
    results["w"].close()


def test_a_waiter_queued_behind_a_long_wait_is_handed_every_give_back(make_pool, clock):
    # B queues when the head (A) has waited 25 ms, over twice the 10 ms bound: B is deep.
    # While it waits nobody may barge, even though B itself has waited 0 s by the clock
    # and is not starving: the give-back goes to it, and the free list stays empty.
    pool = make_pool(max_open=1, _clock=clock)
    held = pool.getconn()
    results: dict = {}
    ta = start_waiter(pool, results, "a", timeout=None)
    clock.advance(0.025)
    tb = start_waiter(pool, results, "b", timeout=None)
    assert pool._waiters_deep() == (1, 0)
    held.close()                     # to A, the head, which has waited past the bound
    ta.join(5)
    assert pool._waiters_starving() == 0
    hand_over(results["a"], pool, results, "b", tb)  # B: deep, though young and not starving
    assert pool._waiters_deep() == (0, 0)
    # Nobody deep queued any more: barging is back. C queues behind nobody.
    tc = start_waiter(pool, results, "c", timeout=None)
    assert pool._waiters_deep() == (0, 0)
    results["b"].close()             # C has waited 0 s: to the free list, for the barger
    barger = pool.getconn(timeout=0)
    assert "c" not in results
    barger.close()
    clock.advance(0.011)
    tc.join(5)
    assert isinstance(results["c"], fastpool.Conn)
    results["c"].close()


def test_a_thread_whose_timer_finds_nothing_starves_and_sleeps_to_its_timeout(make_pool):
    # The real clock: the waiter's timer step runs without the GIL (_starve_detached).
    # It marks the waiter starving, then the waiter sleeps until its own timeout, which
    # it still keeps: PoolTimeout after 0.3 s, not sooner and not never.
    pool = make_pool(max_open=1)
    pool._set_handoff_after(0.02)
    held = pool.getconn()
    results: dict = {}
    t0 = time.monotonic()
    t = start_waiter(pool, results, "w", timeout=0.3)
    wait_until(lambda: pool._waiters_starving() == 1)
    t.join(5)
    waited = time.monotonic() - t0
    assert isinstance(results["w"], PoolTimeout)
    assert 0.29 <= waited < 3.0, waited
    s = pool.stats()
    assert (s.waiting, s.timeouts, s.in_use) == (0, 1, 1)
    assert pool._waiters_starving() == 0
    # A starving waiter is handed the next give-back.
    t = start_waiter(pool, results, "w2", timeout=None)
    wait_until(lambda: pool._waiters_starving() == 1)
    hand_over(held, pool, results, "w2", t).close()


def test_a_waiter_takes_a_connection_given_back_while_it_slept(make_pool):
    # Given back to the free list (nobody starving) and nobody else asks for it: the
    # waiter finds it when its timer fires, within about HANDOFF_AFTER.
    pool = make_pool(max_open=1)
    pool._set_handoff_after(0.05)
    held = pool.getconn()
    results: dict = {}
    t = start_waiter(pool, results, "w", timeout=None)
    held.close()
    t.join(5)
    assert isinstance(results["w"], fastpool.Conn)
    s = pool.stats()
    assert (s.wait_count, s.in_use, s.idle, s.waiting, s.timeouts) == (1, 1, 0, 0, 0)
    results["w"].close()


def test_a_barged_waiter_keeps_its_place_at_the_head(make_pool, clock):
    # Two waiters; the first wakes to a free connection that a newcomer took first: it
    # queues again ahead of the second and is served first.
    pool = make_pool(max_open=1, _clock=clock)
    held = pool.getconn()
    results: dict = {}
    t1 = start_waiter(pool, results, 1, timeout=None)
    t2 = start_waiter(pool, results, 2, timeout=None)
    held.close()
    barger = pool.getconn(timeout=0)
    clock.advance(0.011)
    wait_until(lambda: pool._waiters_starving() == 2)
    barger.close()
    t1.join(5)
    assert isinstance(results[1], fastpool.Conn) and 2 not in results
    results[1].close()
    t2.join(5)
    assert isinstance(results[2], fastpool.Conn)
    results[2].close()
    assert pool.stats().wait_count == 2


def test_waiter_that_times_out_as_it_is_handed_a_connection_passes_it_on(make_pool, driver):
    pool = make_pool(max_open=1)
    held = pool.getconn()
    results: dict = {}
    # The hook runs after the first waiter's wait timed out, before it settles: hand it the
    # connection exactly then. It must not keep it (its deadline passed) nor lose it.
    fired = []

    def hook() -> None:
        if not fired:
            fired.append(1)
            held.close()

    pool._after_wait_hook = hook
    t1 = start_waiter(pool, results, 1, timeout=0.05)
    t1.join()
    pool._after_wait_hook = None
    assert fired
    # The hand-off happened before the waiter settled: it reports PoolTimeout...
    assert isinstance(results[1], PoolTimeout)
    # ...and the connection is back in the pool, usable, never doubled.
    s = pool.stats()
    assert (s.open, s.in_use, s.idle) == (1, 0, 1)
    with pool.conn(timeout=0) as c:
        assert c.raw is driver.conns[0]
    assert driver.opened == 1


def test_waiter_timing_out_while_handed_passes_it_to_the_next_waiter(make_pool):
    pool = make_pool(max_open=1)
    held = pool.getconn()
    results: dict = {}
    fired = []

    def hook() -> None:
        if not fired and threading.current_thread().name == "first":
            fired.append(1)
            held.close()

    pool._after_wait_hook = hook
    before = pool.stats().waiting
    t1 = threading.Thread(
        target=lambda: results.__setitem__(1, _catch(lambda: pool.getconn(timeout=0.2))), name="first"
    )
    t1.start()
    wait_until(lambda: pool.stats().waiting == before + 1)
    t2 = start_waiter(pool, results, 2, timeout=5)
    t1.join()
    t2.join()
    assert isinstance(results[1], PoolTimeout)
    assert isinstance(results[2], fastpool.Conn)
    results[2].close()
    assert pool.stats().in_use == 0


def _catch(fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except BaseException as exc:
        return exc


@needs_pthread_kill
def test_keyboard_interrupt_while_waiting_leaves_the_pool_intact(make_pool, sigint_raises):
    pool = make_pool(max_open=1)
    held = pool.getconn()
    main = threading.get_ident()

    sent: list[float] = []

    def interrupt() -> None:
        wait_until(lambda: pool.stats().waiting == 1)
        # The waiter is queued before it blocks. A signal landing in between only trips
        # the handler's flag and cannot cut short a wait that has not begun (the same holds
        # for threading.Lock), so send again for as long as the waiter is still queued.
        while pool.stats().waiting == 1:
            signal.pthread_kill(main, signal.SIGINT)
            sent.append(time.monotonic())
            time.sleep(0.5)

    t = threading.Thread(target=interrupt)
    t.start()
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            try:
                pool.getconn(timeout=10)
            except PoolTimeout:
                pytest.fail(f"the wait was not interrupted: {len(sent)} SIGINTs sent, at "
                            f"{[round(x - start, 2) for x in sent]} s into it")
    finally:
        t.join()
    s = pool.stats()
    assert (s.waiting, s.in_use, s.open) == (0, 1, 1)
    held.close()
    with pool.conn(timeout=0):
        pass


# An interrupt that lands just after getconn() returned drops the Conn: it is reclaimed.
@pytest.mark.filterwarnings("ignore::fastpool.ConnectionLeakWarning")
@needs_pthread_kill
def test_keyboard_interrupt_racing_a_hand_off_never_loses_the_connection(make_pool, driver, sigint_raises):
    pool = make_pool(max_open=1)
    main = threading.get_ident()
    outcomes = {"got": 0, "interrupted": 0}
    for i in range(40):
        held = pool.getconn()
        delay = (i % 8) * 0.0005

        def race() -> None:
            wait_until(lambda: pool.stats().waiting == 1)
            time.sleep(delay)
            held.close()
            signal.pthread_kill(main, signal.SIGINT)

        t = threading.Thread(target=race)
        t.start()
        try:
            c = pool.getconn(timeout=10)
        except KeyboardInterrupt:
            outcomes["interrupted"] += 1
        else:
            outcomes["got"] += 1
            try:
                time.sleep(0.05)  # let a late SIGINT land here, not in the next round
            except KeyboardInterrupt:
                pass
            c.close()
        t.join()
        try:
            time.sleep(0.01)
        except KeyboardInterrupt:
            pass
        s = pool.stats()
        assert (s.in_use, s.waiting, s.open, s.idle) == (0, 0, 1, 1), (i, s)
    assert driver.opened == 1
    assert sum(outcomes.values()) == 40


def test_max_idle_closes_surplus_and_counts_it(make_pool, driver):
    pool = make_pool(max_open=4, max_idle=1)
    conns = [pool.getconn() for _ in range(3)]
    for c in conns:
        c.close()
    s = pool.stats()
    assert (s.open, s.idle, s.max_idle_closed) == (1, 1, 2)
    assert driver.closed == 2


def test_max_idle_is_clamped_to_max_open():
    p = fastpool.Pool(lambda: None, max_open=3, max_idle=10)
    assert p.max_idle == 3
    p.close()


def test_lowering_limits_live_closes_surplus_idle_at_once(make_pool, driver):
    pool = make_pool(max_open=5)
    conns = [pool.getconn() for _ in range(5)]
    for c in conns:
        c.close()
    assert pool.stats().idle == 5
    pool.max_idle = 2
    s = pool.stats()
    assert (s.open, s.idle, s.max_idle_closed) == (2, 2, 3)
    # The oldest were closed, the newest (last returned) kept.
    assert [c.closed for c in driver.conns] == [True, True, True, False, False]
    pool.max_open = 1
    assert pool.stats().idle == 1 and pool.max_idle == 1
    assert driver.live == 1


def test_lowering_max_open_below_in_use_closes_returns_past_the_limit(make_pool, driver):
    pool = make_pool(max_open=3)
    conns = [pool.getconn() for _ in range(3)]
    pool.max_open = 1
    for c in conns:
        c.close()
    s = pool.stats()
    assert s.open == 1 and s.in_use == 0
    assert driver.live == 1


def test_raising_max_open_lets_waiters_in(make_pool):
    pool = make_pool(max_open=1)
    held = pool.getconn()
    results: dict = {}
    t = start_waiter(pool, results, "w")
    pool.max_open = 2  # the background opener opens one for the waiter
    t.join(5)
    assert isinstance(results["w"], fastpool.Conn)
    results["w"].close()
    held.close()
    assert pool.stats().open == 2


def test_lifetime_expiry_at_checkout_with_jitter(make_pool, driver, clock):
    pool = make_pool(max_open=2, max_lifetime=100.0, max_idle_time=None, _clock=clock)
    with pool.conn() as c:
        first = c.raw
    clock.advance(89.0)  # below 0.9 * 100: never expired, whatever the jitter
    with pool.conn() as c:
        assert c.raw is first
    clock.advance(11.0)  # at 100: expired, whatever the jitter
    with pool.conn() as c:
        assert c.raw is not first
    assert first.closed
    assert pool.stats().max_lifetime_closed == 1


def test_jitter_spreads_expiry_of_connections_opened_together(make_pool, clock):
    pool = make_pool(max_open=50, max_lifetime=100.0, max_idle_time=None, _clock=clock)
    conns = [pool.getconn() for _ in range(50)]
    for c in conns:
        c.close()
    clock.advance(95.0)  # in the middle of the jitter band [90, 100)
    closed = pool._collect_expired()
    assert 0 < closed < 50
    clock.advance(5.0)
    assert pool._collect_expired() == 50 - closed
    assert pool.stats().max_lifetime_closed == 50


def test_expired_connection_given_back_is_closed(make_pool, driver, clock):
    pool = make_pool(max_open=1, max_lifetime=10.0, _clock=clock)
    c = pool.getconn()
    clock.advance(10.0)
    c.close()
    s = pool.stats()
    assert (s.open, s.max_lifetime_closed) == (0, 1)
    assert driver.closed == 1


def test_cleaner_closes_idle_connections_past_max_idle_time(make_pool, driver, clock):
    pool = make_pool(max_open=3, max_idle_time=30.0, max_lifetime=None, _clock=clock)
    a, b = pool.getconn(), pool.getconn()
    a.close()
    clock.advance(20.0)
    b.close()
    clock.advance(15.0)  # a idle 35 s, b idle 15 s
    assert pool._collect_expired() == 1
    s = pool.stats()
    assert (s.idle, s.max_idle_time_closed) == (1, 1)
    assert driver.conns[0].closed and not driver.conns[1].closed


def test_idle_time_expiry_keeps_min_idle(make_pool, clock):
    pool = make_pool(max_open=3, min_idle=2, max_idle_time=30.0, max_lifetime=None, _clock=clock)
    wait_until(lambda: pool.stats().idle == 2)
    conns = [pool.getconn() for _ in range(3)]
    for c in conns:
        c.close()
    clock.advance(100.0)
    assert pool._collect_expired() == 1
    assert pool.stats().idle == 2


def test_cleaner_thread_runs_by_itself(make_pool, driver):
    pool = make_pool(max_open=2, max_idle_time=0.05, max_lifetime=None)
    with pool.conn():
        pass
    wait_until(lambda: pool.stats().max_idle_time_closed == 1, timeout=5)
    assert pool.stats().open == 0 and driver.live == 0


def test_min_idle_is_kept_warm_by_the_opener(make_pool, driver):
    pool = make_pool(max_open=5, min_idle=3)
    wait_until(lambda: pool.stats().idle == 3)
    c = pool.getconn()
    wait_until(lambda: pool.stats().idle == 3)
    assert pool.stats().open == 4
    c.close()
    assert driver.opened == 4


@needs_socket_poll
def test_dead_socket_found_at_checkout_without_a_round_trip(make_pool):
    from fakedb import FakeDriver

    drv = FakeDriver(with_socket=True)
    pool = make_pool(connect=drv, max_open=2)
    a, b = pool.getconn(), pool.getconn()
    a.close()
    b.close()
    drv.conns[1].server_close()  # the newest idle one: LIFO would hand it out first
    with pool.conn() as c:
        assert c.raw is drv.conns[0]
        assert c.raw.statements == []  # no probe query was sent
    s = pool.stats()
    assert s.bad_conns_discarded == 1 and s.open == 1
    assert drv.conns[1].closed


@needs_socket_poll
def test_all_idle_dead_opens_fresh(make_pool):
    from fakedb import FakeDriver

    drv = FakeDriver(with_socket=True)
    pool = make_pool(connect=drv, max_open=3)
    conns = [pool.getconn() for _ in range(3)]
    for c in conns:
        c.close()
    for fc in drv.conns:
        fc.server_close()
    with pool.conn() as c:
        assert c.raw is drv.conns[3]
    assert pool.stats().bad_conns_discarded == 3


def test_connect_error_reaches_the_caller_and_frees_the_slot(make_pool, driver):
    pool = make_pool(max_open=1)
    driver.fail_connect = 1
    with pytest.raises(FakeError, match="connect refused"):
        pool.getconn()
    s = pool.stats()
    assert (s.open, s.in_use) == (0, 0)
    with pool.conn(timeout=0):
        pass


def test_discarded_connection_is_replaced_for_a_waiter_by_the_opener(make_pool, driver):
    pool = make_pool(max_open=1)
    held = pool.getconn()
    results: dict = {}
    t = start_waiter(pool, results, "w")
    held.discard()  # its holder's call: closed, not handed over; the opener opens one for the waiter
    t.join(5)
    assert isinstance(results["w"], fastpool.Conn)
    assert results["w"].raw is driver.conns[1]
    assert driver.conns[0].closed
    s = pool.stats()
    assert (s.discarded, s.bad_conns_discarded, s.open) == (1, 0, 1)
    results["w"].close()


def test_a_failed_connect_hands_its_error_to_the_oldest_waiter(make_pool, driver):
    # Go's putConnDBLocked(nil, err): a waiter learns the database is down at once
    # instead of waiting out its timeout for nothing.
    pool = make_pool(max_open=1)
    held = pool.getconn()
    driver.fail_connect = 10**6  # the database is down
    results: dict = {}
    t = start_waiter(pool, results, "w", timeout=30)
    held.discard()
    t.join(5)
    assert not t.is_alive()
    assert isinstance(results["w"], FakeError)
    s = pool.stats()
    assert (s.open, s.in_use, s.waiting) == (0, 0, 0)
    driver.fail_connect = 0  # back up
    with pool.conn(timeout=1):
        pass


def test_connect_errors_while_connections_circulate_keep_waiters_waiting(make_pool, driver):
    # "Too many connections": the server refuses extra connections but the pool's live
    # one still serves. A waiter waits for it; the opener backs off instead of storming.
    pool = make_pool(max_open=2)
    held = pool.getconn()
    driver.fail_connect = 10**6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(PoolTimeout) as ei:
            pool.getconn(timeout=0.3)
        assert isinstance(ei.value.__cause__, FakeError)  # the timeout says why
        assert ei.value.__cause__.__traceback__ is None  # remembered detached: no cycles
        results: dict = {}
        t = start_waiter(pool, results, "w", timeout=10)
        wait_until(lambda: pool.stats().waiting == 1)
        time.sleep(0.3)
        assert "w" not in results  # still waiting: the live connection can come back
        held.close()
        t.join(5)
    assert isinstance(results["w"], fastpool.Conn)
    results["w"].close()
    attempts = 10**6 - driver.fail_connect
    assert 1 <= attempts <= 10, attempts
    assert pool.stats().open == 1


def test_opener_backs_off_while_the_database_is_down_and_nobody_waits(make_pool, driver):
    driver.fail_connect = 10**6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pool = make_pool(max_open=4, min_idle=2)
        time.sleep(1.0)
        tries = driver.fail_connect
    attempts = 10**6 - tries
    # 0.05 + 0.1 + 0.2 + 0.4 s of back-off fit in one second: a handful of tries, no spin.
    assert 1 <= attempts <= 12, attempts
    s = pool.stats()
    assert (s.open, s.in_use) == (0, 0)
    # A caller arriving during the back-off is not made to wait for it.
    driver.fail_connect = 0
    with pool.conn(timeout=1):
        pass
    wait_until(lambda: pool.stats().idle >= 2)


def test_timeout_bounds_a_checkout_whose_connect_hangs(make_pool, driver):
    driver.connect_gate = threading.Event()  # every connect hangs until set
    pool = make_pool(max_open=2)
    start = time.monotonic()
    with pytest.raises(PoolTimeout, match="opening=1"):
        pool.getconn(timeout=0.2)
    assert time.monotonic() - start < 2.0  # the caller is not held by connect()
    s = pool.stats()
    assert (s.open, s.in_use, s.idle) == (1, 0, 0)  # the slot is the hung connect's
    driver.connect_gate.set()
    # The late connection is not lost: it waits in the free list for the next caller.
    wait_until(lambda: pool.stats().idle == 1)
    with pool.conn(timeout=0) as c:
        assert c.raw is driver.conns[0]
    assert driver.opened == 1


def test_a_late_connection_goes_to_the_next_waiter(make_pool, driver):
    driver.connect_gate = threading.Event()
    pool = make_pool(max_open=1)
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0.1)  # its connect is still running
    results: dict = {}
    t = start_waiter(pool, results, "next", timeout=10)
    wait_until(lambda: pool.stats().waiting == 1)
    driver.connect_gate.set()
    t.join(5)
    assert isinstance(results["next"], fastpool.Conn)
    assert results["next"].raw is driver.conns[0] and driver.opened == 1
    results["next"].close()


def test_hung_connects_never_push_open_past_max_open(make_pool, driver):
    driver.connect_gate = threading.Event()
    pool = make_pool(max_open=2)
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            c = pool._counts()
            seen.append((c[1], c[13]))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    errors = run_threads(lambda i: pytest.raises(PoolTimeout, pool.getconn, timeout=0.2), 6)
    driver.connect_gate.set()
    wait_until(lambda: pool.stats().idle == 2)
    stop.set()
    sampler.join()
    assert not errors, errors
    assert max(o for o, _ in seen) <= 2 and max(n for _, n in seen) <= 2
    assert driver.opened == 2 and pool.stats().open == 2


def test_timeout_zero_still_connects_in_the_callers_thread(make_pool, driver):
    # "Never wait": no queue, no opener; the connect itself is bounded by the driver.
    pool = make_pool(max_open=1)
    seen = []
    real = driver.connect

    def connect():  # type: ignore[no-untyped-def]
        seen.append(threading.get_ident())
        return real()

    pool2 = make_pool(max_open=1, connect=connect)
    with pool2.conn(timeout=0):
        pass
    assert seen == [threading.get_ident()]
    assert pool.stats().open == 0


def test_close_wakes_waiters_and_closes_connections(make_pool, driver):
    pool = make_pool(max_open=3)
    idle = pool.getconn()
    a, b = pool.getconn(), pool.getconn()
    idle_raw, a_raw, b_raw = idle.raw, a.raw, b.raw
    idle.close()
    results: dict = {}
    c = pool.getconn()  # takes the idle one again; now all three are in use
    t = start_waiter(pool, results, "w")
    c.close()  # handed to the waiter
    t.join(5)
    w = results.pop("w")
    w.close()  # idle again
    holder = pool.getconn()
    t = start_waiter(pool, results, "w")
    pool.close()
    t.join(5)
    assert isinstance(results["w"], PoolClosed)
    assert not a_raw.closed and not b_raw.closed  # in use: closed when they come back
    for conn in (a, b, holder):
        conn.close()
    assert a_raw.closed and b_raw.closed and idle_raw.closed
    assert driver.live == 0
    assert pool.stats().open == 0
    with pytest.raises(PoolClosed):
        pool.getconn()
    pool.close()  # harmless


def test_close_closes_idle_connections_at_once(make_pool, driver):
    pool = make_pool(max_open=2)
    a, b = pool.getconn(), pool.getconn()
    a.close()
    pool.close()
    assert driver.conns[0].closed and not driver.conns[1].closed
    b.close()
    assert driver.live == 0


def test_give_back_twice_or_to_another_pool_raises_and_keeps_counts(make_pool):
    p1, p2 = make_pool(max_open=2), make_pool(max_open=2)
    c = p1.getconn()
    with pytest.raises(FastpoolError, match="another pool"):
        p2.putconn(c)
    assert p1.stats().in_use == 1 and p2.stats().open == 0
    p1.putconn(c)
    with pytest.raises(FastpoolError, match="already returned"):
        p1.putconn(c)
    s = p1.stats()
    assert (s.open, s.in_use, s.idle) == (1, 0, 1)
    c.close()  # Conn.close() after give-back is harmless, like a file's
    with pytest.raises(FastpoolError):
        c.raw


def test_close_failure_of_driver_does_not_break_the_pool(make_pool, driver):
    pool = make_pool(max_open=2, max_idle=0)
    driver.fail_close = True
    with pool.conn():
        pass
    assert pool.stats().open == 0
    with pool.conn():
        pass


def test_unlimited_max_open(make_pool):
    pool = make_pool(max_open=0)
    conns = [pool.getconn(timeout=0) for _ in range(50)]
    for c in conns:
        c.close()
    s = pool.stats()
    assert s.open == 50 and s.idle == 50 and s.max_open == 0


def test_stats_is_a_frozen_dataclass_with_go_fields():
    import dataclasses

    fields = {f.name for f in dataclasses.fields(fastpool.Stats)}
    assert {
        "max_open", "open", "in_use", "idle", "wait_count", "wait_duration", "max_idle_closed",
        "max_idle_time_closed", "max_lifetime_closed", "leaks_reclaimed", "bad_conns_discarded",
        "timeouts",
    } <= fields
    p = fastpool.Pool(lambda: None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.stats().open = 3  # type: ignore[misc]
    p.close()


def test_dropped_conn_is_reclaimed_counted_and_warned(make_pool, driver):
    pool = make_pool(max_open=1)
    c = pool.getconn()
    with pytest.warns(fastpool.ConnectionLeakWarning, match="dropped without close"):
        del c
    s = pool.stats()
    assert (s.in_use, s.idle, s.leaks_reclaimed) == (0, 1, 1)
    with pool.conn(timeout=0) as c2:
        assert c2.raw is driver.conns[0]


def test_counts_add_up_while_a_connect_is_in_flight(make_pool, driver):
    # Go's DBStats: InUse + Idle = OpenConnections. Here connects in flight are their own
    # state, so open == in_use + idle + opening in every snapshot.
    driver.connect_delay = 0.5
    pool = make_pool(max_open=2)
    results: dict = {}
    t = start_waiter(pool, results, "w")
    s = pool.stats()
    assert (s.open, s.in_use, s.idle, s.opening, s.waiting) == (1, 0, 0, 1, 1)
    t.join(5)
    s = pool.stats()
    assert (s.open, s.in_use, s.idle, s.opening) == (1, 1, 0, 0)
    results["w"].close()
    s = pool.stats()
    assert (s.open, s.in_use, s.idle, s.opening) == (1, 0, 1, 0)
    assert s.open == s.in_use + s.idle + s.opening


def test_drop_in_tallies_add_up_across_threads_and_refuse_a_bad_slot(make_pool):
    # A drop-in's hot-path counters (psycopg_pool's requests_num, usage_ms) live in the
    # core, under its C lock: none lost when threads add at once.
    pool = make_pool(max_open=1)

    def add() -> None:
        for _ in range(2000):
            pool._tally(0)
            pool._tally(3, 2)

    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pool._tallies() == (8000, 0, 0, 16000)
    with pytest.raises(IndexError):
        pool._tally(4)
    with pytest.raises(IndexError):
        pool._tally(-1)
    assert pool._tallies() == (8000, 0, 0, 16000)
