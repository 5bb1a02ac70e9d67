"""Database URLs: ``mysql://user:pw@host:port/db?charset=utf8mb4``, ``sqlite:///file.db``,
``postgresql://user:pw@host:port/db?sslmode=require`` (also ``postgres://``).

One parse (the standard library's ``urlsplit``) gives both the connect arguments and the
printable form, so the password that is used and the part that is masked cannot disagree.
A URL that cannot be read without guessing where the password ends (an ``@``, ``/``,
``?`` or ``#`` left unencoded in it) is refused, and no error ever echoes the URL as given:
errors show the masked form, or, when even that cannot be built, only the scheme.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from .errors import ConfigError

MASK = "***"
# Query parameters whose values are secrets (mysqlclient takes password= and passwd=);
# ssl_key names where a private key lives: not shown either.
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|credential|auth|key", re.IGNORECASE)
# Driver parameters longer than this many digits are refused, not turned into huge ints.
_MAX_INT_DIGITS = 18
# ?driver= of a mysql:// URL, and the dialect each names (the last two: fastpool.aio).
MYSQL_DRIVERS = {"mysqlclient": "mysql", "mysqldb": "mysql", "pymysql": "pymysql",
                 "asyncmy": "asyncmy", "aiomysql": "aiomysql"}
# libpq's target_session_attrs values, as the pool's target option.
TARGET_SESSION_ATTRS = {"any": "any", "read-write": "primary", "primary": "primary",
                        "read-only": "replica", "standby": "replica",
                        "prefer-standby": "prefer-replica"}
# The port a host without one takes, per scheme (libpq's and MySQL's defaults).
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
_ENCODE_HINT = (
    "percent-encode '@', '/', ':', '?' and '#' in the user name and password"
    " (%40 %2F %3A %3F %23)"
)


@dataclass(frozen=True)
class DatabaseURL:
    scheme: str
    masked: str
    connect_kwargs: dict[str, Any] = field(repr=False)
    # The pool's default name: the masked URL less the password and the query.
    name: str = ""
    # The driver ?driver= chose (a dialect name), or "" for the scheme's default.
    driver: str = ""
    # Pool options the URL carries (postgresql://...?behind_pooler=true).
    options: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"DatabaseURL({self.masked!r})"


def mask_url(url: str) -> str:
    """The URL with its password (and secret query parameters) replaced by ``***``.

    Goes through the same parse as :func:`parse_url`; a URL that does not parse is masked
    wholesale: everything between ``://`` and its last ``@`` is hidden.
    """
    try:
        return parse_url(url).masked
    except ConfigError as exc:
        shown = getattr(exc, "masked_url", None)
        return shown if shown is not None else _mask_unparsed(url)


def _mask_unparsed(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return f"{MASK}"
    if "@" in rest:
        rest = MASK + "@" + rest.rpartition("@")[2]
    return f"{scheme}://{rest}"


def _refuse(reason: str, shown: str) -> ConfigError:
    err = ConfigError(f"unparsable database URL {shown[:197] + '...' if len(shown) > 200 else shown!r}: {reason}")
    err.masked_url = shown  # type: ignore[attr-defined]  # what mask_url() shows for it
    return err


def _masked_query(query: str) -> str:
    if not query:
        return ""
    pairs = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        pairs.append(f"{key}={MASK if _SECRET_PARAM.search(key) else value}")
    return "?" + "&".join(pairs)


def _render(parts: SplitResult, *, port_ok: bool = True) -> str:
    """scheme://user:***@host:port/path?query, built from the parsed parts."""
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user = userinfo.split(":", 1)[0]
        shown_user = f"{user}:{MASK}@" if ":" in userinfo else f"{user}@"
    else:
        shown_user = ""
    if not port_ok:
        # The text after the last ':' is not a port, so it may be a password that lost
        # its '@host': never show it.
        host = hostport.rpartition(":")[0] if ":" in hostport else hostport
        hostport = f"{host}:{MASK}"
    return f"{parts.scheme}://{shown_user}{hostport}{parts.path}{_masked_query(parts.query)}"


def _coerce(key: str, value: str, shown: str) -> Any:
    # Driver parameters come as strings; integers (connect_timeout, port, ...) are passed
    # as ints since mysqlclient rejects a str there. ASCII digits only: int() would also
    # take other scripts' digits.
    if re.fullmatch(r"-?[0-9]+", value):
        if len(value.lstrip("-")) > _MAX_INT_DIGITS:
            raise _refuse(f"parameter {key!r} is out of range ({len(value)} digits)", shown)
        return int(value)
    return value


