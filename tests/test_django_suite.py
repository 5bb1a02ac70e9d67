"""Django's own test suite on fastpool.django.mysql, .postgresql and .sqlite3, compared
with Django's stock backends in the same run (tests/django_suite.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("django", reason="Django is not installed")

pytestmark = pytest.mark.slow  # an original's suite, twice per backend: about a minute each

import django_suite  # noqa: E402
import upstream_suites  # noqa: E402


def compare(stock: django_suite.Outcome, ours: django_suite.Outcome, engine: str,
            extra_skipped: int = 0) -> None:
    listed = django_suite.expected(engine)
    assert ours.ran == stock.ran, (ours.ran, stock.ran)
    assert ours.skipped == stock.skipped + extra_skipped, (ours.skipped, stock.skipped)
    unexpected = ours.failing - stock.failing - set(listed)
    assert not unexpected, f"fails on {engine} only, not listed:\n{ours.tail}"
    now_passing = set(listed) - ours.failing
    assert not now_passing, f"listed as failing but passing: {sorted(now_passing)}"


def test_djangos_suite_on_the_sqlite_backend():
    upstream_suites.fetch_or_skip(django_suite.DJANGO)
    stock, ours = django_suite.run_both("django.db.backends.sqlite3", "fastpool.django.sqlite3",
                                        "sqlite")
    print(f"\nDjango {django_suite.DJANGO.version} suite on SQLite: stock ran {stock.ran}, "
          f"skipped {stock.skipped}, failing {len(stock.failing)}; fastpool ran {ours.ran}, "
          f"skipped {ours.skipped}, failing {len(ours.failing)}")
    compare(stock, ours, "fastpool.django.sqlite3")


def test_djangos_suite_on_the_mysql_backend(mariadb):
    upstream_suites.fetch_or_skip(django_suite.DJANGO)
    stock, ours = django_suite.run_both("django.db.backends.mysql", "fastpool.django.mysql",
                                        "mysql", mariadb.dsn)
    print(f"\nDjango {django_suite.DJANGO.version} suite on MariaDB: stock ran {stock.ran}, "
          f"skipped {stock.skipped}, failing {len(stock.failing)}; fastpool ran {ours.ran}, "
          f"skipped {ours.skipped}, failing {len(ours.failing)}")
    compare(stock, ours, "fastpool.django.mysql")


def test_djangos_suite_on_the_postgresql_backend(postgres):
    upstream_suites.fetch_or_skip(django_suite.DJANGO)
    stock, ours = django_suite.run_both("django.db.backends.postgresql",
                                        "fastpool.django.postgresql", "postgresql", postgres.dsn)
    print(f"\nDjango {django_suite.DJANGO.version} suite on PostgreSQL: stock ran {stock.ran}, "
          f"skipped {stock.skipped}, failing {len(stock.failing)}; fastpool ran {ours.ran}, "
          f"skipped {ours.skipped}, failing {len(ours.failing)}")
    # Django itself skips two ConnectionHealthChecksTests (test_health_checks_enabled,
    # test_set_autocommit_health_checks_enabled) on a pooled PostgreSQL backend: "Pool
    # does implicit health checks".
    compare(stock, ours, "fastpool.django.postgresql", extra_skipped=2)
