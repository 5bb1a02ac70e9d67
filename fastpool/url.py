"""Database URLs: ``mysql://user:pw@host:port/db?charset=utf8mb4``, ``sqlite:///file.db``.

Parsed with the standard library. The password is kept only in the connect arguments;
everything printable (``masked``) shows it as ``***``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import ConfigError

_USERINFO_PASSWORD = re.compile(r"(//[^:/@]*:)[^@/]*@")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (works on unparsable URLs too)."""
    return _USERINFO_PASSWORD.sub(r"\1***@", url)


@dataclass(frozen=True)
class DatabaseURL:
    scheme: str
    masked: str
    connect_kwargs: dict[str, Any] = field(repr=False)

    def __repr__(self) -> str:
        return f"DatabaseURL({self.masked!r})"


def _coerce(value: str) -> Any:
    # Driver parameters come as strings; integers (connect_timeout, port, ...) are
    # passed as ints since mysqlclient rejects a str there.
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def parse_url(url: str) -> DatabaseURL:
    if not isinstance(url, str):
        raise ConfigError(f"database URL must be a str, got {type(url).__name__}")
    masked = mask_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"unparsable database URL {masked!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if not scheme or "://" not in url:
        raise ConfigError(f"unparsable database URL {masked!r}: expected scheme://...")
    params = {k: _coerce(v) for k, v in parse_qsl(parts.query, keep_blank_values=True)}
    if scheme in ("mysql", "mariadb", "mysql+mysqldb"):
        return DatabaseURL("mysql", masked, _mysql_kwargs(parts, params, masked))
    if scheme == "sqlite":
        return DatabaseURL("sqlite", masked, _sqlite_kwargs(url, parts, params))
    raise ConfigError(
        f"unknown URL scheme {parts.scheme!r} in {masked!r} (supported: mysql://, sqlite://)"
    )


def _mysql_kwargs(parts: Any, params: dict[str, Any], masked: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"unparsable database URL {masked!r}: bad port") from None
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
        kwargs["database"] = database
    kwargs.update(params)
    return kwargs


def _sqlite_kwargs(url: str, parts: Any, params: dict[str, Any]) -> dict[str, Any]:
    # sqlite://:memory: and sqlite:///:memory: are one in-memory database shared by all
    # of the pool's connections (each plain ":memory:" connection would have its own).
    # sqlite:///rel/path.db is relative, sqlite:////abs/path.db absolute (SQLAlchemy's rule).
    rest = url.split("://", 1)[1].split("?", 1)[0]
    if rest in (":memory:", "/:memory:", ""):
        database = ":memory:"
    else:
        if parts.netloc:
            raise ConfigError(
                f"sqlite URL takes no host: use sqlite:///relative.db or sqlite:////abs.db, got {url!r}"
            )
        database = unquote(parts.path[1:])
    return {"database": database, **params}
