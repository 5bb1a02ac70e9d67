"""The pool façade: options, dialects, background workers and fork safety around the core.

The compiled ``CorePool`` holds the mechanism (free list, waiters, hand-off, counts);
this subclass holds the policy.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import threading
import time
import traceback
import warnings
import weakref
from typing import Any, Callable

from ._core import POOL_DEFAULT, CorePool
from .dialects import Dialect, get_dialect, guess_dialect
from .dialects.base import DISCARD, ROLL_BACK
from .errors import ConfigError, PoolClosed, PoolTimeout
from .green import new_parker, patched
from .hooks import CORE_EVENTS, HOLD_EVENTS, Listeners, PoolEvent, run_check, run_reset
from .options import check_option, check_options, show
from .stats import Stats
from .multihost.options import NAMES as HOST_LIST_OPTIONS
from .url import parse_url
from .deadlines import Watcher
from .workers import CLEAN_MAX_INTERVAL, CLEAN_MIN_INTERVAL, Cleaner, LeakWatcher, Opener

log = logging.getLogger("fastpool")

WORKER_JOIN_TIMEOUT = 10.0
# Unread rows of a dropped or closed streaming Rows that are read off to keep its connection;
# past this many the connection is closed instead.
DRAIN_BUDGET = 10_000

__all__ = ["Pool", "open"]


class Pool(CorePool):
    """A pool of DB-API 2 connections (Go's ``sql.DB``), safe to share between threads.

    Opening is lazy: no connection is made until the first use, unless ``min_idle`` asks
    for warm ones. Every option is also an attribute that can be changed on the live pool
    (``db.max_open = 20``); a refused value raises ``ConfigError`` and leaves the pool as
    it was.

    Args:
        connect: a zero-argument callable returning a new driver connection
            (``functools.partial(MySQLdb.connect, host=...)``, or a function that fetches
            a fresh credential each time).
        driver: the dialect: ``"mysql"``, ``"pymysql"``, ``"sqlite"``, ``"postgresql"``,
            ``"generic"``; when omitted it is guessed from the first connection's module.
        **options: the pool's options, below.

    Options:

    | option | meaning | default |
    |---|---|---|
    | ``max_open`` | most connections open at once, in use or idle; 0 = unlimited | 10 |
    | ``max_idle`` | most idle connections kept; clamped to ``max_open``; ``None`` follows ``max_open`` | ``None`` |
    | ``min_idle`` | idle connections the background opener keeps warm; clamped to ``max_idle`` | 0 |
    | ``max_lifetime`` | seconds before a connection is closed instead of reused (each one's share shortened by up to 10%); ``None`` = forever | 3600 |
    | ``max_idle_time`` | seconds an idle connection may sit before the cleaner closes it; ``None`` = forever | 300 |
    | ``timeout`` | seconds a caller waits for a connection before ``PoolTimeout``, however slow opening one is; 0 = never wait; ``None`` = forever | 30 |
    | ``leak_timeout`` | seconds a connection may be held before one logged warning with its taker's stack; ``None`` = off | ``None`` |
    | ``statement_timeout`` | seconds each statement may run before it is cancelled (``DeadlineExceeded``); ``None`` = no limit | ``None`` |
    | ``name`` | the pool's name in ``repr``, ``stats()`` and metrics | the URL less password and query, or the ``connect`` callable's name |
    | ``max_waiting`` | most callers queued for a full pool; one more gets ``TooManyWaiting`` at once; ``None`` = unlimited | ``None`` |
    | ``configure`` | ``fn(raw)`` once per new physical connection | ``None`` |
    | ``check`` | ``fn(raw)`` at checkout of a connection idle for ``check_after`` seconds; ``False`` or an exception discards it | ``None`` |
    | ``check_after`` | seconds of idleness before ``check`` runs; 0 = every reuse; ``None`` = never | 0 |
    | ``reset`` | ``fn(raw)`` when a connection is given back, after fastpool's own rollback | ``None`` |
    | ``behind_pooler`` | (PostgreSQL) behind PgBouncer in transaction mode: no server-side prepared statements, session-pinning statements refused | ``False`` |

    Sizes are ints from 0 to 2,147,483,647; durations are seconds (int or float), where
    ``None`` or ``float("inf")`` mean forever. Anything else is a ``ConfigError`` naming
    the option and the value.

    Raises:
        ConfigError: an unknown option, or a value the option does not take.

    Example:
        >>> db = fastpool.Pool(functools.partial(sqlite3.connect, "app.db",
        ...                                      check_same_thread=False), max_open=4)
        >>> db.query_row("SELECT 1")
        (1,)
    """

    __slots__ = (
        "_connect", "_options", "_dialect", "_display", "_workers_lock", "_opener", "_cleaner",
        "_held", "_leak_watcher", "_deadline_watcher", "_listeners", "_taken", "_default_name",
        "__weakref__",
    )

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        driver: str | Dialect | None = None,
        **options: Any,
    ) -> None:
        # fastpool's own callers (open(), fastpool.aio, the drop-ins, the tests) may also
        # pass _display (the printable URL), _name (the default name) and _clock (an
        # injectable clock); they are not options.
        _display: str | None = options.pop("_display", None)
        _name: str | None = options.pop("_name", None)
        _clock: Callable[[], float] | None = options.pop("_clock", None)
        if not callable(connect):
            raise ConfigError(f"connect must be a callable returning a connection, got {connect!r}")
        behind_pooler = options.pop("behind_pooler", None)
        opts = check_options(options)
        self._connect = connect
        self._options = opts
        self._dialect: Dialect | None = None if driver is None else get_dialect(driver)
        if behind_pooler is not None:
            _set_behind_pooler(self._dialect, behind_pooler)
        self._display = _display or getattr(connect, "__qualname__", type(connect).__name__)
        self._default_name = _name or self._display
        self._listeners = Listeners()
        self._taken: dict[Any, float] = {}
        self._workers_lock = threading.Lock()
        self._opener: Opener | None = None
        self._cleaner: Cleaner | None = None
        self._held: dict[Any, list[Any]] = {}
        self._leak_watcher: LeakWatcher | None = None
        self._deadline_watcher: Watcher | None = None
        super().__init__(
            self._connect_raw,
            close=self._close_raw,
            fileno=self._fileno,
            need_open=self._need_open,
            clock=_clock,
            max_open=opts["max_open"],
            max_idle=opts["max_idle"],
            min_idle=opts["min_idle"],
            max_lifetime=opts["max_lifetime"],
            max_idle_time=opts["max_idle_time"],
            timeout=opts["timeout"],
        )
        # The core's policy hooks: each asks the dialect.
        self._stream_cursor = self._open_stream
        self._classify = self._classify_error
        self._reset = self._reset_raw
        self._drain = self._drain_cursor
        self._begin = self._begin_raw
        self._drain_budget = DRAIN_BUDGET
        self._wake_watcher = self._wake_deadline_watcher
        self._await_cancel = self._await_cancel_settled
        # Waiters sleep cooperatively under gevent / eventlet. A wait, and a sampled
        # checkout, are where a thread blocking a running event loop is told so.
        self._new_parker = self._parker
        self._probe_hook = self._probe_loop
        self._set_statement_timeout(opts["statement_timeout"])
        self._set_max_waiting(opts["max_waiting"])
        self._set_check_after(opts["check_after"])
        self._install_hooks()
        if opts["leak_timeout"] is not None:
            self._track_holders(True)
        _live_pools.add(self)
        if opts["min_idle"] > 0:
            self._need_open()

    def _parker(self) -> Any:
        """The core's waiter interface (a caller must sleep): a cooperative parker under
        gevent / eventlet, else None (a C lock)."""
        if self._probe_hook is not None:
            self._probe_loop()
        return new_parker()

    def _probe_loop(self) -> None:
        """A caller on a running asyncio event loop stops every task while it waits or
        runs a statement here: said once per pool, with the fix. (fastpool.aio's own pool,
        and SQLAlchemy's async one, run this code on the loop by design: they clear it.)
        Once said, the core's probe is cleared: that is what "said once" reads."""
        if asyncio._get_running_loop() is not None:
            self._probe_hook = None
            warnings.warn(
                f"fastpool: pool {self.name!r} (a thread pool) is used from a running asyncio"
                " event loop: every wait and statement blocks the loop; open the pool with"
                " fastpool.aio.open() (or fastpool.aio.Pool) for tasks",
                RuntimeWarning, stacklevel=3)

    # ---- driver glue (called by the core outside its lock) -----------------------------
    def _connect_raw(self) -> Any:
        """Open one driver connection and make it ready for pooling: the dialect's
        preparation, then the operator's ``configure`` hook. Counted (connects,
        connect_errors, connect_time) and reported to ``connect`` listeners."""
        started = time.perf_counter()
        try:
            raw = self._connect()
        except BaseException:
            self._note_connect(time.perf_counter() - started, False)
            raise
        dialect = self._dialect
        if dialect is None:
            dialect = self._dialect = guess_dialect(raw)
            if dialect.checks_state_at_checkin:
                self._install_hooks()
        configure = self._options["configure"]
        hooked = False
        try:
            dialect.prepare(raw)
            if configure is not None:
                hooked = True
                self._configure_within(raw, configure, dialect)
        except BaseException as exc:
            self._note_connect(time.perf_counter() - started, False)
            if hooked and isinstance(exc, Exception):
                log.warning("fastpool %s: the configure hook raised %s: %s; the new connection"
                            " was closed", self.name, type(exc).__name__, exc)
            self._close_raw(raw)
            raise
        seconds = time.perf_counter() - started
        self._note_connect(seconds, True)
        self._listeners.emit("connect", self.name, raw, seconds)
        if self._cleaner is None and self._needs_cleaner():
            self._start_cleaner()
        return raw

    def _configure_within(self, raw: Any, configure: Callable[[Any], Any], dialect: Dialect) -> None:
        """The configure hook, bounded by the pool's ``timeout``: past it no caller is left
        waiting for this connection, so the connection is cut under the hook (a statement
        it is blocked in ends with the driver's error: SQLite is interrupted, a socket is
        shut) and the connect fails with PoolTimeout. A hook stuck in pure Python cannot
        be cut: its thread is busy until it returns, and the connection is closed then."""
        limit = self._options["timeout"]
        if limit is None:
            configure(raw)
            return
        lock = threading.Lock()
        state = {"done": False, "cut": False}
        # Read now: a driver may refuse to be asked from another thread while it is busy.
        fd = -1 if dialect.cancel_method == "interrupt" else dialect.fileno(raw)
        # A server runs on a statement whose client is gone: its session is ended too.
        kill = dialect.kill_session(raw) if dialect.cancel_method == "kill" else None

        def cut() -> None:
            with lock:
                if state["done"]:
                    return
                state["cut"] = True
            try:
                if dialect.cancel_method == "interrupt":
                    dialect.interrupt(raw)
                else:
                    dialect.abort(raw, fd)
                if kill is not None:
                    self._send_over_side_connection(kill)
            except Exception as exc:
                log.debug("fastpool: cutting a hung configure hook's connection failed: %s: %s",
                          type(exc).__name__, exc)

        def cut_late() -> bool:
            timer.cancel()
            with lock:
                state["done"] = True
                return state["cut"]

        timer = threading.Timer(limit, cut)
        timer.daemon = True
        timer.name = "fastpool-configure-bound"
        timer.start()
        try:
            configure(raw)
        except Exception as exc:
            if cut_late():
                raise _hook_timed_out(limit) from exc
            raise
        except BaseException:
            cut_late()
            raise
        if cut_late():
            raise _hook_timed_out(limit)

    def _send_over_side_connection(self, sql: str | Callable[[], None]) -> bool:
        """Queue sql (a KILL, pg_terminate_backend) for the deadline watcher's killer, which
        sends it over its side connection; False once the pool is closed."""
        watcher = self._started("_deadline_watcher", self._new_deadline_watcher)
        if watcher is None:
            return False
        watcher._killer_for(self).send(None, sql)
        return True

    def _dialect_of(self, raw: Any) -> Dialect:
        dialect = self._dialect
        if dialect is None:
            dialect = guess_dialect(raw) if raw is not None else Dialect()
        return dialect

    def _open_stream(self, raw: Any) -> tuple[Any, bool]:
        dialect = self._dialect_of(raw)
        return dialect.stream_cursor(raw), dialect.cursor_iterates_in_c

    def _classify_error(self, exc: BaseException) -> int:
        return self._dialect_of(None).classify(exc)

    def _reset_raw(self, raw: Any) -> None:
        self._dialect_of(raw).reset(raw)

    def _drain_cursor(self, cursor: Any, budget: int) -> bool:
        return self._dialect_of(None).drain(cursor, budget)

    def _begin_raw(self, raw: Any) -> None:
        self._dialect_of(raw).begin(raw)

    def _fileno(self, raw: Any) -> int:
        return self._dialect_of(raw).fileno(raw)

    def _close_raw(self, raw: Any) -> None:
        try:
            self._dialect_of(raw).close(raw)
        except Exception as exc:
            log.debug("fastpool: closing a connection failed: %s: %s", type(exc).__name__, exc)
        self._listeners.emit("close", self.name, raw)

    def _orphaned(self, raw: Any) -> None:
        _neutralise_inherited(self._dialect_of(raw), raw)

    # ---- background workers ---------------------------------------------------------
    def _started(self, attr: str, start: Callable[[], Any]) -> Any:
        """The background worker in `attr`, started on first use; None once closed."""
        worker = getattr(self, attr)
        if worker is None:
            with self._workers_lock:
                if self.closed:
                    return None
                if getattr(self, attr) is None:
                    setattr(self, attr, start())
                worker = getattr(self, attr)
        return worker

    def _need_open(self) -> None:
        opener = self._started("_opener", lambda: Opener(self, self._connect_raw))
        if opener is not None:
            opener.wake()
        else:
            self._drop_reserved_opens()  # closed: nobody will open them

    def _needs_cleaner(self) -> bool:
        o = self._options
        return o["max_lifetime"] is not None or o["max_idle_time"] is not None

    def _start_cleaner(self) -> None:
        with self._workers_lock:
            if self._cleaner is None and not self.closed:
                self._cleaner = Cleaner(self, self._clean_interval)

    def _clean_interval(self) -> float:
        o = self._options
        spans = [float(v) for v in (o["max_lifetime"], o["max_idle_time"]) if v is not None]
        if not spans:
            return CLEAN_MAX_INTERVAL
        return min(max(min(spans) / 2, CLEAN_MIN_INTERVAL), CLEAN_MAX_INTERVAL)

    # ---- deadlines (fastpool/deadlines.py) --------------------------------------------
    def _wake_deadline_watcher(self) -> None:
        # Called by the core when a statement's deadline is the earliest; the watcher
        # thread exists only once a deadline has been used.
        watcher = self._started("_deadline_watcher", self._new_deadline_watcher)
        if watcher is not None:
            watcher.wake()

    def _new_deadline_watcher(self) -> Watcher:
        return Watcher(self, self._dialect_of, self._side_connection)

    def _await_cancel_settled(self, rec: Any) -> None:
        watcher = self._deadline_watcher
        if watcher is not None:
            watcher.await_cancel(rec)

    def _side_connection(self, timeout: float) -> Any:
        """A connection outside the pool for KILL QUERY (its own short timeouts when the
        dialect can set them)."""
        dialect = self._dialect_of(None)
        raw = dialect.side_connect(timeout)
        if raw is None:
            raw = self._connect()
            dialect.prepare(raw)
        return raw

    # ---- options, live-settable -----------------------------------------------------
    def _set_option(self, name: str, value: Any) -> None:
        # Validate first, apply to the core, and only then record it: a refused value
        # leaves both what the pool reports and what the core enforces as they were.
        value = check_option(name, value)
        o = dict(self._options)
        o[name] = value
        if name in ("max_open", "max_idle", "min_idle"):
            self._set_limits(o["max_open"], o["max_idle"], o["min_idle"])
        elif name in ("max_lifetime", "max_idle_time"):
            self._set_lifetimes(o["max_lifetime"], o["max_idle_time"])
        elif name == "timeout":
            self._set_timeout(value)
        elif name == "statement_timeout":
            self._set_statement_timeout(value)
        elif name == "max_waiting":
            self._set_max_waiting(value)
        elif name == "check_after":
            self._set_check_after(value)
        self._options = o
        if name in ("check", "reset"):
            self._install_hooks()
        if name in ("max_lifetime", "max_idle_time"):
            if self._cleaner is not None:
                self._cleaner.wake()  # re-read the interval now
            elif self.stats().open and self._needs_cleaner():
                self._start_cleaner()
        elif name == "leak_timeout":
            self._track_holders(value is not None)

    # ---- hooks and events (fastpool/hooks.py) -----------------------------------------
    def _install_hooks(self) -> None:
        # Fill the core's slots only with what is in use: an empty slot costs one test.
        o = self._options
        self._check_hook = self._run_check if o["check"] is not None else None
        dialect = self._dialect
        checks_state = dialect is not None and dialect.checks_state_at_checkin
        self._reset_hook = self._run_reset if o["reset"] is not None or checks_state else None
        # A clean connection read in C, skipping _run_reset, when no operator reset runs.
        probe = dialect.clean_probe if dialect is not None and checks_state and o["reset"] is None else None
        self._clean_probe = probe
        self._clean_value = dialect.clean_value if dialect is not None and probe is not None else None
        self._event_hook = self._emit_core if self._listeners.any_of(CORE_EVENTS) else None
        watching = self._listeners.any_of(HOLD_EVENTS)
        if not watching:
            self._taken.clear()
        self._holder_hook = self._on_hold if watching or o["leak_timeout"] is not None else None

    def _run_check(self, rec: Any) -> bool:
        check = self._options["check"]
        return check is None or run_check(self, check, rec)

    def _run_reset(self, rec: Any) -> bool:
        dialect = self._dialect
        if dialect is not None and dialect.checks_state_at_checkin:
            # The dialect first (PostgreSQL: clean unless a transaction was left open or a
            # statement is still running), then the operator's reset on a clean connection.
            state = dialect.state_at_checkin(rec.raw)
            if state == DISCARD:
                return False
            if state == ROLL_BACK:
                try:
                    self._call_watched(rec, dialect.reset)
                except Exception as exc:
                    log.debug("fastpool %s: rolling back a connection given back failed: %s: %s;"
                              " discarded", self.name, type(exc).__name__, exc)
                    return False
        reset = self._options["reset"]
        return reset is None or run_reset(self, reset, rec)

    def _emit_core(self, event: str, rec: Any, seconds: float, reason: str | None) -> None:
        raw = None if rec is None else rec.raw
        self._listeners.emit(event, self.name, raw, seconds if event == "timeout" else None, reason)

    def on(self, event: str, fn: Callable[[PoolEvent], Any]) -> Callable[[PoolEvent], Any]:
        """Call ``fn(PoolEvent)`` on each ``event``: ``connect``, ``checkout``, ``checkin``,
        ``close``, ``timeout``, ``leak`` or ``discard``. A listener that raises is logged
        and never breaks the pool. Returns fn (so it also works as a decorator)."""
        self._listeners.add(event, fn)
        self._install_hooks()
        return fn

    def off(self, event: str, fn: Callable[[PoolEvent], Any]) -> bool:
        """Stop calling fn on event; False if it was not listening."""
        removed = self._listeners.remove(event, fn)
        self._install_hooks()
        return removed

    # ---- leak_timeout ---------------------------------------------------------------
    def _track_holders(self, on: bool) -> None:
        self._install_hooks()
        if not on:
            self._held.clear()
            return
        with self._workers_lock:
            if self._leak_watcher is None or not self._leak_watcher.alive:
                self._leak_watcher = None if self.closed else LeakWatcher(
                    self, self._leak_limit, self._report_long_holds)
        if self._leak_watcher is not None:
            self._leak_watcher.wake()

    def _on_hold(self, rec: Any, taken: bool) -> None:
        # Called by the core at every checkout and checkin while leak_timeout is set or
        # checkout/checkin listeners exist.
        if self._options["leak_timeout"] is not None:
            if taken:
                self._held[rec] = [time.monotonic(), traceback.format_stack()[:-1], False]
            else:
                self._held.pop(rec, None)
        if taken:
            if self._listeners.get("checkin"):
                self._taken[rec] = time.perf_counter()
            self._listeners.emit("checkout", self.name, rec.raw, rec.waited)
        else:
            since = self._taken.pop(rec, None)
            held = None if since is None else time.perf_counter() - since
            self._listeners.emit("checkin", self.name, rec.raw, held)

    def _leak_limit(self) -> float | None:
        limit: float | None = self._options["leak_timeout"]
        return limit

    def _report_long_holds(self, limit: float) -> None:
        now = time.monotonic()
        for _rec, entry in list(self._held.items()):
            taken_at, stack, reported = entry
            if not reported and now - taken_at > limit:
                entry[2] = True
                log.warning(
                    "fastpool: a connection of %s has been held for %.1fs (leak_timeout=%ss);"
                    " it was taken at:\n%s",
                    self._display, now - taken_at, limit, "".join(stack).rstrip(),
                )

    max_open = property(lambda self: self._options["max_open"],
                        lambda self, v: self._set_option("max_open", v),
                        doc="Most connections open at once (0 = unlimited).")
    max_idle = property(lambda self: self._limits()[1] if self._limits()[1] >= 0 else None,
                        lambda self, v: self._set_option("max_idle", v),
                        doc="Most idle connections kept (clamped to max_open; None = max_open).")
    min_idle = property(lambda self: self._limits()[2],
                        lambda self, v: self._set_option("min_idle", v),
                        doc="Idle connections the background opener keeps warm.")
    max_lifetime = property(lambda self: self._options["max_lifetime"],
                            lambda self, v: self._set_option("max_lifetime", v),
                            doc="Seconds before a connection is closed instead of reused.")
    max_idle_time = property(lambda self: self._options["max_idle_time"],
                             lambda self, v: self._set_option("max_idle_time", v),
                             doc="Seconds an idle connection may sit before it is closed.")
    timeout = property(lambda self: self._options["timeout"],
                       lambda self, v: self._set_option("timeout", v),
                       doc="Seconds a caller waits for a connection (None = forever).")
    statement_timeout = property(lambda self: self._options["statement_timeout"],
                                 lambda self, v: self._set_option("statement_timeout", v),
                                 doc="Seconds a statement may run before it is cancelled (None = no limit).")
    leak_timeout = property(lambda self: self._options["leak_timeout"],
                            lambda self, v: self._set_option("leak_timeout", v),
                            doc="Seconds a connection may be held before a warning (None = off).")

    name = property(lambda self: self._options["name"] or self._default_name,
                    lambda self, v: self._set_option("name", v),
                    doc="The pool's name, in repr(), stats() and metrics (default: from the URL,"
                        " no password).")
    max_waiting = property(lambda self: self._options["max_waiting"],
                           lambda self, v: self._set_option("max_waiting", v),
                           doc="Most callers queued for a full pool; one more gets TooManyWaiting"
                               " (None = unlimited).")
    configure = property(lambda self: self._options["configure"],
                         lambda self, v: self._set_option("configure", v),
                         doc="fn(raw) once per new physical connection; raising discards it.")
    check = property(lambda self: self._options["check"],
                     lambda self, v: self._set_option("check", v),
                     doc="fn(raw) at checkout of a connection idle >= check_after; False or"
                         " raising discards it.")
    check_after = property(lambda self: self._options["check_after"],
                           lambda self, v: self._set_option("check_after", v),
                           doc="Seconds of idleness before check runs (None = never).")
    reset = property(lambda self: self._options["reset"],
                     lambda self, v: self._set_option("reset", v),
                     doc="fn(raw) at give-back after fastpool's own reset; False or raising"
                         " discards it.")

    @property
    def driver(self) -> str | None:
        """The dialect's name, or None until the first connection if it is to be guessed."""
        return None if self._dialect is None else self._dialect.name

    # ---- public API -----------------------------------------------------------------
    def stats(self, reset: bool = False) -> Stats:
        """A snapshot of the pool's counters (no lock held longer than a copy).

        The counters run from the pool's start, as Go's DBStats do; ``reset=True`` starts
        the wait-time distribution (``wait_p50``, ``wait_p99``, ``wait_max``) afresh after
        reading it."""
        return Stats.from_counts(self.name, self._counts(), self._wait_percentiles(reset),
                                 self._longest_holders(3))

    def ping(self, timeout: Any = POOL_DEFAULT) -> None:
        """Make sure a connection can be had and answers (opening one if needed), like
        Go's db.Ping. A connection that fails the ping is closed, and the error raised."""
        rec = self._take(timeout)
        try:
            self._dialect_of(rec.raw).ping(rec.raw)
        except BaseException:
            self._give(rec, True)
            raise
        self._give(rec)

    def close(self) -> None:
        """Close idle connections now and in-use ones as they come back; wake waiters
        with PoolClosed; stop the background workers. Calling it again is harmless.

        Waits (up to WORKER_JOIN_TIMEOUT seconds) for a connect the opener has in flight,
        so that no connection is still being opened once close() returns.
        """
        self._close_core()
        self._stop_workers()

    def _stop_workers(self) -> None:
        """Stop the background workers and wait for them (fastpool.aio calls this off its
        loop: a connect in flight may need the loop to end)."""
        with self._workers_lock:
            workers = [w for w in (self._opener, self._cleaner, self._leak_watcher,
                                   self._deadline_watcher) if w is not None]
        for w in workers:
            w.stop()
        for w in workers:
            w.join(WORKER_JOIN_TIMEOUT)

    def __enter__(self) -> Pool:
        if self.closed:
            raise PoolClosed("pool is closed")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        c = self._counts()
        state = "closed" if self.closed else "open"
        return (
            f"<fastpool.Pool {self.name!r} {state} max_open={c[0]} open={c[1]} "
            f"in_use={c[2]} idle={c[3]} waiting={c[4]}>"
        )

    def _after_fork_child(self) -> None:
        for raw in self._after_fork_in_child():
            self._orphaned(raw)
        # The parent's threads do not exist here; workers start again when needed.
        self._workers_lock = threading.Lock()
        self._opener = None
        self._cleaner = None
        self._leak_watcher = None
        self._deadline_watcher = None
        self._held.clear()
        self._taken.clear()
        self._listeners.after_fork()
        if self._options["leak_timeout"] is not None:
            self._track_holders(True)
        if not self.closed and self._options["min_idle"] > 0:
            self._need_open()


def _set_behind_pooler(dialect: Dialect | None, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"behind_pooler must be True or False, got {show(value)}")
    if dialect is None:
        if value:
            raise ConfigError("behind_pooler=True needs driver='postgresql' (or a postgresql:// URL)")
        return
    dialect.set_behind_pooler(value)


def _green_default(scheme: str) -> str | None:
    """Under gevent or eventlet a mysql:// URL without ?driver= takes PyMySQL when it is
    installed: mysqlclient's C calls block the hub for a whole statement, and then
    deadlines and statement_timeout cannot end it (the watcher is a greenlet too)."""
    if scheme != "mysql" or patched() is None:
        return None
    try:
        found = importlib.util.find_spec("pymysql") is not None
    except (ImportError, ValueError):  # a module object without a spec, or a broken one
        found = False
    return "pymysql" if found else None


def _warn_if_blocking_under_green(dialect: Dialect) -> None:
    green = patched()
    if green is not None and dialect.name == "mysql":
        warnings.warn(
            f"fastpool: this process is monkey-patched by {green}, and mysqlclient blocks the"
            " whole hub during each statement (deadlines and statement_timeout cannot end"
            " it): install PyMySQL (pip install 'fastpool[pymysql]'), which mysql:// then"
            " picks, or ask for it with ?driver=pymysql", RuntimeWarning, stacklevel=3)


def open(dsn: str, **options: Any) -> Pool:  # noqa: A001 - the API's name
    """Open a pool for a database URL; lazy, like Go's ``sql.Open``.

    Args:
        dsn: ``mysql://user:pw@host:3306/db?charset=utf8mb4`` (``?driver=pymysql`` for
            PyMySQL), ``postgresql://user:pw@host/db?sslmode=verify-full``,
            ``sqlite:///path.db`` or ``sqlite://:memory:``. Query parameters go to the
            driver's ``connect()`` and are checked against what it takes; pool options may
            be given there too.
        **options: the pool's options (see ``Pool``); one given here wins over the URL's.

    Returns:
        Pool: the pool; close it with ``close()`` or use it in a ``with`` block.

    Raises:
        ConfigError: an unparsable URL, an unknown scheme, driver, parameter or option,
            or an asyncio driver (use ``fastpool.aio.open``).

    Example:
        >>> with fastpool.open("sqlite://:memory:", max_open=4) as db:
        ...     db.query_row("SELECT 1")
        (1,)
    """
    url = parse_url(dsn)
    options = {**url.options, **options}  # an option given here wins over the URL's
    dialect_name = url.driver or _green_default(url.scheme) or url.scheme
    dialect = get_dialect(dialect_name)
    _warn_if_blocking_under_green(dialect)
    if dialect.is_async:
        raise ConfigError(f"driver={dialect.name} is an asyncio driver: open the pool with"
                          f" fastpool.aio.open()")
    if any(name in HOST_LIST_OPTIONS for name in options):  # a MultiHostPool
        from .multihost.pool import open_hosts  # a host list, or one host with a target

        return open_hosts(url, dialect_name, options)
    connect = dialect.connect_factory(url.connect_kwargs)
    return Pool(connect, driver=dialect, _display=url.masked, _name=url.name, **options)


# ---- fork safety --------------------------------------------------------------------
# Pools alive in this process; after fork() the child makes each forget what it inherited.
_live_pools: "weakref.WeakSet[Pool]" = weakref.WeakSet()
# Inherited driver connections are kept referenced in the child, never closed by it.
_inherited: list[Any] = []


def _neutralise_inherited(dialect: Dialect, raw: Any) -> None:
    try:
        dialect.neutralise_inherited(raw)
    except Exception as exc:
        log.debug("fastpool: neutralising an inherited connection failed: %s", exc)
    _inherited.append(raw)


def _after_fork_in_child() -> None:
    for pool in list(_live_pools):
        pool._after_fork_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _hook_timed_out(limit: float) -> PoolTimeout:
    return PoolTimeout(f"the configure hook did not return within timeout={limit}s"
                       f" (its connection was cut under it)")
