"""A throwaway MariaDB primary and replica (GTID, semi-synchronous), and the promotions an
orchestrator does, in SQL: a planned switchover and a promotion after a crash.

Both servers are MariaDBServer instances (mariadb_server.py): removed on every exit path.
The application's user, APP_USER, has the privileges an application has and not
READ_ONLY ADMIN, so a read-only server refuses its writes (MariaDB 10.11: SUPER no longer
bypasses read_only); ADMIN_USER has them all (as root does), READ_ONLY ADMIN included.
"""

from __future__ import annotations

import time
from typing import Any

from mariadb_server import DATABASE, MariaDBServer

APP_USER = "fp_app"
ADMIN_USER = "fp_admin"
PASSWORD = "fp-repl-secret"
REPL_USER = "fp_repl"


class MariaDBPair:
    """servers[0] starts as the primary, servers[1] as its replica. ``primary`` and
    ``replica`` follow promotions."""

    def __init__(self) -> None:
        self.servers = [MariaDBServer(self._args(1)), MariaDBServer(self._args(2))]
        self.primary, self.replica = self.servers

    @staticmethod
    def _args(server_id: int) -> list[str]:
        return [f"--server-id={server_id}", "--log-bin=mariadb-bin", "--binlog-format=ROW",
                "--gtid-strict-mode=ON", "--log-slave-updates=ON",
                "--rpl-semi-sync-master-enabled=ON", "--rpl-semi-sync-slave-enabled=ON",
                "--rpl-semi-sync-master-timeout=2000", "--slave-net-timeout=5",
                # The binlog is synced before the replica's acknowledgement is awaited, and
                # the engine commits after it: a crashed primary restarted with
                # --init-rpl-role=SLAVE truncates what no replica acknowledged (and rolls it
                # back), so it can follow the new primary without errant transactions.
                "--rpl-semi-sync-master-wait-point=AFTER_SYNC"]

    def start(self) -> None:
        for s in self.servers:
            s.start()
            self._bootstrap(s)
            # What start() wrote to the binlog (the test database, its user) each server
            # has by itself: both histories start empty, the primary's from here on.
            self.sql(s, "RESET MASTER")
        self.sql(self.replica, "SET GLOBAL gtid_slave_pos=''")
        self._follow(self.replica, self.primary)
        self.sql(self.replica, "SET GLOBAL read_only=1")
        self.sql(self.primary, f"CREATE TABLE IF NOT EXISTS {DATABASE}.writes"
                               " (id BIGINT PRIMARY KEY AUTO_INCREMENT, who VARCHAR(40),"
                               " n BIGINT)")
        self.wait_caught_up()

    def dsn(self, user: str = APP_USER, **params: Any) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.servers)
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"mysql://{user}:{PASSWORD}@{hosts}/{DATABASE}" + (f"?{query}" if query else "")

    # ---- SQL as root --------------------------------------------------------------------
    @staticmethod
    def sql(server: MariaDBServer, statement: str) -> list[tuple[Any, ...]]:
        conn = server._root()
        try:
            cur = conn.cursor()
            cur.execute(statement)
            rows = list(cur.fetchall()) if cur.description else []
            cur.close()
            return rows
        finally:
            conn.close()

    def _bootstrap(self, server: MariaDBServer) -> None:
        # Not written to the binlog: each server creates the same users itself, and the
        # replica's GTID history stays the primary's.
        conn = server._root()
        cur = conn.cursor()
        cur.execute("SET SESSION sql_log_bin=0")
        for host in ("127.0.0.1", "localhost"):
            for user in (APP_USER, ADMIN_USER, REPL_USER):
                cur.execute(f"CREATE USER IF NOT EXISTS '{user}'@'{host}' IDENTIFIED BY '{PASSWORD}'")
            cur.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER"
                        f" ON {DATABASE}.* TO '{APP_USER}'@'{host}'")
            cur.execute(f"GRANT SLAVE MONITOR ON *.* TO '{APP_USER}'@'{host}'")
            cur.execute(f"GRANT ALL ON *.* TO '{ADMIN_USER}'@'{host}'")
            cur.execute(f"GRANT READ_ONLY ADMIN ON *.* TO '{ADMIN_USER}'@'{host}'")
            cur.execute(f"GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'{host}'")
        conn.close()

    def _follow(self, replica: MariaDBServer, primary: MariaDBServer, *, demote: bool = False) -> None:
        demoting = ", MASTER_DEMOTE_TO_SLAVE=1" if demote else ""
        self.sql(replica, f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port},"
                          f" MASTER_USER='{REPL_USER}', MASTER_PASSWORD='{PASSWORD}',"
                          f" MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1{demoting}")
        self.sql(replica, "START SLAVE")

    def wait_caught_up(self, timeout: float = 30.0) -> None:
        pos = self.sql(self.primary, "SELECT @@gtid_binlog_pos")[0][0]
        got = self.sql(self.replica, f"SELECT MASTER_GTID_WAIT('{pos}', {timeout})")[0][0]
        if got != 0:
            raise RuntimeError(f"the replica did not reach {pos} in {timeout}s:"
                               f" {self._status(self.replica)}")

    # ---- an orchestrator's promotions ----------------------------------------------------
    def switchover(self, *, kill_sessions_of: str | None = None) -> float:
        """A planned switchover; returns time.monotonic() when the new primary took writes.
        kill_sessions_of: end that user's sessions on the demoted server (the only way a
        client whose user bypasses read_only learns of the demotion)."""
        old, new = self.primary, self.replica
        self.sql(old, "SET GLOBAL read_only=1")
        if kill_sessions_of is not None:
            for (pid,) in self.sql(old, f"SELECT id FROM information_schema.processlist"
                                        f" WHERE user = '{kill_sessions_of}'"):
                try:
                    self.sql(old, f"KILL CONNECTION {int(pid)}")
                except Exception:
                    pass  # ended by itself meanwhile
        self.wait_caught_up()
        self.sql(new, "STOP SLAVE")
        self.sql(new, "RESET SLAVE ALL")
        self.sql(new, "SET GLOBAL read_only=0")
        promoted = time.monotonic()
        self._follow(old, new, demote=True)
        self.primary, self.replica = new, old
        return promoted

    def crash_and_promote(self) -> float:
        """kill -9 the primary, promote the replica once it applied all it received;
        the old primary is started again as a replica (read_only) of the new one. Returns
        time.monotonic() when the new primary took writes."""
        old, new = self.primary, self.replica
        assert old.proc is not None
        old.proc.kill()
        old.proc.wait(10)
        old.proc = None
        self.sql(new, "STOP SLAVE IO_THREAD")
        io_pos = self._status(new).get("Gtid_IO_Pos") or ""
        if io_pos:
            self.sql(new, f"SELECT MASTER_GTID_WAIT('{io_pos}', 30)")
        self.sql(new, "STOP SLAVE")
        self.sql(new, "RESET SLAVE ALL")
        self.sql(new, "SET GLOBAL read_only=0")
        promoted = time.monotonic()
        self.primary, self.replica = new, old
        return promoted

    def rejoin_old_primary(self) -> None:
        old = self.replica
        old.extra_args = [a for a in old.extra_args if a not in ("--read-only", "--init-rpl-role=SLAVE")]
        old.extra_args += ["--read-only", "--init-rpl-role=SLAVE"]
        old.start()
        # MASTER_DEMOTE_TO_SLAVE: its own binlog position (every transaction it took as the
        # primary) becomes where it follows from; its stale replica position would replay
        # them all again and stop on the first duplicate key.
        self._follow(old, self.primary, demote=True)

    @staticmethod
    def _status(server: MariaDBServer) -> dict[str, Any]:
        conn = server._root()
        try:
            cur = conn.cursor()
            cur.execute("SHOW SLAVE STATUS")
            row = cur.fetchone()
            names = [d[0] for d in cur.description or ()]
            return dict(zip(names, row)) if row else {}
        finally:
            conn.close()

    def stop(self) -> None:
        for s in self.servers:
            s.cleanup()
