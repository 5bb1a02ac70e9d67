"""pytest plugin for SQLAlchemy's own pool tests: `QueuePool` is fastpool's FastQueuePool.

FastQueuePool subclasses the real QueuePool, so replacing the name (in sqlalchemy.pool and
sqlalchemy.pool.impl) before the tests import it makes every `pool.QueuePool(...)` in the
suite build a FastQueuePool."""

import sqlalchemy.pool
import sqlalchemy.pool.impl

from fastpool.sqlalchemy import FastQueuePool

sqlalchemy.pool.QueuePool = FastQueuePool  # type: ignore[misc]
sqlalchemy.pool.impl.QueuePool = FastQueuePool  # type: ignore[misc]
