"""TLS from the URL, for every driver fastpool ships, against real servers started here:
MariaDB servers with certificates from throwaway CAs made at test time (trustme; no key is
committed): the right one, an impostor (another CA: the man in the middle) and one whose
certificate names another host. The right server has an account that REQUIRE SSL."""

from __future__ import annotations

import logging
import os

import pytest

import fastpool
from fastpool import ConfigError

trustme = pytest.importorskip("trustme", reason="trustme is not installed")

from mariadb_server import DATABASE, MariaDBServer, binaries  # noqa: E402

DRIVERS = ["mysqlclient", "pymysql"]
TLS_USER, TLS_PASSWORD = "fp_tls", "tls-only-secret"
CIPHER = "SHOW SESSION STATUS LIKE 'Ssl_cipher'"


class TLSServers:
    """Three TLS MariaDB servers and the files a client needs."""

    def __init__(self, tmp) -> None:  # type: ignore[no-untyped-def]
        self.dir = tmp
        ca, other_ca = trustme.CA(), trustme.CA()
        self.ca = str(tmp / "ca.pem")
        ca.cert_pem.write_to_path(self.ca)
        self.servers: list[MariaDBServer] = []
        self.right = self._start("right", ca.issue_cert("localhost", "127.0.0.1"))
        self.impostor = self._start("impostor", other_ca.issue_cert("localhost", "127.0.0.1"))
        self.misnamed = self._start("misnamed", ca.issue_cert("elsewhere.invalid"))
        root = self.right._root()
        cur = root.cursor()
        cur.execute(f"CREATE USER '{TLS_USER}'@'127.0.0.1' IDENTIFIED BY '{TLS_PASSWORD}' REQUIRE SSL")
        cur.execute(f"GRANT ALL ON {DATABASE}.* TO '{TLS_USER}'@'127.0.0.1'")
        root.close()

    def _start(self, name: str, cert) -> MariaDBServer:  # type: ignore[no-untyped-def]
        crt, key = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(crt))
        cert.private_key_pem.write_to_path(str(key))
        server = MariaDBServer([f"--ssl-cert={crt}", f"--ssl-key={key}"])
        self.servers.append(server)
        server.start()
        return server

    def url(self, server: MariaDBServer, driver: str, query: str, tls_user: bool = False) -> str:
        base = server.dsn
        if tls_user:
            base = base.replace("fastpool:fp-test-secret@", f"{TLS_USER}:{TLS_PASSWORD}@")
        return f"{base}?driver={driver}" + (f"&{query}" if query else "")

    def close(self) -> None:
        for s in self.servers:
            s.cleanup()


@pytest.fixture(scope="module")
def tls(tmp_path_factory):  # type: ignore[no-untyped-def]
    pytest.importorskip("MySQLdb", reason="mysqlclient is not installed")
    pytest.importorskip("pymysql", reason="PyMySQL is not installed")
    if binaries() is None:
        if os.environ.get("FASTPOOL_REQUIRE_MARIADB"):
            pytest.fail("FASTPOOL_REQUIRE_MARIADB is set but no MariaDB binaries were found")
        pytest.skip("no MariaDB binaries to start TLS servers with")
    servers = TLSServers(tmp_path_factory.mktemp("tls"))
    try:
        yield servers
    finally:
        servers.close()


def cipher_of(url: str) -> str:
    db = fastpool.open(url, max_open=2, timeout=10)
    try:
        row = db.query_row(CIPHER)
        s = db.stats()
        assert (s.open, s.in_use, s.connect_errors) == (1, 0, 0)
        return str(row[1])
    finally:
        db.close()


