"""Settings: the defaults of docs/api.md, accepted forms, and errors that name the key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sessionsvc.settings import ConfigError, Settings


def test_defaults_follow_the_spec() -> None:
    settings = Settings.from_config({})
    assert settings.touch_interval == 60
    assert settings.max_sessions_per_user == 100
    assert settings.access_expires == 900
    assert settings.refresh_expires == 30 * 86400 == 2592000
    assert settings.key_prefix == "sessionsvc"
    assert settings.redis_url is None
    assert settings.trusted_proxies == 0
    assert settings.geoip_db is None
    assert settings.idle_timeout is None
    assert settings.revoke_on_anomaly is False
    assert settings.login_rate_limit == "10/minute"
    assert settings.metrics is True


@pytest.mark.parametrize(
    ("key", "attribute"),
    [
        ("JWT_ACCESS_TOKEN_EXPIRES", "access_expires"),
        ("JWT_REFRESH_TOKEN_EXPIRES", "refresh_expires"),
        ("SESSIONSVC_TOUCH_INTERVAL", "touch_interval"),
        ("SESSIONSVC_IDLE_TIMEOUT", "idle_timeout"),
    ],
)
@pytest.mark.parametrize(
    ("value", "seconds"),
    [(timedelta(minutes=5), 300), (300, 300), (timedelta(days=2), 172800), (2, 2)],
)
def test_durations_take_timedelta_or_seconds(
    key: str, attribute: str, value: Any, seconds: int
) -> None:
    # An idle timeout must be longer than the touch interval.
    config = {key: value, "SESSIONSVC_TOUCH_INTERVAL": 1} if "IDLE" in key else {key: value}
    assert getattr(Settings.from_config(config), attribute) == seconds


@pytest.mark.parametrize(("idle", "touch"), [(60, 60), (30, 60), (1, 1)])
def test_idle_timeout_must_be_longer_than_the_touch_interval(idle: int, touch: int) -> None:
    config = {"SESSIONSVC_IDLE_TIMEOUT": idle, "SESSIONSVC_TOUCH_INTERVAL": touch}
    with pytest.raises(ConfigError, match=r"SESSIONSVC_IDLE_TIMEOUT.*SESSIONSVC_TOUCH_INTERVAL"):
        Settings.from_config(config)
    config["SESSIONSVC_IDLE_TIMEOUT"] = touch + 1
    assert Settings.from_config(config).idle_timeout == touch + 1


def test_values_are_read_from_config() -> None:
    settings = Settings.from_config(
        {
            "SESSIONSVC_REDIS_URL": "redis://cache:6379/1",
            "SESSIONSVC_KEY_PREFIX": "myapp:sessions",
            "SESSIONSVC_MAX_SESSIONS_PER_USER": 1,
            "SESSIONSVC_TRUSTED_PROXIES": 2,
            "SESSIONSVC_GEOIP_DB": "/data/city.mmdb",
            "SESSIONSVC_REVOKE_ON_ANOMALY": True,
            "SESSIONSVC_LOGIN_RATE_LIMIT": "5/second",
            "SESSIONSVC_METRICS": False,
        }
    )
    assert settings.redis_url == "redis://cache:6379/1"
    assert settings.key_prefix == "myapp:sessions"
    assert settings.max_sessions_per_user == 1
    assert settings.trusted_proxies == 2
    assert settings.geoip_db == "/data/city.mmdb"
    assert settings.revoke_on_anomaly is True
    assert settings.login_rate_limit == "5/second"
    assert settings.metrics is False


@pytest.mark.parametrize(
    "key", ["SESSIONSVC_REDIS_URL", "SESSIONSVC_GEOIP_DB", "SESSIONSVC_LOGIN_RATE_LIMIT"]
)
def test_empty_strings_mean_unset(key: str) -> None:
    settings = Settings.from_config({key: ""})
    attribute = {
        "SESSIONSVC_REDIS_URL": "redis_url",
        "SESSIONSVC_GEOIP_DB": "geoip_db",
        "SESSIONSVC_LOGIN_RATE_LIMIT": "login_rate_limit",
    }[key]
    assert getattr(settings, attribute) is None


DURATION_KEYS = [
    "JWT_ACCESS_TOKEN_EXPIRES",
    "JWT_REFRESH_TOKEN_EXPIRES",
    "SESSIONSVC_TOUCH_INTERVAL",
    "SESSIONSVC_IDLE_TIMEOUT",
]
BAD_DURATIONS = [
    0,
    -1,
    timedelta(0),
    timedelta(seconds=-30),
    timedelta(seconds=1.5),
    True,
    False,
    1.5,
    "60",
    [],
]

BAD_VALUES: list[tuple[str, Any]] = [
    *((key, value) for key in DURATION_KEYS for value in BAD_DURATIONS),
    ("JWT_ACCESS_TOKEN_EXPIRES", None),
    ("JWT_REFRESH_TOKEN_EXPIRES", None),
    ("SESSIONSVC_TOUCH_INTERVAL", None),
    ("SESSIONSVC_KEY_PREFIX", "app{x}"),
    ("SESSIONSVC_KEY_PREFIX", "{"),
    ("SESSIONSVC_KEY_PREFIX", "app}"),
    ("SESSIONSVC_KEY_PREFIX", ""),
    ("SESSIONSVC_KEY_PREFIX", None),
    ("SESSIONSVC_KEY_PREFIX", 7),
    ("SESSIONSVC_MAX_SESSIONS_PER_USER", 0),
    ("SESSIONSVC_MAX_SESSIONS_PER_USER", -5),
    ("SESSIONSVC_MAX_SESSIONS_PER_USER", True),
    ("SESSIONSVC_MAX_SESSIONS_PER_USER", "100"),
    ("SESSIONSVC_MAX_SESSIONS_PER_USER", 2.5),
    ("SESSIONSVC_TRUSTED_PROXIES", -1),
    ("SESSIONSVC_TRUSTED_PROXIES", "1"),
    ("SESSIONSVC_TRUSTED_PROXIES", False),
    ("SESSIONSVC_REVOKE_ON_ANOMALY", "true"),
    ("SESSIONSVC_REVOKE_ON_ANOMALY", 1),
    ("SESSIONSVC_REVOKE_ON_ANOMALY", None),
    ("SESSIONSVC_METRICS", "false"),
    ("SESSIONSVC_METRICS", 0),
    ("SESSIONSVC_REDIS_URL", 6379),
    ("SESSIONSVC_GEOIP_DB", 1),
    ("SESSIONSVC_LOGIN_RATE_LIMIT", 10),
]


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_bad_value_raises_config_error_naming_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=key):
        Settings.from_config({key: value})


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_idle_timeout_none_is_off() -> None:
    assert Settings.from_config({"SESSIONSVC_IDLE_TIMEOUT": None}).idle_timeout is None
