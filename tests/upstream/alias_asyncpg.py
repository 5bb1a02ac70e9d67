"""pytest plugin for asyncpg's own pool tests: `asyncpg.pool.Pool` is fastpool's.

asyncpg's sdist ships its tests and their base (`asyncpg/_testbase`) but its package
there is not built; the installed asyncpg is used, with the sdist's `asyncpg` directory
added to its package path so that `asyncpg._testbase` is found. With `PGHOST` and the
other `PG*` variables set (test_upstream.py sets them to the throwaway server's
superuser over its Unix socket), the test base uses that running server.

The suite builds its pools through `_testbase.create_pool(pool_class=pg_pool.Pool)`,
whose default was bound when the module was imported: it is rebound here, as are
`asyncpg.create_pool`, `asyncpg.pool.create_pool` and `asyncpg.pool.Pool`."""

import os

import asyncpg
import asyncpg.pool

asyncpg.__path__.append(os.path.join(os.environ["FASTPOOL_UPSTREAM_SDIST"], "asyncpg"))

from asyncpg import _testbase  # noqa: E402 - needs the path above

import fastpool.asyncpg  # noqa: E402

asyncpg.create_pool = fastpool.asyncpg.create_pool
asyncpg.pool.create_pool = fastpool.asyncpg.create_pool
asyncpg.Pool = fastpool.asyncpg.Pool
asyncpg.pool.Pool = fastpool.asyncpg.Pool
_testbase.create_pool.__kwdefaults__["pool_class"] = fastpool.asyncpg.Pool
_testbase.ClusterTestCase.create_pool.__defaults__ = (
    fastpool.asyncpg.Pool, *_testbase.ClusterTestCase.create_pool.__defaults__[1:])
# The test base's tearDown waits for each pool's `_maintenance_task` (asyncpg's task that
# restores min_size); fastpool's opener thread does that job, there is no such task.
fastpool.asyncpg.Pool._maintenance_task = None
