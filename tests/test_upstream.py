"""The originals' own test suites against fastpool's adapters (see upstream_suites.py).

Needs PyPI for the sdists (cached after the first run): skipped without it, unless
FASTPOOL_REQUIRE_UPSTREAM is set (as in CI), where a missing suite is a failure."""

from __future__ import annotations

import pytest
import upstream_suites as u

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("suite", u.SUITES, ids=lambda s: s.name)
def test_originals_suite_fails_only_where_listed(suite):
    u.fetch_or_skip(suite)
    outcomes = u.run(suite)
    allowed = u.expected(suite)
    new, stale = u.compare(outcomes, allowed)
    c = u.counts(outcomes)
    print(f"\n{suite.name}: {c['passed']} passed, {c['failed']} failed as listed, {c['skipped']} skipped")
    assert not new, "new failures (fix them, or list them with a reason):\n" + "\n".join(
        f"  {t}: {outcomes[t]}" for t in new)
    assert not stale, "listed as failing but did not fail (remove them from the list):\n" + "\n".join(
        f"  {t}" for t in stale)
    assert c["passed"] > 0
