"""PostgreSQL through psycopg 3: ``postgresql://`` and ``postgres://`` URLs, the sync
``psycopg.Connection`` (fastpool.open) and the async ``psycopg.AsyncConnection``
(fastpool.aio.open, through its SyncConnection face).

What it follows, as the MySQL dialect does:

* connections run in autocommit, so a clean connection goes back with no round trip; what
  a holder left is read from libpq's transaction status at every give-back (no round trip
  either): idle is clean, a transaction (open or failed) is rolled back, a connection still
  mid-statement or in an unknown state is discarded;
* a dead connection is found at checkout by polling its socket (the core's poll); errors
  are classified from psycopg's classes and SQLSTATEs, and a statement is retried only
  when psycopg refused it before sending (its connection was already closed);
* a statement past its deadline is cancelled with libpq's cancel request
  (``cancel_safe()``), sent from the deadline watcher's killer thread; if the statement has
  not ended soon after, the socket is shut and ``pg_terminate_backend()`` ends the session;
* ``behind_pooler=True``: for PgBouncer in transaction mode (see pooler.py).
"""

from __future__ import annotations

import importlib
import operator
import time
from functools import partial
from typing import Any, Awaitable, Callable

from ..errors import ConfigError
from .._asyncpg import face_clean
from . import pooler
from .base import (CLEAN, DISCARD, ERR_BROKEN, ERR_OK, ERR_RETRY, ROLL_BACK, Connect, Dialect,
                   on_own_host, shut_socket)

# Seconds a postgresql:// connect may take when the URL sets no connect_timeout.
DEFAULT_CONNECT_TIMEOUT = 10
# Seconds the cancel request itself may take (it opens a connection of its own).
CANCEL_TIMEOUT = 2.0
# A streaming result given back unread is read to its end for up to this long (in steps
# of DRAIN_STEP rows) before it is cancelled instead.
DRAIN_SECONDS = 0.005
DRAIN_STEP = 128

# SQLSTATEs that leave the session unusable: class 08 (connection exception) and the
# server shutting the session down (57P01 admin shutdown, 57P02 crash shutdown, 57P03
# cannot connect now, 57P05 idle session timeout).
_BROKEN_STATES = frozenset({"57P01", "57P02", "57P03", "57P05"})
# psycopg's message for a statement refused because the connection was closed already:
# nothing reached the server, so it is safe to run on another connection.
_CLOSED_BEFORE_SENDING = "the connection is closed"

# libpq's PQtransactionStatus values (psycopg.pq.TransactionStatus).
IDLE, ACTIVE, INTRANS, INERROR, UNKNOWN = 0, 1, 2, 3, 4


# A host's role and, on a replica, how far behind it is: 0 when it has replayed all it
# received (an idle primary writes nothing, so the last replayed commit ages without lag),
# else the age of the last replayed commit; unknown (NULL) before anything was replayed.
_PROBE_ROLE_SQL = """SELECT pg_is_in_recovery(), CASE
  WHEN NOT pg_is_in_recovery() THEN 0
  WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
  ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END"""


