"""fastpool.deadline and statement_timeout on SQLite and the fake driver (no server)."""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import threading
import time

import pytest

import fastpool
from fastpool import ConfigError, DeadlineExceeded, FastpoolError

# A statement SQLite works on until interrupted.
SLOW = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


@pytest.fixture
def db():  # type: ignore[no-untyped-def]
    pool = fastpool.open("sqlite://:memory:", max_open=2)
    yield pool
    pool.close()


def test_deadline_exceeded_is_a_fastpool_error_and_a_timeout_error():
    assert issubclass(DeadlineExceeded, FastpoolError)
    assert issubclass(DeadlineExceeded, TimeoutError)
    assert DeadlineExceeded.__module__ == "fastpool"


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), 10**400, "1", True, None])
def test_bad_deadline_values_are_config_errors(bad):
    with pytest.raises(ConfigError, match="deadline"):
        fastpool.deadline(bad)


def test_nested_blocks_can_only_shorten():
    assert fastpool.remaining() is None
    with fastpool.deadline(10) as outer:
        with fastpool.deadline(100) as inner:
            assert inner.at == outer.at  # a longer inner block keeps the outer deadline
        with fastpool.deadline(1) as inner:
            assert inner.at < outer.at
            assert 0 < fastpool.remaining() <= 1
        assert fastpool.remaining() > 9
    assert fastpool.remaining() is None


def test_statement_past_its_deadline_is_interrupted_and_the_connection_kept(db):
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as ei:
        with fastpool.deadline(0.2):
            db.query_row(SLOW)
    took = time.monotonic() - start
    assert isinstance(ei.value.__cause__, sqlite3.OperationalError)  # "interrupted"
    assert took < 2.0
    s = db.stats()
    assert (s.deadlines_exceeded, s.statements_cancelled, s.bad_conns_discarded) == (1, 1, 0)
    assert s.in_use == 0 and s.open == 1
    assert db.query_row("SELECT 7") == (7,)


def test_statement_timeout_alone(db):
    db.statement_timeout = 0.2
    with pytest.raises(DeadlineExceeded):
        db.query_row(SLOW)
    db.statement_timeout = None
    assert db.query_row("SELECT 1") == (1,)
    assert db.stats().statements_cancelled == 1


def test_an_expired_deadline_sends_nothing(make_pool, driver):
    pool = make_pool(max_open=1)
    with pool.conn() as c:
        c.query_row("SELECT 1")
    sent = list(driver.conns[0].statements)
    with fastpool.deadline(0):
        with pytest.raises(DeadlineExceeded, match="before a connection"):
            pool.query_row("SELECT 2")
    with pool.conn() as c:
        with fastpool.deadline(0):
            with pytest.raises(DeadlineExceeded, match="before the statement was sent"):
                c.query_row("SELECT 3")
    assert driver.conns[0].statements == sent
    assert pool.stats().in_use == 0 and pool.stats().deadlines_exceeded == 2


def test_deadline_bounds_the_wait_for_a_connection(make_pool):
    pool = make_pool(max_open=1, timeout=30)
    held = pool.getconn()
    start = time.monotonic()
    with fastpool.deadline(0.2):
        with pytest.raises(DeadlineExceeded) as ei:
            pool.getconn()
    assert time.monotonic() - start < 2.0
    assert isinstance(ei.value.__cause__, fastpool.PoolTimeout)
    held.close()
    s = pool.stats()
    assert s.waiting == 0 and s.in_use == 0


def test_deadline_bounds_a_connect_that_hangs(make_pool, driver):
    driver.connect_gate = threading.Event()
    pool = make_pool(max_open=2, timeout=30)
    start = time.monotonic()
    with fastpool.deadline(0.2):
        with pytest.raises(DeadlineExceeded):
            pool.query_row("SELECT 1")
    assert time.monotonic() - start < 2.0
    driver.connect_gate.set()


def test_deadline_follows_copy_context_into_another_thread(db):
    results: dict = {}

    def work() -> None:
        try:
            db.query_row(SLOW)
        except BaseException as exc:
            results["exc"] = exc

    with fastpool.deadline(0.2):
        ctx = contextvars.copy_context()
    t = threading.Thread(target=ctx.run, args=(work,))
    t.start()
    t.join(10)
    assert isinstance(results.get("exc"), DeadlineExceeded)
    # A thread with its own, empty context has no deadline.
    plain = threading.Thread(target=lambda: results.setdefault("left", fastpool.remaining()))
    plain.start()
    plain.join(10)
    assert results["left"] is None