def parse_url(url: str) -> DatabaseURL:
    if not isinstance(url, str):
        raise ConfigError(f"database URL must be a str, got {type(url).__name__}")
    scheme, sep, _rest = url.partition("://")
    if not sep or not scheme:
        raise ConfigError("unparsable database URL: expected scheme://... (the URL is not shown:"
                          " it may hold a password)")
    try:
        parts = urlsplit(url)
    except ValueError:
        # urlsplit's own message can quote the host part, credentials included.
        raise _refuse(f"the host part is malformed: {_ENCODE_HINT}", _mask_unparsed(url)) from None
    scheme = parts.scheme.lower()
    if scheme in ("mysql", "mariadb", "mysql+mysqldb"):
        return _mysql_url(parts, url)
    if scheme == "sqlite":
        return _sqlite_url(parts, url)
    if scheme in ("postgresql", "postgres"):
        return _postgresql_url(parts, url)
    raise ConfigError(
        f"unknown URL scheme {parts.scheme!r} in {_mask_unparsed(url)!r}"
        " (supported: mysql://, sqlite://, postgresql://)"
    )


def _params(parts: SplitResult, shown: str) -> dict[str, Any]:
    # A secret stays the string it is: a password of digits is still a password (as an int
    # the driver refused it with a TypeError).
    return {k: v if _SECRET_PARAM.search(k) else _coerce(k, v, shown)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)}


def _server_url(parts: SplitResult, url: str, default_port: int,
                database_key: str) -> tuple[str, dict[str, Any], tuple[tuple[str, int], ...]]:
    """(the masked URL, the connect keywords, the host list) of a server URL: user,
    password, host, port, database (under database_key) and the query's parameters. With
    a host list (libpq's h1:5432,h2:5432) the keywords have no host or port: the list has
    them, each host with its port or default_port."""
    # urlsplit ends the host part at the first '/', '?' or '#'. If an '@' comes after that,
    # a password held one of those characters unencoded: where it ends is a guess, and a
    # guess could connect with one password while printing another. Refuse instead.
    if "@" in parts.path or "@" in parts.query or "@" in parts.fragment:
        raise _refuse(f"'@' after the host: {_ENCODE_HINT}", _mask_unparsed(url))
    hostport = parts.netloc.rpartition("@")[2]
    masked = _render(parts)
    kwargs: dict[str, Any] = {}
    hosts: tuple[tuple[str, int], ...] = ()
    if "," in hostport:
        hosts = parse_host_list(hostport, default_port, masked)
    else:
        try:
            port = parts.port
        except ValueError:
            raise _refuse(f"the port is not a number: {_ENCODE_HINT}",
                          _render(parts, port_ok=False)) from None
        if parts.hostname:
            kwargs["host"] = parts.hostname
        if port is not None:
            kwargs["port"] = port
    if parts.username:
        kwargs["user"] = unquote(parts.username)
    if parts.password is not None:
        kwargs["password"] = unquote(parts.password)
    database = unquote(parts.path.lstrip("/"))
    if database:
        kwargs[database_key] = database
    kwargs.update(_params(parts, masked))
    return masked, kwargs, hosts


def parse_host_list(text: str, default_port: int, shown: str) -> tuple[tuple[str, int], ...]:
    """libpq's host list, ``h1:5432,h2,[::1]:5433``, as (host, port) pairs; a host without
    a port takes default_port. An empty entry, a port that is not a number from 1 to 65535,
    or a host listed twice is a ConfigError (its ports are shown: they are no secret)."""
    hosts: list[tuple[str, int]] = []
    for i, item in enumerate(text.split(","), 1):
        m = re.fullmatch(r"\[([^\]]*)\](?::(.*))?|([^:\[\]]*)(?::(.*))?", item)
        host = "" if m is None else (m.group(1) if m.group(1) is not None else m.group(3))
        port_text = None if m is None else (m.group(2) if m.group(1) is not None else m.group(4))
        if not host:
            raise ConfigError(f"host {i} of the host list in {shown!r} is empty")
        if port_text is None or port_text == "":
            port = default_port
        elif re.fullmatch(r"[0-9]{1,5}", port_text) and 0 < int(port_text) < 65536:
            port = int(port_text)
        else:
            raise ConfigError(f"the port of host {i} ({host!r}) in {shown!r} is not a number"
                              f" from 1 to 65535: {port_text[:20]!r}")
        if (host.lower(), port) in [(h.lower(), p) for h, p in hosts]:
            raise ConfigError(f"host {host}:{port} is listed twice in {shown!r}")
        hosts.append((host, port))
    return tuple(hosts)