class PostgreSQLDialect(Dialect):
    """psycopg 3, sync: ``fastpool.open("postgresql://...")``."""

    name = "postgresql"
    driver = "psycopg"
    module_name = "psycopg"
    install_hint = "postgresql:// needs psycopg 3: pip install 'fastpool[postgresql]'"
    cancel_method = "kill"  # the killer thread sends kill_statement()'s cancel request
    checks_state_at_checkin = True
    # state_at_checkin's CLEAN, read by the core in C: libpq's status idle.
    clean_probe = operator.attrgetter("pgconn.transaction_status")
    clean_value = IDLE

    def __init__(self, *, keep_autocommit: bool = False) -> None:
        # keep_autocommit: leave autocommit as the connection came (the psycopg_pool
        # drop-in hands out connections set up as its users asked).
        self.keep_autocommit = keep_autocommit
        self.behind_pooler = False
        self._pooler_cursor: type | None = None
        self._kwargs: dict[str, Any] | None = None

    def set_behind_pooler(self, on: bool) -> None:
        self.behind_pooler = bool(on)

    def _module(self) -> Any:
        try:
            return importlib.import_module(self.module_name)
        except ImportError:
            raise ConfigError(self.install_hint) from None

    def _connect_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        psycopg = self._module()
        kwargs = dict(kwargs)
        # Every libpq parameter checked now: a typo is a ConfigError at open(), not an
        # error on the first connect.
        try:
            psycopg.conninfo.make_conninfo("", **{k: v for k, v in kwargs.items() if k != "password"})
        except psycopg.ProgrammingError as exc:
            raise ConfigError(f"postgresql:// URL: {str(exc).strip()}") from None
        kwargs.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        kwargs["autocommit"] = True
        self._kwargs = kwargs
        return kwargs

    def connect_factory(self, kwargs: dict[str, Any]) -> Connect:
        psycopg = self._module()
        kwargs = self._connect_kwargs(kwargs)

        def connect() -> Any:
            return psycopg.Connection.connect(**kwargs)

        return connect

    def prepare(self, raw: Any) -> None:
        if self.error_class is None:
            self.error_class = self._module().Error
        conn = getattr(raw, "driver_connection", raw)  # fastpool.aio: the AsyncConnection
        if not conn.autocommit and not self.keep_autocommit:
            self._set_autocommit(raw)  # Pool(connect, driver=...) with its own connect
        if self.behind_pooler:
            # PgBouncer 1.18 cannot follow protocol-level prepared statements from one
            # transaction to the next: never prepare server-side; and refuse what would
            # pin a session (pooler.py).
            conn.prepare_threshold = None
            if self._pooler_cursor is None:
                self._pooler_cursor = pooler.cursor_class(self._module(), is_async=self.is_async)
            conn.cursor_factory = self._pooler_cursor
        # The server's id for pg_terminate_backend, read now (no round trip: libpq has it).
        raw._fastpool_server_id = int(raw.info.backend_pid)

    def _set_autocommit(self, raw: Any) -> None:
        raw.autocommit = True

    def fileno(self, raw: Any) -> int:
        try:
            return int(raw.fileno())
        except Exception:
            return -1  # closed: psycopg refuses; the core then treats it as dead

    def close(self, raw: Any) -> None:
        raw.close()

    def classify(self, exc: BaseException) -> int:
        if isinstance(exc, pooler.SessionStateError):
            return ERR_OK  # refused before anything was sent
        psycopg = self._module()
        if not isinstance(exc, psycopg.Error):
            return ERR_BROKEN  # not the driver's report: the protocol state is unknown
        if isinstance(exc, psycopg.InterfaceError):
            return ERR_BROKEN
        state = getattr(exc, "sqlstate", None)
        if state is None:
            if isinstance(exc, psycopg.OperationalError):
                # Client-side: the connection failed under the statement, or was closed
                # before it (then nothing was sent: safe to retry).
                return ERR_RETRY if str(exc) == _CLOSED_BEFORE_SENDING else ERR_BROKEN
            return ERR_OK  # e.g. a parameter psycopg could not adapt: nothing was sent
        if state.startswith("08") or state in _BROKEN_STATES:
            return ERR_BROKEN
        return ERR_OK

    def refused_as_read_only(self, exc: BaseException) -> bool:
        # 25006 read_only_sql_transaction: a hot standby (or default_transaction_read_only).
        return getattr(exc, "sqlstate", None) == "25006"

    def aborted_by_shutdown(self, exc: BaseException) -> bool:
        # 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now: the
        # server's error reply to the statement, so its transaction was rolled back.
        return getattr(exc, "sqlstate", None) in ("57P01", "57P02", "57P03")

    def role_at_connect(self, raw: Any) -> bool | None:
        # PostgreSQL 14+ reports in_hot_standby at connect: no round trip.
        value = getattr(raw, "driver_connection", raw).info.parameter_status("in_hot_standby")
        return None if value is None else value != "on"

    def probe_role(self, raw: Any) -> tuple[bool, float | None]:
        cur = raw.cursor()
        try:
            cur.execute(_PROBE_ROLE_SQL)
            row = cur.fetchone()
        finally:
            cur.close()
        in_recovery, lag = row
        return (not in_recovery), (None if lag is None else max(float(lag), 0.0))

    def state_at_checkin(self, raw: Any) -> int:
        # libpq's transaction status: no round trip (read from pgconn, not conn.info,
        # which builds an object and an enum on every read).
        status = raw.pgconn.transaction_status
        if status == IDLE:
            return CLEAN
        if status in (INTRANS, INERROR):
            return ROLL_BACK  # a transaction left open, or failed: ROLLBACK ends it
        return DISCARD  # ACTIVE (mid-statement) or UNKNOWN (broken)

    def reset(self, raw: Any) -> None:
        if raw.pgconn.transaction_status != IDLE:
            raw.rollback()

    def begin(self, raw: Any) -> None:
        cur = raw.cursor()
        try:
            cur.execute("BEGIN")
        finally:
            cur.close()

    def stream_cursor(self, raw: Any) -> Any:
        return StreamCursor(raw.cursor())

    def drain(self, cursor: Any, budget: int) -> bool:
        # A remainder that comes quickly is read off the wire: a cancel request costs a
        # connection of its own to the server (a forked process there, several ms).
        # Past DRAIN_SECONDS or the budget, closing psycopg's stream early cancels the
        # statement and reads what is left.
        until = time.monotonic() + DRAIN_SECONDS
        read = 0
        while read <= budget and time.monotonic() < until:
            got = len(cursor.fetchmany(DRAIN_STEP))
            read += got
            if got < DRAIN_STEP:
                break  # the end of the result
        cursor.close()
        return bool(cursor.clean())

    # ---- cancelling (the deadline watcher's killer thread) -----------------------------
    def kill_statement(self, raw: Any) -> Callable[[], None]:
        return partial(_cancel, raw)

    def kill_session(self, raw: Any) -> str | Callable[[], None]:
        return on_own_host(raw, f"SELECT pg_terminate_backend({int(raw._fastpool_server_id)})")

    def side_connect(self, timeout: float) -> Any:
        if self._kwargs is None:
            return None
        kwargs = {**self._kwargs, "connect_timeout": max(1, int(timeout))}
        return self._module().Connection.connect(**kwargs)


