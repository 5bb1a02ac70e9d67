"""OpenTelemetry metrics for a pool, after the database-client semantic conventions.

    from fastpool.exporters.opentelemetry import instrument
    handle = instrument(db)                 # the global MeterProvider, or meter_provider=...
    ...
    handle.uninstrument()

Every instrument carries ``db.client.connection.pool.name`` (the pool's ``name`` option):

=========================================  ===============  ====================================
``db.client.connection.count``             UpDownCounter    by ``db.client.connection.state``:
                                                            ``idle`` / ``used``
``db.client.connection.max``               UpDownCounter    ``max_open`` (0 = unlimited)
``db.client.connection.idle.max``          UpDownCounter    ``max_idle``
``db.client.connection.idle.min``          UpDownCounter    ``min_idle``
``db.client.connection.pending_requests``  UpDownCounter    callers waiting for a connection
``db.client.connection.timeouts``          Counter          ``PoolTimeout`` (``TooManyWaiting``
                                                            included)
``db.client.connection.create_time``       Histogram (s)    each connect (``configure`` included)
``db.client.connection.wait_time``         Histogram (s)    each checkout's wait (0 when idle);
                                                            only with ``per_checkout=True``
``db.client.connection.use_time``          Histogram (s)    how long each checkout was held;
                                                            only with ``per_checkout=True``
``fastpool.connection.wait_time.sum``      Counter (s)      waits for a full pool, summed
``fastpool.connection.waits``              Counter          those waits
``fastpool.connection.use_time.sum``       Counter (s)      time connections were held, summed
``fastpool.connection.checkins``           Counter          connections given back
=========================================  ===============  ====================================

Everything but the histograms is read from ``db.stats()`` at collection, so it costs the
pool nothing between collections. A histogram needs one ``Histogram.record()`` per value,
and the SDK's takes about 10 µs, twenty times a whole checkout and give-back: so
``create_time`` is recorded per connect (a connect takes milliseconds), while the
per-checkout histograms are opt-in, and the sums and counts above give mean wait and use
times at no cost.
"""

from __future__ import annotations

import weakref
from typing import Any, Iterable

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, Observation
except ImportError as exc:  # pragma: no cover - the hint is what matters
    raise ModuleNotFoundError(
        f"fastpool.exporters: {exc.name} is not installed: pip install 'fastpool[otel]'",
        name=exc.name) from exc

from .. import __version__
from ..hooks import PoolEvent

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"