def test_deadline_follows_asyncio_tasks():
    async def main() -> tuple[float | None, float | None]:
        async def inner() -> float | None:
            return fastpool.remaining()

        with fastpool.deadline(5):
            task = asyncio.create_task(inner())
        outside = asyncio.create_task(inner())
        return await task, await outside

    inside, outside = asyncio.run(main())
    assert inside is not None and 0 < inside <= 5
    assert outside is None


def test_streaming_rows_keep_the_deadline_of_their_block(db):
    db.execute("CREATE TABLE IF NOT EXISTS many (n INTEGER)")
    db.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 1000) "
               "INSERT INTO many SELECT x FROM c")
    with fastpool.deadline(0.3):
        rows = db.query("SELECT a.n FROM many a, many b, many c", stream=True)
    # The block has ended, the Rows keeps its deadline: reading past it is cancelled.
    with pytest.raises(DeadlineExceeded, match="reading rows"):
        for _ in rows:
            pass
    assert db.stats().in_use == 0
    assert db.query_row("SELECT count(*) FROM many") == (1000,)


def test_no_watcher_thread_without_deadlines(db):
    threads_before = set(threading.enumerate())
    for _ in range(100):
        db.query_row("SELECT 1")
    assert db._deadline_watcher is None
    started = {t.name for t in set(threading.enumerate()) - threads_before}
    assert not {"fastpool-deadlines", "fastpool-killer"} & started  # none for deadlines
    with fastpool.deadline(5):
        db.query_row("SELECT 1")
    watcher = db._deadline_watcher
    assert watcher is not None and watcher.alive
    assert any(t.name == "fastpool-deadlines" for t in set(threading.enumerate()) - threads_before)
    db.close()
    assert not watcher.alive  # close() stops and joins it


def test_wsgi_middleware_opens_a_deadline_per_request():
    seen: list[float | None] = []

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        seen.append(fastpool.remaining())
        start_response("200 OK", [])
        return [b"ok"]

    wrapped = fastpool.deadlines.WSGIDeadline(app, 2.0, header="X-Request-Timeout")
    assert wrapped({}, lambda *a: None) == [b"ok"]
    assert wrapped({"HTTP_X_REQUEST_TIMEOUT": "0.5"}, lambda *a: None) == [b"ok"]
    assert wrapped({"HTTP_X_REQUEST_TIMEOUT": "junk"}, lambda *a: None) == [b"ok"]
    assert 1.5 < seen[0] <= 2.0 and 0 < seen[1] <= 0.5 and 1.5 < seen[2] <= 2.0
    ms = fastpool.deadlines.WSGIDeadline(app, header="x-envoy-expected-rq-timeout-ms", header_unit="ms")
    ms({"HTTP_X_ENVOY_EXPECTED_RQ_TIMEOUT_MS": "250"}, lambda *a: None)
    ms({}, lambda *a: None)
    assert 0 < seen[3] <= 0.25 and seen[4] is None
    with pytest.raises(ConfigError):
        fastpool.deadlines.WSGIDeadline(app, -1)


