"""Typed, validated settings read once from ``app.config``.

Every configuration key, its default and its kind of value live in
:data:`KEYS`; ``config.py`` reads the environment by it, and the README's
configuration table is checked against it. A bad value fails at
``init_app`` with an error that names the key.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import importlib.util
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from limits import parse_many

from .models import EVENT_TYPES


@dataclass(frozen=True)
class Key:
    """One configuration key."""

    name: str
    #: Its value when the app's config does not set it (``None``: unset).
    default: Any
    #: How the environment writes it: ``text``, ``integer``, ``number``,
    #: ``seconds`` (whole seconds; a ``timedelta`` or an int in Python) or
    #: ``boolean`` (``true``/``false``/``1``/``0``).
    kind: str


#: Every configuration key the service reads, in the README's order: the
#: extension's ``SESSIONSVC_*`` keys, and the flask-jwt-extended keys whose
#: defaults the service sets (lifetimes) or needs (the signing key).
KEYS: tuple[Key, ...] = (
    Key("SESSIONSVC_REDIS_URL", None, "text"),
    Key("JWT_SECRET_KEY", None, "text"),
    Key("JWT_ACCESS_TOKEN_EXPIRES", timedelta(minutes=15), "seconds"),
    Key("JWT_REFRESH_TOKEN_EXPIRES", timedelta(days=30), "seconds"),
    Key("SESSIONSVC_KEY_PREFIX", "sessionsvc", "text"),
    Key("SESSIONSVC_MAX_SESSIONS_PER_USER", 100, "integer"),
    Key("SESSIONSVC_TOUCH_INTERVAL", 60, "seconds"),
    Key("SESSIONSVC_TRUSTED_PROXIES", 0, "integer"),
    Key("SESSIONSVC_GEOIP_DB", None, "text"),
    Key("SESSIONSVC_IDLE_TIMEOUT", None, "seconds"),
    Key("SESSIONSVC_REVOKE_ON_ANOMALY", False, "boolean"),
    Key("SESSIONSVC_DPOP", "optional", "text"),
    Key("SESSIONSVC_DPOP_MAX_AGE", 60, "seconds"),
    Key("SESSIONSVC_LOGIN_RATE_LIMIT", "10/minute", "text"),
    Key("SESSIONSVC_PASSWORD_HASHES", None, "integer"),
    Key("SESSIONSVC_METRICS", True, "boolean"),
    Key("SESSIONSVC_METRICS_TOKEN", None, "text"),
    Key("SESSIONSVC_EVENTS_MAX", 1000, "integer"),
    Key("SESSIONSVC_ADMIN_ROUTES", False, "boolean"),
    Key("SESSIONSVC_STORE_TIMEOUT", 0.5, "number"),
    Key("SESSIONSVC_WEBHOOK_URLS", None, "text"),
    Key("SESSIONSVC_WEBHOOK_SECRET", None, "text"),
    Key("SESSIONSVC_WEBHOOK_EVENTS", None, "text"),
    Key("SESSIONSVC_WEBHOOK_RETRY", "5,300,1800,7200,18000,36000,36000", "text"),
    Key("SESSIONSVC_AUDIT_URL", None, "text"),
    Key("SESSIONSVC_AUDIT_RETENTION_DAYS", 400, "integer"),
)

#: What ``SESSIONSVC_DPOP`` may be: bind a login that carries a valid proof;
#: refuse one that carries none (and unbound tokens); ignore proofs at login.
DPOP_MODES = ("optional", "required", "off")

#: Each key's default, by name.
DEFAULTS: dict[str, Any] = {key.name: key.default for key in KEYS}

#: ``SESSIONSVC_*`` environment variables that are no Flask config key: the
#: standalone server's (``gunicorn.conf.py``), the test suite's and the
#: example client's (README). Known, so they draw no warning.
OTHER_VARIABLES: tuple[str, ...] = (
    "SESSIONSVC_BIND",
    "SESSIONSVC_THREADS",
    "SESSIONSVC_MAX_CONNECTIONS_PER_CLIENT",
    "SESSIONSVC_TEST_REDIS_URL",
    "SESSIONSVC_TEST_SCREENSHOTS",
    "SESSIONSVC_TEST_CHROMIUM",
    "SESSIONSVC_PASSWORD",
)


_PREFIX = "SESSIONSVC_"


def unknown_keys(config: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    """A warning for each ``SESSIONSVC_*`` name in ``config`` or ``environ``
    that the service does not read, naming the closest one it does.

    A misspelt key (``SESSIONSVC_REDIS_URI``) is otherwise ignored in
    silence, and its default used: the embedded development store, say.
    So is a key set in the environment of an app that reads only its config
    (a host app: the standalone service's ``config.py`` copies the
    environment into the config), which is said too.
    """
    keys = [key.name for key in KEYS if key.name.startswith(_PREFIX)]
    warnings = [
        f"environment variable {name} is set but the app's config has no {name}: "
        "the extension reads the app's config (copy it there)"
        for name in sorted(environ)
        if name in keys and environ[name] and name not in config
    ]
    for where, names in (("configuration key", config), ("environment variable", environ)):
        known = keys if where == "configuration key" else [*keys, *OTHER_VARIABLES]
        for name in sorted(names):
            if not name.startswith(_PREFIX) or name in known:
                continue
            # Compared without the prefix every name shares.
            close = difflib.get_close_matches(
                name.removeprefix(_PREFIX), [k.removeprefix(_PREFIX) for k in known], n=1
            )
            hint = f"did you mean {_PREFIX}{close[0]}?" if close else "docs/api.md lists the keys"
            warnings.append(f"unknown {where} {name} is ignored: {hint}")
    return warnings


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the key."""