class Instrumented:
    """What :func:`instrument` returns: ``uninstrument()`` stops the histograms' listeners
    (the observable instruments then report nothing for a pool that is gone)."""

    def __init__(self, db: Any, meter: Any, per_checkout: bool) -> None:
        self._db_ref = weakref.ref(db)
        self._listening: list[tuple[str, Any]] = []

        def gauge(read: Any) -> Any:
            def callback(options: CallbackOptions) -> Iterable[Observation]:
                db = self._db_ref()
                if db is None or db.closed:
                    return []
                observations: list[Observation] = read(db, {POOL_NAME: db.name})
                return observations
            return callback

        def count(db: Any, a: dict[str, str]) -> list[Observation]:
            s = db.stats()
            # The conventions know two states; a connect in flight is "used", as Go's
            # DBStats counts it, so that idle + used is the open count in every reading.
            return [Observation(s.idle, {**a, STATE: "idle"}),
                    Observation(s.in_use + s.opening, {**a, STATE: "used"})]

        def limits(index: int) -> Any:
            def read(db: Any, a: dict[str, str]) -> list[Observation]:
                mo, mi, mn = db._limits()
                value = (mo, mi if mi >= 0 else mo, mn)[index]
                return [Observation(value, a)]
            return read

        up_down = meter.create_observable_up_down_counter
        up_down("db.client.connection.count", [gauge(count)], unit="{connection}",
                description="The number of connections that are currently in the state"
                            " described by the state attribute.")
        up_down("db.client.connection.max", [gauge(limits(0))], unit="{connection}",
                description="The maximum number of open connections allowed.")
        up_down("db.client.connection.idle.max", [gauge(limits(1))], unit="{connection}",
                description="The maximum number of idle open connections allowed.")
        up_down("db.client.connection.idle.min", [gauge(limits(2))], unit="{connection}",
                description="The minimum number of idle open connections allowed.")
        up_down("db.client.connection.pending_requests",
                [gauge(lambda db, a: [Observation(db.stats().waiting, a)])], unit="{request}",
                description="The number of current pending requests for an open connection.")
        counter = meter.create_observable_counter
        counter("db.client.connection.timeouts",
                [gauge(lambda db, a: [Observation(_timeouts(db.stats()), a)])], unit="{timeout}",
                description="The number of connection timeouts that have occurred trying to"
                            " obtain a connection from the pool.")
        for name, field, unit, description in _SUMS:
            counter(name, [gauge(_stat(field))], unit=unit, description=description)
        # A host list's hosts (none for one host): fastpool's own names, as the
        # conventions have none for them.
        up_down("fastpool.host.connection.count", [gauge(_host_counts)], unit="{connection}",
                description="Connections open per host of a host list, by state.")
        up_down("fastpool.host.up", [gauge(_host_up)], unit="1",
                description="1 while a host of a host list answers its probes, else 0.")
        meter.create_observable_gauge("fastpool.replica.lag", [gauge(_replica_lag)], unit="s",
                                      description="A replica's replication lag as last probed.")

        def histogram(name: str, description: str, event: str) -> None:
            h = meter.create_histogram(name, unit="s", description=description)
            record = h.record

            def listener(ev: PoolEvent) -> None:
                if ev.seconds is not None:
                    record(ev.seconds, {POOL_NAME: ev.pool})

            db.on(event, listener)
            self._listening.append((event, listener))

        histogram("db.client.connection.create_time", "The time it took to create a new"
                  " connection.", "connect")
        if per_checkout:
            histogram("db.client.connection.wait_time", "The time it took to obtain an open"
                      " connection from the pool.", "checkout")
            histogram("db.client.connection.use_time", "The time between borrowing a"
                      " connection and returning it to the pool.", "checkin")

    def uninstrument(self) -> None:
        """Stop reporting: the pool's listeners are removed and the instruments stop observing it."""
        db = self._db_ref()
        if db is not None:
            for event, listener in self._listening:
                db.off(event, listener)
        self._listening.clear()
        self._db_ref = lambda: None  # type: ignore[assignment]


# Sums and counts from stats(): (instrument, Stats field, unit, description).
_SUMS = (
    ("fastpool.connection.wait_time.sum", "wait_duration", "s",
     "Seconds callers waited for a connection of a full pool, summed."),
    ("fastpool.connection.waits", "wait_count", "{wait}",
     "Checkouts that waited for a connection of a full pool."),
    ("fastpool.connection.use_time.sum", "use_time", "s",
     "Seconds connections were held by callers, summed."),
    ("fastpool.connection.checkins", "checkins", "{connection}",
     "Connections given back to the pool by their holders."),
)


def _stat(field: str) -> Any:
    def read(db: Any, a: dict[str, str]) -> list[Observation]:
        return [Observation(getattr(db.stats(), field), a)]
    return read


def _host_counts(db: Any, a: dict[str, str]) -> list[Observation]:
    out = []
    for h in db.stats().hosts:
        attrs = {**a, "server.address": h.address, "fastpool.host.role": h.role}
        out.append(Observation(h.idle, {**attrs, STATE: "idle"}))
        out.append(Observation(h.in_use, {**attrs, STATE: "used"}))
    return out


def _host_up(db: Any, a: dict[str, str]) -> list[Observation]:
    return [Observation(0 if h.state == "down" else 1,
                        {**a, "server.address": h.address, "fastpool.host.role": h.role})
            for h in db.stats().hosts]


def _replica_lag(db: Any, a: dict[str, str]) -> list[Observation]:
    return [Observation(h.lag, {**a, "server.address": h.address})
            for h in db.stats().hosts if h.lag is not None]


def _timeouts(stats: Any) -> int:
    return int(stats.timeouts + stats.waits_refused)


def instrument(db: Any, *, meter_provider: Any = None, per_checkout: bool = False) -> Instrumented:
    """Report ``db``'s metrics through OpenTelemetry (the global MeterProvider unless
    ``meter_provider`` is given). ``per_checkout=True`` adds the ``wait_time`` and
    ``use_time`` histograms, at one ``Histogram.record()`` per checkout and per give-back."""
    meter = metrics.get_meter("fastpool", __version__, meter_provider=meter_provider)
    return Instrumented(db, meter, per_checkout)
