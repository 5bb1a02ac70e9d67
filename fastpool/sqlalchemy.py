"""``FastQueuePool`` (and ``FastAsyncQueuePool`` for asyncio engines): SQLAlchemy
``poolclass``es served by the fastpool core.

    engine = create_engine(url, poolclass=FastQueuePool, pool_size=5, max_overflow=10,
                           pool_timeout=30, pool_recycle=-1, pool_pre_ping=False)

It keeps QueuePool's behaviour and numbers (``status()``, ``size()``, ``overflow()``,
``TimeoutError``) while the waiting and hand-off are fastpool's: callers are served first
come, first served, so no thread starves (sqlalchemy#7679). SQLAlchemy's base ``Pool`` still
does what it does for every pool: events, ``pool_pre_ping``, ``pool_recycle``, reset on
return, invalidation. The fastpool core holds SQLAlchemy's own connection records, so an
invalidated record is reconnected by SQLAlchemy as usual.

As QueuePool: ``pool_size=0`` means no limit, ``pool_use_lifo=False`` (the default) reuses
the idle connection that has waited longest and ``True`` the newest, and the pool logs to
``sqlalchemy.pool.impl.FastQueuePool`` (under ``sqlalchemy.pool``, with ``echo_pool`` and
``pool_logging_name`` honoured). The creator and the connect events run in the thread that
asked for the connection, as with QueuePool.

This class has an explicit Python ``__init__`` signature because ``create_engine`` reads it
to decide which ``pool_*`` arguments to pass.
"""

from __future__ import annotations

from typing import Any

import asyncio

from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import Pool as _SAPool
from sqlalchemy.pool import QueuePool
from sqlalchemy.pool.base import _AsyncConnDialect, _ConnectionRecord
from sqlalchemy.util.concurrency import await_only

try:
    from sqlalchemy.util.concurrency import in_greenlet
except ImportError:  # SQLAlchemy 2.0.x

    def in_greenlet() -> bool:
        from greenlet import getcurrent

        return type(getcurrent()).__name__ == "_AsyncIoGreenlet"

from .errors import PoolTimeout
from .green import new_parker
from .pool import Pool

__all__ = ["FastAsyncQueuePool", "FastQueuePool"]


