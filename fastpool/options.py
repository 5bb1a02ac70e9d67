"""Pool options: their defaults and validation."""

from __future__ import annotations

import math
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
}

_SIZES = ("max_open", "max_idle", "min_idle")
# Durations that must be > 0 when given (None = forever / off).
_POSITIVE_SECONDS = ("max_lifetime", "max_idle_time", "leak_timeout")


def check_option(name: str, value: Any) -> Any:
    """Return the normalised value of one option, or raise ConfigError naming it."""
    if name not in DEFAULTS:
        known = ", ".join(sorted(DEFAULTS))
        raise ConfigError(f"unknown option {name!r} (known options: {known})")
    if name in _SIZES:
        if value is None and name == "max_idle":
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
        if value < 0:
            raise ConfigError(f"{name} must be >= 0, got {value!r}")
        return value
    # Durations in seconds.
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds or None, got {value!r}")
    value = float(value)
    if math.isnan(value) or value < 0:
        raise ConfigError(f"{name} must be >= 0 seconds or None, got {value!r}")
    if name in _POSITIVE_SECONDS and value == 0:
        raise ConfigError(f"{name} must be > 0 seconds, or None to turn it off, got {value!r}")
    if math.isinf(value):
        return None
    return value


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Validate user options and merge them over the defaults."""
    merged = dict(DEFAULTS)
    for name, value in options.items():
        merged[name] = check_option(name, value)
    return merged
