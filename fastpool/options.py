"""Pool options: their defaults and validation.

Every value of every option either takes effect or is refused with a ``ConfigError`` that
names the option; nothing else escapes (no ``OverflowError`` from a huge integer, no
``TypeError`` from a wrong type), so a refused live assignment leaves the pool as it was.
"""

from __future__ import annotations

import math
import operator
from typing import Any

from .errors import ConfigError

# The options of API.md and their defaults. max_idle=None follows max_open.
DEFAULTS: dict[str, Any] = {
    "max_open": 10,
    "max_idle": None,
    "min_idle": 0,
    "max_lifetime": 3600.0,
    "max_idle_time": 300.0,
    "timeout": 30.0,
    "leak_timeout": None,
    "statement_timeout": None,
    # Hooks, backpressure, events (fastpool/hooks.py).
    "name": None,  # None: derived from the URL (no password) or the connect callable
    "max_waiting": None,  # None: unlimited
    "configure": None,
    "check": None,
    "check_after": 0.0,
    "reset": None,
}

_SIZES = ("max_open", "max_idle", "min_idle", "max_waiting")
_NONE_SIZES = ("max_idle", "max_waiting")
HOOKS = ("configure", "check", "reset")
# A pool's name goes into every metric's labels: short, printable, one line.
MAX_NAME_LENGTH = 200
# Durations that must be > 0 when given (None = forever / off).
_POSITIVE_SECONDS = ("max_lifetime", "max_idle_time", "leak_timeout", "statement_timeout")

# The largest size the core accepts: far beyond any database's connection limit, and small
# enough that the core's counts (C integers) can never overflow adding them up.
MAX_SIZE = 2**31 - 1
# The longest finite duration, about 31.7 years; longer is spelt None (or inf): forever.
MAX_SECONDS = 1e9


def show(value: Any) -> str:
    """A short, safe rendering of a user's value for an error message.

    repr() of a huge int raises ValueError past 4300 digits and of an arbitrary object may
    be long or fail; the message must always be built.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except Exception:
        return f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def check_size(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an int >= 0, got {show(value)}")
    try:
        n = operator.index(value)
    except TypeError:
        raise ConfigError(f"{name} must be an int >= 0, got {show(value)}") from None
    if n < 0:
        raise ConfigError(f"{name} must be >= 0, got {show(value)}")
    if n > MAX_SIZE:
        raise ConfigError(f"{name} must be at most {MAX_SIZE}, got {show(value)}")
    return n


def check_seconds(name: str, value: Any, *, positive: bool) -> float | None:
    """A duration in seconds: None or inf mean forever; NaN, negatives, bools, non-numbers
    and finite values past MAX_SECONDS are refused; positive=True refuses 0 as well."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds or None, got {show(value)}")
    try:
        seconds = float(value)
    except OverflowError:  # an int too big for a float: no finite duration is that long
        raise ConfigError(
            f"{name} must be at most {MAX_SECONDS:g} seconds, or None for forever, got {show(value)}"
        ) from None
    if math.isnan(seconds) or seconds < 0:
        raise ConfigError(f"{name} must be >= 0 seconds or None, got {show(value)}")
    if positive and seconds == 0:
        raise ConfigError(f"{name} must be > 0 seconds, or None to turn it off, got {show(value)}")
    if math.isinf(seconds):
        return None
    if seconds > MAX_SECONDS:
        raise ConfigError(
            f"{name} must be at most {MAX_SECONDS:g} seconds, or None for forever, got {show(value)}"
        )
    return seconds


def check_option(name: str, value: Any) -> Any:
    """Return the normalised value of one option, or raise ConfigError naming it."""
    if name not in DEFAULTS:
        known = ", ".join(sorted(DEFAULTS))
        raise ConfigError(f"unknown option {show(name)} (known options: {known})")
    if name in _SIZES:
        return check_size(name, value, allow_none=name in _NONE_SIZES)
    if name in HOOKS:
        if value is not None and not callable(value):
            raise ConfigError(f"{name} must be a callable taking the driver connection, or None,"
                              f" got {show(value)}")
        return value
    if name == "name":
        return check_name(value)
    return check_seconds(name, value, positive=name in _POSITIVE_SECONDS)


def check_name(value: Any) -> str | None:
    if value is None:
        return None
    if (not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH
            or not value.isprintable()):
        raise ConfigError(
            f"name must be a non-empty printable str of at most {MAX_NAME_LENGTH} characters,"
            f" got {show(value)}"
        )
    return value


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Validate user options and merge them over the defaults."""
    merged = dict(DEFAULTS)
    for name, value in options.items():
        merged[name] = check_option(name, value)
    return merged
