"""fastpool.aio's scenarios on a real server, written once for every database: a
cancellation storm, timeouts and deadlines, the seed's leak, cut and blackhole, a loop that
never stalls. tests/test_aio_mariadb.py and tests/test_aio_postgresql.py run them with
their server's SQL (a `Server`)."""

from __future__ import annotations

import asyncio
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import pytest

import fastpool
import fastpool.aio
from aio_checks import LoopStall


@dataclass
class Server:
    dsn: str
    sleep: Callable[[float, str], str]  # SQL that sleeps that many seconds, marked
    echo: str  # SQL that returns its one parameter as an int (a row of it)
    rows: str  # SQL of more rows than one batch (512), the first being (1,)
    running: Callable[[str], int]  # statements marked so, running on the server now


async def cancellation_storm(srv: Server) -> None:
    """64 tasks on a pool of 8, cancelled 0.3 s into a 2 s sleep; then 100 more, cancelled
    one after another. Every caller gets its CancelledError at once, no statement runs on
    one second later, and every later answer is the right one."""
    async with fastpool.aio.open(srv.dsn, max_open=8) as db:
        tasks = [asyncio.create_task(db.query_row(srv.sleep(2, "storm"))) for _ in range(64)]
        await asyncio.sleep(0.3)
        assert srv.running("storm") == 8
        started = time.monotonic()
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert time.monotonic() - started < 1.0
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        for _ in range(100):
            t = asyncio.create_task(db.query_row(srv.sleep(2, "storm")))
            await asyncio.sleep(0.02)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
        await asyncio.sleep(1.0)
        assert srv.running("storm") == 0
        # Nothing out of sync: each answer is its own question's.
        answers = await asyncio.gather(*[db.query_row(srv.echo, (i,)) for i in range(200)])
        assert answers == [(i,) for i in range(200)]
        s = db.stats()
        assert s.in_use == 0 and s.statements_cancelled >= 8
        assert s.open == s.in_use + s.idle + s.opening


async def timeouts_and_deadlines(srv: Server) -> None:
    """asyncio.timeout and wait_for end the statement on the server; fastpool.deadline and
    statement_timeout cancel it there and keep the connection."""
    async with fastpool.aio.open(srv.dsn, max_open=2) as db:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await db.query_row(srv.sleep(3, "to_t1"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(db.execute(srv.sleep(3, "to_t2")), 0.3)
        assert time.monotonic() - started < 1.5
        await asyncio.sleep(0.5)
        assert srv.running("to_t") == 0

        await db.query_row(srv.echo, (1,))
        bad = db.stats().bad_conns_discarded
        started = time.monotonic()
        with fastpool.deadline(0.3), pytest.raises(fastpool.DeadlineExceeded):
            await db.query_row(srv.sleep(3, "to_d1"))
        assert time.monotonic() - started < 1.5
        assert srv.running("to_d1") == 0
        db.statement_timeout = 0.3
        with pytest.raises(fastpool.DeadlineExceeded):
            await db.query_row(srv.sleep(3, "to_d2"))
        db.statement_timeout = None
        assert await db.query_row(srv.echo, (7,)) == (7,)
        s = db.stats()
        assert s.deadlines_exceeded == 2 and s.statements_cancelled >= 4
        assert s.bad_conns_discarded == bad  # the server's cancel left both connections clean


async def leak_stays_on_one_connection(srv: Server, calls: int) -> None:
    """The seed's leak in async form: `async for row in rows: return row`, again and again."""
    async with fastpool.aio.open(srv.dsn, max_open=10) as db:

        async def first() -> Any:
            async for row in db.query(srv.rows, stream=True):
                return row
            return None

        peak = 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(calls):
                assert await first() == (1,)
                peak = max(peak, db.stats().open)
            await db.query_row(srv.echo, (1,))
        leaks = [w for w in caught if w.category is fastpool.ConnectionLeakWarning]
        assert peak == 1 and db.stats().connects == 1
        assert db.stats().leaks_reclaimed == calls == len(leaks)
        assert leaks[0].filename == __file__  # the line of the query in first()


async def cut_blackhole_recovery(srv: Server, proxy: Any) -> None:
    """srv.dsn goes through the fault proxy: idle connections cut are replaced unseen; a
    blackhole under a deadline frees the caller; the pool recovers with the network."""
    async with fastpool.aio.open(srv.dsn, max_open=4) as db:
        await asyncio.gather(*[db.query_row(srv.sleep(0.05, "warm")) for _ in range(4)])
        assert db.stats().idle == 4
        assert proxy.cut() == 4
        await asyncio.sleep(0.1)
        # Dead idle connections are found at checkout and replaced: no caller sees them.
        answers = await asyncio.gather(*[db.query_row(srv.echo, (i,)) for i in range(16)])
        assert answers == [(i,) for i in range(16)]
        assert db.stats().bad_conns_discarded >= 4

        proxy.blackhole()
        started = time.monotonic()
        with fastpool.deadline(0.5), pytest.raises(fastpool.DeadlineExceeded):
            await db.query_row(srv.echo, (1,))
        assert time.monotonic() - started < 3.0
        proxy.restore()
        for _ in range(30):
            try:
                assert await db.query_row(srv.echo, (5,)) == (5,)
                break
            except Exception:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the pool did not recover after the network came back")
        s = db.stats()
        assert s.open == s.in_use + s.idle + s.opening and s.in_use == 0


async def longest_loop_stall_with_64_tasks(srv: Server) -> float:
    async with LoopStall() as stall:
        db = fastpool.aio.open(srv.dsn, max_open=4)

        async def worker() -> None:
            for _ in range(5):
                await db.query_row(srv.sleep(0.01, "stall"))

        await asyncio.gather(*[worker() for _ in range(64)])
        assert db.stats().connects == 4
        await db.close()
    return stall.longest
