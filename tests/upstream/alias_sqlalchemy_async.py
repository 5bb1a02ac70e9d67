"""pytest plugin for SQLAlchemy's own asyncio engine tests: `AsyncAdaptedQueuePool` is
fastpool's FastAsyncQueuePool.

The name is replaced in sqlalchemy.pool and sqlalchemy.pool.impl before the tests import
it, so every async engine whose dialect picks its default pool (aiosqlite on a file
database does) and every test that names the class builds a FastAsyncQueuePool."""

import sqlalchemy.pool
import sqlalchemy.pool.impl

from fastpool.sqlalchemy import FastAsyncQueuePool

sqlalchemy.pool.AsyncAdaptedQueuePool = FastAsyncQueuePool  # type: ignore[misc]
sqlalchemy.pool.impl.AsyncAdaptedQueuePool = FastAsyncQueuePool  # type: ignore[misc]
