"""fastpool.aio on the real MariaDB, with each installed asyncio driver (asyncmy, aiomysql):
statements, streams, cancellation that reaches the server, deadlines, the seed's leak,
faults from the TCP proxy, and a loop that never stalls.

"Running on the server" is read from information_schema.processlist over a separate
mysqlclient connection: a statement a cancelled task left behind shows up there.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import time
from typing import Any, Awaitable, Callable

import pytest

import fastpool
import fastpool.aio
from aio_checks import LoopStall
from aio_checks import running_on_server as count_running
from aio_scenarios import (
    Server, cancellation_storm, cut_blackhole_recovery, leak_stays_on_one_connection,
    longest_loop_stall_with_64_tasks, timeouts_and_deadlines,
)
from conftest import server_port
from fastpool.url import parse_url

pytest.importorskip("greenlet")
MySQLdb = pytest.importorskip("MySQLdb", reason="mysqlclient is not installed")

DRIVERS = [d for d in ("asyncmy", "aiomysql") if importlib.util.find_spec(d) is not None]
if not DRIVERS:
    pytest.skip("neither asyncmy nor aiomysql is installed", allow_module_level=True)


@pytest.fixture(params=DRIVERS)
def aio_dsn(request, mariadb) -> str:  # type: ignore[no-untyped-def]
    sep = "&" if "?" in mariadb.dsn else "?"
    return f"{mariadb.dsn}{sep}driver={request.param}"


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main())  # type: ignore[arg-type]


def running_on_server(dsn: str, marker: str) -> int:
    kw = parse_url(dsn).connect_kwargs
    return count_running(lambda: MySQLdb.connect(host=kw["host"], port=int(kw["port"]),
                                                 user=kw["user"], password=kw["password"]), marker)


def test_statements_streams_and_sessions(aio_dsn) -> None:  # type: ignore[no-untyped-def]
    # A name of its own (DROP TABLE IF EXISTS of a missing table is a server note, which
    # aiomysql turns into a Python warning).
    table = f"aio_basic_{os.getpid()}_{aio_dsn.rsplit('=', 1)[1]}"

    async def main() -> None:
        async with fastpool.aio.open(aio_dsn, max_open=3) as db:
            await db.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v VARCHAR(10))")
            async with db.transaction() as tx:
                await tx.execute(f"INSERT INTO {table} VALUES (%s, %s)", (1, "a"))
                await tx.execute(f"INSERT INTO {table} VALUES (%s, %s)", (2, "b"))
            with pytest.raises(RuntimeError):
                async with db.transaction() as tx:
                    await tx.execute(f"INSERT INTO {table} VALUES (3, 'c')")
                    raise RuntimeError("roll it back")
            rows = await db.query(f"SELECT id, v FROM {table} ORDER BY id")
            assert list(rows) == [(1, "a"), (2, "b")] and rows.columns == ("id", "v")
            n = 0
            async for (seq,) in db.query("SELECT seq FROM seq_1_to_5000", stream=True):
                n += 1
                assert seq == n
                if n == 100:
                    assert db.stats().in_use == 1
            assert n == 5000 and db.stats().in_use == 0
            async with db.conn() as c:
                await c.execute("SET @who = %s", ("me",))
                assert await c.query_row("SELECT @who") == ("me",)
                assert c.raw is not None
            async with db.conn() as c:  # rolled back / reset, and session variables stay per session
                await c.query_row("SELECT 1")
            await db.ping()
            s = db.stats()
            assert s.open == s.in_use + s.idle + s.opening and s.in_use == 0
            await db.execute(f"DROP TABLE {table}")

    run(main)


def server(dsn: str) -> Server:
    return Server(dsn, lambda s, mark: f"SELECT SLEEP({s}) /* {mark} */", "SELECT %s",
                  "SELECT seq FROM seq_1_to_1000", lambda mark: running_on_server(dsn, mark))


def test_a_cancellation_storm_leaves_nothing_running(aio_dsn) -> None:  # type: ignore[no-untyped-def]
    run(lambda: cancellation_storm(server(aio_dsn)))


def test_timeouts_and_deadlines_end_the_statement_on_the_server(aio_dsn) -> None:  # type: ignore[no-untyped-def]
    # KILL QUERY for deadlines: the error answered, the connection kept.
    run(lambda: timeouts_and_deadlines(server(aio_dsn)))


def test_the_seeds_leak_in_async_form_stays_on_one_connection(aio_dsn) -> None:  # type: ignore[no-untyped-def]
    calls = 2000 if aio_dsn.endswith("asyncmy") else 300  # aiomysql drains rows slowly
    run(lambda: leak_stays_on_one_connection(server(aio_dsn), calls))


def test_faults_cut_blackhole_and_recovery(mariadb, proxy, aio_dsn) -> None:  # type: ignore[no-untyped-def]
    srv = server(aio_dsn)
    srv.dsn = _proxied_dsn(mariadb, proxy, aio_dsn)
    run(lambda: cut_blackhole_recovery(srv, proxy))


def test_the_loop_never_stalls_with_64_tasks(aio_dsn) -> None:  # type: ignore[no-untyped-def]
    stall = run(lambda: longest_loop_stall_with_64_tasks(server(aio_dsn)))
    assert stall < 0.25, f"the loop stalled for {stall:.3f}s"


def _proxied_dsn(mariadb, proxy, aio_dsn: str) -> str:  # type: ignore[no-untyped-def]
    port = server_port(mariadb.dsn)
    return aio_dsn.replace(f":{port}/", f":{proxy.port}/", 1)


def test_server_down_when_the_pool_starts(mariadb, proxy, aio_dsn) -> None:  # type: ignore[no-untyped-def]
    proxy.down()
    dsn = _proxied_dsn(mariadb, proxy, aio_dsn)

    async def main() -> None:
        async with fastpool.aio.open(dsn, max_open=4, min_idle=2, timeout=5) as db:
            await asyncio.sleep(0.5)
            # A task during the outage is told at once (the driver's error), not after its
            # 5 s timeout, and the loop went on meanwhile.
            started = time.monotonic()
            async with LoopStall() as stall:
                with pytest.raises(Exception) as ei:
                    await db.query_row("SELECT 1")
            assert time.monotonic() - started < 1.5
            assert not isinstance(ei.value, fastpool.FastpoolError), ei.value
            assert stall.longest < 0.25
            proxy.up()
            for _ in range(100):
                if db.stats().idle >= 2:
                    break
                await asyncio.sleep(0.05)
            assert db.stats().idle >= 2  # min_idle warmed once the server was back
            assert await db.query_row("SELECT %s", ("after",)) == ("after",)

    run(main)


def test_server_restart_under_load(mariadb, aio_dsn) -> None:  # type: ignore[no-untyped-def]
    if not hasattr(mariadb, "restart"):
        pytest.skip("needs the throwaway server (FASTPOOL_TEST_DSN is set)")

    async def main() -> None:
        async with fastpool.aio.open(aio_dsn, max_open=4, timeout=3) as db:
            outcomes: dict[str, int] = {}
            ok_after: list[float] = []
            broken: list[Any] = []
            restarted: list[float] = []
            end = time.monotonic() + 6.0

            async def worker(n: int) -> None:
                i = 0
                while time.monotonic() < end:
                    i += 1
                    token = f"t{n}-{i}"
                    try:
                        got = await db.query_row("SELECT %s", (token,))
                        assert got == (token,), f"wrong answer {got!r} for {token!r}"
                        what = "ok"
                        if restarted and time.monotonic() > restarted[0]:
                            ok_after.append(time.monotonic())
                    except fastpool.PoolTimeout:
                        what = "PoolTimeout"
                    except Exception as exc:  # the driver's: the server went away
                        what = type(exc).__name__
                        await asyncio.sleep(0.05)
                    outcomes[what] = outcomes.get(what, 0) + 1
                    s = db.stats()
                    if s.open != s.in_use + s.idle + s.opening or s.open > 4:
                        broken.append(s)

            async def restarter() -> None:
                await asyncio.sleep(0.8)
                await asyncio.get_running_loop().run_in_executor(None, mariadb.restart)
                restarted.append(time.monotonic())

            async with LoopStall() as stall:
                await asyncio.wait_for(asyncio.gather(restarter(), *[worker(n) for n in range(16)]), 60)
            print(f"\nasync server restart, 16 tasks on 4 connections: {outcomes}")
            assert restarted and ok_after, outcomes
            assert not broken, broken[:3]
            assert stall.longest < 0.5
            assert db.stats().in_use == 0

    run(main)


_SIGINT_SCRIPT = r"""
import asyncio, sys, time
import fastpool.aio

