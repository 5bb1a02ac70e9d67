"""Deadlines and cancellation: Go's context, for Python.

``with fastpool.deadline(2.5):`` bounds everything the pool does inside the block: waiting
for a connection (and so opening one), each statement and the reading of its rows, commit
and rollback. The pool option ``statement_timeout`` is a ceiling for each statement, with
or without a block. A statement still running at its deadline is cancelled:

* mysqlclient: ``KILL QUERY <id>`` over a side connection (the statement ends with error
  1317 and the connection stays usable, as Connector/J's query timeout does); if the
  statement has not ended KILL_GRACE seconds later (the server does not answer: a hung
  network), its socket is shut down, the caller gets its error at once and the connection
  is discarded (go-sql-driver's cancel), and ``KILL <id>`` follows over the side
  connection: a shut socket alone does not stop the statement on a server that is merely
  slow to answer;
* sqlite3: ``Connection.interrupt()``, repeated every REINTERRUPT seconds until the
  statement is back: an interrupt that lands before the statement has started to run
  (between its registration and SQLite's first step) does nothing;
* other drivers: not cancelled; only the wait for a connection and its opening are bounded.

The core keeps the statements under a deadline in a list (one lock round to enter and one
to leave); one watcher thread per pool, started the first time a deadline is used, sleeps
until the earliest of them and claims what has run past it. A caller whose statement was
claimed waits until the cancel is settled before its connection can be used again, so a
KILL still on its way can never hit the next holder's statement.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
import weakref
from contextvars import Token
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ._core import CANCEL_STATES, DEADLINE, CorePool, _use_deadlines
from .dialects import ERR_OK, Dialect
from .errors import ConfigError
from .workers import OwnThread, WeakCallable

if TYPE_CHECKING:
    from ._core import ConnRecord

__all__ = ["deadline", "remaining", "WSGIDeadline", "DjangoDeadlineMiddleware"]

log = logging.getLogger("fastpool")

# Seconds a KILL QUERY has to end its statement before the socket is shut down instead.
KILL_GRACE = 0.05
# The longest a caller waits for a claimed cancel to be settled before it gives up on the
# connection (closes it): the watcher settles every claim within KILL_GRACE plus a poll.
SETTLE_WAIT = 1.0
# How often an interrupt (sqlite3) is repeated while its statement has not come back.
REINTERRUPT = 0.02
# Timeouts of the side connection that sends KILL QUERY.
SIDE_TIMEOUT = 2
# While statements come and go under deadlines the watcher looks every WATCH_HORIZON
# seconds even with nothing to watch (a few hundred instructions, four times a second), so that a new statement whose deadline is further
# off than that does not have to wake it (a wake-up per statement would cost a thread
# switch each). After IDLE_AFTER seconds with nothing to watch it sleeps until woken.
WATCH_HORIZON = 0.25
IDLE_AFTER = 1.0
# Even idle, the watcher looks this often whether its pool still exists (a pool dropped
# without close() must not leave a thread behind for good).
IDLE_CHECK = 5.0

_CLAIMED = CANCEL_STATES["claimed"]
_KILLED = CANCEL_STATES["killed"]
_SHUT = CANCEL_STATES["shut"]
_IGNORED = CANCEL_STATES["ignored"]


class deadline:  # noqa: N801 - a context manager named like a function, as contextlib's are
    """``with fastpool.deadline(seconds):`` bounds the pool's work in the block.

    Nested blocks can only shorten the deadline. The deadline lives in a ContextVar, so
    it follows the thread's own context, ``contextvars.copy_context()`` and asyncio
    tasks. ``seconds`` may be 0 (already expired) but not negative, NaN or infinite.

    Example:
        >>> with fastpool.deadline(2.5):
        ...     row = db.query_row("SELECT ...")   # wait, connect and statement bounded

    Attributes:
        seconds: the length of the block, as given.
        at: when it ends, on ``time.monotonic()``'s clock (``None`` until entered; the
            shorter of this block's and an enclosing one's end).

    Raises:
        ConfigError: ``seconds`` is not a number from 0 to 1e9.
    """

    __slots__ = ("seconds", "_tokens", "at")

    def __init__(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise ConfigError(f"deadline seconds must be a number, got {type(seconds).__name__}")
        try:
            s = float(seconds)
        except OverflowError:
            raise ConfigError("deadline seconds must be at most 1e9") from None
        if math.isnan(s) or s < 0 or s > 1e9:
            raise ConfigError(f"deadline seconds must be between 0 and 1e9, got {s!r}")
        self.seconds = s
        # One token per entry not yet exited: the same object may be entered again while
        # in use (nested, or shared between threads or tasks), and each exit must undo its
        # own entry, in its own context. A single token overwritten by the second entry
        # left the first context's deadline set for good.
        self._tokens: list[Token[Any]] = []
        self.at: float | None = None

    def __enter__(self) -> deadline:
        _use_deadlines()
        at = time.monotonic() + self.seconds
        outer = DEADLINE.get()
        if outer is not None and outer < at:
            at = outer  # an inner block can only shorten it
        self.at = at
        self._tokens.append(DEADLINE.set(at))
        return self

    def __exit__(self, *exc: object) -> None:
        # The newest entry made in this context: tokens of other contexts (threads, tasks)
        # refuse the reset with ValueError and are left for their own exits.
        for token in reversed(list(self._tokens)):
            try:
                DEADLINE.reset(token)
            except ValueError:
                continue
            except RuntimeError:  # already used: another exit got there first
                pass
            try:
                self._tokens.remove(token)
            except ValueError:
                pass
            return

    def remaining(self) -> float:
        """Seconds left in this block (negative once past)."""
        if self.at is None:
            raise RuntimeError("the deadline block has not been entered")
        return self.at - time.monotonic()


def remaining() -> float | None:
    """Seconds left before the current deadline, or None outside any deadline block."""
    at = DEADLINE.get()
    return None if at is None else at - time.monotonic()


# ---- the watcher --------------------------------------------------------------------
class Watcher(OwnThread):
    """Cancels a pool's statements that run past their deadline. One per pool.

    Made with what it needs: the core (claims and settles the statements under a
    deadline), the façade's dialect of a connection (how to cancel), and its side
    connect (for KILL QUERY); all held weakly."""

    def __init__(self, core: CorePool, dialect_of: Callable[[Any], Dialect],
                 side_connection: Callable[[float], Any]) -> None:
        self._pool_ref: weakref.ref[CorePool] = weakref.ref(core)
        self._dialect_of = WeakCallable(dialect_of)
        self._side_connection = WeakCallable(side_connection)
        self._cond = threading.Condition()
        # _cond protects the following fields.
        self._kicked = False
        self._stopped = False
        self._pending: dict[ConnRecord, float] = {}  # KILL sent, shut the socket at time
        self._interrupting: dict[ConnRecord, float] = {}  # interrupted, repeat at time
        self._killer: Killer | None = None
        self._start_thread("fastpool-deadlines")

    def wake(self) -> None:
        with self._cond:
            self._kicked = True
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            killer = self._killer
        if killer is not None:
            killer.stop()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the watcher and then its killer (which may still be sending queued
        KILLs) to end."""
        deadline = None if timeout is None else time.monotonic() + timeout
        super().join(timeout)
        with self._cond:
            killer = self._killer
        if killer is not None:
            killer.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def await_cancel(self, rec: ConnRecord) -> None:
        """Called by the core, on the statement's thread, when the watcher has claimed its
        statement: wait until the cancel is settled (bounded)."""
        with self._cond:
            self._cond.wait_for(lambda: rec.cancel_state != _CLAIMED or rec in self._interrupting
                                or self._stopped, SETTLE_WAIT)
            if self._interrupting.pop(rec, None) is not None:
                # Interrupted and back: whether the interrupt ended it or it ended by itself,
                # the connection is in sync. Settled here, under _cond, so no repeat of the
                # interrupt can reach the connection once its caller moves on.
                pool = self._pool_ref()
                if pool is not None:
                    pool._settle_cancel(rec, _KILLED)

    def dialect(self, raw: Any) -> Dialect:
        """The dialect of raw (None: the pool's), or the generic one once the pool is gone."""
        dialect_of = self._dialect_of()
        return Dialect() if dialect_of is None else dialect_of(raw)

    def _settle(self, pool: CorePool, rec: ConnRecord, state: int) -> None:
        with self._cond:
            self._pending.pop(rec, None)
            pool._settle_cancel(rec, state)
            self._cond.notify_all()

    def _run(self) -> None:
        last_busy = time.monotonic()
        try:
            pool = self._pool_ref()
            if pool is not None and self.dialect(None).cancel_method == "kill":
                self._killer_for(pool)  # its side connection is ready before the first cancel
            del pool
            while True:
                with self._cond:
                    if self._stopped:
                        return
                pool = self._pool_ref()
                if pool is None:
                    return
                now = time.monotonic()
                horizon = now + WATCH_HORIZON if now - last_busy < IDLE_AFTER else math.inf
                claimed, next_at = pool._claim_expired(now, horizon)
                if not math.isinf(next_at) or claimed:
                    last_busy = now
                next_at = min(next_at, horizon)
                for rec in claimed:
                    self._cancel(pool, rec)
                next_at = min([next_at, *self._shutdowns_due(pool, now), *self._interrupts_due(now)])
                del pool
                with self._cond:
                    if not self._kicked and not self._stopped:
                        wait = IDLE_CHECK if math.isinf(next_at) else max(0.0, next_at - time.monotonic())
                        self._cond.wait(min(wait, IDLE_CHECK))
                    self._kicked = False
        except BaseException:  # a worker must never die silently
            log.exception("fastpool deadline watcher crashed")
        finally:
            with self._cond:
                killer = self._killer
            if killer is not None:
                killer.stop()  # it ends with the watcher, also when the pool was dropped

    def _cancel(self, pool: CorePool, rec: ConnRecord) -> None:
        dialect = self.dialect(rec.raw)
        how = dialect.cancel_method
        try:
            if how == "interrupt":
                with self._cond:
                    # Only while claimed: its caller settles it (await_cancel) under _cond
                    # once the statement is back, before the connection can be reused.
                    if rec.cancel_state == _CLAIMED:
                        dialect.interrupt(rec.raw)
                        self._interrupting[rec] = time.monotonic() + REINTERRUPT
                        self._cond.notify_all()
                return
            if how == "kill":
                with self._cond:
                    self._pending[rec] = time.monotonic() + KILL_GRACE
                self._killer_for(pool).send(rec, dialect.kill_statement(rec.raw))
                return
        except Exception as exc:
            log.debug("fastpool: cancelling a statement failed: %s: %s", type(exc).__name__, exc)
            if how == "kill":
                return  # the socket is shut at the grace time instead
        # No way to cancel (a generic driver): the statement runs on; release the claim.
        self._settle(pool, rec, _IGNORED)

    def _interrupts_due(self, now: float) -> Iterable[float]:
        """Repeat the interrupts whose statements have not come back (the first may have
        landed before the statement started); return when to look again."""
        later = []
        with self._cond:
            for rec, at in list(self._interrupting.items()):
                if at <= now:
                    try:
                        self.dialect(rec.raw).interrupt(rec.raw)
                    except Exception as exc:
                        log.debug("fastpool: interrupting a statement failed: %s", type(exc).__name__)
                    at = self._interrupting[rec] = now + REINTERRUPT
                later.append(at)
        return later

    def _shutdowns_due(self, pool: CorePool, now: float) -> Iterable[float]:
        """Shut the sockets of statements a KILL did not end in time; return the times
        of those still pending."""
        with self._cond:
            pending = list(self._pending.items())
        later = []
        for rec, at in pending:
            # Under _cond (re-entrant) the killer cannot settle the cancel between the check
            # and the shut: a KILL QUERY answered at this very moment leaves the connection
            # in sync and it may go back to the pool, where a shut socket would fail its
            # next holder.
            with self._cond:
                if rec.cancel_state != _CLAIMED:
                    self._pending.pop(rec, None)
                    continue
                if at > now:
                    later.append(at)
                    continue
                # The caller is free once settled and its connection will be discarded, but
                # the server may still be running the statement (it was slow to answer the
                # KILL QUERY, not unreachable): end the whole session, which nobody uses
                # any more (its id read while the caller still holds the connection).
                dialect = self.dialect(rec.raw)
                kill_session = dialect.kill_session(rec.raw)
                dialect.abort(rec.raw, rec.fd)
                self._settle(pool, rec, _SHUT)
            self._killer_for(pool).send(None, kill_session)
        return later

    def _killer_for(self, pool: CorePool) -> Killer:
        with self._cond:
            if self._killer is None:
                self._killer = Killer(self, self._side_connection)
            return self._killer

    def killed(self, rec: ConnRecord) -> None:
        """Killer: the server acknowledged the KILL QUERY for rec's statement."""
        pool = self._pool_ref()
        if pool is not None:
            self._settle(pool, rec, _KILLED)  # wakes the statement's caller


