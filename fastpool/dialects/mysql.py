"""MySQL and MariaDB: mysqlclient (the first-class driver) and PyMySQL (pure Python: under
gevent or eventlet it talks through their monkey-patched sockets, so a statement yields
to the hub, where mysqlclient's C client blocks it); for asyncio (fastpool.aio), asyncmy
and aiomysql.

All speak the same protocol and report the same error codes; what differs is the module,
how to reach the socket, and how a ping is kept from reconnecting behind the pool. The
asyncio drivers are PyMySQL's descendants: fastpool.aio gives their connections a blocking
face (fastpool/aio/adapt.py), so the same statements serve them.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

from ..errors import ConfigError
from . import mysql_params
from .base import ERR_BROKEN, ERR_OK, ERR_RETRY, Connect, Dialect, on_own_host

# Seconds a mysql:// connect may take when the URL sets no connect_timeout.
DEFAULT_CONNECT_TIMEOUT = 10


class MySQLDialect(Dialect):
    """mysqlclient (MySQLdb), the first-class driver."""

    name = "mysql"
    module_name = "MySQLdb"
    install_hint = "mysql:// needs mysqlclient: pip install 'fastpool[mysql]'"
    cancel_method = "kill"
    _kwargs: dict[str, Any] | None = None

    def _module(self) -> Any:
        return importlib.import_module(self.module_name)

    def connect_factory(self, kwargs: dict[str, Any]) -> Connect:
        module, kwargs = self._connect_kwargs(kwargs)

        def connect() -> Any:
            return self._connected(module.connect(**kwargs))

        return connect

    # URL parameters the driver spells otherwise (aiomysql: db).
    renamed: dict[str, str] = {}

    def _connect_kwargs(self, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """(the driver's module, its connect() keywords) for a URL's parameters."""
        try:
            module = self._module()
        except ImportError:
            raise ConfigError(self.install_hint) from None
        # Every parameter checked now (mysql_params): a typo is a ConfigError at open().
        params, tls = mysql_params.split(kwargs, self.accepted_params(module), self.driver)
        params = {self.renamed.get(k, k): v for k, v in params.items()}
        # A connect that never returns must not hold a pool slot forever: without a
        # connect_timeout, the client waits on a half-open network for as long as TCP does.
        kwargs = {"connect_timeout": DEFAULT_CONNECT_TIMEOUT, **params, **self.tls_kwargs(tls)}
        self._kwargs = kwargs
        self.tls = tls
        return module, kwargs

    driver = "mysqlclient"
    tls = mysql_params.TLS()

    def accepted_params(self, module: Any) -> frozenset[str]:
        return mysql_params.MYSQLCLIENT_PARAMS

    def tls_kwargs(self, tls: mysql_params.TLS) -> dict[str, Any]:
        return mysql_params.mysqlclient_tls(tls)

    def _connected(self, raw: Any) -> Any:
        """A new connection, checked against the TLS the URL asked for. mysqlclient on
        libmariadb 3.3 goes on in plain text with ssl_mode=REQUIRED when the server offers
        no TLS (seen here), so the session's cipher is read once per new connection."""
        if self.tls.mode in self.REQUIRES_TLS:
            cur = raw.cursor()
            try:
                cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                row = cur.fetchone()
            finally:
                cur.close()
            if not row or not row[1]:
                self._refuse_plain(raw)
        return raw

    REQUIRES_TLS = ("REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")

    def _refuse_plain(self, raw: Any) -> None:
        raw.close()
        raise self._module().OperationalError(
            2026, f"TLS was required (ssl_mode={self.tls.mode}) but the server did not start it")

    def fileno(self, raw: Any) -> int:
        return int(raw.fileno())

    def kill_statement(self, raw: Any) -> str | Callable[[], None]:
        # KILL QUERY ends the statement with error 1317 and leaves the session usable.
        return on_own_host(raw, f"KILL QUERY {int(raw._fastpool_server_id)}")

    def kill_session(self, raw: Any) -> str | Callable[[], None]:
        return on_own_host(raw, f"KILL {int(raw._fastpool_server_id)}")

    def side_connect(self, timeout: float) -> Any:
        if self._kwargs is None:
            return None
        t = max(1, int(timeout))
        conn = self._connected(self._module().connect(
            **{**self._kwargs, "connect_timeout": t, "read_timeout": t, "write_timeout": t}))
        conn.autocommit(True)
        return conn

    def stream_cursor(self, raw: Any) -> Any:
        return raw.cursor(importlib.import_module(self.module_name + ".cursors").SSCursor)

    # Error codes that leave the connection unusable, whatever exception class the driver
    # raises them with (mysqlclient raises 2014 as ProgrammingError, for one). Every
    # client-side code (2000-2999, libmariadb's errmsg.h) counts as broken too: they report
    # trouble on the client's side of the protocol, and reconnecting is cheaper than guessing.
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

    def _errors(self) -> Any:
        """The module holding the driver's DB-API exception classes."""
        return self._module()

    def classify(self, exc: BaseException) -> int:
        module = self._errors()
        if not isinstance(exc, module.Error):
            return ERR_BROKEN  # not the driver's report: the protocol state is unknown
        if isinstance(exc, module.InterfaceError):
            return ERR_BROKEN  # the connection object is closed
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if code is None:
            return ERR_OK  # raised by the driver's Python side before sending anything
        if code == self.CR_SERVER_GONE_ERROR:
            return ERR_RETRY
        if code in self.BROKEN_CODES or 2000 <= code < 3000:
            return ERR_BROKEN
        return ERR_OK

    # ER_OPTION_PREVENTS_STATEMENT (--read-only), ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION,
    # ER_CANT_UPDATE_WITH_READLOCK... as MariaDB and MySQL report a read-only server.
    READ_ONLY_CODES = frozenset((1290, 1836, 1792))

    def refused_as_read_only(self, exc: BaseException) -> bool:
        return bool(exc.args) and exc.args[0] in self.READ_ONLY_CODES

    def role_at_connect(self, raw: Any) -> bool | None:
        # MySQL reports no read-only flag in its handshake: one query per new connection.
        return self.probe_role(raw)[0] if self.name in ("mysql", "pymysql") else None

    def probe_role(self, raw: Any) -> tuple[bool, float | None]:
        # A server with read_only=ON is a replica for routing, whatever the user's
        # privileges: with READ_ONLY ADMIN (root has it) the server would take the write.
        cur = raw.cursor()
        try:
            cur.execute("SELECT @@global.read_only")
            row = cur.fetchone()
            if not row or not int(row[0]):
                return True, None
            cur.execute("SHOW SLAVE STATUS")
            status = cur.fetchone()
            names = [d[0] for d in cur.description or ()]
        finally:
            cur.close()
        lag = None
        if status is not None and "Seconds_Behind_Master" in names:
            value = status[names.index("Seconds_Behind_Master")]
            lag = None if value is None else float(value)  # None: replication not running
        return False, lag

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


class PyMySQLDialect(MySQLDialect):
    """PyMySQL: ``mysql://...?driver=pymysql``, what gevent and eventlet services run."""

    name = "pymysql"
    module_name = "pymysql"
    driver = "PyMySQL"
    install_hint = "mysql://...?driver=pymysql needs PyMySQL: pip install PyMySQL"

    def accepted_params(self, module: Any) -> frozenset[str]:
        names = inspect.signature(module.connections.Connection.__init__).parameters
        return frozenset(names) - mysql_params.PYMYSQL_EXCLUDED

    def tls_kwargs(self, tls: mysql_params.TLS) -> dict[str, Any]:
        if tls.mode == "DISABLED":
            return {"ssl_disabled": True}
        if tls.mode == "PREFERRED":
            return {}  # PyMySQL's own default: TLS when the server offers it, unverified
        ctx = mysql_params.ssl_context(tls)
        return {} if ctx is None else {"ssl": ctx}

    def _connected(self, raw: Any) -> Any:
        # PyMySQL refuses a server without TLS when given an SSLContext; checked here all
        # the same, from the socket (no round trip).
        if self.tls.mode in self.REQUIRES_TLS:
            cipher = getattr(getattr(raw, "_sock", None), "cipher", None)
            if cipher is None or cipher() is None:
                self._refuse_plain(raw)
        return raw

    def fileno(self, raw: Any) -> int:
        # PyMySQL keeps its socket (gevent's, when patched) in _sock; None once closed.
        sock = getattr(raw, "_sock", None)
        return -1 if sock is None else int(sock.fileno())

    def ping(self, raw: Any) -> None:
        # PyMySQL's ping() reconnects by default: a new session behind the pool's back,
        # its settings and server id lost. Never.
        raw.ping(reconnect=False)


class AsyncMySQLDialect(PyMySQLDialect):
    """What asyncmy and aiomysql share: ``fastpool.aio.open("mysql://...")``.

    ``connect_factory`` returns a coroutine function; every other method gets the
    connection's blocking face (fastpool.aio's SyncConnection), so the statements, the
    reset, the drain and KILL QUERY are PyMySQL's. There is no socket to poll: the loop
    reads it, and what it has seen (the server's end of the stream) is read instead."""

    is_async = True
    checks_liveness = True

    def accepted_params(self, module: Any) -> frozenset[str]:
        names = set(inspect.signature(module.connect).parameters)
        names |= set(self.renamed)
        return frozenset(names - mysql_params.PYMYSQL_EXCLUDED - self.EXCLUDED)

    # Objects a URL cannot carry, and what the pool itself must decide.
    EXCLUDED = frozenset({"loop", "cursor_cls", "sock", "password_creator", "query_callback",
                          "echo", "conv", "db"})

    def connect_factory(self, kwargs: dict[str, Any]) -> Connect:
        module, kwargs = self._connect_kwargs(kwargs)

        async def connect() -> Any:
            return await module.connect(**kwargs)

        return connect

    def tls_kwargs(self, tls: mysql_params.TLS) -> dict[str, Any]:
        if tls.mode in (None, "DISABLED", "PREFERRED"):
            return {}  # these drivers use TLS only when given a context
        ctx = mysql_params.ssl_context(tls)
        return {} if ctx is None else {"ssl": ctx}

    def _connected(self, raw: Any) -> Any:
        return raw

    def fileno(self, raw: Any) -> int:
        return -1

    def side_connect(self, timeout: float) -> Any:
        return None  # the pool's own connect, on its loop

    def _transport(self, raw: Any) -> Any:
        conn = raw.driver_connection
        transport = getattr(conn, "_transport", None)  # asyncmy
        if transport is None:
            writer = getattr(conn, "_writer", None)  # aiomysql
            transport = None if writer is None else writer.transport
        return transport

    def is_dead(self, raw: Any) -> bool:
        transport = self._transport(raw)
        if transport is None or transport.is_closing():
            return True
        reader = getattr(raw.driver_connection, "_reader", None)  # aiomysql's StreamReader
        return reader is not None and reader.at_eof()

    def abort(self, raw: Any, fd: int) -> None:
        transport = self._transport(raw)
        if transport is not None:
            from ..aio.bridge import call_soon_on

            call_soon_on(raw.loop, transport.abort)

    def ping(self, raw: Any) -> None:
        raw.ping(False)  # never reconnect behind the pool


class AsyncMyDialect(AsyncMySQLDialect):
    """asyncmy: ``mysql://...?driver=asyncmy``."""

    name = "asyncmy"
    module_name = "asyncmy"
    driver = "asyncmy"
    install_hint = "mysql://...?driver=asyncmy needs asyncmy: pip install 'fastpool[asyncmy]'"

    def _errors(self) -> Any:
        return importlib.import_module("asyncmy.errors")

    def stream_cursor(self, raw: Any) -> Any:
        return raw.cursor(importlib.import_module("asyncmy.cursors").SSCursor)


class AioMySQLDialect(AsyncMySQLDialect):
    """aiomysql: ``mysql://...?driver=aiomysql``."""

    name = "aiomysql"
    module_name = "aiomysql"
    driver = "aiomysql"
    install_hint = "mysql://...?driver=aiomysql needs aiomysql: pip install 'fastpool[aiomysql]'"
    renamed = {"database": "db"}

    def stream_cursor(self, raw: Any) -> Any:
        return raw.cursor(self._module().SSCursor)
