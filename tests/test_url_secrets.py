"""No string fastpool produces contains a password: one parse of the URL serves both
connecting and masking, so they cannot disagree (hypothesis over every printable
character, raw and percent-encoded)."""

from __future__ import annotations

import logging
import socket
import string
import warnings
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastpool
from fastpool import ConfigError
from fastpool.url import mask_url, parse_url

# Distinctive ends: a leak of any part of the password that reaches either end shows.
HEAD, TAIL = "PWa", "zWP"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


def assert_no_secret(texts: list[str], password: str) -> None:
    for text in texts:
        for secret in (HEAD, TAIL, password, quote(password, safe="")):
            assert secret not in text, f"{secret!r} leaked in {text!r}"


passwords = st.text(alphabet=string.printable, max_size=12).map(lambda s: HEAD + s + TAIL)
# Which characters the user forgot to percent-encode.
left_raw = st.text(alphabet="@/:?#%[]+ =&;", max_size=5)


@settings(max_examples=300, deadline=None)
@given(password=passwords, safe=left_raw, user=st.sampled_from(["app", "a.b", "u%40x"]))
def test_mysql_url_never_shows_the_password(password, safe, user):
    MySQLdb = pytest.importorskip("MySQLdb")
    url = f"mysql://{user}:{quote(password, safe=safe)}@127.0.0.1:{PORT}/shop?charset=utf8mb4&connect_timeout=2"
    texts = [mask_url(url)]
    try:
        parsed = parse_url(url)
    except ConfigError as exc:
        texts += [str(exc), repr(exc)]
        with pytest.raises(ConfigError) as ei:
            fastpool.open(url)
        texts.append(str(ei.value))
        assert_no_secret(texts, password)
        return
    texts += [parsed.masked, repr(parsed)]
    if "%" not in safe and not any(c in password for c in "\t\n\r"):
        # Connecting uses exactly the password that was meant. (A raw '%' may start an
        # escape, and urlsplit drops raw tabs and newlines, as WHATWG URLs do.)
        assert parsed.connect_kwargs["password"] == password
    log = logging.getLogger("fastpool")
    handler = Capture()
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            db = fastpool.open(url, max_open=1, timeout=5)
            texts += [repr(db), str(db), repr(db.stats())]
            with pytest.raises(MySQLdb.OperationalError) as ei:
                db.ping()  # nothing listens: the driver's own error
            texts += [str(ei.value), repr(ei.value)]
            texts.append(repr(db))
            db.close()
            texts.append(repr(db))
        texts += [str(w.message) for w in caught]
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
    texts += handler.texts
    assert_no_secret(texts, password)


@settings(max_examples=200, deadline=None)
@given(password=passwords, safe=left_raw)
def test_sqlite_url_with_credentials_never_shows_them(password, safe):
    url = f"sqlite://app:{quote(password, safe=safe)}@/data.db"
    with pytest.raises(ConfigError) as ei:
        fastpool.open(url)
    assert_no_secret([str(ei.value), repr(ei.value), mask_url(url)], password)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"mysql://app:{HEAD}/{TAIL}@host/db", "'@' after the host"),
        (f"mysql://app:{HEAD}?{TAIL}@host/db", "'@' after the host"),
        (f"mysql://app:{HEAD}#{TAIL}@host/db", "'@' after the host"),
        (f"mysql://app:{HEAD}{TAIL}/db", "port is not a number"),  # '@host' forgotten
    ],
)
def test_ambiguous_passwords_are_refused_with_the_encoding_hint(url, why):
    with pytest.raises(ConfigError, match=why) as ei:
        parse_url(url)
    assert "%40" in str(ei.value)
    assert_no_secret([str(ei.value), mask_url(url)], HEAD + TAIL)


def test_raw_at_sign_in_password_connects_with_it_and_masks_all_of_it():
    parsed = parse_url("mysql://app:pa@ss@host/db")
    assert parsed.connect_kwargs["password"] == "pa@ss"
    assert parsed.masked == "mysql://app:***@host/db"


def test_secret_query_parameters_are_masked():
    parsed = parse_url("mysql://h/d?password=abc123&passwd=def456&charset=utf8mb4")
    assert parsed.connect_kwargs["passwd"] == "def456"
    assert "abc123" not in parsed.masked and "def456" not in parsed.masked
    assert "charset=utf8mb4" in parsed.masked


def test_huge_integer_parameter_is_a_config_error():
    with pytest.raises(ConfigError, match="connect_timeout"):
        parse_url("mysql://h/d?connect_timeout=" + "9" * 5000)


PORT = closed_port()


def test_a_password_of_digits_in_the_query_stays_a_str():
    from fastpool.url import parse_url

    kw = parse_url("mysql://app@db/shop?password=12345678&connect_timeout=5").connect_kwargs
    assert kw["password"] == "12345678" and kw["connect_timeout"] == 5
    kw = parse_url("postgresql://app@db/shop?password=0042").connect_kwargs
    assert kw["password"] == "0042"


def test_a_host_list_shows_its_ports_and_not_its_password():
    for url, port in (("mysql://app:s3cret@h1:3306,h2:3307/db", 3307),
                      ("postgresql://app:s3cret@h1:5432,h2:5433/db", 5433)):
        pytest.importorskip("MySQLdb" if url.startswith("mysql") else "psycopg")
        parsed = parse_url(url)
        assert parsed.options["hosts"] == (("h1", port - 1), ("h2", port))
        assert "host" not in parsed.connect_kwargs and "port" not in parsed.connect_kwargs
        db = fastpool.open(url)
        try:
            shown = repr(db) + str(db.stats()) + db.name
            assert "s3cret" not in shown and f"h2:{port}" in shown, shown
        finally:
            db.close()
        with pytest.raises(fastpool.ConfigError) as ei:
            fastpool.open(url.replace(f"h2:{port}", "h2:x"))
        assert "s3cret" not in str(ei.value) and "h2" in str(ei.value)


def test_a_driver_int_parameter_that_is_not_one_is_a_config_error():
    pytest.importorskip("MySQLdb")
    with pytest.raises(fastpool.ConfigError, match="connect_timeout.*integer"):
        fastpool.open("mysql://app:s3cret@127.0.0.1/db?connect_timeout=abc").ping(timeout=1)
