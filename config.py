"""Configuration of the standalone service, read from the environment.

Each variable has the name of the Flask config key it sets (see the README's
configuration table); unset variables keep the defaults. Durations are whole
seconds, booleans ``true``/``false``/``1``/``0``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

STRINGS = (
    "SESSIONSVC_REDIS_URL",
    "SESSIONSVC_KEY_PREFIX",
    "SESSIONSVC_GEOIP_DB",
    "SESSIONSVC_LOGIN_RATE_LIMIT",
    "JWT_SECRET_KEY",
)
INTEGERS = (
    "SESSIONSVC_MAX_SESSIONS_PER_USER",
    "SESSIONSVC_TRUSTED_PROXIES",
    "SESSIONSVC_EVENTS_MAX",
)
DURATIONS = (
    "JWT_ACCESS_TOKEN_EXPIRES",
    "JWT_REFRESH_TOKEN_EXPIRES",
    "SESSIONSVC_TOUCH_INTERVAL",
    "SESSIONSVC_IDLE_TIMEOUT",
)
BOOLEANS = ("SESSIONSVC_REVOKE_ON_ANOMALY", "SESSIONSVC_METRICS")
FLOATS = ("SESSIONSVC_STORE_TIMEOUT",)

_TRUE, _FALSE = ("true", "1"), ("false", "0")


def _integer(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{key} must be a whole number, got {value!r}") from None


def from_env(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The Flask config values set in ``environ``."""
    config: dict[str, Any] = {}
    for key in STRINGS:
        if key in environ:
            config[key] = environ[key]
    for key in INTEGERS:
        if environ.get(key):
            config[key] = _integer(key, environ[key])
    for key in DURATIONS:
        if environ.get(key):
            config[key] = timedelta(seconds=_integer(key, environ[key]))
    for key in BOOLEANS:
        if key in environ:
            value = environ[key].strip().lower()
            if value not in _TRUE + _FALSE:
                raise SystemExit(f"{key} must be true, false, 1 or 0, got {environ[key]!r}")
            config[key] = value in _TRUE
    for key in FLOATS:
        if environ.get(key):
            try:
                config[key] = float(environ[key])
            except ValueError:
                raise SystemExit(f"{key} must be a number, got {environ[key]!r}") from None
    return config
