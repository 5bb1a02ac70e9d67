"""fastpool: a database connection pool with a compiled core.

Modelled on Go's database/sql (free list, FIFO hand-off to waiters, background opener and
cleaner, DBStats), with leaked connections reclaimed and dead ones found without a round trip.
"""

from __future__ import annotations

from . import _core
from ._core import Conn, Result, Rows, Tx
from .deadlines import deadline, remaining
from .errors import (
    ConfigError,
    ConnectionLeakWarning,
    DeadlineExceeded,
    EventLoopError,
    FastpoolError,
    PoolClosed,
    PoolTimeout,
    SessionStateError,
    TooManyWaiting,
)
from .hooks import PoolEvent
from .pool import Pool, open
from .multihost.pool import MultiHostPool
from .stats import HostStats, Stats

__version__ = "0.1.0"

__all__ = [
    "Conn",
    "ConfigError",
    "ConnectionLeakWarning",
    "DeadlineExceeded",
    "EventLoopError",
    "FastpoolError",
    "HostStats",
    "MultiHostPool",
    "Pool",
    "PoolClosed",
    "Result",
    "Rows",
    "SessionStateError",
    "Tx",
    "PoolEvent",
    "PoolTimeout",
    "Stats",
    "TooManyWaiting",
    "deadline",
    "open",
    "remaining",
    "__version__",
]

# The compiled core is the only implementation; say so plainly if it is missing.
assert _core.__file__ is not None and not _core.__file__.endswith(".py")