def _seconds(key: str, value: Any, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        raise ConfigError(f"{key} must be a timedelta or a whole number of seconds, got {value!r}")
    if seconds <= 0 or seconds != int(seconds):
        raise ConfigError(f"{key} must be a positive whole number of seconds, got {value!r}")
    return int(seconds)


def _int(key: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


def _optional_str(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def _secret(key: str, value: Any, *, minimum: int) -> str | None:
    text = _optional_str(key, value)
    if text is not None and (len(text) < minimum or not text.isascii() or not text.isprintable()):
        # Never echo the value: it is a secret.
        raise ConfigError(f"{key} must be at least {minimum} printable ASCII characters")
    return text


def _rate_limit(key: str, value: Any) -> str | None:
    text = _optional_str(key, value)
    if text is not None:
        try:
            parse_many(text)
        except ValueError:
            raise ConfigError(
                f"{key} must be in flask-limiter notation such as '10/minute' "
                f"(or '' for no limit), got {value!r}"
            ) from None
    return text


def _text_list(key: str, value: Any) -> list[str]:
    """A comma-separated string, or a list or tuple of strings, as a list."""
    if value is None:
        return []
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        items = list(value)
    else:
        raise ConfigError(f"{key} must be a comma-separated string or a list of strings")
    return [item.strip() for item in items if item.strip()]


def redact(url: str) -> str:
    """A webhook URL fit for logs and the status: without credentials,
    query or fragment (which may carry secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path or '/'}"


def _webhook_urls(key: str, value: Any) -> tuple[str, ...]:
    urls = _text_list(key, value)
    for url in urls:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or not url.isascii()
            or not url.isprintable()
            or " " in url
        ):
            # Not echoed whole: a URL may carry a password or a token.
            raise ConfigError(
                f"{key}: each endpoint must be an http:// or https:// URL with a host, "
                "in printable ASCII without spaces"
            )
    if len({redact(url) for url in urls}) != len(urls):
        # An endpoint is known by its URL without credentials and query.
        raise ConfigError(f"{key} names the same endpoint twice")
    return tuple(urls)


#: A Standard Webhooks secret's prefix.
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` + base64)."""
    return base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)


def _webhook_secret(key: str, value: Any, *, required: bool) -> str | None:
    text = _optional_str(key, value)
    if text is None:
        if required:
            raise ConfigError(f"{key} is required when SESSIONSVC_WEBHOOK_URLS is set")
        return None
    try:
        size = len(webhook_key(text)) if text.startswith(WEBHOOK_SECRET_PREFIX) else 0
    except (binascii.Error, ValueError):
        size = 0
    if not 24 <= size <= 64:
        # Never echo the value: it is a secret.
        raise ConfigError(f"{key} must be 'whsec_' followed by the base64 of 24 to 64 random bytes")
    return text


def _webhook_events(key: str, value: Any) -> frozenset[str] | None:
    if value is None or value == "":
        return None
    types = _text_list(key, value)
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown or not types:
        raise ConfigError(
            f"{key} must list event types among {', '.join(EVENT_TYPES)}; got {value!r}"
        )
    return frozenset(types)


def _webhook_retry(key: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)) and all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    ):
        delays = list(value)
    elif isinstance(value, str):
        try:
            delays = [int(item) for item in _text_list(key, value)]
        except ValueError:
            delays = [0]
    else:
        delays = [0]
    if any(delay < 1 for delay in delays):
        raise ConfigError(
            f"{key} must be whole numbers of seconds >= 1, comma-separated, got {value!r}"
        )
    return tuple(delays)


