"""The OpenTelemetry and Prometheus exporters, read back through each library's own
in-memory reader or registry (issue 15)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import fastpool
from fastpool import PoolTimeout

otel_sdk = pytest.importorskip("opentelemetry.sdk.metrics", reason="opentelemetry-sdk")
prometheus_client = pytest.importorskip("prometheus_client", reason="prometheus-client")

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from fastpool.exporters.opentelemetry import POOL_NAME, STATE, instrument  # noqa: E402
from fastpool.exporters.prometheus import PoolCollector  # noqa: E402


def otel_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def point(points: list[Any], **attrs: str) -> Any:
    want = {POOL_NAME: attrs.pop("pool"), **{STATE: v for k, v in attrs.items() if k == "state"}}
    found = [p for p in points if dict(p.attributes) == want]
    assert len(found) == 1, (want, points)
    return found[0]


def exercise(db: fastpool.Pool) -> None:
    """2 connects, a wait, a timeout, and 12 checkouts in all."""
    held = db.conn()
    second = db.conn()
    with pytest.raises(PoolTimeout):
        db.conn(timeout=0.05)
    t = threading.Thread(target=lambda: db.query_row("SELECT 1"))
    t.start()
    while db.stats().waiting < 1:
        time.sleep(0.002)
    time.sleep(0.05)
    held.close()
    t.join(5)
    second.close()
    for _ in range(9):
        assert db.query_row("SELECT 1") == (1,)


@pytest.fixture
def sqlite_pool(tmp_path):  # type: ignore[no-untyped-def]
    db = fastpool.open(f"sqlite:///{tmp_path}/m.db", max_open=2, max_idle=2, min_idle=0,
                       name="orders")
    yield db
    db.close()


def test_opentelemetry_reports_the_semantic_conventions(sqlite_pool):
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    handle = instrument(sqlite_pool, meter_provider=provider, per_checkout=True)
    exercise(sqlite_pool)
    pts = otel_points(reader)
    assert point(pts["db.client.connection.count"], pool="orders", state="idle").value == 2
    assert point(pts["db.client.connection.count"], pool="orders", state="used").value == 0
    assert point(pts["db.client.connection.max"], pool="orders").value == 2
    assert point(pts["db.client.connection.idle.max"], pool="orders").value == 2
    assert point(pts["db.client.connection.idle.min"], pool="orders").value == 0
    assert point(pts["db.client.connection.pending_requests"], pool="orders").value == 0
    assert point(pts["db.client.connection.timeouts"], pool="orders").value == 1
    create = point(pts["db.client.connection.create_time"], pool="orders")
    wait = point(pts["db.client.connection.wait_time"], pool="orders")
    use = point(pts["db.client.connection.use_time"], pool="orders")
    assert create.count == 2 and create.sum > 0
    assert wait.count == 12 and wait.max >= 0.04       # one checkout waited ~0.05 s
    assert use.count == 12 and use.max >= 0.04         # the first one was held that long
    handle.uninstrument()
    assert sqlite_pool._holder_hook is None             # nothing listens any more
    provider.shutdown()


def test_opentelemetry_on_mariadb_under_threads(mysql_pool):
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    db = mysql_pool(max_open=3, name="shop-primary")
    instrument(db, meter_provider=provider)   # the default: nothing runs per checkout
    assert db._holder_hook is None

    def worker() -> None:
        for _ in range(20):
            db.query_row("SELECT SLEEP(0.005)")

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    pts = otel_points(reader)
    s = db.stats()
    assert "db.client.connection.wait_time" not in pts and "db.client.connection.use_time" not in pts
    assert point(pts["fastpool.connection.checkins"], pool="shop-primary").value == 120
    use = point(pts["fastpool.connection.use_time.sum"], pool="shop-primary").value
    assert use == s.use_time and use >= 0.5       # 120 x SLEEP(0.005), coarse clock
    assert point(pts["fastpool.connection.waits"], pool="shop-primary").value == s.wait_count
    assert point(pts["db.client.connection.timeouts"], pool="shop-primary").value == 0
    assert point(pts["db.client.connection.create_time"], pool="shop-primary").count == s.connects
    used = point(pts["db.client.connection.count"], pool="shop-primary", state="used").value
    idle = point(pts["db.client.connection.count"], pool="shop-primary", state="idle").value
    assert (used, idle) == (0, s.idle) and 1 <= s.idle <= 3
    provider.shutdown()


def test_prometheus_collector_reads_stats_at_scrape(sqlite_pool):
    registry = CollectorRegistry()
    other = fastpool.open("sqlite://:memory:", name="cache")
    try:
        registry.register(PoolCollector(sqlite_pool, other))
        exercise(sqlite_pool)
        other.query_row("SELECT 1")
        get = registry.get_sample_value
        assert get("fastpool_connections", {"pool": "orders", "state": "idle"}) == 2
        assert get("fastpool_connections", {"pool": "orders", "state": "used"}) == 0
        assert get("fastpool_max_open", {"pool": "orders"}) == 2
        assert get("fastpool_timeouts_total", {"pool": "orders"}) == 1
        assert get("fastpool_checkins_total", {"pool": "orders"}) == 12
        assert get("fastpool_connects_total", {"pool": "orders"}) == 2
        assert get("fastpool_waits_total", {"pool": "orders"}) >= 1
        assert get("fastpool_wait_max_seconds", {"pool": "orders"}) >= 0.04
        assert get("fastpool_checkins_total", {"pool": "cache"}) == 1
        other.close()
        assert get("fastpool_checkins_total", {"pool": "cache"}) is None  # closed: gone
    finally:
        other.close()


def test_prometheus_text_exposition(sqlite_pool):
    from prometheus_client import generate_latest

    registry = CollectorRegistry()
    registry.register(PoolCollector(sqlite_pool))
    sqlite_pool.query_row("SELECT 1")
    text = generate_latest(registry).decode()
    assert 'fastpool_connections{pool="orders",state="idle"} 1.0' in text
    assert "# TYPE fastpool_connects_total counter" in text


@pytest.mark.parametrize("module, missing, extra", [
    ("fastpool.exporters.prometheus", "prometheus_client", "prometheus"),
    ("fastpool.exporters.opentelemetry", "opentelemetry", "otel"),
])
def test_a_missing_exporter_library_names_the_extra_to_install(module, missing, extra):
    import subprocess
    import sys

    code = (f"import sys; sys.modules[{missing!r}] = None\n"
            f"try:\n    import {module}\nexcept ModuleNotFoundError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert f"pip install 'fastpool[{extra}]'" in out.stdout, (out.stdout, out.stderr)
