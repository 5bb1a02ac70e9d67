"""Pool statistics: Go's DBStats in snake_case, plus fastpool's own counters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of a pool's counters: ``db.stats()``.

    Go's ``DBStats`` fields in snake_case, plus fastpool's own. The counts are one
    consistent snapshot taken under the core's lock: in every one,
    ``open == in_use + idle + opening``. The counters run from the pool's start, as Go's
    do (so a Prometheus ``rate()`` works); ``stats(reset=True)`` restarts only the wait
    distribution (``wait_p50``, ``wait_p99``, ``wait_max``).

    Example:
        >>> s = db.stats()
        >>> s.in_use, s.idle, s.wait_count
        (0, 1, 0)

    Attributes:
        name: the pool's ``name`` option (the URL less password and query by default).
        max_open: the ``max_open`` limit; 0 means unlimited.
        open: connections open, in use or idle, plus connects in flight (``opening``).
        in_use: connections held by callers (a ``Conn``, ``Tx``, streaming ``Rows``, or a
            statement running on the pool).
        idle: connections in the free list, ready for the next caller.
        wait_count: checkouts that had to wait because every connection was in use (not
            those that waited only for a connect made for them).
        wait_duration: seconds those waits took, summed.
        max_idle_closed: connections closed because ``max_idle`` were idle already.
        max_idle_time_closed: connections closed after ``max_idle_time`` seconds idle.
        max_lifetime_closed: connections closed after ``max_lifetime`` seconds open.
        leaks_reclaimed: connections taken back from a dropped ``Rows``, ``Tx`` or
            ``Conn`` (or a drop-in's connection dropped unreturned); each also warned
            once with ``ConnectionLeakWarning``.
        bad_conns_discarded: dead or broken connections closed instead of reused (found
            dead at checkout, broken by an error, a ``check`` or ``reset`` hook that
            failed, unread rows past the drain budget).
        timeouts: checkouts that ended in ``PoolTimeout`` (``TooManyWaiting`` included).
        waiting: callers waiting for a connection right now.
        deadlines_exceeded: ``DeadlineExceeded`` raised, by a ``fastpool.deadline`` block
            or ``statement_timeout``.
        statements_cancelled: statements cancelled on the server for a deadline
            (``KILL QUERY``, PostgreSQL's cancel request, SQLite's interrupt) or ended by
            shutting their socket.
        waits_refused: checkouts refused at once with ``TooManyWaiting`` (``max_waiting``).
        connects: physical connections opened (the ``configure`` hook included).
        connect_errors: connects that failed, or whose ``configure`` hook raised.
        connect_time: seconds spent connecting, summed over every attempt.
        checkins: connections given back by their holders.
        use_time: seconds connections were held, summed over those checkins (read off
            the core's coarse clock: a few ms per reading, unbiased over many).
        wait_p50: the median of the waits counted in ``wait_count`` since the start or
            the last ``stats(reset=True)``, in seconds; read off 4 bins per power of two,
            so within 25%, and never above ``wait_max``.
        wait_p99: their 99th percentile, the same way.
        wait_max: the longest of them.
        opening: connects in flight (the opener's, or a caller's with ``timeout=0``),
            counted in ``open``.
        holders: the connections held longest right now, at most 3, as
            ``(seconds held, who)``, ``who`` being ``"a Conn opened at app.py:42"`` (a
            ``Tx``, a streaming ``Rows``) or ``"a statement"``; a ``PoolTimeout``'s message
            names the same, so a forgotten ``getconn()`` or stream is found from it.
        discarded: connections closed at their holder's request (``Conn.discard()``),
            not counted in ``bad_conns_discarded``.
        hosts: a host list's hosts, one ``HostStats`` each (empty for one host); the
            counts above are then those of all its pools (the primary's and each
            replica's) together, and ``wait_p50``/``wait_p99``/``wait_max`` the largest.
    """

    name: str
    max_open: int
    open: int
    in_use: int
    idle: int
    wait_count: int
    wait_duration: float
    max_idle_closed: int
    max_idle_time_closed: int
    max_lifetime_closed: int
    leaks_reclaimed: int
    bad_conns_discarded: int
    timeouts: int
    waiting: int
    deadlines_exceeded: int
    statements_cancelled: int
    waits_refused: int
    connects: int
    connect_errors: int
    connect_time: float
    checkins: int
    use_time: float
    wait_p50: float
    wait_p99: float
    wait_max: float
    opening: int = 0
    holders: tuple[tuple[float, str], ...] = ()
    discarded: int = 0
    hosts: tuple[HostStats, ...] = ()

    @classmethod
    def from_counts(cls, name: str, c: tuple[Any, ...], waits: tuple[float, float, float],
                    holders: Any = ()) -> Stats:
        """Build a snapshot from the core's raw counts (the order ``CorePool._counts()``
        gives them in). Used by ``Pool.stats()``; not needed by applications."""
        (max_open, open_, in_use, idle, waiting, wait_count, wait_duration, mic, mitc,
         mlc, timeouts, bad, leaks, opening, deadlines, cancelled, refused, connects,
         connect_errors, connect_time, checkins, use_time, discarded) = c
        return cls(
            name=name, max_open=max_open, open=open_, in_use=in_use, idle=idle,
            wait_count=wait_count, wait_duration=wait_duration, max_idle_closed=mic,
            max_idle_time_closed=mitc, max_lifetime_closed=mlc, leaks_reclaimed=leaks,
            bad_conns_discarded=bad, timeouts=timeouts, waiting=waiting,
            deadlines_exceeded=deadlines, statements_cancelled=cancelled,
            waits_refused=refused, connects=connects, connect_errors=connect_errors,
            connect_time=connect_time, checkins=checkins, use_time=use_time,
            wait_p50=waits[0], wait_p99=waits[1], wait_max=waits[2], opening=opening,
            holders=tuple(tuple(h) for h in holders), discarded=discarded,
        )


@dataclass(frozen=True, slots=True)
class HostStats:
    """One host of a host list, in ``db.stats().hosts``.

    Attributes:
        address: ``host:port`` as given.
        role: ``"primary"``, ``"replica"`` or ``"unknown"`` (not probed yet), as last read.
        state: ``"up"``, ``"down"``, ``"checking"`` (probed again after an error) or
            ``"unknown"``.
        open: connections open to the host, every pool of the host list together.
        in_use: of those, the ones not idle (held, or being opened).
        idle: of those, the ones idle in a free list.
        lag: a replica's replication lag in seconds as last probed (None: a primary, or
            unknown).
    """

    address: str
    role: str
    state: str
    open: int
    in_use: int
    idle: int
    lag: float | None


_LARGEST = frozenset(("wait_p50", "wait_p99", "wait_max"))


def combine(name: str, parts: list[Stats], hosts: tuple[HostStats, ...]) -> Stats:
    """The stats of several pools (a host list's) as one: counts summed, the wait
    percentiles the largest, the longest holders of all."""
    values: dict[str, Any] = {}
    for f in Stats.__dataclass_fields__:
        if f in ("name", "hosts"):
            continue
        got = [getattr(p, f) for p in parts]
        if f == "holders":
            values[f] = tuple(sorted((h for hs in got for h in hs), reverse=True)[:3])
        elif f in _LARGEST:
            values[f] = max(got)
        else:
            values[f] = sum(got)
    return Stats(name=name, hosts=hosts, **values)
