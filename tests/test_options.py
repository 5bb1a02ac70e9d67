"""Every value of every option, at open(), Pool() and on a live assignment, either takes
effect (what the pool reports is what the core enforces) or raises ConfigError naming the
option and leaves the pool exactly as it was."""

from __future__ import annotations

import decimal
import math
import sqlite3
import time

import pytest
from threads import opener_done
from hypothesis import given, settings
from hypothesis import strategies as st

import fastpool
from fastpool import ConfigError
from fastpool.options import DEFAULTS, MAX_SECONDS, MAX_SIZE

SIZES = ("max_open", "max_idle", "min_idle", "max_waiting")
DURATIONS = ("max_lifetime", "max_idle_time", "timeout", "leak_timeout", "statement_timeout",
             "check_after")
HOOKS = ("configure", "check", "reset")

absurd_ints = st.sampled_from(
    [10**30, 2**63, 2**63 - 1, 2**64, 2**31, 2**31 - 1, 2**31 + 1, 10**400, -(10**400), -(2**63)]
)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    absurd_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e9, 1e9 + 1, 1e300, 0.0, -0.0]),
    st.text(max_size=4),
    st.sampled_from([[], (), {}, object(), decimal.Decimal("1.5"), b"3", 3j]),
    # Callables: valid hooks (id keeps every connection: it returns a truthy int).
    st.sampled_from([id, lambda raw: None]),
    st.sampled_from(["pool-a", "x" * 200, "x" * 201, "tab\there", "shop@db:3306"]),
)


def accepted_form(name: str, value: object) -> object:
    """The oracle: what a valid value must read back as, or ConfigError if it is invalid."""
    if name in HOOKS:
        return value if value is None or callable(value) else ConfigError
    if name == "name":
        ok = isinstance(value, str) and 0 < len(value) <= 200 and value.isprintable()
        return value if value is None or ok else ConfigError
    if name in SIZES:
        if value is None and name in ("max_idle", "max_waiting"):
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SIZE:
            return ConfigError
        return value
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ConfigError
    if isinstance(value, int) and abs(value) > 10**308:
        return ConfigError
    f = float(value)
    if math.isnan(f) or f < 0 or (f == 0 and name not in ("timeout", "check_after")):
        return ConfigError
    if math.isinf(f):
        return None
    if f > MAX_SECONDS:
        return ConfigError
    return f


def reported(db: fastpool.Pool) -> tuple[object, ...]:
    return tuple(getattr(db, name) for name in DEFAULTS)


def enforced(db: fastpool.Pool) -> tuple[object, ...]:
    return db._settings()


def check_consistent(db: fastpool.Pool) -> None:
    """What the pool reports is what its core enforces."""
    mo, mi, mn, ml, mit, t, st = enforced(db)
    assert db.max_open == mo
    assert db.max_idle == mi
    assert db.min_idle == mn
    assert (db.max_lifetime, db.max_idle_time, db.timeout, db.statement_timeout) == (ml, mit, t, st)
    # A hook option set is a hook the core calls; one cleared is a slot left empty.
    assert (db._check_hook is None) == (db.check is None)
    assert (db._reset_hook is None) == (db.reset is None)


def check_refusal(exc: ConfigError, name: str) -> None:
    msg = str(exc)
    assert name in msg
    assert len(msg) < 400  # a huge value is described, never printed whole


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(sorted(DEFAULTS)), value=values)
def test_open_takes_effect_or_refuses_with_config_error(name, value):
    want = accepted_form(name, value)
    for make in (lambda **o: fastpool.open("sqlite://:memory:", **o),
                 lambda **o: fastpool.Pool(lambda: sqlite3.connect(":memory:"), **o)):
        if want is ConfigError:
            with pytest.raises(ConfigError) as ei:
                make(**{name: value})
            check_refusal(ei.value, name)
            continue
        db = make(**{name: value})
        try:
            got = getattr(db, name)
            if name == "max_idle":
                # None follows max_open; a value above it is clamped (Go's rule).
                cap = db.max_open or None
                want_idle = cap if value is None else (min(value, cap) if cap else value)
                assert got == want_idle
            elif name == "min_idle":
                assert got == (min(value, db.max_open) if db.max_open else value)
            elif name == "name" and value is None:
                assert got and got.isprintable() and "***" not in got  # derived, no password
            else:
                assert got == want
            check_consistent(db)
        finally:
            db.close()