class FastQueuePool(QueuePool):
    """QueuePool's interface on fastpool's core (FIFO hand-off, compiled checkout)."""

    # SQLAlchemy names a pool's logger after this: handlers and levels set on
    # logging.getLogger("sqlalchemy.pool") see this pool as they see QueuePool.
    _sqla_logger_namespace = "sqlalchemy.pool.impl.FastQueuePool"

    def __init__(
        self,
        creator: Any,
        pool_size: int = 5,
        max_overflow: int = 10,
        timeout: float = 30.0,
        use_lifo: bool = False,
        **kw: Any,
    ) -> None:
        # QueuePool.__init__ would build its own queue; only the base Pool's is wanted.
        _SAPool.__init__(self, creator, **kw)
        self._pool_size = pool_size
        self._max_overflow = max_overflow
        self._timeout = timeout
        self._use_lifo = use_lifo
        # As QueuePool: pool_size=0 means no limit at all, max_overflow=-1 no overflow limit.
        if pool_size == 0:
            max_overflow = -1
        max_open = pool_size + max_overflow if max_overflow > -1 else 0
        self._fp = Pool(
            self._new_record,
            driver="generic",
            max_open=max_open,
            max_idle=pool_size if pool_size > 0 else None,
            max_lifetime=None,  # pool_recycle is SQLAlchemy's, done in the record
            max_idle_time=None,
            timeout=timeout,
            _display=f"FastQueuePool(size={pool_size}, overflow={max_overflow})",
        )
        # Its records point back at this pool: the collector must see the free list.
        self._fp._idle_may_refer_back = True
        self._fp._set_reuse_fifo(not use_lifo)
        # As QueuePool: the creator and the connect events run in the caller's thread.
        self._fp._set_inline_connect(True)

    # The core opens and closes "connections" that are SQLAlchemy records.
    def _new_record(self) -> _ConnectionRecord:
        return _ConnectionRecord(self)

    def _do_get(self) -> Any:
        try:
            rec = self._fp._take()
        except PoolTimeout:
            raise sa_exc.TimeoutError(
                "QueuePool limit of size %d overflow %d reached, "
                "connection timed out, timeout %0.2f"
                % (self.size(), self.overflow(), self._timeout),
                code="3o7r",
            ) from None
        record = rec.raw
        record._fastpool_rec = rec
        return record

    def _do_return_conn(self, record: Any) -> None:
        self._fp._give(record._fastpool_rec)

    def recreate(self) -> FastQueuePool:
        """A new pool with the same arguments (``engine.dispose()`` uses it), as QueuePool's."""
        self.logger.info("Pool recreating")
        return self.__class__(
            self._creator,
            pool_size=self._pool_size,
            max_overflow=self._max_overflow,
            pre_ping=self._pre_ping,
            use_lifo=self._use_lifo,
            timeout=self._timeout,
            recycle=self._recycle,
            echo=self.echo,
            logging_name=self._orig_logging_name,
            reset_on_return=self._reset_on_return,
            _dispatch=self.dispatch,
            dialect=self._dialect,
        )

    def dispose(self) -> None:
        """Close the idle connections; connections in use are closed as they come back."""
        # As QueuePool: close the idle connections; checked-out ones come back as usual.
        self._fp._close_idle()
        self.logger.info("Pool disposed. %s", self.status())

    def status(self) -> str:
        """QueuePool's status line, word for word (``Pool size: 5  Connections in pool: 1 ...``)."""
        return (
            "Pool size: %d  Connections in pool: %d "
            "Current Overflow: %d Current Checked out "
            "connections: %d" % (self.size(), self.checkedin(), self.overflow(), self.checkedout())
        )

    def size(self) -> int:
        """``pool_size``."""
        return self._pool_size

    def timeout(self) -> float:
        """``pool_timeout``, in seconds."""
        return self._timeout

    def checkedin(self) -> int:
        """Idle connections in the pool."""
        return self._fp.stats().idle

    def overflow(self) -> int:
        """Connections open beyond ``pool_size`` (negative while fewer than ``pool_size`` are open, as QueuePool counts)."""
        # QueuePool counts overflow from -pool_size upward; 0 when the size is unlimited.
        return self._fp.stats().open - self._pool_size if self._pool_size else 0

    def checkedout(self) -> int:
        """Connections held by the engine's connections."""
        s = self._fp.stats()
        return s.open - s.idle


class FastAsyncQueuePool(FastQueuePool):
    """``AsyncAdaptedQueuePool``'s place for ``create_async_engine(url, poolclass=...)``
    (``mysql+asyncmy://``, ``mysql+aiomysql://``, ``sqlite+aiosqlite://``, ...).

    SQLAlchemy runs its pool for a task inside a greenlet of its own and awaits through
    ``await_only``; a checkout that must wait does the same here (fastpool's task parker
    waits on a future through ``await_only``), so the event loop runs on while a task
    queues, and waiting tasks are served first come, first served under fastpool's bound
    (AsyncAdaptedQueuePool's ``asyncio.Queue`` serves newcomers first)."""

    _is_asyncio = True
    _dialect = _AsyncConnDialect()
    _sqla_logger_namespace = "sqlalchemy.pool.impl.FastAsyncQueuePool"

    def __init__(self, creator: Any, pool_size: int = 5, max_overflow: int = 10,
                 timeout: float = 30.0, use_lifo: bool = False, **kw: Any) -> None:
        super().__init__(creator, pool_size, max_overflow, timeout, use_lifo, **kw)
        self._fp._new_parker = _task_parker
        self._fp._probe_hook = None  # on the loop by design (SQLAlchemy's greenlet bridge)
        self._fp._set_handoff_after(0.02)  # as fastpool.aio: a hand-off costs a loop round


def _task_parker() -> Any:
    # Inside SQLAlchemy's asyncio greenlet: wait on the loop through await_only.
    if in_greenlet():
        from ._bridge import TaskParker

        return TaskParker(asyncio.get_running_loop(), await_only)
    return new_parker()