def _cancel(raw: Any) -> None:
    # On the killer thread. cancel_safe (psycopg 3.2, sync connections): libpq 17's
    # cancel, bounded in time; an AsyncConnection's is a coroutine for its loop, so there
    # (and before psycopg 3.2) libpq's blocking cancel request, which is thread-safe.
    cancel_safe = getattr(raw, "cancel_safe", None)
    if cancel_safe is not None and not hasattr(raw, "driver_connection"):
        cancel_safe(timeout=CANCEL_TIMEOUT)
    else:
        getattr(raw, "driver_connection", raw).cancel()


class StreamCursor:
    """A DB-API face (execute / fetchmany / fetchone / close) over psycopg's stream(): rows
    come from the server in chunks as they are read, the connection busy until the end."""

    CHUNK = 512

    def __init__(self, cur: Any) -> None:
        self._cur = cur
        self._rows: Any = None

    def execute(self, sql: str, params: Any = None) -> None:
        try:
            self._rows = self._cur.stream(sql, params, size=self.CHUNK)
        except TypeError:  # psycopg < 3.2: row by row
            self._rows = self._cur.stream(sql, params)
        # Run it up to the first row now, so errors are raised by execute() as a cursor's.
        self._first = next(self._rows, _END)

    def fetchone(self) -> Any:
        if self._first is not _NONE:
            row, self._first = self._first, _NONE
            return None if row is _END else row
        return next(self._rows, None)

    def fetchmany(self, size: int = CHUNK) -> list[Any]:
        out: list[Any] = []
        if self._first is not _NONE:
            row, self._first = self._first, _NONE
            if row is _END:
                return out
            out.append(row)
        for row in self._rows:
            out.append(row)
            if len(out) >= size:
                break
        return out

    def fetchall(self) -> list[Any]:
        return self.fetchmany(1 << 62)

    @property
    def description(self) -> Any:
        return self._cur.description

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

    def close(self) -> None:
        rows, self._rows = self._rows, None
        if rows is not None:
            rows.close()
        self._cur.close()

    def clean(self) -> bool:
        return int(self._cur.connection.info.transaction_status) == IDLE


