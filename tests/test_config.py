"""config.py: the standalone service's settings from the environment."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

import config
from sessionsvc import Settings
from sessionsvc.settings import KEYS


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


def test_every_key_is_read_from_the_environment_by_its_kind() -> None:
    samples = {"text": "x", "integer": "7", "number": "0.25", "seconds": "30", "boolean": "1"}
    values = config.from_env({key.name: samples[key.kind] for key in KEYS})
    assert set(values) == {key.name for key in KEYS}
    for key in KEYS:
        # The parsed value is of the default's type (durations as timedelta).
        expected = {"text": str, "integer": int, "number": float, "seconds": timedelta}
        assert isinstance(values[key.name], expected.get(key.kind, bool)), key.name


def _readme_default(default: object) -> str:
    """How the README's configuration table writes a default (as the environment would)."""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, timedelta):
        return str(int(default.total_seconds()))
    if isinstance(default, str):
        return f"`{default}`"
    return str(default)


def test_the_readme_configuration_table_lists_every_key_with_its_default() -> None:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text("utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z_]+)` \| ([^|]*) \|", section, re.MULTILINE)
    assert [name for name, _ in rows] == [key.name for key in KEYS]
    for (name, shown), key in zip(rows, KEYS, strict=True):
        if key.default is None:
            assert shown.startswith(("unset", "required")), name
        else:
            assert shown.split(" (")[0] == _readme_default(key.default), name
