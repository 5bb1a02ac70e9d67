"""Driver dialects: how to open, prepare, check and close one kind of DB-API connection.

A dialect holds what differs between drivers; the pool itself never imports a driver.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Callable

from .errors import ConfigError

Connect = Callable[[], Any]

# How a driver error bears on the connection it happened on (the core's ERR_* values).
ERR_OK = 0  # the statement failed; the connection is fine
ERR_BROKEN = 1  # the connection is unusable: close it, never pool it
ERR_RETRY = 2  # broken, and the statement provably never reached the server: retry it

# Seconds a mysql:// connect may take when the URL sets no connect_timeout.
DEFAULT_CONNECT_TIMEOUT = 10


class Dialect:
    """The generic DB-API 2 dialect: no socket to poll, close() to close."""

    name = "generic"
    # True when the driver's streaming cursor iterates in C (sqlite3): Rows then steps it
    # row by row; otherwise it reads batches with fetchmany().
    cursor_iterates_in_c = False

    def connect_factory(self, kwargs: dict[str, Any]) -> Connect:
        raise ConfigError(f"the {self.name!r} dialect cannot open URLs; use fastpool.Pool(connect)")

    def fileno(self, raw: Any) -> int:
        """The connection's socket, polled for liveness at checkout; -1 when unknown."""
        return -1

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

    def kill_statement(self, raw: Any) -> str:
        """The SQL that cancels the statement running on ``raw`` (cancel_method "kill")."""
        raise NotImplementedError

    def kill_session(self, raw: Any) -> str:
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

    def reset(self, raw: Any) -> None:
        """Undo what a holder may have left: an open transaction."""
        raw.rollback()

    def drain(self, cursor: Any, budget: int) -> bool:
        """Discard a half-read result; True if the connection is clean afterwards."""
        return True

    def begin(self, raw: Any) -> None:
        """Start a transaction (DB-API connections not in autocommit are always in one)."""

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


class MySQLDialect(Dialect):
    """mysqlclient (MySQLdb), the first-class driver."""

    name = "mysql"

    def connect_factory(self, kwargs: dict[str, Any]) -> Connect:
        try:
            import MySQLdb
        except ImportError:
            raise ConfigError(
                "mysql:// needs mysqlclient: pip install 'fastpool[mysql]'"
            ) from None

        # A connect that never returns must not hold a pool slot forever: without a
        # connect_timeout, libmariadb waits on a half-open network for as long as TCP does.
        kwargs = {"connect_timeout": DEFAULT_CONNECT_TIMEOUT, **kwargs}
        self._kwargs = kwargs

        def connect() -> Any:
            return MySQLdb.connect(**kwargs)

        return connect

    def fileno(self, raw: Any) -> int:
        return int(raw.fileno())

    cancel_method = "kill"
    _kwargs: dict[str, Any] | None = None

    def kill_statement(self, raw: Any) -> str:
        # KILL QUERY ends the statement with error 1317 and leaves the session usable.
        return f"KILL QUERY {int(raw._fastpool_server_id)}"

    def kill_session(self, raw: Any) -> str:
        return f"KILL {int(raw._fastpool_server_id)}"

    def side_connect(self, timeout: float) -> Any:
        if self._kwargs is None:
            return None
        import MySQLdb

        t = max(1, int(timeout))
        conn = MySQLdb.connect(**{**self._kwargs, "connect_timeout": t, "read_timeout": t,
                                  "write_timeout": t})
        conn.autocommit(True)
        return conn

    def stream_cursor(self, raw: Any) -> Any:
        from MySQLdb.cursors import SSCursor

        return raw.cursor(SSCursor)

    # Error codes that leave the connection unusable, whatever exception class mysqlclient
    # raises them with (it raises 2014 as ProgrammingError, for one). Every client-side
    # code (2000-2999, libmariadb's errmsg.h) counts as broken too: they report trouble
    # on the client's side of the protocol, and reconnecting is cheaper than guessing.
    CR_SERVER_GONE_ERROR = 2006  # sending the command failed: it never reached the server
    BROKEN_CODES = frozenset({
        2006, 2013,  # server gone (send failed) / lost connection during the query
        2055,  # lost connection (extended)
        2014,  # commands out of sync
        1927,  # ER_CONNECTION_KILLED
        4031,  # ER_CLIENT_INTERACTION_TIMEOUT (disconnected for inactivity)
        1053,  # ER_SERVER_SHUTDOWN
    })

    def prepare(self, raw: Any) -> None:
        # Statements outside a transaction run in autocommit, so giving a connection back
        # needs no round trip. The driver never reconnects by itself under the pool
        # (mysqlclient's default), which would silently lose session settings.
        raw.autocommit(True)
        # The server's id for KILL QUERY, read now: mysqlclient refuses any call on a
        # connection while another thread is inside a statement on it.
        raw._fastpool_server_id = int(raw.thread_id())

    def classify(self, exc: BaseException) -> int:
        import MySQLdb

        if not isinstance(exc, MySQLdb.Error):
            return ERR_BROKEN  # not the driver's report: the protocol state is unknown
        if isinstance(exc, MySQLdb.InterfaceError):
            return ERR_BROKEN  # the connection object is closed
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if code is None:
            return ERR_OK  # raised by mysqlclient's Python side before sending anything
        if code == self.CR_SERVER_GONE_ERROR:
            return ERR_RETRY
        if code in self.BROKEN_CODES or 2000 <= code < 3000:
            return ERR_BROKEN
        return ERR_OK

    def reset(self, raw: Any) -> None:
        # Roll back first: turning autocommit back on would commit the open transaction.
        raw.rollback()
        if not raw.get_autocommit():
            raw.autocommit(True)

    def drain(self, cursor: Any, budget: int) -> bool:
        # An unbuffered result must be read off the wire before the connection can be used.
        left = cursor.fetchmany(budget + 1)
        if len(left) > budget:
            return False
        cursor.close()
        return True

    def begin(self, raw: Any) -> None:
        raw.begin()