def _display_name(parts: SplitResult) -> str:
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{parts.netloc.rpartition('@')[2]}{parts.path}"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _postgresql_url(parts: SplitResult, url: str) -> DatabaseURL:
    masked, kwargs, hosts = _server_url(parts, url, DEFAULT_PORTS["postgresql"], "dbname")
    driver = str(kwargs.pop("driver", "")).lower()
    if driver and driver not in ("psycopg", "psycopg3", "asyncpg"):
        raise ConfigError(f"unknown driver {driver!r} for a postgresql:// URL (known: psycopg,"
                          f" asyncpg) in {masked!r}")
    options: dict[str, Any] = {}
    if "behind_pooler" in kwargs:
        value = str(kwargs.pop("behind_pooler")).lower()
        if value not in _TRUE | _FALSE:
            raise ConfigError(f"behind_pooler must be true or false, got {value!r} in {masked!r}")
        options["behind_pooler"] = value in _TRUE
    # libpq's multi-host parameters are the pool's target and load_balance: the pool, not
    # libpq, picks the host of each connection (and keeps picking after a failover).
    if "target_session_attrs" in kwargs:
        value = str(kwargs.pop("target_session_attrs")).lower()
        if value not in TARGET_SESSION_ATTRS:
            raise ConfigError(f"target_session_attrs must be one of"
                              f" {', '.join(TARGET_SESSION_ATTRS)}, got {value!r} in {masked!r}")
        options["target"] = TARGET_SESSION_ATTRS[value]
    if "load_balance_hosts" in kwargs:
        value = str(kwargs.pop("load_balance_hosts")).lower()
        if value not in ("disable", "random"):
            raise ConfigError(f"load_balance_hosts must be disable or random, got {value!r}"
                              f" in {masked!r}")
        options["load_balance"] = "random" if value == "random" else "least-used"
    if hosts:
        options["hosts"] = hosts
    # libpq's own parameters are strings; psycopg passes them through as they are.
    kwargs = {k: str(v) if k not in ("port", "connect_timeout") else v for k, v in kwargs.items()}
    return DatabaseURL("postgresql", masked, kwargs, _display_name(parts),
                       "asyncpg" if driver == "asyncpg" else "", options)


def _mysql_url(parts: SplitResult, url: str) -> DatabaseURL:
    masked, kwargs, hosts = _server_url(parts, url, DEFAULT_PORTS["mysql"], "database")
    driver = str(kwargs.pop("driver", "")).lower()
    if driver and driver not in MYSQL_DRIVERS:
        raise ConfigError(f"unknown driver {driver!r} for a mysql:// URL (known: "
                          f"{', '.join(MYSQL_DRIVERS)}) in {masked!r}")
    return DatabaseURL("mysql", masked, kwargs, _display_name(parts), MYSQL_DRIVERS.get(driver, ""),
                       {"hosts": hosts} if hosts else {})


def _sqlite_url(parts: SplitResult, url: str) -> DatabaseURL:
    # sqlite://:memory: and sqlite:///:memory: are one in-memory database shared by all
    # of the pool's connections (each plain ":memory:" connection would have its own).
    # sqlite:///rel/path.db is relative, sqlite:////abs/path.db absolute (SQLAlchemy's rule).
    rest = url.split("://", 1)[1].split("?", 1)[0]
    if rest in (":memory:", "/:memory:", ""):
        database = ":memory:"
    else:
        if parts.netloc:
            # Whatever stands there (credentials, a host) is not shown.
            raise ConfigError(
                "sqlite URL takes no host or credentials: use sqlite:///relative.db or"
                f" sqlite:////abs.db, got 'sqlite://{MASK}/...'"
            )
        database = unquote(parts.path[1:])
    masked = f"sqlite://{rest}{_masked_query(parts.query)}"
    return DatabaseURL("sqlite", masked, {"database": database, **_params(parts, masked)},
                       f"sqlite://{rest}")
