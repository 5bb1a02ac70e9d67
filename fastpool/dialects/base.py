"""The generic dialect, and what every dialect shares."""

from __future__ import annotations

import os
from typing import Any, Callable

from ..errors import ConfigError

Connect = Callable[[], Any]

# How a driver error bears on the connection it happened on (the core's ERR_* values).
ERR_OK = 0  # the statement failed; the connection is fine
ERR_BROKEN = 1  # the connection is unusable: close it, never pool it
ERR_RETRY = 2  # broken, and the statement provably never reached the server: retry it

# What a connection given back needs (Dialect.state_at_checkin).
CLEAN = 0
ROLL_BACK = 1
DISCARD = 2


class Dialect:
    """The generic DB-API 2 dialect: no socket to poll, close() to close."""

    name = "generic"
    # True when the driver's streaming cursor iterates in C (sqlite3): Rows then steps it
    # row by row; otherwise it reads batches with fetchmany().
    cursor_iterates_in_c = False

    def connect_factory(self, kwargs: dict[str, Any]) -> Connect:
        raise ConfigError(f"the {self.name!r} dialect cannot open URLs; use fastpool.Pool(connect)")

    # True for an asyncio driver: its connections reach the dialect through fastpool.aio's
    # SyncConnection, and connect_factory returns a coroutine function.
    is_async = False

    def fileno(self, raw: Any) -> int:
        """The connection's socket, polled for liveness at checkout; -1 when unknown."""
        return -1

    def is_dead(self, raw: Any) -> bool:
        """For a connection with no socket to poll (fileno -1): whether the driver already
        knows it is closed, without a round trip. Used when ``checks_liveness`` is True."""
        return False

    checks_liveness = False

    # True when the dialect reads, at every give-back, whether the connection is clean
    # (state_at_checkin; PostgreSQL: libpq's transaction status, no round trip).
    checks_state_at_checkin = False

    # With checks_state_at_checkin: a getter that runs in C (operator.attrgetter) and
    # reads, from the pool's connection, a value equal to clean_value exactly when
    # state_at_checkin would say CLEAN; the core then skips the Python call. None: none.
    clean_probe: Callable[[Any], Any] | None = None
    clean_value: Any = None

    def state_at_checkin(self, raw: Any) -> int:
        """What a connection given back needs, read without a round trip: CLEAN,
        ROLL_BACK (reset() makes it clean) or DISCARD."""
        return CLEAN

    def session_is_idle(self, raw: Any) -> bool:
        """fastpool.aio, after a task was cancelled mid-statement: whether the driver itself
        ended the statement (the session idle), so nothing needs ending on the server."""
        return False

    def set_behind_pooler(self, on: bool) -> None:
        """``behind_pooler=True``: only PostgreSQL's dialect has a meaning for it."""
        if on:
            raise ConfigError(f"behind_pooler is for postgresql:// (PgBouncer in transaction"
                              f" mode); the {self.name!r} dialect has no use for it")

    def abort(self, raw: Any, fd: int) -> None:
        """Cut the connection under the driver from another thread (a statement whose
        cancel went unanswered): its blocked read returns at once."""
        if fd >= 0:
            shut_socket(fd)

    def close(self, raw: Any) -> None:
        raw.close()

    def stream_cursor(self, raw: Any) -> Any:
        """A cursor that fetches rows from the server as they are read."""
        return raw.cursor()

    # The driver's DB-API ``Error`` class, found from its first connection (None: unknown).
    error_class: type[BaseException] | None = None
    # How a statement past its deadline is cancelled: "kill" (kill_statement() over a side
    # connection), "interrupt" (interrupt() from another thread), None (it is not).
    cancel_method: str | None = None

    def kill_statement(self, raw: Any) -> str | Callable[[], None]:
        """The SQL that cancels the statement running on ``raw`` (cancel_method "kill"), sent
        over a side connection; or a callable that cancels it by itself."""
        raise NotImplementedError

    def kill_session(self, raw: Any) -> str | Callable[[], None]:
        """The SQL that ends the whole server session of ``raw`` (cancel_method "kill"), sent
        after its socket was shut down because the statement's cancel went unanswered."""
        raise NotImplementedError

    def interrupt(self, raw: Any) -> None:
        """Cancel the statement running on ``raw`` from another thread ("interrupt")."""
        raise NotImplementedError

    def side_connect(self, timeout: float) -> Any:
        """A connection for KILL QUERY, outside the pool; None: use the pool's connect()."""
        return None

    def prepare(self, raw: Any) -> None:
        """Make a fresh connection ready for pooling (e.g. autocommit on)."""
        if self.error_class is None:
            self.error_class = driver_error_class(raw)

    def classify(self, exc: BaseException) -> int:
        """ERR_OK, ERR_BROKEN or ERR_RETRY for an error raised by a statement.

        Only the driver's own report of a failed statement can leave the connection in a
        known state. Anything else that escaped from the middle of a statement (an
        interrupt, an exception raised by a signal handler or a timeout library) may have
        cut the protocol anywhere: the connection is closed, never pooled.
        """
        if not isinstance(exc, Exception):
            return ERR_BROKEN
        if self.error_class is not None and not isinstance(exc, self.error_class):
            return ERR_BROKEN
        if type(exc).__name__ in ("InterfaceError", "OperationalError"):
            return ERR_BROKEN  # DB-API's "connection trouble" classes: reconnecting is cheap
        return ERR_OK

    def ping(self, raw: Any) -> None:
        """A round trip that proves the connection answers (Pool.ping): the driver's own
        ping() where it has one, else SELECT 1."""
        ping = getattr(raw, "ping", None)
        if callable(ping):
            ping()
            return
        cur = raw.cursor()
        try:
            cur.execute("SELECT 1")
            cur.fetchall()
        finally:
            cur.close()

    def reset(self, raw: Any) -> None:
        """Undo what a holder may have left: an open transaction."""
        raw.rollback()

    def drain(self, cursor: Any, budget: int) -> bool:
        """Discard a half-read result; True if the connection is clean afterwards."""
        return True

    def begin(self, raw: Any) -> None:
        """Start a transaction (DB-API connections not in autocommit are always in one)."""

    # ---- several hosts (fastpool/multihost) ----------------------------------------
    def role_at_connect(self, raw: Any) -> bool | None:
        """Whether a new connection's server takes writes (True: a primary), when the
        driver knows it without a round trip; None when it does not."""
        return None

    def probe_role(self, raw: Any) -> tuple[bool, float | None]:
        """(takes writes, replication lag in seconds or None when unknown): one round trip
        on a connection kept for probing its host."""
        raise ConfigError(f"the {self.name!r} dialect cannot tell a primary from a replica:"
                          f" a host list needs postgresql:// or mysql://")

    def refused_as_read_only(self, exc: BaseException) -> bool:
        """True when exc is a server refusing a write because it is read-only (a replica,
        or a primary being demoted): the statement did not run."""
        return False

    def aborted_by_shutdown(self, exc: BaseException) -> bool:
        """True when exc is the server's own reply that it ended the statement's session
        while shutting down, so the statement, in autocommit, did not commit."""
        return False

    def neutralise_inherited(self, raw: Any) -> None:
        """In a forked child: make sure dropping ``raw`` cannot touch the parent's socket.

        The socket is replaced by /dev/null under the same descriptor number, so a close
        (and a driver's goodbye packet) goes nowhere, while the parent's socket stays open.
        """
        fd = self.fileno(raw)
        if fd < 0:
            return
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


