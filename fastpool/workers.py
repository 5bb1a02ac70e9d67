"""Background workers of a pool: the opener, the cleaner and the leak watcher.

Each runs on daemon threads (the opener on up to MAX_CONCURRENT_CONNECTS of them, the
others on one), started the first time they are needed and stopped by ``Pool.close()``.
A worker is handed what it needs when it is made: the compiled core (for the mechanism:
reserve a slot, pool a new connection, collect expired ones) and the few policy callables
of the façade it calls (connect, the cleaning interval, ...). It never imports the façade.
Both are held weakly, so a pool that is dropped without ``close()`` can still be collected.
"""

from __future__ import annotations

import copy
import inspect
import logging
import threading
import time
import weakref
from typing import Any, Callable, Generic, TypeVar

from ._core import CorePool

log = logging.getLogger("fastpool")

# Opener back-off after a failed connect nobody waited for: doubles from first to last.
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0
# Connects the opener runs at once: a burst of callers on an empty pool is not served one
# connect after another, and one connect hung on a dead network holds up no other.
MAX_CONCURRENT_CONNECTS = 4
# The cleaner runs every half of min(max_lifetime, max_idle_time) seconds (so a connection
# is closed at most 1.5 times its limit), but not more often than this nor less often
# than the longest value. (Go runs at the limit itself, at least 1 s apart: a 0.2 s idle
# limit, as asyncpg's users set, would close connections a second late.)
CLEAN_MIN_INTERVAL = 0.05
CLEAN_MAX_INTERVAL = 60.0


F = TypeVar("F", bound=Callable[..., Any])


class WeakCallable(Generic[F]):
    """A callable held weakly when it is a bound method (a worker must not keep its pool
    alive); calling this gives the callable back, or None once its object is gone."""

    def __init__(self, fn: F) -> None:
        self._ref: Callable[[], F | None] = (
            weakref.WeakMethod(fn) if inspect.ismethod(fn) else (lambda: fn))

    def __call__(self) -> F | None:
        return self._ref()


