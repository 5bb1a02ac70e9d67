"""fastpool.django.mysql, .postgresql and .sqlite3 through Django's own test runner:
tests/djangoproj/shop/tests.py runs with `manage.py test` (test database created and
destroyed by Django, TestCase, TransactionTestCase and LiveServerTestCase's threaded
server with 32 client threads on a pool of 4), on the throwaway MariaDB and PostgreSQL and
on SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("django", reason="Django is not installed")

PROJECT = Path(__file__).parent / "djangoproj"


def manage_test(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "test", "shop", "--noinput", "-v", "2"],
        cwd=PROJECT, env={**os.environ, **env}, capture_output=True, text=True, timeout=600,
    )


def check(res: subprocess.CompletedProcess[str], skipped: int = 0) -> None:
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "Ran 10 tests" in out, out[-2000:]
    assert ("OK" if not skipped else f"OK (skipped={skipped})") in out, out[-2000:]


def test_sqlite_backend_under_djangos_runner(tmp_path):
    check(manage_test({"FASTPOOL_DJANGO_ENGINE": "fastpool.django.sqlite3",
                       "FASTPOOL_DJANGO_SQLITE": str(tmp_path / "shop.sqlite3")}), skipped=1)


def test_mysql_backend_under_djangos_runner(mariadb):
    check(manage_test({"FASTPOOL_DJANGO_ENGINE": "fastpool.django.mysql",
                       "FASTPOOL_DJANGO_DSN": mariadb.dsn}))


def test_postgresql_backend_under_djangos_runner(postgres):
    check(manage_test({"FASTPOOL_DJANGO_ENGINE": "fastpool.django.postgresql",
                       "FASTPOOL_DJANGO_DSN": postgres.dsn}))


def test_postgresql_backend_takes_psycopg_pools_options(postgres):
    # OPTIONS["pool"] spelt as for Django's own backend (psycopg_pool's names).
    check(manage_test({"FASTPOOL_DJANGO_ENGINE": "fastpool.django.postgresql",
                       "FASTPOOL_DJANGO_DSN": postgres.dsn,
                       "FASTPOOL_DJANGO_POOL": '{"min_size": 1, "max_size": 4, "timeout": 10}'}))


def first_connect(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A first connection on the SQLite backend with the given settings (environment)."""
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-c",
         "from django.db import connection; connection.ensure_connection()"],
        cwd=PROJECT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "FASTPOOL_DJANGO_ENGINE": "fastpool.django.sqlite3",
             "FASTPOOL_DJANGO_SQLITE": str(tmp_path / "x.sqlite3"), **env},
    )


def test_conn_max_age_with_a_pool_is_improperly_configured(tmp_path):
    res = first_connect(tmp_path, FASTPOOL_DJANGO_CONN_MAX_AGE="60")
    assert res.returncode != 0
    assert "ImproperlyConfigured: Pooling doesn't support persistent connections" in res.stderr


def test_bad_pool_options_name_the_option(tmp_path):
    res = first_connect(tmp_path, FASTPOOL_DJANGO_POOL='{"max_open": -1}')
    assert res.returncode != 0
    assert "OPTIONS['pool'] of database 'default'" in res.stderr and "max_open" in res.stderr
