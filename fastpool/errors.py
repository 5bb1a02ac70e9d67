"""fastpool's exceptions.

Every error the pool itself raises derives from :class:`FastpoolError`. Errors raised by
the database driver (``MySQLdb.OperationalError``, ``sqlite3.Error``, ...) reach the caller
unchanged and are not wrapped.
"""

from __future__ import annotations

__all__ = [
    "FastpoolError",
    "ConfigError",
    "PoolTimeout",
    "TooManyWaiting",
    "PoolClosed",
    "DeadlineExceeded",
    "SessionStateError",
    "ConnectionLeakWarning",
]


class FastpoolError(Exception):
    """Base class of the errors raised by the pool itself (not by the driver)."""


class ConfigError(FastpoolError, ValueError):
    """A bad option, URL or driver setting; the message names the option and the value."""


class PoolTimeout(FastpoolError, TimeoutError):
    """No connection could be had within ``timeout`` seconds; the message carries the counts."""


class TooManyWaiting(PoolTimeout):
    """``max_waiting`` callers were already queued for a full pool: refused at once, without
    waiting (load shedding); the message carries the counts."""


class PoolClosed(FastpoolError):
    """The pool was used after ``close()``."""


class DeadlineExceeded(FastpoolError, TimeoutError):
    """A ``fastpool.deadline`` block's deadline, or ``statement_timeout``, passed: while
    waiting for a connection, or while a statement ran (it was then cancelled on the
    server, or its connection closed). The driver's error, if any, is ``__cause__``."""


class EventLoopError(FastpoolError, RuntimeError):
    """A ``fastpool.aio`` pool was used from an event loop other than the one it is bound to
    (the first that used it), or its driver I/O was asked for where it cannot be awaited."""


class SessionStateError(FastpoolError):
    """With ``behind_pooler=True``: a statement that would keep state on the server session
    (``SET`` without ``LOCAL``, ``LISTEN``, ``PREPARE``, a temporary table, a session
    advisory lock) was refused before it was sent; the connection is unaffected."""


class ConnectionLeakWarning(ResourceWarning):
    """A connection was dropped without being given back (reclaimed), or held too long."""


for _cls in (FastpoolError, ConfigError, PoolTimeout, TooManyWaiting, PoolClosed, DeadlineExceeded,
             EventLoopError, SessionStateError, ConnectionLeakWarning):
    _cls.__module__ = "fastpool"
del _cls
