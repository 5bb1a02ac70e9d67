"""A ``prometheus_client`` collector for one or more pools.

    from prometheus_client import REGISTRY
    from fastpool.exporters.prometheus import PoolCollector
    REGISTRY.register(PoolCollector(db))          # or PoolCollector(db1, db2, ...)

It reads ``db.stats()`` at each scrape, so it costs the pools nothing between scrapes.
Every sample carries a ``pool`` label (the pool's ``name`` option). Gauges:
``fastpool_connections{state="idle"|"used"|"opening"}`` (adding up to the open count), ``fastpool_max_open``,
``fastpool_waiting``, and the wait-time distribution since the start
(``fastpool_wait_p50_seconds``, ``_p99_``, ``fastpool_wait_max_seconds``). Counters
(``_total``): waits, wait seconds, timeouts, waits refused (``max_waiting``), connects,
connect errors, connect seconds, checkins, use seconds, connections closed for
``max_idle``/``max_idle_time``/``max_lifetime``, bad connections discarded, leaks
reclaimed, deadlines exceeded and statements cancelled.
"""

from __future__ import annotations

import weakref
from typing import Any, Iterator

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - the hint is what matters
    raise ModuleNotFoundError(
        f"fastpool.exporters: {exc.name} is not installed: pip install 'fastpool[prometheus]'",
        name=exc.name) from exc

# (metric name without _total, Stats field, help)
COUNTERS = (
    ("fastpool_waits", "wait_count", "Checkouts that waited for a full pool."),
    ("fastpool_wait_seconds", "wait_duration", "Seconds waited for a full pool, summed."),
    ("fastpool_timeouts", "timeouts", "Checkouts that ended in PoolTimeout."),
    ("fastpool_waits_refused", "waits_refused", "Checkouts refused at once (max_waiting)."),
    ("fastpool_connects", "connects", "Physical connections opened."),
    ("fastpool_connect_errors", "connect_errors", "Connects that failed (configure included)."),
    ("fastpool_connect_seconds", "connect_time", "Seconds spent connecting, summed."),
    ("fastpool_checkins", "checkins", "Connections given back by their holders."),
    ("fastpool_use_seconds", "use_time", "Seconds connections were held, summed."),
    ("fastpool_max_idle_closed", "max_idle_closed", "Closed because max_idle was reached."),
    ("fastpool_max_idle_time_closed", "max_idle_time_closed", "Closed after max_idle_time."),
    ("fastpool_max_lifetime_closed", "max_lifetime_closed", "Closed after max_lifetime."),
    ("fastpool_bad_conns_discarded", "bad_conns_discarded", "Dead or broken connections closed."),
    ("fastpool_discarded", "discarded", "Connections closed at their holder's request."),
    ("fastpool_leaks_reclaimed", "leaks_reclaimed", "Dropped Rows/Tx/Conn reclaimed."),
    ("fastpool_deadlines_exceeded", "deadlines_exceeded", "DeadlineExceeded raised."),
    ("fastpool_statements_cancelled", "statements_cancelled", "Statements cancelled for a deadline."),
)
GAUGES = (
    ("fastpool_max_open", "max_open", "The max_open limit (0 = unlimited)."),
    ("fastpool_waiting", "waiting", "Callers waiting for a connection now."),
    ("fastpool_wait_p50_seconds", "wait_p50", "Median wait for a full pool, since the start."),
    ("fastpool_wait_p99_seconds", "wait_p99", "99th percentile wait, since the start."),
    ("fastpool_wait_max_seconds", "wait_max", "Longest wait, since the start."),
)


class PoolCollector(Collector):
    """Collects the metrics of the pools given (held weakly: a dropped pool disappears)."""

    def __init__(self, *pools: Any) -> None:
        self._pools = [weakref.ref(p) for p in pools]

    def collect(self) -> Iterator[Metric]:
        """The metrics of every pool still alive, read from ``stats()`` now (called at each scrape)."""
        stats = [s for s in (self._stats(ref) for ref in self._pools) if s is not None]
        conns = GaugeMetricFamily("fastpool_connections", "Open connections by state.",
                                  labels=["pool", "state"])
        for s in stats:
            conns.add_metric([s.name, "idle"], s.idle)
            conns.add_metric([s.name, "used"], s.in_use)
            conns.add_metric([s.name, "opening"], s.opening)  # the three add up to open
        yield conns
        yield from _host_metrics(stats)
        for name, field, doc in GAUGES:
            g = GaugeMetricFamily(name, doc, labels=["pool"])
            for s in stats:
                g.add_metric([s.name], getattr(s, field))
            yield g
        for name, field, doc in COUNTERS:
            c = CounterMetricFamily(name, doc, labels=["pool"])
            for s in stats:
                c.add_metric([s.name], getattr(s, field))
            yield c

    @staticmethod
    def _stats(ref: Any) -> Any:
        db = ref()
        return None if db is None or db.closed else db.stats()


def _host_metrics(stats: list[Any]) -> Iterator[Metric]:
    # A host list's hosts (stats().hosts; none for one host), labelled by host and role.
    conns = GaugeMetricFamily("fastpool_host_connections", "Open connections per host of a"
                              " host list, by state.", labels=["pool", "host", "role", "state"])
    up = GaugeMetricFamily("fastpool_host_up", "1 while a host of a host list answers its"
                           " probes, else 0.", labels=["pool", "host", "role"])
    lag = GaugeMetricFamily("fastpool_replica_lag_seconds", "A replica's replication lag as"
                            " last probed.", labels=["pool", "host"])
    for s in stats:
        for h in s.hosts:
            conns.add_metric([s.name, h.address, h.role, "idle"], h.idle)
            conns.add_metric([s.name, h.address, h.role, "used"], h.in_use)
            up.add_metric([s.name, h.address, h.role], 0 if h.state == "down" else 1)
            if h.lag is not None:
                lag.add_metric([s.name, h.address], h.lag)
    yield conns
    yield up
    yield lag
