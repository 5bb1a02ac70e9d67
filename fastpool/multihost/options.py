"""The options of a host list: ``hosts``, ``target``, ``recheck``, ``load_balance``,
``max_replica_lag``, ``replica_fallback``, ``replica_max_open``. Each is checked at
``open()``; a bad one is a ``ConfigError`` naming it."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..options import check_seconds, check_size, show
from ..url import TARGET_SESSION_ATTRS

TARGETS = ("primary", "replica", "prefer-replica", "any")
LOAD_BALANCE = ("least-used", "random")

DEFAULTS: dict[str, Any] = {
    "hosts": None,
    "target": "primary",
    "recheck": 10.0,
    "load_balance": "least-used",
    "max_replica_lag": None,
    "replica_fallback": True,
    "replica_max_open": None,  # None: max_open
}
NAMES = frozenset(DEFAULTS)


def check_target(value: Any) -> str:
    if isinstance(value, str):
        if value in TARGETS:
            return value
        if value.lower() in TARGET_SESSION_ATTRS:  # libpq's spelling
            return TARGET_SESSION_ATTRS[value.lower()]
    raise ConfigError(f"target must be one of {', '.join(TARGETS)} (or a libpq"
                      f" target_session_attrs value), got {show(value)}")


def check_hosts(value: Any, default_port: int) -> tuple[tuple[str, int], ...]:
    """hosts=[("h1", 5432), "h2", ("h3", None)]: (host, port) pairs or bare host names; a
    missing port takes the dialect's default."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"hosts must be a list of (host, port) pairs, got {show(value)}")
    hosts: list[tuple[str, int]] = []
    for i, item in enumerate(value, 1):
        host, port = (item, None) if isinstance(item, str) else _pair(item, i)
        if not isinstance(host, str) or not host or any(c in host for c in ",/@?#") \
                or not host.isprintable():
            raise ConfigError(f"host {i} of hosts must be a non-empty host name, got {show(host)}")
        if port is None:
            port = default_port
        elif isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"the port of host {i} ({host!r}) must be an int from 1 to 65535,"
                              f" got {show(port)}")
        if (host.lower(), port) in [(h.lower(), p) for h, p in hosts]:
            raise ConfigError(f"host {host}:{port} is listed twice in hosts")
        hosts.append((host, port))
    if not hosts:
        raise ConfigError("hosts is empty: give at least one (host, port)")
    return tuple(hosts)


def _pair(item: Any, i: int) -> tuple[Any, Any]:
    try:
        host, port = item
    except (TypeError, ValueError):
        raise ConfigError(f"host {i} of hosts must be a (host, port) pair or a host name,"
                          f" got {show(item)}") from None
    return host, port


def check_multihost_options(options: dict[str, Any], default_port: int) -> dict[str, Any]:
    """Validate the host-list options (the rest are the pool's); merged over DEFAULTS."""
    merged = dict(DEFAULTS)
    for name, value in options.items():
        if name == "hosts":
            merged[name] = check_hosts(value, default_port)
        elif name == "target":
            merged[name] = check_target(value)
        elif name == "recheck":
            seconds = check_seconds("recheck", value, positive=True)
            if seconds is None:
                raise ConfigError(f"recheck must be a number of seconds > 0, got {show(value)}")
            merged[name] = seconds
        elif name == "load_balance":
            if value not in LOAD_BALANCE:
                raise ConfigError(f"load_balance must be one of {', '.join(LOAD_BALANCE)},"
                                  f" got {show(value)}")
            merged[name] = value
        elif name == "max_replica_lag":
            merged[name] = check_seconds("max_replica_lag", value, positive=False)
        elif name == "replica_fallback":
            if not isinstance(value, bool):
                raise ConfigError(f"replica_fallback must be True or False, got {show(value)}")
            merged[name] = value
        elif name == "replica_max_open":
            merged[name] = check_size("replica_max_open", value, allow_none=True)
    return merged

