"""pytest plugin for DBUtils' own test suite: `dbutils.pooled_db` is fastpool's adapter.

Loaded with `-p alias_dbutils` before the suite is collected. The rest of `dbutils`
(steady_db, the version) stays the DBUtils of the sdist under test."""

import sys

import dbutils

import fastpool.dbutils

sys.modules["dbutils.pooled_db"] = fastpool.dbutils
dbutils.pooled_db = fastpool.dbutils  # type: ignore[attr-defined]
