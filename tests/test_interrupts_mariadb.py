"""An interrupt in the middle of a statement never poisons the pool (real MariaDB).

Each API is interrupted while the server is running its statement, by SIGINT
(KeyboardInterrupt), by a signal handler that raises an ordinary exception (what timeout
libraries do) and by one that raises SystemExit. The caller must see exactly that
exception, the connection must be closed rather than pooled, and afterwards 50 statements,
each selecting its own token, must all get their own answer.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import uuid

import pytest

import fastpool
from fastpool.url import parse_url

MySQLdb = pytest.importorskip("MySQLdb", reason="mysqlclient is not installed")

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "pthread_kill"), reason="delivering a signal to a thread needs signal.pthread_kill"
)

SLOW = "SELECT SLEEP(0.8) /* fastpool-interrupt */"


class HandlerTimeout(Exception):
    """What a timeout library raises from its signal handler: an ordinary Exception."""


def _raise_handler_timeout(signum, frame):  # type: ignore[no-untyped-def]
    raise HandlerTimeout("raised by a signal handler")


def _raise_system_exit(signum, frame):  # type: ignore[no-untyped-def]
    raise SystemExit(3)


INTERRUPTS = {
    "KeyboardInterrupt": (signal.SIGINT, signal.default_int_handler, KeyboardInterrupt),
    "handler-exception": (signal.SIGUSR1, _raise_handler_timeout, HandlerTimeout),
    "SystemExit": (signal.SIGUSR2, _raise_system_exit, SystemExit),
}


def _run_tx(db: fastpool.Pool) -> None:
    with db.transaction() as tx:
        tx.execute("UPDATE interrupt_t SET n = n + 1 WHERE id = 1")
        tx.query_row(SLOW)


def _run_conn(db: fastpool.Pool) -> None:
    with db.conn() as c:
        c.execute("SET @mine = 1")
        c.query_row(SLOW)


APIS = {
    "execute": lambda db: db.execute(SLOW),
    "query_row": lambda db: db.query_row(SLOW),
    "query": lambda db: db.query(SLOW),
    "query-stream": lambda db: list(db.query(SLOW, stream=True)),
    "Conn": _run_conn,
    "Tx": _run_tx,
}


@pytest.fixture
def admin(mariadb):  # type: ignore[no-untyped-def]
    conn = MySQLdb.connect(autocommit=True, **parse_url(mariadb.dsn).connect_kwargs)
    yield conn
    conn.close()


def _statement_running(admin) -> bool:  # type: ignore[no-untyped-def]
    cur = admin.cursor()
    cur.execute(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
        " WHERE INFO LIKE %s AND ID <> CONNECTION_ID()", ("%fastpool-interrupt%",))
    (n,) = cur.fetchone()
    cur.close()
    return bool(n)


@contextlib.contextmanager
def signal_when_running(admin, signum):  # type: ignore[no-untyped-def]
    """Send signum to the main thread once the server shows our slow statement running."""
    main = threading.get_ident()
    done = threading.Event()
    sent: list[float] = []

    def watch() -> None:
        deadline = time.monotonic() + 10
        while not done.is_set() and time.monotonic() < deadline:
            if _statement_running(admin):
                signal.pthread_kill(main, signum)
                sent.append(time.monotonic())
                return
            time.sleep(0.02)

    t = threading.Thread(target=watch)
    t.start()
    try:
        yield sent
    finally:
        done.set()
        t.join(15)


@pytest.fixture
def db(mysql_pool):  # type: ignore[no-untyped-def]
    pool = mysql_pool(max_open=2)
    pool.execute("CREATE TABLE IF NOT EXISTS interrupt_t (id INT PRIMARY KEY, n INT)")
    pool.execute("INSERT IGNORE INTO interrupt_t VALUES (1, 0)")
    return pool


def check_every_answer(db: fastpool.Pool, n: int = 50) -> None:
    """n statements through every API, each selecting its own token."""
    for i in range(n):
        token = f"{uuid.uuid4().hex}-{i}"
        k = i % 5
        if k == 0:
            got = db.query_row("SELECT %s", (token,))
        elif k == 1:
            got = db.query("SELECT %s", (token,)).fetchone()
        elif k == 2:
            with db.query("SELECT %s", (token,), stream=True) as rows:
                got = next(rows)
        elif k == 3:
            with db.conn() as c:
                got = c.query_row("SELECT %s", (token,))
        else:
            with db.transaction() as tx:
                got = tx.query_row("SELECT %s", (token,))
        assert got == (token,), f"statement {i} got another's answer: {got!r}"


@pytest.mark.parametrize("kind", sorted(INTERRUPTS))
@pytest.mark.parametrize("api", sorted(APIS))
def test_interrupted_statement_reaches_the_caller_unchanged_and_the_pool_stays_in_sync(
    db, admin, api, kind
):
    signum, handler, expected = INTERRUPTS[kind]
    previous = signal.signal(signum, handler)
    try:
        before = db.stats()
        with signal_when_running(admin, signum) as sent:
            with pytest.raises(BaseException) as ei:
                APIS[api](db)
        assert sent, "the slow statement never showed up on the server"
    finally:
        signal.signal(signum, previous)
    # Exactly the interrupt, not a driver error that replaced it.
    assert type(ei.value) is expected, repr(ei.value)
    assert ei.value.__context__ is None or not isinstance(ei.value.__context__, MySQLdb.Error)
    s = db.stats()
    assert s.in_use == 0
    assert s.bad_conns_discarded == before.bad_conns_discarded + 1  # closed, never pooled
    assert s.open <= db.max_open
    check_every_answer(db)
    s = db.stats()
    assert s.in_use == 0 and s.bad_conns_discarded == before.bad_conns_discarded + 1


def test_ordinary_statement_errors_keep_the_connection(db):
    """The other side of the rule: the driver's own report of a failed statement leaves
    the connection usable and pooled."""
    (cid,) = db.query_row("SELECT CONNECTION_ID()")
    for bad in ("SELEC 1", "SELECT * FROM no_such_table", "SELECT 1 FROM DUAL WHERE nope = 1"):
        with pytest.raises(MySQLdb.Error):  # 1064, 1146, 1054 (an OperationalError)
            db.query_row(bad)
    assert db.stats().bad_conns_discarded == 0
    assert db.query_row("SELECT CONNECTION_ID()") == (cid,)


@pytest.mark.parametrize(
    ("code", "cls", "kind"),
    [
        (2014, "ProgrammingError", "broken"),  # mysqlclient raises out-of-sync as ProgrammingError
        (2013, "OperationalError", "broken"),
        (2055, "OperationalError", "broken"),
        (1927, "OperationalError", "broken"),
        (4031, "OperationalError", "broken"),
        (2006, "OperationalError", "retry"),
        (2006, "InterfaceError", "broken"),
        (2027, "InternalError", "broken"),  # any client-side code
        (1064, "ProgrammingError", "ok"),  # a syntax error
        (1062, "IntegrityError", "ok"),
        (1213, "OperationalError", "ok"),  # deadlock: the transaction is rolled back, the session lives
    ],
)
def test_mysql_errors_are_classified_by_code_whatever_class_carries_them(code, cls, kind):
    from fastpool.dialects import ERR_BROKEN, ERR_OK, ERR_RETRY, MySQLDialect

    exc = getattr(MySQLdb, cls)(code, "message")
    want = {"broken": ERR_BROKEN, "retry": ERR_RETRY, "ok": ERR_OK}[kind]
    assert MySQLDialect().classify(exc) == want
    for foreign in (KeyboardInterrupt(), SystemExit(1), HandlerTimeout(), TimeoutError(), ValueError()):
        assert MySQLDialect().classify(foreign) == ERR_BROKEN