def test_django_middleware_opens_a_deadline_per_request():
    pytest.importorskip("django")
    from django.conf import settings
    from django.test import RequestFactory, override_settings

    if not settings.configured:
        settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], USE_TZ=True)
    from fastpool.deadlines import DjangoDeadlineMiddleware

    seen: list[float | None] = []

    def view(request):  # type: ignore[no-untyped-def]
        seen.append(fastpool.remaining())
        return "response"

    with override_settings(FASTPOOL_REQUEST_DEADLINE=2.0, FASTPOOL_DEADLINE_HEADER="X-Request-Timeout"):
        mw = DjangoDeadlineMiddleware(view)
        rf = RequestFactory()
        assert mw(rf.get("/")) == "response"
        assert mw(rf.get("/", HTTP_X_REQUEST_TIMEOUT="0.5")) == "response"
    with override_settings(FASTPOOL_REQUEST_DEADLINE=None):
        assert DjangoDeadlineMiddleware(view)(RequestFactory().get("/")) == "response"
    with override_settings(FASTPOOL_REQUEST_DEADLINE=-3):
        with pytest.raises(ConfigError):
            DjangoDeadlineMiddleware(view)
    assert 1.5 < seen[0] <= 2.0 and 0 < seen[1] <= 0.5 and seen[2] is None
    assert fastpool.remaining() is None


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")
def test_a_forked_child_never_watches_the_parents_statements(db):
    import os
    import warnings

    started = threading.Event()

    def slow() -> None:
        with fastpool.deadline(10):
            started.set()
            with pytest.raises(DeadlineExceeded):
                with fastpool.deadline(1.0):
                    db.query_row(SLOW)

    t = threading.Thread(target=slow)
    t.start()
    started.wait(5)
    deadline_at = time.monotonic() + 5
    while not db._watching() and time.monotonic() < deadline_at:
        time.sleep(0.01)
    assert len(db._watching()) == 1
    r, w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads running
        pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, str(len(db._watching())).encode())
        os._exit(0)
    os.close(w)
    seen_in_child = os.read(r, 16).decode()
    os.close(r)
    os.waitpid(pid, 0)
    t.join(10)
    assert seen_in_child == "0"


def test_one_deadline_object_entered_twice_leaves_nothing_set(db):
    # Nested on one thread, and shared by two threads whose blocks overlap: every exit
    # undoes its own entry, so no later call outside a block sees an expired deadline.
    d = fastpool.deadline(0.05)
    with d:
        with d:
            pass
        assert fastpool.deadlines.remaining() is not None
    assert fastpool.deadlines.remaining() is None

    shared = fastpool.deadline(0.05)
    first_in, second_out = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        with shared:
            first_in.set()
            second_out.wait(5)
        time.sleep(0.1)  # past the deadline, outside any block
        try:
            assert db.query_row("SELECT 1") == (1,)
        except BaseException as exc:  # noqa: B036 - reported below
            errors.append(exc)

    def second() -> None:
        first_in.wait(5)
        with shared:
            pass
        second_out.set()
        time.sleep(0.1)
        try:
            assert db.query_row("SELECT 2") == (2,)
        except BaseException as exc:  # noqa: B036
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    time.sleep(0.06)
    assert db.query_row("SELECT 3") == (3,)


def test_an_interrupt_that_lands_before_the_statement_runs_is_repeated(monkeypatch):
    # sqlite3's interrupt does nothing when no statement is running yet: on a loaded machine
    # the deadline can fire between the statement's registration and SQLite's first step.
    # The first interrupt is dropped here to stand for that; the watcher must repeat it.
    from fastpool.dialects.sqlite import SQLiteDialect

    calls = []
    interrupt = SQLiteDialect.interrupt

    def first_lost(self, raw):
        calls.append(time.monotonic())
        if len(calls) > 1:
            interrupt(self, raw)

    monkeypatch.setattr(SQLiteDialect, "interrupt", first_lost)
    bounded = SLOW.replace("FROM c)", "FROM c WHERE x < 20000000)")  # seconds, not forever
    db = fastpool.open("sqlite://:memory:", max_open=1, statement_timeout=0.05)
    try:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="statement_timeout"):
            db.query_row(bounded)
        elapsed = time.monotonic() - started
        assert len(calls) >= 2, calls
        assert elapsed < 2.0, f"the statement ran on for {elapsed:.2f}s after a lost interrupt"
        assert db.query_row("SELECT 2")[0] == 2  # the interrupted connection is in sync
        assert db.stats().statements_cancelled == 1
    finally:
        db.close()


def test_a_statement_timeout_says_so_and_a_deadline_says_deadline(make_pool):
    db = fastpool.open("sqlite://:memory:", max_open=1, statement_timeout=0.05)
    try:
        with pytest.raises(DeadlineExceeded, match=r"statement_timeout \(0.05s\) exceeded while"):
            db.query_row(SLOW)
        db.statement_timeout = 10
        with pytest.raises(DeadlineExceeded, match=r"^deadline exceeded while"):
            with fastpool.deadline(0.05):
                db.query_row(SLOW)
        # A wait for a connection is bounded by the block only, whatever statement_timeout is.
        with db.conn():
            with pytest.raises(DeadlineExceeded, match=r"^deadline exceeded (waiting|before)"):
                with fastpool.deadline(0.05):
                    db.query_row("SELECT 1")
    finally:
        db.close()
