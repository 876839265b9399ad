"""config.py: the standalone service's settings from the environment."""

from __future__ import annotations

from datetime import timedelta

import pytest

import config
from sessionsvc import Settings


def test_unset_environment_gives_no_values() -> None:
    assert config.from_env({}) == {}


def test_each_kind_of_value_is_parsed() -> None:
    values = config.from_env(
        {
            "SESSIONSVC_REDIS_URL": "redis://127.0.0.1:6379/2",
            "JWT_SECRET_KEY": "k" * 40,
            "JWT_ACCESS_TOKEN_EXPIRES": "300",
            "JWT_REFRESH_TOKEN_EXPIRES": "86400",
            "SESSIONSVC_TOUCH_INTERVAL": "5",
            "SESSIONSVC_MAX_SESSIONS_PER_USER": "7",
            "SESSIONSVC_TRUSTED_PROXIES": "1",
            "SESSIONSVC_REVOKE_ON_ANOMALY": "TRUE",
            "SESSIONSVC_METRICS": "0",
            "SESSIONSVC_STORE_TIMEOUT": "0.25",
            "SESSIONSVC_LOGIN_RATE_LIMIT": "",
            "UNRELATED": "x",
        }
    )
    assert values == {
        "SESSIONSVC_REDIS_URL": "redis://127.0.0.1:6379/2",
        "JWT_SECRET_KEY": "k" * 40,
        "JWT_ACCESS_TOKEN_EXPIRES": timedelta(seconds=300),
        "JWT_REFRESH_TOKEN_EXPIRES": timedelta(days=1),
        "SESSIONSVC_TOUCH_INTERVAL": timedelta(seconds=5),
        "SESSIONSVC_MAX_SESSIONS_PER_USER": 7,
        "SESSIONSVC_TRUSTED_PROXIES": 1,
        "SESSIONSVC_REVOKE_ON_ANOMALY": True,
        "SESSIONSVC_METRICS": False,
        "SESSIONSVC_STORE_TIMEOUT": 0.25,
        "SESSIONSVC_LOGIN_RATE_LIMIT": "",
    }
    settings = Settings.from_config(values)
    assert settings.access_expires == 300
    assert settings.refresh_expires == 86400
    assert settings.touch_interval == 5
    assert settings.login_rate_limit is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("JWT_ACCESS_TOKEN_EXPIRES", "15m"),
        ("SESSIONSVC_MAX_SESSIONS_PER_USER", "many"),
        ("SESSIONSVC_METRICS", "yes"),
        ("SESSIONSVC_STORE_TIMEOUT", "fast"),
    ],
)
def test_bad_value_stops_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(SystemExit, match=key):
        config.from_env({key: value})