_END = object()
_NONE = object()


class AsyncPostgreSQLDialect(PostgreSQLDialect):
    """psycopg 3's AsyncConnection: ``fastpool.aio.open("postgresql://...")``.

    The connection reaches the dialect through fastpool.aio's SyncConnection, so the rules
    above serve it unchanged. Its socket is watched by the loop only while psycopg waits
    on it, so the core polls it at checkout as for a sync connection."""

    name = "psycopg_async"
    is_async = True
    clean_probe = operator.attrgetter("driver_connection.pgconn.transaction_status")

    def connect_factory(self, kwargs: dict[str, Any]) -> Connect:
        psycopg = self._module()
        kwargs = self._connect_kwargs(kwargs)

        async def connect() -> Any:
            return await psycopg.AsyncConnection.connect(**kwargs)

        return connect

    def _set_autocommit(self, raw: Any) -> None:
        raw.set_autocommit(True)  # awaited by the SyncConnection

    def stream_cursor(self, raw: Any) -> Any:
        return AsyncStreamCursor(raw.driver_connection.cursor(), raw)

    def side_connect(self, timeout: float) -> Any:
        return None  # the pool's own connect, on its loop

    def session_is_idle(self, raw: Any) -> bool:
        # A task cancelled mid-statement: psycopg itself cancels the statement and waits
        # for it to end; then the session is idle and needs no pg_terminate_backend.
        try:
            return int(raw.driver_connection.info.transaction_status) == IDLE
        except Exception:
            return False


class AsyncStreamCursor(StreamCursor):
    """StreamCursor over an AsyncCursor's stream(): each step awaited by the SyncConnection."""

    def __init__(self, cur: Any, conn: Any) -> None:
        super().__init__(cur)
        self._wait = conn.wait

    def execute(self, sql: str, params: Any = None) -> None:
        self._rows = self._cur.stream(sql, params, size=self.CHUNK)
        self._first = self._next()

    def _next(self) -> Any:
        try:
            return self._wait(self._rows.__anext__())
        except StopAsyncIteration:
            return _END

    def fetchone(self) -> Any:
        if self._first is not _NONE:
            row, self._first = self._first, _NONE
        else:
            row = self._next()
        return None if row is _END else row

    def fetchmany(self, size: int = StreamCursor.CHUNK) -> list[Any]:
        out: list[Any] = []
        while len(out) < size:
            row = self.fetchone()
            if row is None:
                break
            out.append(row)
        return out

    def close(self) -> None:
        rows, self._rows = self._rows, None
        if rows is not None:
            self._wait(rows.aclose())
        self._wait(self._cur.close())


# ---- asyncpg (fastpool.aio, postgresql://...?driver=asyncpg) ------------------------------
# libpq's URL parameters, as asyncpg.connect() names them.
_ASYNCPG_KWARGS = {"dbname": "database", "connect_timeout": "timeout", "sslmode": "ssl",
                   "options": "server_settings", "application_name": "server_settings"}


def _asyncpg_connect_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    settings: dict[str, str] = {}
    for key, value in kwargs.items():
        if key == "application_name":
            settings["application_name"] = str(value)
        elif key == "options":
            raise ConfigError("postgresql://...?driver=asyncpg: 'options' is libpq's; set"
                              " server settings with connect(server_settings=...)")
        elif key in ("dbname", "connect_timeout", "sslmode"):
            out[_ASYNCPG_KWARGS[key]] = float(value) if key == "connect_timeout" else value
        else:
            out[key] = value
    if settings:
        out["server_settings"] = settings
    out.setdefault("timeout", float(DEFAULT_CONNECT_TIMEOUT))
    return out