def refused(url: str) -> BaseException:
    """The connect's error through a pool, checking the pool stays intact and exact."""
    db = fastpool.open(url, max_open=2, timeout=10)
    try:
        with pytest.raises(Exception) as ei:
            db.ping()
        s = db.stats()
        assert (s.open, s.in_use, s.idle, s.opening, s.waiting) == (0, 0, 0, 0, 0)
        assert s.connect_errors == 1
        with pytest.raises(type(ei.value)):  # the same again: no hang, no state left over
            db.ping()
        assert db.stats().connect_errors == 2
        return ei.value
    finally:
        db.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_verify_identity_with_the_right_ca_connects_encrypted(tls, driver):
    url = tls.url(tls.right, driver, f"ssl_mode=VERIFY_IDENTITY&ssl_ca={tls.ca}", tls_user=True)
    assert cipher_of(url).startswith("TLS_")


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("query", ["ssl_mode=VERIFY_IDENTITY&ssl_ca={ca}",
                                   "ssl_mode=verify_ca&ssl_ca={ca}",
                                   "ssl_ca={ca}",  # a CA alone means VERIFY_CA
                                   "ssl_mode=REQUIRED&ssl_ca={ca}",  # REQUIRED with a CA checks it
                                   "ssl_verify_identity=true&ssl_ca={ca}"])
def test_the_impostor_is_refused(tls, driver, query, caplog):
    caplog.set_level(logging.DEBUG, logger="fastpool")
    err = refused(tls.url(tls.impostor, driver, query.format(ca=tls.ca)))
    # The driver's own TLS error: certificate verification failed.
    assert type(err).__name__ == "OperationalError"
    assert "certificate" in str(err) or "issuer" in str(err), err
    for text in (str(err), caplog.text):
        assert "fp-test-secret" not in text


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_certificate_for_another_host_fails_verify_identity(tls, driver):
    refused(tls.url(tls.misnamed, driver, f"ssl_mode=VERIFY_IDENTITY&ssl_ca={tls.ca}"))


@pytest.mark.parametrize("driver", DRIVERS)
def test_verify_ca_and_a_certificate_for_another_host(tls, driver):
    url = tls.url(tls.misnamed, driver, f"ssl_mode=VERIFY_CA&ssl_ca={tls.ca}")
    if driver == "pymysql":
        # VERIFY_CA checks the chain, not the name: the right CA signed it.
        assert cipher_of(url).startswith("TLS_")
    else:
        # libmariadb's one switch (MYSQL_OPT_SSL_VERIFY_SERVER_CERT) checks both: stricter.
        refused(url)


@pytest.mark.parametrize("driver", DRIVERS)
def test_required_encrypts_and_the_account_requires_it(tls, driver):
    assert cipher_of(tls.url(tls.right, driver, "ssl_mode=REQUIRED", tls_user=True)).startswith("TLS_")
    # With TLS switched off the REQUIRE SSL account is refused by the server (1045).
    # (Left to itself PyMySQL uses TLS when the server offers it, unverified.)
    err = refused(tls.url(tls.right, driver, "ssl_mode=DISABLED", tls_user=True))
    assert err.args[0] == 1045


@pytest.mark.parametrize("driver", DRIVERS)
def test_required_against_a_server_without_tls_is_refused(mariadb, driver):
    # mysqlclient on libmariadb would go on in plain text here; fastpool checks the session.
    url = mariadb.dsn + ("&" if "?" in mariadb.dsn else "?") + f"driver={driver}&ssl_mode=REQUIRED"
    err = refused(url)
    assert err.args[0] == 2026


@pytest.mark.parametrize("driver", DRIVERS)
def test_no_secret_in_errors_logs_or_reprs(tls, driver, caplog):
    caplog.set_level(logging.DEBUG, logger="fastpool")
    key = tls.dir / "right.key"
    url = tls.url(tls.impostor, driver, f"ssl_mode=VERIFY_IDENTITY&ssl_ca={tls.ca}&ssl_key={key}&ssl_cert={tls.dir / 'right.pem'}", tls_user=True)
    db = fastpool.open(url, max_open=1, timeout=5)
    with pytest.raises(Exception) as ei:
        db.ping()
    texts = [str(ei.value), repr(ei.value), repr(db), repr(db.stats()), caplog.text, db.name]
    db.close()
    key_text = key.read_text()
    for text in texts:
        assert TLS_PASSWORD not in text and str(key) not in text
        assert key_text.strip().splitlines()[1] not in text