_memory_ids = itertools.count(1)


class SQLiteDialect(Dialect):
    """The standard library's sqlite3: the embedded default, needs no server."""

    name = "sqlite"
    cursor_iterates_in_c = True
    cancel_method = "interrupt"

    def interrupt(self, raw: Any) -> None:
        raw.interrupt()

    def connect_factory(self, kwargs: dict[str, Any]) -> Connect:
        import sqlite3

        kwargs = dict(kwargs)
        database = kwargs.pop("database")
        if database == ":memory:":
            # One shared in-memory database per pool; it lives while a connection is open.
            database = f"file:fastpool-mem-{os.getpid()}-{next(_memory_ids)}?mode=memory&cache=shared"
            kwargs["uri"] = True
        # Connections move between threads through the pool (one thread at a time).
        kwargs.setdefault("check_same_thread", False)
        kwargs.setdefault("isolation_level", None)  # autocommit, transactions via BEGIN

        def connect() -> Any:
            return sqlite3.connect(database, **kwargs)

        return connect

    def classify(self, exc: BaseException) -> int:
        import sqlite3

        if not isinstance(exc, Exception):
            return ERR_BROKEN
        if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
            return ERR_BROKEN
        # sqlite3 reports plain SQL errors ("no such table") as OperationalError too;
        # an embedded database has no connection to lose.
        return ERR_OK

    def reset(self, raw: Any) -> None:
        if raw.in_transaction:
            raw.rollback()

    def begin(self, raw: Any) -> None:
        raw.execute("BEGIN")


DIALECTS: dict[str, type[Dialect]] = {
    "generic": Dialect,
    "mysql": MySQLDialect,
    "mysqldb": MySQLDialect,
    "sqlite": SQLiteDialect,
    "sqlite3": SQLiteDialect,
}


def get_dialect(name: str | Dialect) -> Dialect:
    if isinstance(name, Dialect):
        return name
    try:
        return DIALECTS[str(name).lower()]()
    except KeyError:
        raise ConfigError(
            f"unknown driver {name!r} (known: {', '.join(sorted(DIALECTS))})"
        ) from None


def driver_error_class(raw: Any) -> type[BaseException] | None:
    """The DB-API ``Error`` class of a connection's driver: looked up in the connection's
    module and then in each package above it (``mysql.connector.connection`` ->
    ``mysql.connector`` -> ``mysql``), as DBUtils does."""
    import sys

    path = type(raw).__module__.split(".")
    while path:
        module = sys.modules.get(".".join(path))
        err = getattr(module, "Error", None)
        if isinstance(err, type) and issubclass(err, Exception):
            return err
        path.pop()
    return None


def guess_dialect(raw: Any) -> Dialect:
    """Pick the dialect from the module a connection object comes from."""
    module = type(raw).__module__.split(".", 1)[0]
    if module == "MySQLdb":
        return MySQLDialect()
    if module in ("sqlite3", "_sqlite3"):
        return SQLiteDialect()
    return Dialect()
