"""A throwaway PostgreSQL server for the test session (initdb + postgres in a temp dir, on a
free loopback port) and a PgBouncer in transaction mode in front of it. Also used by the
benchmarks' main command.

PostgreSQL and PgBouncer both refuse to run as root; as root (CI) they run as ``nobody``,
their temp dir handed over to it.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from mariadb_server import _die_with_parent, _find, _free_port

USER = "fastpool"
PASSWORD = "fp-test-secret"
DATABASE = "fastpool_test"
SUPERUSER = "postgres"


def pg_bindir() -> Path | None:
    """Where initdb and postgres are: on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(found).resolve().parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]),
                    reverse=True):
        if (Path(d) / "initdb").exists() and (Path(d) / "postgres").exists():
            return Path(d)
    return None


def pgbouncer_binary() -> str | None:
    return _find("pgbouncer")


LIVE: set[object] = set()


def terminate_backend(dsn: str, pid: int, timeout: float = 10.0) -> None:
    """End the server session pid (pg_terminate_backend) and wait until its process is gone:
    the backend exits asynchronously, and a loaded machine takes a while. Its FATAL
    message and FIN are then on their way to the client's socket."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        while time.monotonic() < deadline:
            row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                (pid,)).fetchone()
            if row is not None and row[0] == 0:
                break
            time.sleep(0.02)
        else:
            raise RuntimeError(f"server session {pid} still there {timeout}s after"
                               f" pg_terminate_backend")
    time.sleep(0.1)  # the FIN reaches the client


def _run_as() -> dict[str, object]:
    """Popen keywords that drop root (the servers refuse it)."""
    if os.geteuid() != 0:
        return {}
    return {"user": "nobody", "group": "nogroup", "extra_groups": []}


def _give_to_nobody(path: Path) -> None:
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("nobody")
        for p in [path, *path.rglob("*")]:
            os.chown(p, pw.pw_uid, pw.pw_gid)


class _Process:
    """A server process in a temp dir: removed on every exit path (atexit; the kernel's
    SIGTERM when this process dies first)."""

    name = "server"

    def __init__(self, prefix: str) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.tmp.chmod(0o755)
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.tmp / "server.log"
        atexit.register(self.cleanup)
        LIVE.add(self)

    def _spawn(self, cmd: list[str]) -> None:
        main = threading.current_thread() is threading.main_thread()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp,
                                         preexec_fn=_die_with_parent if main else None,
                                         **_run_as())  # type: ignore[call-overload]

    def tail_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def _wait_ready(self, timeout: float, probe) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail_log()}")
            try:
                probe()
                return
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become ready in {timeout}s ({last}):\n{self.tail_log()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT if self.name == "postgres" else signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        LIVE.discard(self)


class PostgresServer(_Process):
    """Start with start(), stop with stop(); restart() keeps data and port.
    ``max_connections`` limits the server (the fleet run)."""

    name = "postgres"

    def __init__(self, max_connections: int = 200) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL binaries (initdb, postgres) not found")
        self.bindir = bindir
        self.max_connections = max_connections
        super().__init__("fastpool-pg-")
        self.datadir = self.tmp / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def _initdb(self) -> None:
        pwfile = self.tmp / "pw"
        pwfile.write_text(PASSWORD + "\n")
        _give_to_nobody(self.tmp)
        res = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", SUPERUSER,
             f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
             "--encoding=UTF8", "--locale=C", "--no-sync"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=180, cwd=self.tmp,
            **_run_as())  # type: ignore[call-overload]
        pwfile.unlink()
        if res.returncode != 0:
            raise RuntimeError("initdb failed:\n" + res.stdout.decode(errors="replace")[-3000:])

    def start(self, timeout: float = 60.0) -> None:
        first = not self.datadir.exists()
        if first:
            self._initdb()
        self._spawn([
            str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.tmp}",
            "-c", f"max_connections={self.max_connections}", "-c", "fsync=off",
            "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "shared_buffers=32MB", "-c", "log_min_messages=warning",
        ])
        self._wait_ready(timeout, lambda: self.superuser().close())
        if first:
            self._bootstrap()

    def superuser(self, database: str = "postgres"):  # type: ignore[no-untyped-def]
        """A psycopg connection as the superuser over the Unix socket (trust), autocommit."""
        import psycopg

        return psycopg.connect(host=str(self.tmp), port=self.port, user=SUPERUSER,
                               dbname=database, autocommit=True, connect_timeout=2)

    def _bootstrap(self) -> None:
        with self.superuser() as conn:
            # Not a superuser: the fleet run's connection limit must apply to it (a
            # superuser has reserved slots), and pg_terminate_backend of its own sessions
            # needs no more.
            # CREATEDB: Django's test runner makes its test databases.
            conn.execute(f"CREATE ROLE {USER} LOGIN CREATEDB PASSWORD '{PASSWORD}'")
            conn.execute(f"CREATE DATABASE {DATABASE} OWNER {USER}")

    def restart(self) -> None:
        self.stop()
        self.start()


class PgBouncer(_Process):
    """PgBouncer in transaction mode in front of a PostgresServer."""

    name = "pgbouncer"

    def __init__(self, server: PostgresServer, pool_size: int = 20) -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError("pgbouncer not found (apt-get install pgbouncer)")
        self.binary = binary
        self.server = server
        self.pool_size = pool_size
        super().__init__("fastpool-pgbouncer-")

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self, timeout: float = 30.0) -> None:
        (self.tmp / "users.txt").write_text(f'"{USER}" "{PASSWORD}"\n')
        (self.tmp / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"{DATABASE} = host=127.0.0.1 port={self.server.port} dbname={DATABASE}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"unix_socket_dir = {self.tmp}\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {self.tmp / 'users.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\nmin_pool_size = 0\nreserve_pool_size = 0\n"
            "max_client_conn = 2000\n"
            "server_idle_timeout = 60\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"pidfile = {self.tmp / 'pgbouncer.pid'}\n"
        )
        _give_to_nobody(self.tmp)
        self._spawn([self.binary, str(self.tmp / "pgbouncer.ini")])
        self._wait_ready(timeout, self._probe)

    def _probe(self) -> None:
        import psycopg

        psycopg.connect(self.dsn, connect_timeout=2, prepare_threshold=None).close()
