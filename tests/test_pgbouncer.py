"""fastpool behind a real PgBouncer 1.18 in transaction mode (``behind_pooler=True``): no
server-side prepared statements, statements that would pin a server session refused before
they are sent, and everything else served as directly."""

from __future__ import annotations

import threading

import pytest

import fastpool
from fastpool.dialects.pooler import session_state_reason
from threads import run_threads

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")


# ---- what is refused (no server) ---------------------------------------------------------
@pytest.mark.parametrize("sql", [
    "SET search_path TO app",
    "set statement_timeout = 0",
    "SET SESSION work_mem = '64MB'",
    "  -- a comment first\n SET TIME ZONE 'UTC'",
    "/* hint */ RESET ALL",
    "LISTEN jobs",
    "UNLISTEN *",
    "PREPARE q AS SELECT 1",
    "CREATE TEMP TABLE t (x int)",
    "create temporary table t (x int)",
    "CREATE LOCAL TEMPORARY TABLE t (x int)",
    "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
    "SELECT pg_advisory_lock(42)",
    "SELECT pg_try_advisory_lock_shared(1, 2)",
    b"SET search_path TO app",
])
def test_session_pinning_statements_are_recognised(sql):
    assert session_state_reason(sql) is not None


@pytest.mark.parametrize("sql", [
    "SELECT 1",
    "SET LOCAL search_path TO app",
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "SET CONSTRAINTS ALL DEFERRED",
    "SELECT pg_advisory_xact_lock(42)",
    "PREPARE TRANSACTION 'x'",
    "INSERT INTO settings (name) VALUES ('SET x')",
    "SELECT 'LISTEN' AS word",
    "CREATE TABLE temp_results (x int)",
    "DECLARE c CURSOR FOR SELECT 1",
    "WITH x AS (SELECT 1) SELECT * FROM x",
])
def test_ordinary_statements_pass(sql):
    assert session_state_reason(sql) is None


def test_behind_pooler_is_checked(postgres):
    with pytest.raises(fastpool.ConfigError, match="behind_pooler"):
        fastpool.open(postgres.dsn, behind_pooler="yes")
    with pytest.raises(fastpool.ConfigError, match="behind_pooler"):
        fastpool.open(postgres.dsn + "?behind_pooler=maybe")
    with pytest.raises(fastpool.ConfigError, match="postgresql"):
        fastpool.open("sqlite://:memory:", behind_pooler=True)
    fastpool.open("sqlite://:memory:", behind_pooler=False).close()


# ---- through the real PgBouncer ---------------------------------------------------------------
@pytest.fixture(params=["option", "url"])
def bounced(request, pgbouncer):  # type: ignore[no-untyped-def]
    pools: list[fastpool.Pool] = []

    def make(**options):  # type: ignore[no-untyped-def]
        if request.param == "url":
            db = fastpool.open(pgbouncer.dsn + "?behind_pooler=true", **options)
        else:
            db = fastpool.open(pgbouncer.dsn, behind_pooler=True, **options)
        pools.append(db)
        return db

    yield make
    for db in pools:
        db.close()


def test_statements_and_transactions_through_pgbouncer(bounced):
    db = bounced(max_open=4)
    db.execute("DROP TABLE IF EXISTS fp_bounced")
    db.execute("CREATE TABLE fp_bounced (id int PRIMARY KEY, n int)")
    db.execute("INSERT INTO fp_bounced SELECT g, 0 FROM generate_series(1, 8) g")
    lock = threading.Lock()
    wrong: list[object] = []

    def worker(i: int) -> None:
        for j in range(60):
            # The same statement again and again: psycopg would prepare it server-side
            # after 5 runs, and PgBouncer would send the next run to another session.
            got = db.query_row("SELECT %s::int + %s::int", (i, j))
            if got != (i + j,):
                with lock:
                    wrong.append(got)
            with db.transaction() as tx:
                tx.execute("SET LOCAL statement_timeout = '5s'")  # LOCAL: fine
                tx.execute("SELECT pg_advisory_xact_lock(%s)", (1000 + i % 8 + 1,))
                tx.execute("UPDATE fp_bounced SET n = n + 1 WHERE id = %s", (i % 8 + 1,))

    errors = run_threads(worker, 8, timeout=120)
    assert not errors, errors[:3]
    assert not wrong
    assert db.query_row("SELECT sum(n) FROM fp_bounced") == (8 * 60,)
    with db.conn() as c:
        assert c.raw.prepare_threshold is None
    s = db.stats()
    assert s.in_use == 0 and s.bad_conns_discarded == 0


@pytest.mark.parametrize("sql", [
    "SET search_path TO public",
    "LISTEN fp_jobs",
    "SELECT pg_advisory_lock(7)",
    "CREATE TEMP TABLE fp_tmp (x int)",
    "PREPARE fp_q AS SELECT 1",
])
def test_session_pinning_statements_are_refused_and_the_connection_kept(bounced, sql):
    db = bounced(max_open=1)
    assert db.query_row("SELECT 1") == (1,)
    with pytest.raises(fastpool.SessionStateError, match="behind_pooler"):
        db.execute(sql)
    with db.conn() as c, pytest.raises(fastpool.SessionStateError):
        c.raw.execute(sql)  # the driver's own connection too
    assert db.query_row("SELECT 2") == (2,)
    assert db.stats().bad_conns_discarded == 0


def test_without_behind_pooler_nothing_is_refused(postgres):
    db = fastpool.open(postgres.dsn, max_open=1)
    try:
        db.execute("SET application_name = 'fp_direct'")  # a direct server: the user's call
        with db.conn() as c:
            assert c.raw.prepare_threshold == 5  # psycopg's default
    finally:
        db.close()
