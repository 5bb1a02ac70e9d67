"""A throwaway MariaDB server for the test session: mariadb-install-db + mariadbd in a
temp dir, on a free loopback port. Also used by the benchmarks' main command."""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

USER = "fastpool"
PASSWORD = "fp-test-secret"
DATABASE = "fastpool_test"

_SEARCH = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/usr/libexec"]


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or next(
            (str(Path(d) / name) for d in _SEARCH if (Path(d) / name).exists()), None
        )
        if found:
            return found
    return None


def binaries() -> tuple[str, str] | None:
    install = _find("mariadb-install-db", "mysql_install_db")
    server = _find("mariadbd", "mysqld")
    return (install, server) if install and server else None


# Servers started and not yet cleaned up (the comparison removes them before its scratch dir).
LIVE: set["MariaDBServer"] = set()


def _die_with_parent() -> None:
    # Linux: PR_SET_PDEATHSIG, so the server ends when the process that started it does.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MariaDBServer:
    """Start with start(), stop with stop(); restart() keeps data and port."""

    def __init__(self, extra_args: list[str] | None = None) -> None:
        self.extra_args = list(extra_args or [])  # more mariadbd options (TLS: --ssl-cert ...)
        found = binaries()
        if found is None:
            raise RuntimeError("MariaDB binaries (mariadb-install-db, mariadbd) not found")
        self.install_db, self.mariadbd = found
        self.tmp = Path(tempfile.mkdtemp(prefix="fastpool-mariadb-"))
        self.datadir = self.tmp / "data"
        self.socket = str(self.tmp / "mysqld.sock")
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.tmp / "server.log"
        # Every exit path removes it: a normal end, an exception, Ctrl-C (atexit); and if
        # this process dies without running any of that, the server gets SIGTERM from the
        # kernel (_die_with_parent) rather than running on.
        atexit.register(self.cleanup)
        LIVE.add(self)

    @property
    def dsn(self) -> str:
        return f"mysql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def _user_args(self) -> list[str]:
        return ["--user=root"] if os.geteuid() == 0 else []

    def initialise(self) -> None:
        cmd = [
            self.install_db, f"--datadir={self.datadir}", "--auth-root-authentication-method=normal",
            # --force: go on when the host name does not resolve (a bare root filesystem
            # has no /etc/hosts); the server binds to 127.0.0.1 and skips name resolution.
            "--skip-test-db", "--skip-name-resolve", "--force", *self._user_args(),
        ]
        basedir = Path(self.mariadbd).resolve().parent.parent
        cmd.append(f"--basedir={basedir}")
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=180)
        if res.returncode != 0:
            raise RuntimeError("mariadb-install-db failed:\n" + res.stdout.decode(errors="replace")[-3000:])

    def start(self, timeout: float = 60.0) -> None:
        if not self.datadir.exists():
            self.initialise()
            first = True
        else:
            first = False
        cmd = [
            self.mariadbd, "--no-defaults", f"--datadir={self.datadir}", f"--socket={self.socket}",
            f"--port={self.port}", "--bind-address=127.0.0.1", "--skip-name-resolve",
            # Its own tmpdir: a server starting up clears leftover #sql temp files from its
            # tmpdir, and with a shared /tmp it removed those of another server still
            # running (seen here: "Error on delete of '/tmp/#sql-temptable-...'").
            f"--tmpdir={self.tmp}",
            f"--pid-file={self.tmp / 'mysqld.pid'}", "--innodb-buffer-pool-size=64M",
            "--max-connections=500", "--skip-log-bin", f"--log-error={self.log}",
            *self._user_args(), *self.extra_args,
        ]
        # PDEATHSIG fires when the starting *thread* ends, so only a server started from the
        # main thread gets it: a test that restarts the server from a worker thread must not
        # see it killed the moment that thread returns.
        main = threading.current_thread() is threading.main_thread()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent if main else None)
        self._wait_ready(timeout)
        if first:
            self._bootstrap()

    def _root(self):  # type: ignore[no-untyped-def]
        import MySQLdb

        return MySQLdb.connect(unix_socket=self.socket, user="root", autocommit=True)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited with {self.proc.returncode}:\n{self.tail_log()}")
            try:
                self._root().close()
                return
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.1)
        raise RuntimeError(f"mariadbd did not become ready in {timeout}s ({last}):\n{self.tail_log()}")

    def _bootstrap(self) -> None:
        conn = self._root()
        cur = conn.cursor()
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        for host in ("127.0.0.1", "localhost"):
            cur.execute(f"CREATE USER IF NOT EXISTS '{USER}'@'{host}' IDENTIFIED BY '{PASSWORD}'")
            cur.execute(f"GRANT ALL ON *.* TO '{USER}'@'{host}'")
        conn.close()

    def tail_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        LIVE.discard(self)
