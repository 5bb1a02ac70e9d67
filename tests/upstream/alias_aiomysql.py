"""pytest plugin for aiomysql's own pool tests: `aiomysql.create_pool` is fastpool's.

The suite's fixtures call `aiomysql.create_pool(...)` by attribute at run time, so
replacing it here, before the tests run, makes every pool they build a fastpool.aiomysql
pool; the connections it hands out are still aiomysql's own.

One change to the harness, not the pool: a test that fails while it holds a connection
leaves the fixture's `wait_closed()` waiting for it forever (aiomysql's semantics, and
fastpool's); here it gives up after a few seconds and terminates the pool, so one failure
does not hang the run."""

import asyncio

import aiomysql
import aiomysql.pool

import fastpool.aiomysql

aiomysql.create_pool = fastpool.aiomysql.create_pool
aiomysql.pool.create_pool = fastpool.aiomysql.create_pool
aiomysql.Pool = fastpool.aiomysql.Pool
aiomysql.pool.Pool = fastpool.aiomysql.Pool

_wait_closed = fastpool.aiomysql.Pool.wait_closed


async def _wait_closed_bounded(self):
    try:
        await asyncio.wait_for(asyncio.shield(_wait_closed(self)), 5)
    except asyncio.TimeoutError:
        self.terminate()
        await _wait_closed(self)


fastpool.aiomysql.Pool.wait_closed = _wait_closed_bounded