class AsyncpgFace:
    """asyncpg's Connection with the face fastpool.aio's SyncConnection expects of an async
    driver: ``cursor()``, ``commit()``, ``rollback()``, ``close()``. asyncpg has neither
    cursors for plain statements nor implicit transactions: a cursor runs the statement and
    buffers its rows; commit and rollback end a transaction only when one is open (read
    from the protocol, no round trip). Anything else is asyncpg's own (``fetch``,
    ``copy_to_table``, ...)."""

    __slots__ = ("conn", "behind_pooler")

    def __init__(self, conn: Any, behind_pooler: bool = False) -> None:
        self.conn = conn
        self.behind_pooler = behind_pooler  # refuse session-pinning statements (pooler.py)

    def cursor(self) -> AsyncpgCursor:
        return AsyncpgCursor(self.conn, self.behind_pooler)

    def run_statement(self, sql: str, params: Any, mode: int) -> Awaitable[Any]:
        """fastpool.aio's native route in one driver call, no cursor: for query_row
        (STATEMENT_ROW) asyncpg's own fetchrow coroutine, awaited by the route itself; for execute
        (mode 0) a coroutine giving the rowcount."""
        if self.behind_pooler:
            pooler.refuse_session_state(sql)
        args = () if params is None else tuple(params)
        if mode == STATEMENT_ROW:
            row: Awaitable[Any] = self.conn.fetchrow(sql, *args)
            return row
        return _rowcount_of(self.conn, sql, args)

    async def commit(self) -> None:
        if self.conn.is_in_transaction():
            await self.conn.execute("COMMIT")

    async def rollback(self) -> None:
        if self.conn.is_in_transaction():
            await self.conn.execute("ROLLBACK")

    async def close(self) -> None:
        await self.conn.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    def __repr__(self) -> str:
        return f"<fastpool asyncpg face of {self.conn!r}>"


# fastpool._bridge.statement()'s mode for query_row (not imported from there: the bridge
# needs greenlet, this module does not).
STATEMENT_ROW = 1


async def _rowcount_of(conn: Any, sql: str, args: tuple[Any, ...]) -> int:
    _, status, _ = await conn._execute(sql, args, 0, None, return_status=True)
    return _rowcount(status)


def _rowcount(status: str | None) -> int:
    """The row count in a command status ("UPDATE 3", "INSERT 0 1"), -1 when it has none."""
    word = status.split() if status else ()
    return int(word[-1]) if word and word[-1].isdigit() else -1


class AsyncpgCursor:
    """One statement's result, buffered: asyncpg's ``_execute`` returns the rows and the
    command status together (its public calls give one or the other). Only execute does
    I/O; the rest are plain calls (the bridge and the native route await only what is
    awaitable), and the description and rowcount are read from the result when asked."""

    arraysize = 1
    lastrowid = None

    __slots__ = ("_conn", "_behind_pooler", "_rows", "_i", "_status")

    def __init__(self, conn: Any, behind_pooler: bool = False) -> None:
        self._conn = conn
        self._behind_pooler = behind_pooler
        self._rows: list[Any] = []
        self._i = 0
        self._status: str | None = None

    async def execute(self, sql: str, params: Any = None) -> None:
        if self._behind_pooler:
            pooler.refuse_session_state(sql)
        args = () if params is None else tuple(params)
        # asyncpg Records: equal to tuples, indexable, by column name too.
        self._rows, self._status, _ = await self._conn._execute(sql, args, 0, None,
                                                                return_status=True)
        self._i = 0

    async def executemany(self, sql: str, seq: Any) -> None:
        if self._behind_pooler:
            pooler.refuse_session_state(sql)
        await self._conn.executemany(sql, [tuple(p) for p in seq])
        self._rows, self._i, self._status = [], 0, None

    @property
    def description(self) -> Any:
        rows = self._rows
        return [(k, None, None, None, None, None, None) for k in rows[0].keys()] if rows else None

    @property
    def rowcount(self) -> int:
        return _rowcount(self._status)

    def fetchone(self) -> Any:
        i = self._i
        if i >= len(self._rows):
            return None
        self._i = i + 1
        return self._rows[i]

    def fetchmany(self, size: int | None = None) -> list[Any]:
        n = self.arraysize if size is None else size
        out = self._rows[self._i:self._i + n]
        self._i += len(out)
        return out

    def fetchall(self) -> list[Any]:
        out = self._rows[self._i:]
        self._i = len(self._rows)
        return out

    def close(self) -> None:
        self._rows = []


