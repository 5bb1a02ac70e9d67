"""Exporters of a pool's metrics, each an optional extra on its ecosystem's own library:

* ``fastpool.exporters.opentelemetry.instrument(db)`` (``pip install fastpool[otel]``):
  OpenTelemetry metrics after its database-client semantic conventions;
* ``fastpool.exporters.prometheus.PoolCollector(db, ...)`` (``pip install
  fastpool[prometheus]``): a ``prometheus_client`` collector.

Both read ``db.stats()`` when the metrics are collected; only OpenTelemetry's three
histograms (create, wait and use time) listen to the pool's events.
"""
