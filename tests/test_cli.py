"""The ``flask sessions`` command group."""

from __future__ import annotations

import json

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from sessionsvc import SessionManager, accounts, create_app, current_manager
from tests.clients import JWT_KEY, Auth
from tests.servers import free_port


def run(app: Flask, *args: str, input: str | None = None):
    return app.test_cli_runner().invoke(args=["sessions", *args], input=input)


def login_status(client: FlaskClient, username: str, password: str) -> int:
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    return response.status_code


def test_create_user_from_stdin_strips_one_newline(app: Flask, client: FlaskClient) -> None:
    result = run(app, "create-user", "alice", "--password-stdin", input="s3cret-horse\n")
    assert result.exit_code == 0, result.output
    assert "created user 'alice'" in result.output
    assert login_status(client, "alice", "s3cret-horse") == 200
    assert login_status(client, "alice", "s3cret-horse\n") == 401

    result = run(app, "create-user", "bob", "--password-stdin", input="two-lines\n\n")
    assert result.exit_code == 0
    assert login_status(client, "bob", "two-lines\n") == 200
    assert login_status(client, "bob", "two-lines") == 401


def test_create_user_prompts_with_confirmation(app: Flask, client: FlaskClient) -> None:
    result = run(app, "create-user", "carol", input="pw-1-long\npw-1-long\n")
    assert result.exit_code == 0, result.output
    assert login_status(client, "carol", "pw-1-long") == 200


def test_create_admin_grants_the_role(app: Flask) -> None:
    result = run(app, "create-user", "root", "--admin", "--password-stdin", input="root-password\n")
    assert result.exit_code == 0
    assert "(admin)" in result.output
    with app.app_context():
        user = current_manager().store.get_user("root")
    assert user is not None
    assert user.roles == ("admin",)


def test_create_existing_user_fails_and_keeps_the_password(app: Flask, client: FlaskClient) -> None:
    run(app, "create-user", "alice", "--password-stdin", input="first-password\n")
    result = run(app, "create-user", "alice", "--password-stdin", input="second-password\n")
    assert result.exit_code == 1
    assert "already exists" in result.output
    assert login_status(client, "alice", "first-password") == 200
    assert login_status(client, "alice", "second-password") == 401


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("", "at least 8 characters"),
        ("seven77", "at least 8 characters"),
        ("x" * 1025, "at most 1024 characters"),
        ("alice-the-user", "not be the username"),
    ],
)
def test_a_password_the_policy_refuses_creates_no_user(
    app: Flask, password: str, rule: str
) -> None:
    result = run(app, "create-user", "alice-the-user", "--password-stdin", input=password + "\n")
    assert result.exit_code == 1
    assert rule in result.output
    assert len(result.output.strip().splitlines()) == 1
    with app.app_context():
        assert current_manager().store.get_user("alice-the-user") is None


def test_created_users_get_argon2id_hashes_at_owasp_parameters(app: Flask) -> None:
    assert (
        run(app, "create-user", "alice", "--password-stdin", input="a long password\n").exit_code
        == 0
    )
    with app.app_context():
        user = current_manager().store.get_user("alice")
    assert user is not None
    assert user.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_list_revoke_and_revoke_all(app: Flask, auth: Auth) -> None:
    first = auth.login("alice")
    second = auth.login("alice")
    result = run(app, "list", "alice")
    assert result.exit_code == 0
    assert first["session_id"] in result.output
    assert second["session_id"] in result.output
    assert "Chrome 120 on Windows 10" in result.output

    listed = json.loads(run(app, "list", "alice", "--json").output)
    assert {s["id"] for s in listed["sessions"]} == {first["session_id"], second["session_id"]}

    result = run(app, "revoke", "alice", first["session_id"])
    assert result.exit_code == 0
    assert auth.client.get("/api/v1/sessions", headers=auth.headers(first)).status_code == 401
    assert run(app, "revoke", "alice", first["session_id"]).exit_code == 1
    assert run(app, "revoke", "bob", second["session_id"]).exit_code == 1

    result = run(app, "revoke-all", "alice")
    assert result.exit_code == 0
    assert "revoked 1 session(s)" in result.output
    assert "no active sessions" in run(app, "list", "alice").output
    with app.app_context():
        events = current_manager().events_for("alice")
    assert [e.detail["reason"] for e in events if e.type == "session.revoked"] == [
        "admin",
        "admin",
    ]
    assert all(e.ip is None for e in events if e.type == "session.revoked")


