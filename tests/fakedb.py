"""A fake DB-API driver with failure hooks, for exact tests of the pool (cf. Go's fakedb_test.go).

Each FakeConnection can carry a real socketpair so that "the server closed it" is a real
readable socket, as the core's liveness poll sees it.
"""

from __future__ import annotations

import itertools
import socket
import threading
from typing import Any


class FakeError(Exception):
    pass


class FakeCursor:
    def __init__(self, conn: "FakeConnection") -> None:
        self.conn = conn
        self.rows: list[tuple] = []
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid = None

    def execute(self, sql: str, params: Any = None) -> None:
        self.conn.check_open()
        self.conn.statements.append(sql)
        self.rows = [(1,)]
        self.description = (("x", None, None, None, None, None, None),)
        self.rowcount = 1

    def fetchone(self) -> tuple | None:
        return self.rows.pop(0) if self.rows else None

    def fetchall(self) -> list[tuple]:
        rows, self.rows = self.rows, []
        return rows

    def close(self) -> None:
        pass


class FakeConnection:
    def __init__(self, driver: "FakeDriver", with_socket: bool) -> None:
        self.driver = driver
        self.id = next(driver._ids)
        self.closed = False
        self.statements: list[str] = []
        self.holder: Any = None  # set by tests to detect two holders
        self._sock = self._peer = None
        if with_socket:
            self._sock, self._peer = socket.socketpair()

    def fileno(self) -> int:
        if self._sock is None:
            raise AttributeError("no socket")
        return self._sock.fileno()

    def server_close(self) -> None:
        """What a server-side KILL / wait_timeout looks like from the client: EOF."""
        if self._peer is not None:
            self._peer.close()
            self._peer = None

    def check_open(self) -> None:
        if self.closed:
            raise FakeError("connection is closed")

    def cursor(self) -> FakeCursor:
        self.check_open()
        return FakeCursor(self)

    def commit(self) -> None:
        self.check_open()

    def rollback(self) -> None:
        self.check_open()

    def __del__(self) -> None:
        # Like real drivers (mysqlclient, sqlite3): a dropped connection closes itself.
        if not self.closed:
            self.driver.closed_by_gc += 1
            self.close()

    def close(self) -> None:
        with self.driver._lock:
            if self.closed:
                self.driver.double_closes += 1
                return
            self.closed = True
            self.driver.closed += 1
        if self.driver.fail_close:
            raise FakeError("close failed")
        for s in (self._sock, self._peer):
            if s is not None:
                s.close()


class FakeDriver:
    """connect() factory with counters and hooks."""

    def __init__(self, with_socket: bool = False) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.with_socket = with_socket
        self.opened = 0
        self.closed = 0
        self.double_closes = 0
        self.closed_by_gc = 0  # dropped without close(): the pool lost track of them
        self.fail_connect = 0  # fail this many next connects
        self.fail_close = False
        self.connect_delay = 0.0
        self.connect_gate: threading.Event | None = None  # connect blocks until set
        self.conns: list[FakeConnection] = []

    def connect(self) -> FakeConnection:
        if self.connect_gate is not None:
            self.connect_gate.wait(10)
        if self.connect_delay:
            threading.Event().wait(self.connect_delay)
        with self._lock:
            if self.fail_connect > 0:
                self.fail_connect -= 1
                raise FakeError("connect refused")
            self.opened += 1
        c = FakeConnection(self, self.with_socket)
        with self._lock:
            self.conns.append(c)
        return c

    __call__ = connect

    @property
    def live(self) -> int:
        return self.opened - self.closed


class FakeClock:
    """An injectable clock (Go's nowFunc)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