async def main():
    db = fastpool.aio.open(sys.argv[1], max_open=2)
    await db.query_row("SELECT 1")
    print("ready", flush=True)
    try:
        await asyncio.gather(db.query_row("SELECT SLEEP(10) /* %s */" % sys.argv[2]),
                             db.query_row("SELECT SLEEP(10) /* %s */" % sys.argv[2]))
    finally:
        await db.close()

try:
    asyncio.run(main())
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
    sys.exit(0)
"""


def test_ctrl_c_in_asyncio_run_ends_the_statements_on_the_server(aio_dsn) -> None:  # type: ignore[no-untyped-def]
    """A real SIGINT to a process in asyncio.run(): asyncio cancels the main task, the two
    statements' tasks are cancelled with it, and fastpool ends both on the server."""
    import signal
    import subprocess
    import sys

    marker = f"sigint_{os.getpid()}_{aio_dsn.rsplit('=', 1)[1]}"
    proc = subprocess.Popen([sys.executable, "-c", _SIGINT_SCRIPT, aio_dsn, marker],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 10
        while running_on_server(aio_dsn, marker) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running_on_server(aio_dsn, marker) == 2
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "KeyboardInterrupt" in out, (out, err[-2000:])
    assert took < 5, took
    time.sleep(0.5)
    assert running_on_server(aio_dsn, marker) == 0