def test_ids_starting_with_a_dash_are_arguments(app: Flask, auth: Auth) -> None:
    run(app, "create-user", "-dash", "--password-stdin", input="dash-password\n")
    with app.app_context():
        assert current_manager().store.get_user("-dash") is not None
        pair = current_manager().open("-dash")
        store = current_manager().store
        # Give the session an id that starts with "-", as 1 in 64 do.
        session = store.get("-dash", pair.session_id)
        assert session is not None
        dashed = "-" + pair.session_id[1:]
        client = store.client
        client.rename(
            store.session_key("-dash", pair.session_id), store.session_key("-dash", dashed)
        )
        client.zadd(store.index_key("-dash"), {dashed: session.expires_at})
    result = run(app, "revoke", "-dash", dashed)
    assert result.exit_code == 0, result.output
    assert f"revoked {dashed}" in result.output


def test_store_down_is_a_clean_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app({"JWT_SECRET_KEY": JWT_KEY, "SESSIONSVC_REDIS_URL": url})
    result = run(app, "list", "alice")
    assert result.exit_code == 1
    assert "session store is unavailable" in result.output
    assert "Traceback" not in result.output


# -- the user lifecycle ----------------------------------------------------------------


def test_set_password_changes_it_and_ends_every_session(
    app: Flask, client: FlaskClient, auth: Auth
) -> None:
    tokens = [auth.login("alice", "alice-password") for _ in range(2)]
    result = run(app, "set-password", "alice", "--password-stdin", input="a new password\n")
    assert result.exit_code == 0, result.output
    assert "revoked 2 session(s)" in result.output
    for pair in tokens:
        response = client.get("/api/v1/sessions", headers=Auth.headers(pair))
        assert response.get_json()["code"] == "session_revoked"
    assert login_status(client, "alice", "alice-password") == 401
    assert login_status(client, "alice", "a new password") == 200


@pytest.mark.parametrize(
    "command",
    [
        ("set-password", "nobody", "--password-stdin"),
        ("delete-user", "nobody"),
        ("disable-user", "nobody"),
        ("enable-user", "nobody"),
    ],
)
def test_an_unknown_user_is_one_line_and_exit_1(app: Flask, command: tuple[str, ...]) -> None:
    result = run(app, *command, input="a new password\n")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["Error: No such user."]
    with app.app_context():
        assert current_manager().store.get_user("nobody") is None


def test_set_password_applies_the_policy(app: Flask, client: FlaskClient, auth: Auth) -> None:
    auth.create_user("alice", "alice-password")
    result = run(app, "set-password", "alice", "--password-stdin", input="alice\n")
    assert result.exit_code == 1
    assert "at least 8 characters" in result.output
    assert login_status(client, "alice", "alice-password") == 200


def test_disable_enable_and_delete_a_user(app: Flask, client: FlaskClient, auth: Auth) -> None:
    tokens = auth.login("alice", "alice-password")
    assert run(app, "disable-user", "alice").exit_code == 0
    assert client.get("/api/v1/sessions", headers=Auth.headers(tokens)).status_code == 401
    assert login_status(client, "alice", "alice-password") == 403
    assert run(app, "enable-user", "alice").exit_code == 0
    tokens = auth.login("alice", "alice-password")
    result = run(app, "delete-user", "alice")
    assert result.exit_code == 0
    assert "revoked 1 session(s)" in result.output
    assert client.get("/api/v1/sessions", headers=Auth.headers(tokens)).status_code == 401
    assert login_status(client, "alice", "alice-password") == 401


def test_list_users_in_text_and_json(app: Flask, auth: Auth) -> None:
    auth.create_user("bob", "bob-password")
    auth.create_user("alice", "alice-password", admin=True)
    auth.create_user("a:{odd} name", "odd-password")
    assert run(app, "disable-user", "bob").exit_code == 0
    listed = run(app, "list-users", "--json")
    assert listed.exit_code == 0
    users = json.loads(listed.output)["users"]
    assert [(u["id"], u["roles"], u["disabled"]) for u in users] == [
        ("a:{odd} name", [], False),
        ("alice", ["admin"], False),
        ("bob", [], True),
    ]
    text = run(app, "list-users").output.splitlines()
    assert [line.split("  ")[0] for line in text] == ["a:{odd} name", "alice", "bob"]
    assert text[1].endswith("(admin)") and text[2].endswith("(disabled)")


