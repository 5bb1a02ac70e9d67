"""Background workers of a pool: the opener and the cleaner.

Each is one daemon thread, started the first time it is needed and stopped by
``Pool.close()``. They hold the pool only through a weak reference, so a pool that is
dropped without ``close()`` can still be collected.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pool import Pool

log = logging.getLogger("fastpool")

# Opener back-off after a failed connect: doubles from the first to the last value.
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0
# The cleaner runs every min(max_lifetime, max_idle_time) seconds, but not more often than
# this (Go uses 1 s) nor less often than the longest value.
CLEAN_MIN_INTERVAL = 1.0
CLEAN_MAX_INTERVAL = 60.0


class _Worker:
    name = "worker"

    def __init__(self, pool: Pool) -> None:
        self._pool_ref: weakref.ref[Pool] = weakref.ref(pool)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"fastpool-{self.name}", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                delay = self._step()
                if delay is None:
                    return
                self._wake.wait(delay)
                self._wake.clear()
        except BaseException:  # a worker must never die silently
            log.exception("fastpool %s thread crashed", self.name)

    def _step(self) -> float | None:  # seconds until the next step, None to end
        raise NotImplementedError


class Opener(_Worker):
    """Opens connections the core asks for: for waiters after a discard, and for min_idle."""

    name = "opener"

    def __init__(self, pool: Pool) -> None:
        self._backoff = 0.0
        super().__init__(pool)

    def _step(self) -> float | None:
        pool = self._pool_ref()
        if pool is None:
            return None
        while not self._stop.is_set() and pool._reserve_open():
            try:
                raw = pool._connect_raw()
            except Exception as exc:
                pool._open_failed()
                self._backoff = min(max(self._backoff * 2, BACKOFF_FIRST), BACKOFF_MAX)
                log.warning(
                    "fastpool: opening a connection failed (%s: %s); retrying in %.2fs",
                    type(exc).__name__, exc, self._backoff,
                )
                # Try again after the back-off even if nobody wakes us: waiters still wait.
                return self._backoff
            self._backoff = 0.0
            pool._opened(raw)
        return None if self._stop.is_set() else CLEAN_MAX_INTERVAL


class Cleaner(_Worker):
    """Closes idle connections past max_lifetime or max_idle_time."""

    name = "cleaner"

    def _step(self) -> float | None:
        pool = self._pool_ref()
        if pool is None:
            return None
        pool._collect_expired()
        return pool._clean_interval()


class LeakWatcher(_Worker):
    """Logs, once per checkout, a connection held longer than leak_timeout, with the
    stack of whoever took it (HikariCP's leakDetectionThreshold)."""

    name = "leak-watcher"

    def _step(self) -> float | None:
        pool = self._pool_ref()
        if pool is None:
            return None
        limit: float | None = pool.leak_timeout
        if limit is None:
            return None
        pool._report_long_holds(limit)
        return min(max(limit / 4, 0.01), 5.0)