# Seconds a side connection to a host of a host list may take to connect and answer.
SIDE_TIMEOUT = 5.0


def on_own_host(raw: Any, sql: str) -> str | Callable[[], None]:
    """kill_statement / kill_session for a connection of a host list: SQL sent over a new
    connection to raw's own host (the deadline watcher's side connection may be on
    another: the pool follows the primary); the plain SQL otherwise."""
    side = getattr(raw, "_fastpool_side", None)
    if side is None:
        return sql

    def send() -> None:
        conn = side.side_connect(SIDE_TIMEOUT)
        try:
            cur = conn.cursor()
            cur.execute(sql)
            cur.close()
        finally:
            conn.close()

    return send


def shut_socket(fd: int) -> None:
    """Shut a connection's socket down under the driver: its blocked read returns at once."""
    import socket

    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        s.close()


def driver_error_class(raw: Any) -> type[BaseException] | None:
    """The DB-API ``Error`` class of a connection's driver: looked up in the connection's
    module and then in each package above it (``mysql.connector.connection`` ->
    ``mysql.connector`` -> ``mysql``), as DBUtils does."""
    import sys

    raw = getattr(raw, "driver_connection", raw)  # fastpool.aio's SyncConnection
    path = type(raw).__module__.split(".")
    while path:
        module = sys.modules.get(".".join(path))
        err = getattr(module, "Error", None)
        if isinstance(err, type) and issubclass(err, Exception):
            return err
        path.pop()
    return None