@pytest.mark.parametrize("command", ["disable-user", "delete-user"])
def test_the_last_admin_is_kept_unless_forced(
    app: Flask, client: FlaskClient, command: str
) -> None:
    run(app, "create-user", "root", "--admin", "--password-stdin", input="root-password\n")
    result = run(app, command, "root")
    assert result.exit_code == 1
    assert "last admin" in result.output and "--force" in result.output
    assert login_status(client, "root", "root-password") == 200  # nothing changed
    result = run(app, command, "root", "--force")
    assert result.exit_code == 0, result.output
    assert "warning: no admin is left" in result.output
    assert login_status(client, "root", "root-password") != 200
    # The CLI is the way back.
    run(app, "create-user", "ops", "--admin", "--password-stdin", input="ops-password\n")
    result = run(app, "disable-user", "ops")
    assert result.exit_code == 1 and "last admin" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ("disable-user", "ops"),
        ("delete-user", "ops"),
        ("create-user", "root", "--admin", "--password-stdin"),
    ],
)
def test_a_change_waiting_too_long_for_the_lock_of_user_changes_is_one_line(
    app: Flask, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    for name in ("ops", "dev"):
        run(app, "create-user", name, "--admin", "--password-stdin", input=f"{name}-password\n")
    with app.app_context():
        store = current_manager().store
    assert store.lock_admins("a process that died", seconds=10)
    monkeypatch.setattr(accounts, "ADMIN_LOCK_WAIT", 0.05)
    result = run(app, *args, input="root-password\n")
    assert result.exit_code == 1
    assert result.output.startswith("Error: Another change of the admins is in progress")
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_an_admin_who_is_not_the_last_is_disabled_without_force(app: Flask) -> None:
    for name in ("root", "ops"):
        run(app, "create-user", name, "--admin", "--password-stdin", input=f"{name}-password\n")
    result = run(app, "disable-user", "ops")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    assert run(app, "delete-user", "root").exit_code == 1  # the last one now
    assert run(app, "enable-user", "ops").exit_code == 0
    assert run(app, "delete-user", "root").exit_code == 0


# -- a host app's group --------------------------------------------------------------

#: What a host app that mounts the extension (no user store) may run.
HOST_COMMANDS = {"list", "revoke", "revoke-all", "webhooks", "audit"}
#: The standalone service's user store, which a host app's users are not in.
USER_COMMANDS = {
    "create-user", "set-password", "delete-user", "disable-user", "enable-user", "list-users",
    "reindex-users",
}  # fmt: skip


def host() -> tuple[Flask, SessionManager]:
    app = Flask("host")
    app.config.update(TESTING=True, JWT_SECRET_KEY=JWT_KEY)
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    return app, SessionManager(app, redis_client=client)


def listed_commands(help_text: str) -> set[str]:
    commands = help_text.split("Commands:\n", 1)[1]
    return {line.split()[0] for line in commands.splitlines() if line.startswith("  ")}


def test_a_host_app_lists_only_the_session_commands() -> None:
    app, _ = host()
    result = run(app, "--help")
    assert result.exit_code == 0, result.output
    assert listed_commands(result.output) == HOST_COMMANDS
    assert "Manage sessionsvc sessions." in result.output
    for command in sorted(USER_COMMANDS):
        result = run(app, command, "alice", input="a-long-password\na-long-password\n")
        assert result.exit_code == 2, command
        assert f"No such command '{command}'" in result.output
    assert "run" in run(app, "webhooks", "--help").output


def test_a_host_apps_session_commands_work() -> None:
    app, sessions = host()
    with app.app_context():
        first = sessions.open("alice", ip="203.0.113.9", user_agent=None)
        sessions.open("alice", ip=None, user_agent=None)
    result = run(app, "list", "alice")
    assert result.exit_code == 0, result.output
    assert first.session_id in result.output
    assert run(app, "revoke", "alice", first.session_id).output == f"revoked {first.session_id}\n"
    assert run(app, "revoke-all", "alice").output == "revoked 1 session(s)\n"
    with app.app_context():
        assert sessions.list_for("alice") == []


def test_the_standalone_service_keeps_every_command(app: Flask) -> None:
    result = run(app, "--help")
    assert result.exit_code == 0, result.output
    assert listed_commands(result.output) == HOST_COMMANDS | USER_COMMANDS