class AsyncpgStreamCursor(AsyncStreamCursor):
    """Rows of one query read from a server-side cursor (asyncpg's), CHUNK rows per round
    trip, each step awaited by the SyncConnection (``wait``; the stepping is
    AsyncStreamCursor's). asyncpg's cursors live in a transaction: outside one, the stream
    opens its own and commits it at close -- what autocommit would have done with the
    statement, which has run by then."""

    def __init__(self, face: AsyncpgFace, wait: Callable[[Any], Any]) -> None:
        self._cur = None
        self._wait = wait
        self._rows: Any = None
        self._first: Any = _NONE
        self._conn = face.conn
        self._behind_pooler = face.behind_pooler
        self._own_tx = False
        self._columns: list[str] = []

    def execute(self, sql: str, params: Any = None) -> None:
        if self._behind_pooler:
            pooler.refuse_session_state(sql)
        conn = self._conn
        if not conn.is_in_transaction():
            self._wait(conn.execute("BEGIN"))
            self._own_tx = True
        args = () if params is None else tuple(params)
        self._rows = conn.cursor(sql, *args, prefetch=self.CHUNK).__aiter__()
        # Up to the first row now: errors are raised by execute(), as a cursor's are.
        self._first = self._next()
        if self._first is not _END:
            self._columns = list(self._first.keys())

    @property
    def description(self) -> Any:
        return [(k, None, None, None, None, None, None) for k in self._columns] or None

    @property
    def rowcount(self) -> int:
        return -1

    def close(self) -> None:
        self._rows = None
        self._first = _END
        if self._own_tx:
            self._own_tx = False
            conn = self._conn
            if not conn.is_closed() and conn.is_in_transaction():
                self._wait(conn.execute("COMMIT"))

    def clean(self) -> bool:
        conn = self._conn
        return not conn.is_closed() and not conn.is_in_transaction()