class Killer(OwnThread):
    """Sends KILL QUERY over a side connection, on a thread of its own, so a server that
    does not answer holds up neither the watcher nor any caller."""

    def __init__(self, watcher: Watcher, side_connection: WeakCallable[Callable[[float], Any]]) -> None:
        self._watcher = watcher
        self._side_connection = side_connection
        # (rec, KILL QUERY): sent while rec's cancel is still claimed; (None, KILL <id>):
        # always sent; None: stop. Instead of SQL, a dialect's kill_statement() may give a
        # callable that cancels by itself (PostgreSQL's cancel request).
        # A queue.Queue (built on threading.Condition), not the C SimpleQueue: under
        # gevent or eventlet its get() must yield to the hub.
        self._queue: queue.Queue[tuple[ConnRecord | None, Any] | None] = queue.Queue()
        self._side: Any = None
        self._start_thread("fastpool-killer")

    def send(self, rec: ConnRecord | None, sql: str | Callable[[], None]) -> None:
        self._queue.put((rec, sql))

    def stop(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        # Connect now, while nothing is waiting: the first cancel then costs one round trip
        # instead of a connect as well, which on a busy machine or a distant server can
        # outlast KILL_GRACE and cost the statement's connection.
        try:
            self._connect_side()
        except Exception as exc:
            log.debug("fastpool: the side connection for KILL failed: %s: %s", type(exc).__name__, exc)
        while True:
            item = self._queue.get()
            if item is None:
                break
            rec, sql = item
            if rec is not None and rec.cancel_state != _CLAIMED:
                continue  # settled already (the socket was shut at the grace time)
            try:
                self._execute(sql)
            except Exception as exc:
                log.debug("fastpool: %s failed: %s: %s", sql, type(exc).__name__, exc)
                if not self._side_survives(exc):
                    self._close_side()
                continue  # the watcher shuts the socket at the grace time
            if rec is not None:
                self._watcher.killed(rec)
        self._close_side()

    def _connect_side(self) -> Any:
        if self._side is None:
            side_connection = self._side_connection()
            if side_connection is None:
                raise RuntimeError("pool is gone")
            self._side = side_connection(SIDE_TIMEOUT)
        return self._side

    def _execute(self, sql: str | Callable[[], None]) -> None:
        if callable(sql):
            sql()  # the dialect's own cancel (PostgreSQL's cancel request): no side connection
            return
        while True:
            fresh = self._side is None
            cur = self._connect_side().cursor()
            try:
                cur.execute(sql)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    cur.close()
                if fresh or self._side_survives(exc):
                    raise
                # The side connection went stale while idle (the server's wait_timeout, a
                # restart): once more on a new one. Sending a KILL twice is harmless.
                self._close_side()
                continue
            cur.close()
            return

    def _side_survives(self, exc: Exception) -> bool:
        """Whether the side connection is still good after exc: the server's refusal (a
        session that has ended already: "Unknown thread id") leaves it usable, so the next
        KILL does not have to connect first."""
        side = self._side
        return side is not None and self._watcher.dialect(side).classify(exc) == ERR_OK

    def _close_side(self) -> None:
        side, self._side = self._side, None
        if side is not None:
            with contextlib.suppress(Exception):
                side.close()


# ---- integrations ---------------------------------------------------------------------
def _header_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 1e9 else None


class WSGIDeadline:
    """WSGI middleware: each request runs inside ``fastpool.deadline(...)``.

    ``seconds`` is the default budget per request (None: no deadline unless the header
    gives one). ``header`` names a request header carrying the time left, in seconds or,
    with ``header_unit="ms"``, milliseconds (Envoy sends ``x-envoy-expected-rq-timeout-ms``);
    the shorter of the two wins. The request's body is produced inside the block, so a
    streaming response is bounded too.
    """

    def __init__(self, app: Callable[..., Any], seconds: float | None = None, *,
                 header: str | None = None, header_unit: str = "s") -> None:
        if header_unit not in ("s", "ms"):
            raise ConfigError(f"header_unit must be 's' or 'ms', got {header_unit!r}")
        if seconds is not None:
            deadline(seconds)  # validated now, not on the first request
        self.app = app
        self.seconds = seconds
        self.environ_key = None if header is None else "HTTP_" + header.upper().replace("-", "_")
        self.scale = 0.001 if header_unit == "ms" else 1.0

    def budget(self, environ: dict[str, Any]) -> float | None:
        """The seconds this request may take: the shorter of ``seconds`` and the header's time left
        (``None``: no bound)."""
        seconds = self.seconds
        if self.environ_key is not None:
            given = _header_seconds(environ.get(self.environ_key))
            if given is not None:
                given *= self.scale
                seconds = given if seconds is None else min(seconds, given)
        return seconds

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        seconds = self.budget(environ)
        if seconds is None:
            return self.app(environ, start_response)
        with deadline(seconds):
            # Materialised inside the block: a lazy body would otherwise run outside it.
            return list(self.app(environ, start_response))


class DjangoDeadlineMiddleware:
    """Django middleware: each request runs inside ``fastpool.deadline(...)``.

    Settings: ``FASTPOOL_REQUEST_DEADLINE`` (seconds, default None) and
    ``FASTPOOL_DEADLINE_HEADER`` (a request header with the time left in seconds, e.g. a
    gateway's; the shorter wins). Add ``"fastpool.deadlines.DjangoDeadlineMiddleware"`` to
    ``MIDDLEWARE``.
    """

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        from django.conf import settings

        self.get_response = get_response
        self.seconds = getattr(settings, "FASTPOOL_REQUEST_DEADLINE", None)
        if self.seconds is not None:
            deadline(self.seconds)
        self.header = getattr(settings, "FASTPOOL_DEADLINE_HEADER", None)

    def __call__(self, request: Any) -> Any:
        seconds = self.seconds
        if self.header:
            given = _header_seconds(request.headers.get(self.header))
            if given is not None:
                seconds = given if seconds is None else min(seconds, given)
        if seconds is None:
            return self.get_response(request)
        with deadline(seconds):
            return self.get_response(request)
