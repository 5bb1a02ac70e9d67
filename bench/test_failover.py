"""The failover group of the comparison: each pool through a switchover and a crash on
real replication (bench/failover.py; the beds are the tests'). With FASTPOOL_BENCH_SECONDS
below 2 (the quick run) only fastpool and the first peer of each database run, through a
switchover only (a crash waits out Patroni's leader lease)."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from . import failover
from .support import bench_seconds

GROUP = "failover: 8 writers through a switchover and a crash"


def _cases() -> list[Any]:
    quick = bench_seconds() < 2
    cases = []
    for engine, contenders in failover.CONTENDERS.items():
        for i, (label, opener, key) in enumerate(contenders):
            if quick and i > 1:
                continue
            for event in ("switchover",) if quick else ("switchover", "crash"):
                cases.append(pytest.param(engine, label, opener, key, event,
                                          id=f"{engine}-{key}-{event}"))
    return cases


def _bed(engine: str) -> Any:
    if engine == "postgresql":
        import patroni_cluster

        if patroni_cluster.binaries() is None:
            pytest.skip("no Patroni, etcd or PostgreSQL here (apt-get install patroni etcd-server)")
        if importlib.util.find_spec("psycopg") is None:
            pytest.skip("psycopg is not installed")
        return failover.PostgresBed()
    import mariadb_server

    if mariadb_server.binaries() is None or importlib.util.find_spec("MySQLdb") is None:
        pytest.skip("no MariaDB (or mysqlclient) here")
    return failover.MariaDBBed()


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize(("engine", "label", "opener", "key", "event"), _cases())
def test_failover(benchmark, engine, label, opener, key, event):  # type: ignore[no-untyped-def]
    result: dict[str, Any] = {}
    bed = _bed(engine)
    try:
        try:
            benchmark.pedantic(lambda: result.update(failover._one(
                engine, label, key, event, bed, opener, 8, 1.0, 2.0)), rounds=1, iterations=1)
        except ImportError as exc:
            pytest.skip(f"{label}: {exc}")
    finally:
        bed.close()
    benchmark.extra_info.update(result)
