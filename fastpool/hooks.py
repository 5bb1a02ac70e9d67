"""Operators' hooks and events: ``configure``/``check``/``reset`` and ``db.on(event, fn)``.

The core calls three slots, each ``None`` until something needs it, so a pool with no hook
and no listener pays one pointer test per checkout and per give-back:

* ``_check_hook(rec) -> bool`` at checkout of a connection that sat idle for at least
  ``check_after`` seconds; False discards it and the caller gets another;
* ``_reset_hook(rec) -> bool`` when a holder gives a good connection back, after
  fastpool's own reset; False discards it;
* ``_event_hook(name, rec, seconds, reason)`` for ``discard``, ``timeout`` and ``leak``.

``checkout``/``checkin`` listeners ride on the core's holder slot (shared with
``leak_timeout``), and ``connect``/``close`` are emitted by the façade, which opens and
closes every physical connection. A listener that raises is logged and never breaks the
pool; a hook that raises discards the connection (logged too).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, NamedTuple

from .errors import ConfigError, DeadlineExceeded
from .options import show

log = logging.getLogger("fastpool")

# The last four are a host list's (fastpool/multihost): a one-host pool never emits them.
MULTIHOST_EVENTS = frozenset(("failover", "host_down", "host_up", "role_changed"))
EVENTS = ("connect", "checkout", "checkin", "close", "timeout", "leak", "discard",
          "failover", "host_down", "host_up", "role_changed")
# Events the core reports through its _event_hook slot.
CORE_EVENTS = frozenset(("discard", "timeout", "leak"))
HOLD_EVENTS = frozenset(("checkout", "checkin"))


class PoolEvent(NamedTuple):
    """What a listener of ``db.on(event, fn)`` is called with.

    ``seconds``: connect: how long the connect (and ``configure``) took; checkout: how long
    the caller waited (0 for an idle connection); checkin: how long it was held; timeout:
    how long the caller waited. ``reason``: discard: ``"dead"``, ``"broken"``, ``"check
    failed"`` or ``"reset failed"``; timeout: ``"timeout"``, ``"deadline"`` or
    ``"max_waiting"``; role_changed: ``"primary -> replica"`` (and back); failover: ``"from
    h1:5432"``; host_down: why (the error). ``connection`` is the driver's connection (None
    for a timeout and a host's events). ``host``: the host's address (``"h2:5432"``) of a
    host list's events: the new primary's for ``failover``.
    A named tuple: one is made per event, so it must be cheap to make.
    """

    event: str
    pool: str
    connection: Any
    seconds: float | None = None
    reason: str | None = None
    host: str | None = None


class Listeners:
    """The listeners of one pool. Each event's list is a tuple replaced whole under a lock,
    so emitting reads it without one (also on a free-threaded interpreter)."""

    __slots__ = ("_lock", "_by_event")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_event: dict[str, tuple[Callable[[PoolEvent], Any], ...]] = {}

    def add(self, event: str, fn: Any) -> None:
        check_event(event)
        if not callable(fn):
            raise ConfigError(f"a listener of {event!r} must be callable, got {show(fn)}")
        with self._lock:
            self._by_event[event] = self._by_event.get(event, ()) + (fn,)

    def remove(self, event: str, fn: Any) -> bool:
        check_event(event)
        with self._lock:
            fns = self._by_event.get(event, ())
            if fn not in fns:
                return False
            i = fns.index(fn)
            self._by_event[event] = fns[:i] + fns[i + 1:]
            return True

    def after_fork(self) -> None:
        # Another thread of the parent may have held the lock at fork(): it never ends here.
        self._lock = threading.Lock()

    def get(self, event: str) -> tuple[Callable[[PoolEvent], Any], ...]:
        return self._by_event.get(event, ())

    def any_of(self, events: frozenset[str]) -> bool:
        return any(self._by_event.get(e) for e in events)

    def emit(self, event: str, pool: str, connection: Any, seconds: float | None = None,
             reason: str | None = None, host: str | None = None) -> None:
        fns = self._by_event.get(event)
        if not fns:
            return
        ev = PoolEvent(event, pool, connection, seconds, reason, host)
        for fn in fns:
            try:
                fn(ev)
            except Exception:
                log.exception("fastpool %s: a listener of %r raised; the pool goes on", pool, event)


def check_event(event: Any) -> str:
    if event not in EVENTS:
        raise ConfigError(f"unknown event {show(event)} (events: {', '.join(EVENTS)})")
    return str(event)


def run_check(pool: Any, check: Callable[[Any], Any], rec: Any) -> bool:
    """The ``check`` hook at checkout: True keeps the connection. Its statements are bounded
    by the caller's deadline and ``statement_timeout``; a deadline that passes reaches the
    caller (DeadlineExceeded) rather than discarding one idle connection after another."""
    try:
        ok = pool._call_watched(rec, check)
    except DeadlineExceeded:
        raise
    except Exception as exc:
        log.warning("fastpool %s: the check hook raised %s: %s; the connection was discarded",
                    pool.name, type(exc).__name__, exc)
        return False
    if ok is False:
        log.debug("fastpool %s: the check hook said False; the connection was discarded", pool.name)
        return False
    return True


def run_reset(pool: Any, reset: Callable[[Any], Any], rec: Any) -> bool:
    """The ``reset`` hook at give-back: True pools the connection again. Any failure only
    discards the connection: the caller's work is done, and its result must reach it."""
    try:
        ok = pool._call_watched(rec, reset)
    except Exception as exc:
        log.warning("fastpool %s: the reset hook raised %s: %s; the connection was discarded",
                    pool.name, type(exc).__name__, exc)
        return False
    return ok is not False
