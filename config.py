"""Configuration of the standalone service, read from the environment.

Each variable has the name of the Flask config key it sets; which keys there
are, and what kind of value each takes, is
:data:`sessionsvc.settings.KEYS` (the README's configuration table lists
them). Unset variables keep the defaults. Durations are whole seconds,
booleans ``true``/``false``/``1``/``0``; an empty variable is unset, except
for text, where it is the empty string (``SESSIONSVC_LOGIN_RATE_LIMIT=''``
turns the limit off).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sessionsvc.settings import KEYS

_TRUE, _FALSE = ("true", "1"), ("false", "0")


def _integer(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {value!r}") from None


def _number(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {value!r}") from None


def _boolean(name: str, value: str) -> bool:
    word = value.strip().lower()
    if word not in _TRUE + _FALSE:
        raise SystemExit(f"{name} must be true, false, 1 or 0, got {value!r}")
    return word in _TRUE


_PARSERS = {
    "integer": _integer,
    "number": _number,
    "seconds": lambda name, value: timedelta(seconds=_integer(name, value)),
    "boolean": _boolean,
}


def from_env(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The Flask config values set in ``environ``."""
    config: dict[str, Any] = {}
    for key in KEYS:
        value = environ.get(key.name)
        if value is None:
            continue
        if key.kind == "text":
            config[key.name] = value
        elif value or key.kind == "boolean":
            config[key.name] = _PARSERS[key.kind](key.name, value)
    return config