class AsyncpgDialect(PostgreSQLDialect):
    """asyncpg under fastpool.aio: ``fastpool.aio.open("postgresql://...?driver=asyncpg")``.
    Statements use asyncpg's own placeholders (``$1``, ``$2``); rows are asyncpg Records.
    (fastpool.asyncpg, the drop-in for asyncpg's pool, lends the connections bare: its
    subclass reads them without the face.)"""

    name = "asyncpg"
    driver = "asyncpg"
    module_name = "asyncpg"
    is_async = True
    install_hint = "postgresql://...?driver=asyncpg needs asyncpg: pip install asyncpg"
    # True exactly when state_at_checkin would say CLEAN: the give-back then needs no
    # bridge (fastpool.aio's native route gives back in place).
    clean_value = True
    clean_probe = staticmethod(face_clean)  # type: ignore[assignment]  # compiled: no Python frame at the give-back

    @staticmethod
    def conn_of(raw: Any) -> Any:
        """The asyncpg Connection of a pooled raw (behind its face)."""
        return raw.driver_connection.conn

    def _connect_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        self._module()
        kwargs = _asyncpg_connect_kwargs(kwargs)
        self._kwargs = kwargs
        return kwargs

    def connect_factory(self, kwargs: dict[str, Any]) -> Connect:
        asyncpg = self._module()
        kwargs = self._connect_kwargs(kwargs)

        async def connect() -> Any:
            # behind_pooler is read at each connect: the pool sets it after this factory
            # is made. Behind PgBouncer no named statement may outlive its transaction:
            # asyncpg's statement cache off, so its statements are the unnamed one.
            if self.behind_pooler:
                conn = await asyncpg.connect(**{**kwargs, "statement_cache_size": 0})
            else:
                conn = await asyncpg.connect(**kwargs)
            return AsyncpgFace(conn, self.behind_pooler)

        return connect

    def prepare(self, raw: Any) -> None:
        if self.error_class is None:
            self.error_class = self._module().PostgresError
        raw._fastpool_server_id = int(self.conn_of(raw).get_server_pid())

    # No socket to poll: asyncpg's protocol reads its socket all the time (the loop
    # drains it), so a server's goodbye shows as is_closed(), read here without I/O.
    checks_liveness = True

    def fileno(self, raw: Any) -> int:
        return -1

    def is_dead(self, raw: Any) -> bool:
        return bool(raw.driver_connection.conn.is_closed())

    def abort(self, raw: Any, fd: int) -> None:
        # A statement whose cancel went unanswered (a blackholed network): shut its socket
        # from the watcher's thread, read from the transport now (the pool keeps no fd for
        # asyncpg); the loop then sees the connection lost and the statement fails at once.
        conn = raw.driver_connection
        conn = getattr(conn, "conn", conn)  # behind the face, or lent bare (the drop-in)
        transport = getattr(conn, "_transport", None)  # None: lent out, or gone
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None and sock.fileno() >= 0:
            shut_socket(sock.fileno())

    def classify(self, exc: BaseException) -> int:
        if isinstance(exc, pooler.SessionStateError):
            return ERR_OK
        asyncpg = self._module()
        if isinstance(exc, (asyncpg.exceptions.ConnectionDoesNotExistError,
                            asyncpg.exceptions.PostgresConnectionError,
                            asyncpg.exceptions.InterfaceError, ConnectionError, OSError)):
            return ERR_BROKEN
        if isinstance(exc, asyncpg.PostgresError):
            state = getattr(exc, "sqlstate", None) or ""
            if state.startswith("08") or state in _BROKEN_STATES:
                return ERR_BROKEN
            return ERR_OK
        if isinstance(exc, (TypeError, ValueError, OverflowError)):
            return ERR_OK  # an argument asyncpg could not encode: nothing was sent
        if (isinstance(exc, asyncpg.exceptions.InternalClientError)
                and str(exc).startswith("cannot switch to state")):
            # The protocol was still busy with an error the server sent while the
            # connection sat idle (a FATAL at shutdown): asyncpg refused the operation
            # before sending anything. The connection is done for; the statement may
            # run on another.
            return ERR_RETRY
        return ERR_BROKEN

    def state_at_checkin(self, raw: Any) -> int:
        conn = self.conn_of(raw)
        if conn.is_closed():
            return DISCARD
        return ROLL_BACK if conn.is_in_transaction() else CLEAN

    def reset(self, raw: Any) -> None:
        raw.rollback()

    def begin(self, raw: Any) -> None:
        raw.wait(self.conn_of(raw).execute("BEGIN"))

    def stream_cursor(self, raw: Any) -> Any:
        return AsyncpgStreamCursor(raw.driver_connection, raw.wait)

    def drain(self, cursor: Any, budget: int) -> bool:
        # Nothing to read off the wire: the rest of the rows wait in the server-side
        # cursor, which ends with its transaction (close()).
        cursor.close()
        return bool(cursor.clean())

    def kill_statement(self, raw: Any) -> Any:
        # SQL over a side connection (the pool's own connect, on its loop).
        return f"SELECT pg_cancel_backend({int(raw._fastpool_server_id)})"

    def side_connect(self, timeout: float) -> Any:
        return None

    def role_at_connect(self, raw: Any) -> bool | None:
        # asyncpg keeps the parameters the server reported at connect (14+: in_hot_standby).
        value = getattr(self.conn_of(raw).get_settings(), "in_hot_standby", None)
        return None if value is None else value != "on"

    def session_is_idle(self, raw: Any) -> bool:
        # asyncpg cancels the statement itself when its task is cancelled.
        try:
            conn = self.conn_of(raw)
            return not conn.is_closed() and not conn.is_in_transaction()
        except Exception:
            return False
