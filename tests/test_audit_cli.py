"""The ``flask sessions audit`` commands (sessionsvc/audit_cli.py): status,
prune, run and export, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from flask import Flask

from sessionsvc import create_app, current_manager
from sessionsvc.audit_writer import Writer
from sessionsvc.sql.events import AuditDatabase
from sessionsvc.sql.migrate import upgrade
from sessionsvc.state import current_state
from tests.backends import AppFactory, delete_prefix
from tests.clients import JWT_KEY, Auth
from tests.databases import audit_rows, event, write
from tests.servers import ROOT, free_port, service_env, wait_until
from tests.test_cli import run


def audit_app(make_app: AppFactory, url: str) -> Flask:
    upgrade(url)
    return make_app(SESSIONSVC_AUDIT_URL=url, SESSIONSVC_AUDIT_RETENTION_DAYS=30)


def test_audit_status_counts_rows_backlog_and_lag(make_app: AppFactory, tmp_path: Path) -> None:
    app = audit_app(make_app, f"sqlite:///{tmp_path / 'audit.db'}")
    auth = Auth(app)
    auth.login("alice")
    auth.login("bob")
    waiting = run(app, "audit", "status")
    assert waiting.exit_code == 0, waiting.output
    lines = waiting.output.splitlines()
    assert lines[:4] == [
        "audit schema: 0001 (current)",
        "rows: 0",
        "pending: 0 (taken by a writer, not yet stored)",
        "unread: 2",
    ]
    assert re.fullmatch(r"lag: \d+\.\d s", lines[4]), lines
    with app.app_context():
        state = current_state()
        writer = Writer(state.store, state.settings)
    try:
        # One stream a step: on a Cluster alice's and bob's may be two.
        assert writer.step() + writer.step() == 2
    finally:
        writer.database.close()
    done = run(app, "audit", "status", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == {
        "schema": "0001",
        "head": "0001",
        "current": True,
        "rows": 2,
        "pending": 0,
        "unread": 0,
        "lag_seconds": 0.0,
    }


def test_audit_prune_deletes_past_the_retention(make_app: AppFactory, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    app = audit_app(make_app, url)
    now = datetime.now(UTC)
    row = {"type": "session.created", "user_id": "alice", "account": None, "detail": {}}
    row |= {"session_id": "s", "ip": None, "user_agent": None}
    database = AuditDatabase(url)
    try:
        database.write(
            [
                {**row, "id": "e-1", "at": now - timedelta(days=31)},
                {**row, "id": "e-2", "at": now - timedelta(days=29)},
            ]
        )
        result = run(app, "audit", "prune")
        assert result.exit_code == 0, result.output
        cutoff = re.fullmatch(r"deleted 1 row\(s\) older than (\S+Z)\n", result.output)
        assert cutoff, result.output
        when = datetime.strptime(cutoff.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert abs(when - (now - timedelta(days=30))) < timedelta(seconds=5)
        assert database.count() == 1
        assert run(app, "audit", "prune").output.startswith("deleted 0 row(s) older than ")
    finally:
        database.close()


@pytest.mark.parametrize("command", ["run", "prune"])
def test_audit_commands_refuse_a_schema_not_made_yet(
    make_app: AppFactory, tmp_path: Path, command: str
) -> None:
    app = make_app(SESSIONSVC_AUDIT_URL=f"sqlite:///{tmp_path / 'audit.db'}")
    result = run(app, "audit", command)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "Error: the audit schema does not exist yet: run flask sessions audit upgrade"
    )
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["run", "status", "prune"])
def test_audit_commands_need_the_url(app: Flask, command: str) -> None:
    result = run(app, "audit", command)
    assert (result.exit_code, result.output) == (
        1,
        "Error: the audit trail is off: set SESSIONSVC_AUDIT_URL\n",
    )


def test_audit_run_writes_until_sigterm(redis_url: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    prefix = f"sessionsvc-test-{secrets.token_hex(6)}"
    config = {
        "SESSIONSVC_REDIS_URL": redis_url,
        "SESSIONSVC_KEY_PREFIX": prefix,
        "JWT_SECRET_KEY": JWT_KEY,
        "SESSIONSVC_AUDIT_URL": url,
    }
    app = create_app({"TESTING": True, "SESSIONSVC_LOGIN_RATE_LIMIT": "", **config})
    writer = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "sessions", "audit", "run"],
        cwd=ROOT,
        env=service_env(**config),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        Auth(app).login("alice")
        wait_until(lambda: len(audit_rows(url)) == 1, 20, lambda: "nothing was written")
        writer.send_signal(signal.SIGTERM)
        _, err = writer.communicate(timeout=15)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.communicate()
        with app.app_context():
            current_manager().store.close()
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        delete_prefix(client, prefix)
        client.close()
    assert writer.returncode == 0, err
    lines = err.decode().splitlines()
    assert f"writing the audit trail to {url} as " in lines[0]
    assert lines[-1] == "stopped"
    assert [row["type"] for row in audit_rows(url)] == ["session.created"]


def test_audit_status_with_redis_down_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(
        {"JWT_SECRET_KEY": JWT_KEY, "SESSIONSVC_REDIS_URL": redis_url, "SESSIONSVC_AUDIT_URL": url}
    )
    result = run(app, "audit", "status")
    assert result.exit_code == 1
    assert result.output == "Error: The session store is unavailable; try again shortly.\n"


# -- export ------------------------------------------------------------------------


def exported(result: object) -> list[dict[str, object]]:
    output = result.stdout
    return [json.loads(line) for line in output.splitlines()]


def test_export_writes_every_event_oldest_first_as_the_api_does(
    make_app: AppFactory, audit_url: str
) -> None:
    app = audit_app(make_app, audit_url)
    base = datetime(2026, 12, 5, 6, 0, 1, tzinfo=UTC)
    write(
        audit_url,
        event("e-2", at=base + timedelta(minutes=1), type="session.revoked"),
        event("e-1", at=base, type="session.created", detail={"risk": ["new_device"]}),
        event("e-3", at=base + timedelta(minutes=2), user_id="bob", account="acc-9"),
    )
    result = run(app, "audit", "export")
    assert result.exit_code == 0, result.output
    assert result.stderr == "exported 3 event(s)\n"
    lines = exported(result)
    assert [line["id"] for line in lines] == ["e-1", "e-2", "e-3"]
    assert lines[0] == {
        "id": "e-1",
        "type": "session.created",
        "at": "2026-12-05T06:00:01Z",
        "user_id": "alice",
        "account": "acc-1",
        "session_id": "s-1",
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0",
        "detail": {"risk": ["new_device"]},
    }


def test_export_filters_by_user_and_time_as_the_api_does(
    make_app: AppFactory, audit_url: str
) -> None:
    app = audit_app(make_app, audit_url)
    base = datetime(2026, 12, 5, 6, 0, 0, tzinfo=UTC)
    write(
        audit_url,
        *(event(f"a-{n}", at=base + timedelta(hours=n)) for n in range(4)),
        event("b-1", at=base + timedelta(hours=1), user_id="bob"),
    )
    # since inclusive, until exclusive; an offset is a zone like Z.
    result = run(
        app,
        "audit",
        "export",
        "--user",
        "alice",
        "--since",
        "2026-12-05T08:00:00+01:00",
        "--until",
        "2026-12-05T09:00:00Z",
    )
    assert result.exit_code == 0, result.output
    assert [line["id"] for line in exported(result)] == ["a-1", "a-2"]


def test_export_to_a_file(make_app: AppFactory, audit_url: str, tmp_path: Path) -> None:
    app = audit_app(make_app, audit_url)
    write(audit_url, event("e-1", user_agent="Navigateur — ünïcode"))
    out = tmp_path / "audit.jsonl"
    result = run(app, "audit", "export", "--output", str(out))
    assert result.exit_code == 0, result.output
    [line] = out.read_text("utf-8").splitlines()
    assert json.loads(line)["user_agent"] == "Navigateur — ünïcode"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--since", "2026-12-05T06:00:00"], "'since' has no time zone"),
        (["--until", "yesterday"], "'until' is not an ISO 8601 time"),
        (["--since", "2026-12-06T00:00:00Z", "--until", "2026-12-05T00:00:00Z"], "after"),
        (["--type", "login"], "'type' is not one of"),
        (["--ip", "300.1.1.1"], "'ip' is not an IPv4 or IPv6 address"),
    ],
)
def test_export_refuses_bad_filters_in_one_line(
    make_app: AppFactory, tmp_path: Path, options: list[str], message: str
) -> None:
    app = audit_app(make_app, f"sqlite:///{tmp_path / 'audit.db'}")
    result = run(app, "audit", "export", *options)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_export_of_a_database_that_is_gone_is_one_line(
    make_app: AppFactory, tmp_path: Path
) -> None:
    app = audit_app(make_app, f"sqlite:///{tmp_path / 'audit.db'}")
    (tmp_path / "audit.db").unlink()
    (tmp_path / "audit.db").mkdir()
    result = run(app, "audit", "export")
    assert result.exit_code == 1
    assert result.output.startswith("Error: the audit database is unavailable: ")
    assert len(result.output.splitlines()) == 1
