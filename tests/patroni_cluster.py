"""A throwaway PostgreSQL cluster under Patroni on etcd: one etcd member on loopback and
two or three Patroni nodes, each with its PostgreSQL, streaming replication in synchronous
mode (so a crash loses no acknowledged write). Debian's ``patroni`` and ``etcd-server``.

Switchovers go through Patroni's REST API (``POST /switchover``), as an operator's would;
a failover follows ``kill -9`` of the leader's Patroni and postmaster, once its leader key
expires (``ttl`` 10 s, ``loop_wait`` 2 s). Everything is removed on every exit path: the
processes get SIGTERM from the kernel if this process dies (PDEATHSIG), and atexit kills
them and removes the temp dir.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from mariadb_server import _die_with_parent, _find, _free_port
from pg_server import DATABASE, PASSWORD, USER, _give_to_nobody, _run_as, pg_bindir

SUPERUSER_PASSWORD = "fp-patroni-super"
REPLICATION_PASSWORD = "fp-patroni-repl"
SCOPE = "fastpool-test"


def binaries() -> tuple[str, str] | None:
    patroni, etcd = _find("patroni"), _find("etcd")
    return (patroni, etcd) if patroni and etcd and pg_bindir() is not None else None


class Node:
    def __init__(self, cluster: PatroniCluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.port = _free_port()
        self.api_port = _free_port()
        self.dir = cluster.tmp / name
        self.dir.mkdir()
        self.config = self.dir / "patroni.yml"
        self.log = self.dir / "patroni.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        c = self.cluster
        # JSON is YAML: no YAML writer needed.
        config = {
            "scope": SCOPE, "namespace": "/fastpool/", "name": self.name,
            "log": {"level": "WARNING"},
            "restapi": {"listen": f"127.0.0.1:{self.api_port}",
                        "connect_address": f"127.0.0.1:{self.api_port}"},
            "etcd3": {"host": f"127.0.0.1:{c.etcd_port}"},
            "bootstrap": {
                "dcs": {
                    "ttl": 10, "loop_wait": 2, "retry_timeout": 4,
                    "maximum_lag_on_failover": 1048576, "synchronous_mode": True,
                    "postgresql": {"use_pg_rewind": True, "use_slots": True, "parameters": {
                        "wal_level": "replica", "hot_standby": "on", "max_wal_senders": 10,
                        "max_replication_slots": 10, "wal_log_hints": "on",
                        "max_connections": 100, "fsync": "off", "full_page_writes": "on",
                    }},
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}],
                "pg_hba": ["local all all trust",
                           "host replication replicator 127.0.0.1/32 scram-sha-256",
                           "host all all 127.0.0.1/32 scram-sha-256"],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{self.port}", "connect_address": f"127.0.0.1:{self.port}",
                "data_dir": str(self.dir / "data"), "bin_dir": str(pg_bindir()),
                "pgpass": str(self.dir / "pgpass"),
                "authentication": {
                    "replication": {"username": "replicator", "password": REPLICATION_PASSWORD},
                    "superuser": {"username": "postgres", "password": SUPERUSER_PASSWORD},
                    "rewind": {"username": "postgres", "password": SUPERUSER_PASSWORD},
                },
                "parameters": {"unix_socket_directories": str(self.dir)},
                # A replica's base backup starts with a checkpoint: a fast one, not one
                # spread over minutes.
                "basebackup": [{"checkpoint": "fast"}],
            },
        }
        self.config.write_text(json.dumps(config, indent=1))

    def start(self) -> None:
        main = threading.current_thread() is threading.main_thread()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.cluster.patroni, str(self.config)], stdout=log, stderr=subprocess.STDOUT,
                cwd=self.dir, preexec_fn=_die_with_parent if main else None,
                env={**os.environ, "HOME": str(self.dir)}, **_run_as())  # type: ignore[call-overload]

    def api(self, path: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}", method="POST" if body is not None else "GET",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:  # 503 from /primary on a replica: still JSON
            text = exc.read().decode()
        try:
            return json.loads(text)
        except ValueError:
            return text

    def role(self) -> str | None:
        try:
            return str(self.api("/patroni", timeout=2).get("role"))
        except Exception:
            return None

    def superuser(self):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(host=str(self.dir), port=self.port, user="postgres",
                               dbname="postgres", autocommit=True, connect_timeout=2)

    def postmaster_pid(self) -> int | None:
        pidfile = self.dir / "data" / "postmaster.pid"
        try:
            return int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """kill -9 Patroni and the postmaster (and so every backend) of this node."""
        pid = self.postmaster_pid()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # Patroni stops its PostgreSQL first
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        pid = self.postmaster_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def tail_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"


class PatroniCluster:
    def __init__(self, nodes: int = 2) -> None:
        found = binaries()
        if found is None:
            raise RuntimeError("patroni, etcd or PostgreSQL not found (apt-get install patroni"
                               " etcd-server postgresql)")
        self.patroni, self.etcd = found
        self.tmp = Path(tempfile.mkdtemp(prefix="fastpool-patroni-"))
        self.tmp.chmod(0o755)
        self.etcd_port = _free_port()
        self.etcd_peer_port = _free_port()
        self.etcd_proc: subprocess.Popen[bytes] | None = None
        self.nodes = [Node(self, f"node{i + 1}") for i in range(nodes)]
        atexit.register(self.cleanup)

    @property
    def dsn(self) -> str:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"postgresql://{USER}:{PASSWORD}@{hosts}/{DATABASE}"

    def start(self, timeout: float = 120.0) -> None:
        main = threading.current_thread() is threading.main_thread()
        with open(self.tmp / "etcd.log", "ab") as log:
            self.etcd_proc = subprocess.Popen(
                [self.etcd, "--name", "fp", "--data-dir", str(self.tmp / "etcd"),
                 "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                 "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                 "--listen-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
                 "--initial-cluster", f"fp=http://127.0.0.1:{self.etcd_peer_port}",
                 "--unsafe-no-fsync"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp,
                preexec_fn=_die_with_parent if main else None)
        for n in self.nodes:
            n.write_config()
        _give_to_nobody(self.tmp)
        self.nodes[0].start()
        leader = self.wait_leader(timeout)
        with leader.superuser() as conn:
            conn.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
            conn.execute(f"CREATE DATABASE {DATABASE} OWNER {USER}")
        for n in self.nodes[1:]:
            n.start()
        self.wait_replicas(timeout)

    def leader(self) -> Node | None:
        for n in self.nodes:
            if n.proc is not None and n.role() in ("master", "primary"):
                return n
        return None

    def wait_leader(self, timeout: float = 60.0, not_: Node | None = None) -> Node:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None and leader is not not_:
                try:
                    with leader.superuser() as conn:
                        if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                            return leader
                except Exception:
                    pass
            self._check_alive()
            time.sleep(0.2)
        raise RuntimeError(f"no Patroni leader in {timeout}s:\n{self.logs()}")

    def wait_replicas(self, timeout: float = 120.0) -> None:
        """Until every running node other than the leader streams from it, one of them as
        Patroni's synchronous standby (a switchover may only go to that one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            want = {n.name for n in self.nodes if n.proc is not None and n is not leader}
            if leader is not None:
                try:
                    members = leader.api("/cluster", timeout=2).get("members", [])
                    streaming = {m["name"] for m in members
                                 if m.get("role") in ("replica", "sync_standby")
                                 and m.get("state") in ("streaming", "running")
                                 and m.get("lag", 0) in (0, "0")}
                    has_sync = any(m.get("role") == "sync_standby" for m in members)
                    if want <= streaming and (has_sync or not want):
                        return
                except Exception:
                    pass
            self._check_alive()
            time.sleep(0.3)
        raise RuntimeError(f"replicas not streaming in {timeout}s:\n{self.logs()}")

    def sync_standby(self) -> Node | None:
        leader = self.leader()
        if leader is None:
            return None
        for m in leader.api("/cluster", timeout=2).get("members", []):
            if m.get("role") == "sync_standby":
                return next(n for n in self.nodes if n.name == m["name"])
        return None

    def switchover(self, candidate: Node | None = None) -> None:
        leader = self.leader()
        if leader is None:
            raise RuntimeError("no leader to switch over from")
        candidate = candidate or self.sync_standby()
        if candidate is None:
            raise RuntimeError("no synchronous standby to switch over to")
        result = leader.api("/switchover", {"leader": leader.name, "candidate": candidate.name},
                            timeout=60)
        if "switched over" not in str(result).lower():
            raise RuntimeError(f"switchover refused: {result}")

    def _check_alive(self) -> None:
        if self.etcd_proc is not None and self.etcd_proc.poll() is not None:
            raise RuntimeError(f"etcd exited:\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for n in self.nodes:
            parts.append(f"--- {n.name} (pg {n.port}, api {n.api_port}):\n{n.tail_log()}")
        try:
            parts.append("--- etcd:\n" + (self.tmp / "etcd.log").read_text(errors="replace")[-1500:])
        except OSError:
            pass
        return "\n".join(parts)

    def cleanup(self) -> None:
        for n in self.nodes:
            n.stop()
        proc, self.etcd_proc = self.etcd_proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(self.tmp, ignore_errors=True)