@pytest.fixture(scope="module")
def live_db():  # type: ignore[no-untyped-def]
    db = fastpool.open("sqlite://:memory:", max_open=4, max_idle=3, timeout=5)
    yield db
    db.close()


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(sorted(DEFAULTS)), value=values)
def test_live_assignment_takes_effect_or_leaves_the_pool_as_it_was(live_db, name, value):
    db = live_db
    # Known starting point, with connections in use and idle so resizes have work to do.
    db.max_open, db.max_idle, db.min_idle = 4, 3, 0
    db.max_lifetime, db.max_idle_time, db.timeout, db.leak_timeout = 3600.0, 300.0, 5.0, None
    db.statement_timeout = None
    db.configure = db.check = db.reset = db.max_waiting = db.name = None
    db.check_after = 0.0
    held = [db.conn(), db.conn()]
    held[1].close()
    # A connect an earlier example's min_idle asked for may still be in flight: the
    # snapshot is taken once the opener is done (on a free-threaded build it really is
    # still running here; with the GIL it rarely was).
    opener_done(db)
    before = (reported(db), enforced(db), db._counts())
    want = accepted_form(name, value)
    try:
        if want is ConfigError:
            with pytest.raises(ConfigError) as ei:
                setattr(db, name, value)
            check_refusal(ei.value, name)
            assert (reported(db), enforced(db), db._counts()) == before
        else:
            setattr(db, name, value)
            check_consistent(db)
            if name in ("max_open", "timeout", "max_lifetime", "max_idle_time", "leak_timeout",
                        "statement_timeout"):
                assert getattr(db, name) == want
        # Whatever happened, the pool still works and still takes valid settings.
        db.statement_timeout = None  # a drawn 1e-300 would cancel the check itself
        db.max_open = 4
        db.max_idle = 2
        assert enforced(db)[:2] == (4, 2)
        with db.conn(timeout=1) as c:
            assert c.query_row("SELECT 7") == (7,)
    finally:
        held[0].close()


@pytest.mark.parametrize("timeout", [True, "1", -1, float("nan"), 10**400, 2e9, [1]])
def test_per_call_timeout_is_validated_like_the_option(live_db, timeout):
    before = live_db._counts()
    with pytest.raises(ConfigError, match="timeout"):
        live_db.conn(timeout=timeout)
    assert live_db._counts() == before


def test_per_call_timeout_infinity_means_forever(live_db):
    with live_db.conn(timeout=float("inf")) as c:
        assert c.query_row("SELECT 1") == (1,)


SMALL = st.integers(min_value=0, max_value=4)


@settings(max_examples=60, deadline=None)
@given(max_open=SMALL, max_idle=st.one_of(st.none(), SMALL), min_idle=SMALL,
       order=st.permutations(["max_open", "max_idle", "min_idle"]), live=st.booleans())
def test_sizes_are_checked_together_and_never_storm(max_open, max_idle, min_idle, order, live):
    # Every combination holds min_idle <= max_idle <= max_open (clamped, as Go clamps
    # max_idle), at open() and assigned live in any order; none makes the opener and the
    # give-back fight (min_idle above max_idle used to connect and close ~6,600 times a s).
    connects = []

    def connect() -> sqlite3.Connection:
        connects.append(1)
        return sqlite3.connect(":memory:", check_same_thread=False)

    wanted = {"max_open": max_open, "max_idle": max_idle, "min_idle": min_idle}
    if live:
        db = fastpool.Pool(connect, max_open=2, min_idle=1)
        for name in order:
            setattr(db, name, wanted[name])
    else:
        db = fastpool.Pool(connect, **wanted)
    try:
        mo, mi, mn, *_ = enforced(db)
        cap_idle = mi if mi is not None else (mo or None)
        if mo:
            assert cap_idle is not None and cap_idle <= mo
        if cap_idle is not None:
            assert mn <= cap_idle
        check_consistent(db)
        time.sleep(0.15)
        s = db.stats()
        # Resizing closes at most what was opened before; a storm closes hundreds by now.
        assert s.max_idle_closed <= 6, s
        assert len(connects) <= 8, (len(connects), s)
        assert s.open == s.in_use + s.idle + s.opening
    finally:
        db.close()