# ---- every parameter checked at open() (no server needed) --------------------------------
@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("query, message", [
    ("ssl=true", r"'ssl' is not taken by .*ssl_mode=REQUIRED"),
    ("charsett=utf8mb4", r"'charsett' is not taken by .*accepted: .*charset"),
    ("ssl_mode=bogus", r"ssl_mode must be one of"),
    ("ssl_ca=/no/such/ca.pem", r"ssl_ca names no readable file: '/no/such/ca.pem'"),
    ("ssl_key=/no/such/secret.key", r"ssl_key names no readable file$"),
    ("ssl_mode=DISABLED&ssl_ca={ca}", r"contradicts"),
    ("ssl_verify_cert=maybe", r"ssl_verify_cert must be true or false"),
    ("compress=perhaps", r"compress must be true or false"),
])
def test_a_bad_connect_parameter_is_a_config_error_at_open(driver, query, message, tmp_path):
    pytest.importorskip("MySQLdb" if driver == "mysqlclient" else "pymysql")
    ca = tmp_path / "ca.pem"
    ca.write_text("not read at open()")
    with pytest.raises(ConfigError, match=message) as ei:
        fastpool.open(f"mysql://u:pw-secret@127.0.0.1:1/x?driver={driver}&" + query.format(ca=ca))
    assert "pw-secret" not in str(ei.value) and "secret.key" not in str(ei.value)


def test_modes_are_read_in_any_case_and_the_flags_imply_the_stricter_mode(tmp_path):
    from fastpool.dialects.mysql_params import split

    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    accepted = frozenset({"charset"})
    assert split({"ssl_mode": "verify_identity"}, accepted, "d")[1].mode == "VERIFY_IDENTITY"
    assert split({"ssl_ca": str(ca)}, accepted, "d")[1].mode == "VERIFY_CA"
    assert split({"ssl_mode": "REQUIRED", "ssl_check_hostname": "true"}, accepted, "d")[1].mode == "VERIFY_IDENTITY"
    assert split({"ssl_verify_cert": 1}, accepted, "d")[1].mode == "VERIFY_CA"
    assert split({"ssl_cipher": "ECDHE-RSA-AES128-GCM-SHA256"}, accepted, "d")[1].mode == "REQUIRED"
    assert split({"charset": "utf8mb4"}, accepted, "d") == ({"charset": "utf8mb4"}, split({}, accepted, "d")[1])
    assert split({}, accepted, "d")[1].mode is None


@pytest.mark.parametrize("driver", DRIVERS)
def test_preferred_uses_tls_where_offered_and_plain_text_where_not(tls, mariadb, driver):
    assert cipher_of(tls.url(tls.right, driver, "ssl_mode=PREFERRED")).startswith("TLS_")
    plain = mariadb.dsn + ("&" if "?" in mariadb.dsn else "?") + f"driver={driver}&ssl_mode=preferred"
    assert cipher_of(plain) == ""


def test_verify_without_a_ca_uses_the_system_trust_store():
    # No CA given: VERIFY_* check against the system's store, so a throwaway CA's server is
    # refused; nothing is named that the system does not have.
    from fastpool.dialects.mysql_params import TLS, mysqlclient_tls, ssl_context

    tls = TLS("VERIFY_IDENTITY")
    ctx = ssl_context(tls)
    assert ctx is not None and ctx.check_hostname and ctx.verify_mode.name == "CERT_REQUIRED"
    for path in mysqlclient_tls(tls)["ssl"].values():
        assert os.path.exists(path)


@pytest.mark.parametrize("driver", DRIVERS)
def test_verify_identity_without_a_ca_refuses_a_private_ca(tls, driver):
    refused(tls.url(tls.right, driver, "ssl_mode=VERIFY_IDENTITY", tls_user=True))
