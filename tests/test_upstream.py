"""The originals' own test suites against fastpool's adapters (see upstream_suites.py).

Needs PyPI for the sdists (cached after the first run): skipped without it, unless
FASTPOOL_REQUIRE_UPSTREAM is set (as in CI), where a missing suite is a failure."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import upstream_suites as u
from pg_server import SUPERUSER, PostgresServer

pytestmark = pytest.mark.slow

SERVERLESS = [s for s in u.SUITES if not s.server]
# The server-free suites all start when the first of them is wanted, two at a time (each
# is a pytest process of its own; the machine has two cores or more): the tests then wait
# for their own.
_runs: dict[str, Future[dict[str, str]]] = {}
_executor = ThreadPoolExecutor(2)


def _started(suite: u.Suite, request: pytest.FixtureRequest) -> Future[dict[str, str]]:
    if not _runs:
        chosen = {item.callspec.params["suite"].name for item in request.session.items
                  if item.originalname == "test_originals_suite_fails_only_where_listed"}
        for s in SERVERLESS:
            if s.name not in chosen:
                continue
            try:
                u.fetch(s)
            except Exception:
                continue  # its test reports it (fetch_or_skip)
            _runs[s.name] = _executor.submit(u.run, s)
    if suite.name not in _runs:
        _runs[suite.name] = _executor.submit(u.run, suite)
    return _runs[suite.name]


@pytest.mark.parametrize("suite", SERVERLESS, ids=lambda s: s.name)
def test_originals_suite_fails_only_where_listed(suite, request):
    u.fetch_or_skip(suite)
    check(suite, _started(suite, request).result())


@pytest.mark.parametrize("suite", [s for s in u.SUITES if s.server and s.package != "asyncpg"],
                         ids=lambda s: s.name)
def test_originals_suite_with_a_server_fails_only_where_listed(suite, mariadb):
    if not hasattr(mariadb, "socket"):
        pytest.skip("needs the throwaway server's root over its Unix socket (FASTPOOL_TEST_DSN is set)")
    u.fetch_or_skip(suite)
    check(suite, u.run(suite, (f"--mysql-unix-socket={mariadb.socket}",)))


@pytest.mark.parametrize("suite", [s for s in u.SUITES if s.package == "asyncpg"],
                         ids=lambda s: s.name)
def test_originals_suite_on_postgresql_fails_only_where_listed(suite, postgres):
    if not isinstance(postgres, PostgresServer):
        pytest.skip("needs the throwaway server's superuser over its Unix socket"
                    " (FASTPOOL_TEST_PG_DSN is set)")
    pytest.importorskip("asyncpg")
    u.fetch_or_skip(suite)
    env = {"PGHOST": str(postgres.tmp), "PGPORT": str(postgres.port), "PGUSER": SUPERUSER,
           "PGDATABASE": "postgres"}
    check(suite, u.run(suite, extra_env=env))


def check(suite, outcomes):  # type: ignore[no-untyped-def]
    allowed = u.expected(suite)
    new, stale = u.compare(outcomes, allowed)
    c = u.counts(outcomes)
    print(f"\n{suite.name}: {c['passed']} passed, {c['failed']} failed as listed, {c['skipped']} skipped")
    assert not new, "new failures (fix them, or list them with a reason):\n" + "\n".join(
        f"  {t}: {outcomes[t]}" for t in new)
    assert not stale, "listed as failing but did not fail (remove them from the list):\n" + "\n".join(
        f"  {t}" for t in stale)
    assert c["passed"] > 0