def _audit_url(key: str, value: Any) -> str | None:
    """The audit URL, once the packages its engine needs are installed."""
    url = _optional_str(key, value)
    if url is None:
        return None
    scheme = url.split(":", 1)[0].lower()
    # PostgreSQL through psycopg 3 only: SQLAlchemy's default driver for a
    # bare postgresql:// is psycopg2, which the package does not install.
    if scheme not in ("sqlite", "postgresql+psycopg"):
        raise ConfigError(
            f"{key} must be a sqlite:/// or postgresql+psycopg:// URL, got {scheme}://..."
        )
    if (
        importlib.util.find_spec("sqlalchemy") is None
        or importlib.util.find_spec("alembic") is None
    ):
        raise ConfigError(f"{key} is set: the audit trail needs pip install 'sessionsvc[audit]'")
    if scheme != "sqlite" and importlib.util.find_spec("psycopg") is None:
        raise ConfigError(f"{key} is a PostgreSQL URL: it needs pip install 'sessionsvc[postgres]'")
    from .sql.urls import url_problem

    problem = url_problem(url)
    if problem is not None:
        raise ConfigError(f"{key} {problem}")
    return url


@dataclass(frozen=True)
class Settings:
    """The extension's settings for one app, validated once."""

    #: Redis URL; ``None`` selects the embedded development store.
    redis_url: str | None
    #: Namespace of every key the service writes.
    key_prefix: str
    #: Opening one more session than this evicts the least recently active.
    max_sessions_per_user: int
    #: Seconds between two activity writes of one session.
    touch_interval: int
    #: Number of proxies whose ``X-Forwarded-For`` is trusted.
    trusted_proxies: int
    #: Path of a MaxMind-format database, or ``None``.
    geoip_db: str | None
    #: Seconds of inactivity after which a session is dead, or ``None``.
    idle_timeout: int | None
    #: Revoke a session on an anomaly instead of only recording it.
    revoke_on_anomaly: bool
    #: flask-limiter notation for login attempts; ``None`` when off.
    login_rate_limit: str | None
    #: Serve Prometheus metrics at ``/metrics`` (standalone service).
    metrics: bool
    #: The bearer token that opens ``/metrics`` to any address; ``None``:
    #: only to clients on loopback.
    metrics_token: str | None = field(repr=False)
    #: Security events kept per user (older ones are trimmed).
    events_max: int
    #: Seconds to wait for the store before answering 503.
    store_timeout: float
    #: Access-token lifetime in seconds.
    access_expires: int
    #: Session (and refresh-token) lifetime in seconds.
    refresh_expires: int
    #: Where security events are posted; empty: webhooks are off.
    webhook_urls: tuple[str, ...] = ()
    #: The Standard Webhooks signing secret (``whsec_...``).
    webhook_secret: str | None = field(default=None, repr=False)
    #: The event types posted; ``None``: all of them.
    webhook_events: frozenset[str] | None = None
    #: Seconds before each retry of a failed delivery.
    webhook_retry: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    #: The audit trail's SQLAlchemy URL; ``None``: no audit trail.
    audit_url: str | None = field(default=None, repr=False)
    #: Days an audit row is kept.
    audit_retention_days: int = 400
    #: Password hashes one process runs at once (default: its CPUs).
    password_hashes: int = 1
    #: Mount the admin routes (the standalone service does by default).
    admin_routes: bool = False
    #: DPoP proofs at login: one of :data:`DPOP_MODES`.
    dpop: str = "optional"
    #: Seconds a DPoP proof's ``iat`` may lie in the past.
    dpop_max_age: int = 60

    def seen_since(self) -> int:
        """The idle timeout as a cutoff now: a session last seen before it is
        dead (``0``: none). Whole seconds, as last-seen times are stored."""
        idle = self.idle_timeout
        return int(time.time()) - idle + 1 if idle is not None else 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Build settings from a Flask config, raising :class:`ConfigError` on bad values."""

        def get(key: str) -> Any:
            return config.get(key, DEFAULTS[key])

        prefix = get("SESSIONSVC_KEY_PREFIX")
        if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
            # A brace in the prefix would become the Redis Cluster hash tag.
            raise ConfigError(
                "SESSIONSVC_KEY_PREFIX must be a non-empty string without '{' or '}', "
                f"got {prefix!r}"
            )
        timeout = get("SESSIONSVC_STORE_TIMEOUT")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(
                f"SESSIONSVC_STORE_TIMEOUT must be a positive number, got {timeout!r}"
            )
        access = _seconds("JWT_ACCESS_TOKEN_EXPIRES", get("JWT_ACCESS_TOKEN_EXPIRES"))
        refresh = _seconds("JWT_REFRESH_TOKEN_EXPIRES", get("JWT_REFRESH_TOKEN_EXPIRES"))
        assert access is not None
        assert refresh is not None
        touch = _seconds("SESSIONSVC_TOUCH_INTERVAL", get("SESSIONSVC_TOUCH_INTERVAL"))
        assert touch is not None
        idle = _seconds("SESSIONSVC_IDLE_TIMEOUT", get("SESSIONSVC_IDLE_TIMEOUT"), allow_none=True)
        if idle is not None and idle <= touch:
            # Last-seen times are written once per touch interval: a shorter
            # idle timeout would end sessions that are in use.
            raise ConfigError(
                f"SESSIONSVC_IDLE_TIMEOUT ({idle} s) must be longer than "
                f"SESSIONSVC_TOUCH_INTERVAL ({touch} s)"
            )
        webhook_urls = _webhook_urls("SESSIONSVC_WEBHOOK_URLS", get("SESSIONSVC_WEBHOOK_URLS"))
        hashes = get("SESSIONSVC_PASSWORD_HASHES")
        dpop = get("SESSIONSVC_DPOP")
        if dpop not in DPOP_MODES:
            raise ConfigError(
                f"SESSIONSVC_DPOP must be one of {', '.join(DPOP_MODES)}, got {dpop!r}"
            )
        max_age = _seconds("SESSIONSVC_DPOP_MAX_AGE", get("SESSIONSVC_DPOP_MAX_AGE"))
        if not max_age or max_age > 3600:
            raise ConfigError(f"SESSIONSVC_DPOP_MAX_AGE must be 1 to 3600 seconds, got {max_age!r}")
        return cls(
            redis_url=_optional_str("SESSIONSVC_REDIS_URL", get("SESSIONSVC_REDIS_URL")),
            key_prefix=prefix,
            max_sessions_per_user=_int(
                "SESSIONSVC_MAX_SESSIONS_PER_USER",
                get("SESSIONSVC_MAX_SESSIONS_PER_USER"),
                minimum=1,
            ),
            touch_interval=touch,
            trusted_proxies=_int(
                "SESSIONSVC_TRUSTED_PROXIES", get("SESSIONSVC_TRUSTED_PROXIES"), minimum=0
            ),
            geoip_db=_optional_str("SESSIONSVC_GEOIP_DB", get("SESSIONSVC_GEOIP_DB")),
            idle_timeout=idle,
            revoke_on_anomaly=_bool(
                "SESSIONSVC_REVOKE_ON_ANOMALY", get("SESSIONSVC_REVOKE_ON_ANOMALY")
            ),
            login_rate_limit=_rate_limit(
                "SESSIONSVC_LOGIN_RATE_LIMIT", get("SESSIONSVC_LOGIN_RATE_LIMIT")
            ),
            metrics=_bool("SESSIONSVC_METRICS", get("SESSIONSVC_METRICS")),
            metrics_token=_secret(
                "SESSIONSVC_METRICS_TOKEN", get("SESSIONSVC_METRICS_TOKEN"), minimum=16
            ),
            events_max=_int("SESSIONSVC_EVENTS_MAX", get("SESSIONSVC_EVENTS_MAX"), minimum=1),
            store_timeout=float(timeout),
            access_expires=access,
            refresh_expires=refresh,
            webhook_urls=webhook_urls,
            webhook_secret=_webhook_secret(
                "SESSIONSVC_WEBHOOK_SECRET",
                get("SESSIONSVC_WEBHOOK_SECRET"),
                required=bool(webhook_urls),
            ),
            webhook_events=_webhook_events(
                "SESSIONSVC_WEBHOOK_EVENTS", get("SESSIONSVC_WEBHOOK_EVENTS")
            ),
            webhook_retry=_webhook_retry(
                "SESSIONSVC_WEBHOOK_RETRY", get("SESSIONSVC_WEBHOOK_RETRY")
            ),
            audit_url=_audit_url("SESSIONSVC_AUDIT_URL", get("SESSIONSVC_AUDIT_URL")),
            audit_retention_days=_int(
                "SESSIONSVC_AUDIT_RETENTION_DAYS", get("SESSIONSVC_AUDIT_RETENTION_DAYS"), minimum=1
            ),
            admin_routes=_bool("SESSIONSVC_ADMIN_ROUTES", get("SESSIONSVC_ADMIN_ROUTES")),
            dpop=dpop,
            dpop_max_age=max_age,
            password_hashes=(
                available_cpus()
                if hashes is None
                else _int("SESSIONSVC_PASSWORD_HASHES", hashes, minimum=1)
            ),
        )
