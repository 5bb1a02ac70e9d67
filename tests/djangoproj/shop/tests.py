"""Run by tests/test_django_backend.py through Django's own test runner (manage.py test),
on fastpool.django.mysql (the throwaway MariaDB), fastpool.django.postgresql (the
throwaway PostgreSQL) and fastpool.django.sqlite3."""

from __future__ import annotations

import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from django.core.exceptions import ImproperlyConfigured
from django.db import connection, connections, transaction
from django.test import LiveServerTestCase, TestCase, TransactionTestCase

from .models import Item

MYSQL = connection.vendor == "mysql"
POSTGRES = connection.vendor == "postgresql"


def server_connections() -> int:
    """Connections of the test's user open on the server (MySQL, PostgreSQL), or -1."""
    with connection.cursor() as cur:
        if MYSQL:
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER ="
                        " CURRENT_USER() OR CONCAT(USER, '@', HOST) = CURRENT_USER()")
        elif POSTGRES:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = current_user"
                        " AND datname = current_database()")
        else:
            return -1
        return int(cur.fetchone()[0])


class PooledTestCase(TestCase):
    def test_the_backend_is_pooled_and_its_stats_are_reachable(self) -> None:
        Item.objects.create(name="a", qty=1)
        self.assertIsNotNone(connection.pool)
        s = connection.pool.stats()
        self.assertEqual(s.name, "django:default")
        self.assertEqual(s.max_open, 4)
        self.assertGreaterEqual(s.in_use, 1)        # TestCase holds one for the test's atomic

    def test_atomic_savepoints_and_on_commit(self) -> None:
        with transaction.atomic():
            Item.objects.create(name="kept", qty=1)
            try:
                with transaction.atomic():
                    Item.objects.create(name="dropped", qty=2)
                    raise ValueError
            except ValueError:
                pass
        self.assertEqual(list(Item.objects.values_list("name", flat=True)), ["kept"])
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            transaction.on_commit(lambda: None)
        self.assertEqual(len(callbacks), 1)

    def test_select_for_update(self) -> None:
        it = Item.objects.create(name="x", qty=1)
        with transaction.atomic():
            locked = Item.objects.select_for_update().get(pk=it.pk)
            locked.qty += 1
            locked.save()
        self.assertEqual(Item.objects.get(pk=it.pk).qty, 2)


class GiveBackTests(TransactionTestCase):
    def test_close_gives_the_connection_back(self) -> None:
        Item.objects.create(name="a")
        pool = connection.pool
        before = pool.stats()
        self.assertEqual(before.in_use, 1)
        connection.close()
        s = pool.stats()
        self.assertEqual((s.in_use, s.open, s.checkins), (0, before.open, before.checkins + 1))
        Item.objects.count()                    # a pooled connection again, not a new one
        self.assertEqual(pool.stats().connects, before.connects)
        connection.close()

    def test_an_open_transaction_is_rolled_back_before_reuse(self) -> None:
        connection.ensure_connection()
        discarded = connection.pool.stats().bad_conns_discarded
        connection.set_autocommit(False)
        Item.objects.create(name="uncommitted")
        connection.close()                     # a request that ended mid-transaction
        self.assertEqual(Item.objects.count(), 0)
        self.assertTrue(connection.get_autocommit())
        self.assertEqual(connection.pool.stats().bad_conns_discarded, discarded)
        connection.close()

    def test_a_changed_session_is_not_handed_on(self) -> None:
        connection.ensure_connection()
        discarded = connection.pool.stats().bad_conns_discarded
        with connection.cursor() as cur:
            if MYSQL:
                cur.execute("SET @cart = 'alice'")
            elif POSTGRES:
                cur.execute("SET application_name = 'alice'")
            else:
                cur.execute("PRAGMA cache_size = -1234")
        connection.close()
        self.assertEqual(connection.pool.stats().bad_conns_discarded, discarded + 1)
        with connection.cursor() as cur:
            if MYSQL:
                cur.execute("SELECT @cart")
                self.assertEqual(cur.fetchone(), (None,))
            elif POSTGRES:
                cur.execute("SHOW application_name")
                self.assertNotEqual(cur.fetchone(), ("alice",))
            else:
                cur.execute("PRAGMA cache_size")
                self.assertNotEqual(cur.fetchone(), (-1234,))
        connection.close()

    def test_settings_applied_once_per_physical_connection(self) -> None:
        if not (MYSQL or POSTGRES):
            self.skipTest("server session settings")
        connection.ensure_connection()
        connects = connection.pool.stats().connects
        for _ in range(5):
            with connection.cursor() as cur:
                if MYSQL:
                    cur.execute("SELECT @@session.tx_isolation, @@session.sql_auto_is_null")
                    self.assertEqual(cur.fetchone(), ("READ-COMMITTED", 0))
                else:  # the time zone Django sets (USE_TZ: UTC)
                    cur.execute("SELECT current_setting('TimeZone'),"
                                " current_setting('transaction_isolation')")
                    self.assertEqual(cur.fetchone(), ("UTC", "read committed"))
            connection.close()
        self.assertEqual(connection.pool.stats().connects, connects)

    def test_conn_max_age_with_a_pool_is_refused(self) -> None:
        other = connections.create_connection("default")
        other.settings_dict = {**other.settings_dict, "CONN_MAX_AGE": 60}
        with self.assertRaisesMessage(ImproperlyConfigured, "persistent connections"):
            other.pool  # noqa: B018

    def test_threads_share_the_pool(self) -> None:
        Item.objects.bulk_create([Item(name=f"i{i}", qty=i) for i in range(10)])
        connection.close()
        checkins = connection.pool.stats().checkins
        seen: list[int] = []
        lock = threading.Lock()

        def work() -> None:
            for _ in range(10):
                n = Item.objects.count()
                with lock:
                    seen.append(n)
            connections.close_all()

        with ThreadPoolExecutor(8) as ex:
            for f in [ex.submit(work) for _ in range(8)]:
                f.result()
        s = connection.pool.stats()
        self.assertEqual(seen, [10] * 80)
        self.assertLessEqual(s.open, 4)
        self.assertEqual((s.in_use, s.timeouts), (0, 0))
        self.assertEqual(s.checkins - checkins, 8)   # one connection per thread, given back


class ThreadedServerTests(LiveServerTestCase):
    """32 client threads against Django's threaded live server, on a pool of 4."""

    host = "127.0.0.1"  # not "localhost": a bare root filesystem has no /etc/hosts

    def test_32_threads_no_starvation_and_connections_within_max_open(self) -> None:
        ids = [Item.objects.create(name=f"n{i}", qty=i).pk for i in range(8)]
        peak = [0]
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], connection.pool.stats().open)
                stop.wait(0.01)

        def client(k: int) -> int:
            ok = 0
            for j in range(10):
                pk = ids[(k + j) % len(ids)]
                with urllib.request.urlopen(f"{self.live_server_url}/item/{pk}", timeout=30) as r:
                    ok += r.status == 200 and r.read().decode().startswith("n")
            return ok

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with ThreadPoolExecutor(32) as ex:
                results = list(ex.map(client, range(32)))
        finally:
            stop.set()
            watcher.join()
        self.assertEqual(results, [10] * 32)        # every request served, nobody starved
        s = connection.pool.stats()
        self.assertLessEqual(peak[0], 4)
        self.assertEqual(s.timeouts, 0)
        if MYSQL or POSTGRES:
            self.assertLessEqual(server_connections(), 4 + 1)   # + this test's own
