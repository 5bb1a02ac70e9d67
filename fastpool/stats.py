"""Pool statistics: Go's DBStats in snake_case, plus fastpool's own counters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Stats:
    name: str  # the pool's name option (no password)
    max_open: int  # the limit; 0 = unlimited
    # In every snapshot open == in_use + idle + opening (Go's InUse + Idle, with its
    # connects in flight counted apart instead of inside in_use).
    open: int  # open connections, in use or idle, and connects in flight
    in_use: int  # held by callers
    idle: int
    wait_count: int  # callers that had to wait
    wait_duration: float  # seconds, summed over those waits
    max_idle_closed: int  # closed because max_idle was reached
    max_idle_time_closed: int
    max_lifetime_closed: int
    leaks_reclaimed: int  # dropped Rows/Tx/Conn whose connection was taken back
    bad_conns_discarded: int  # dead or broken connections closed instead of reused
    timeouts: int  # checkouts that ended in PoolTimeout
    waiting: int  # callers waiting right now
    deadlines_exceeded: int  # DeadlineExceeded raised (fastpool.deadline, statement_timeout)
    statements_cancelled: int  # statements cancelled for a deadline (KILL QUERY, interrupt, socket)
    waits_refused: int  # checkouts refused at once with TooManyWaiting (max_waiting)
    connects: int  # physical connections opened (configure hook included)
    connect_errors: int  # connects that failed, or whose configure hook raised
    connect_time: float  # seconds spent connecting, summed over every attempt
    checkins: int  # connections given back by their holders
    use_time: float  # seconds connections were held, summed over those checkins
    # The waits counted in wait_count, since the start or the last stats(reset=True):
    wait_p50: float  # seconds; read off log-spaced bins, within 25% and never above wait_max
    wait_p99: float
    wait_max: float
    opening: int = 0  # connects in flight (the opener's or a caller's), counted in open
    # The connections held longest right now, at most 3: (seconds held, who), who being
    # "a Conn opened at app.py:42" (a Tx, a streaming Rows) or "a statement". A forgotten
    # getconn() or stream shows here, and in the message of a PoolTimeout.
    holders: tuple[tuple[float, str], ...] = ()
    discarded: int = 0  # closed at their holder's request (Conn.discard()), not counted as bad

    @classmethod
    def from_counts(cls, name: str, c: tuple[Any, ...], waits: tuple[float, float, float],
                    holders: Any = ()) -> Stats:
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