class OwnThread:
    """A background worker that runs its _run() on one daemon thread of its own."""

    def _start_thread(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        raise NotImplementedError

    def join(self, timeout: float | None = None) -> None:
        # Pool.close() may be called on this very thread: a thread cannot join itself.
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


class Looper(OwnThread):
    """A worker that runs _step() on a thread of its own until _step() returns None or
    stop() is called, sleeping the seconds _step() returns; wake() runs the next step now."""

    name = "worker"

    def _start_loop(self, thread_name: str) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._start_thread(thread_name)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

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


class _Worker(Looper):
    """A Looper of one pool's core, held weakly."""

    def __init__(self, core: CorePool) -> None:
        self._core_ref: weakref.ref[CorePool] = weakref.ref(core)
        self._start_loop(f"fastpool-{self.name}")


def _detached(exc: BaseException) -> BaseException | None:
    """A copy of a connect error without its traceback, to remember as the cause of later
    PoolTimeouts: the original's frames would keep the pool (and more) alive."""
    try:
        twin = copy.copy(exc)
    except Exception:
        return None
    twin.__traceback__ = None
    twin.__context__ = twin.__cause__ = None
    return twin


class Opener:
    """Opens the connections the core asks for (for waiters, and for min_idle), on up to
    MAX_CONCURRENT_CONNECTS threads at once, so that one hung connect holds up nobody.

    Each thread opens connections while the core has a deficit, then ends. After a failed
    connect the next try waits a back-off that doubles up to BACKOFF_MAX, so a database
    that is down, or refuses more connections, costs a few connects a second, not a spin.
    A starved pool (callers waiting, nothing open or opening that could serve them) is the
    exception: the error goes straight to the oldest waiter, and a starved caller arriving
    during the back-off cuts it short, so nobody waits out a timeout for a database that
    is plainly down.
    """

    name = "opener"

    def __init__(self, core: CorePool, connect: Callable[[], Any]) -> None:
        self._core_ref: weakref.ref[CorePool] = weakref.ref(core)
        self._connect = WeakCallable(connect)  # the façade's: dialect preparation, hooks, counts
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # _lock protects the following fields.
        self._threads: set[threading.Thread] = set()
        self._stopped = False
        self._backoff = 0.0
        self._retry_at = 0.0

    def wake(self) -> None:
        pool = self._core_ref()
        if pool is None:
            return
        with self._lock:
            if self._stopped:
                pool._drop_reserved_opens()
                return
            self._cond.notify_all()  # a thread in back-off re-checks: a waiter may be here
            # The connects a waiter's arrival reserved in the core: each gets a thread now,
            # or is given up (outside a back-off with a free thread there is always one);
            # the loop below then asks the core afresh, a starved waiter first.
            reserved = pool._take_reserved_opens()
            while (reserved and len(self._threads) < MAX_CONCURRENT_CONNECTS
                   and time.monotonic() >= self._retry_at):
                reserved -= 1
                self._start_locked()
            for _ in range(reserved):
                pool._open_failed(None)
            while len(self._threads) < MAX_CONCURRENT_CONNECTS and self._may_open_locked(pool):
                if not pool._reserve_open():
                    break
                self._start_locked()

    def reset_backoff(self) -> None:
        """Connect again now (a host list found a new primary: the failures that grew
        the back-off were the old one's)."""
        with self._lock:
            self._backoff = 0.0
            self._retry_at = 0.0
            self._cond.notify_all()

    def _start_locked(self) -> None:
        # A thread for a connect already reserved in the core.
        t = threading.Thread(target=self._run, name="fastpool-opener", daemon=True)
        self._threads.add(t)
        t.start()

    def _may_open_locked(self, pool: CorePool) -> bool:
        # During a back-off only a starved waiter (nothing open or opening that could
        # serve it) may start a connect early; waiters with connections circulating, and
        # min_idle, wait the back-off out.
        return time.monotonic() >= self._retry_at or pool._starving()

    def _run(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                pool = self._core_ref()
                if pool is None:
                    return
                self._open_one(pool)  # a slot was reserved for this connect
                with self._lock:
                    # Decide and deregister under the lock, so a wake() that found every
                    # thread busy cannot miss that this one is leaving.
                    if self._stopped or not self._may_open_locked(pool) or not pool._reserve_open():
                        self._threads.discard(me)
                        return
                del pool
        except BaseException:  # a worker must never die silently
            log.exception("fastpool opener thread crashed")
            with self._lock:
                self._threads.discard(me)

    def _open_one(self, pool: CorePool) -> None:
        try:
            connect = self._connect()
            if connect is None:
                raise RuntimeError("the pool is gone")
            raw = connect()
        except BaseException as exc:
            delivered = pool._open_failed(exc)
            pool._last_connect_error = _detached(exc)
            with self._lock:
                self._backoff = min(max(self._backoff * 2, BACKOFF_FIRST), BACKOFF_MAX)
                self._retry_at = time.monotonic() + self._backoff
                # The message, not the exception, goes to the log: a handler that keeps
                # records (pytest's, a memory handler) would keep its traceback's frames,
                # and with them the pool, alive.
                if delivered:
                    log.debug("fastpool: opening a connection failed (%s: %s); a waiter has the error",
                              type(exc).__name__, str(exc))
                    return
                log.warning("fastpool: opening a connection failed (%s: %s); retrying in %.2fs",
                            type(exc).__name__, str(exc), self._backoff)
                # Sit out the back-off here (this thread is the one that will retry), unless
                # stopped or a caller is left with nothing.
                while not self._stopped and not pool._starving():
                    left = self._retry_at - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            return
        with self._lock:
            self._backoff = 0.0
            self._retry_at = 0.0
        pool._opened(raw)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            threads = [t for t in self._threads if t is not threading.current_thread()]
        for t in threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    @property
    def alive(self) -> bool:
        with self._lock:
            return any(t.is_alive() for t in self._threads)


class Cleaner(_Worker):
    """Closes idle connections past max_lifetime or max_idle_time, every interval()
    seconds (read again at each round: the options can change)."""

    name = "cleaner"

    def __init__(self, core: CorePool, interval: Callable[[], float]) -> None:
        self._interval = WeakCallable(interval)
        super().__init__(core)

    def _step(self) -> float | None:
        pool = self._core_ref()
        interval = self._interval()
        if pool is None or interval is None:
            return None
        pool._collect_expired()
        return interval()


class LeakWatcher(_Worker):
    """Logs, once per checkout, a connection held longer than leak_timeout, with the
    stack of whoever took it (HikariCP's leakDetectionThreshold)."""

    name = "leak-watcher"

    def __init__(self, core: CorePool, limit: Callable[[], float | None],
                 report: Callable[[float], None]) -> None:
        self._limit = WeakCallable(limit)  # the leak_timeout option, read at each round
        self._report = WeakCallable(report)
        super().__init__(core)

    def _step(self) -> float | None:
        limit_of, report = self._limit(), self._report()
        if self._core_ref() is None or limit_of is None or report is None:
            return None
        limit = limit_of()
        if limit is None:
            return None
        report(limit)
        return min(max(limit / 4, 0.01), 5.0)
