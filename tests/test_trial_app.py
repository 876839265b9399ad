"""Issue 22, done: the trial app (tests/apps/trial_app.py, a host app with its
own users, login, token answers and admins) mounts sessionsvc without
surprises, served for real by ``flask run`` and by gunicorn with two workers
on the test Redis (each server once per module, under a key prefix and a
users table of its own)."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask_jwt_extended import create_access_token

from sessionsvc import SessionManager, current_manager
from tests.backends import delete_prefix
from tests.clients import FIREFOX_LINUX, JWT_KEY, exchange
from tests.servers import ROOT, HostProcess, free_port, service_env

pytestmark = pytest.mark.slow

APP = "tests.apps.trial_app"
ROOT_USER = ("root@trial.example", "root's long password")
BOB = ("bob@trial.example", "bob's long password")
CAROL = ("carol@trial.example", "carol's long password")
PROBLEM = "application/problem+json"
SESSIONLESS = "not create_access_token()"
MISSPELT = (
    "unknown environment variable SESSIONSVC_MAX_SESSIONS is ignored: "
    "did you mean SESSIONSVC_MAX_SESSIONS_PER_USER?"
)


def trial_env(redis_url: str, prefix: str, database: Path) -> dict[str, str]:
    return service_env(
        JWT_SECRET_KEY=JWT_KEY,
        SESSIONSVC_REDIS_URL=redis_url,
        SESSIONSVC_KEY_PREFIX=prefix,
        TRIAL_DATABASE=str(database),
        # A key the team misspelt: warned about, and otherwise ignored.
        SESSIONSVC_MAX_SESSIONS="5",
    )


def run_python(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in the checkout, as a command of the trial app's team runs."""
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60,
        check=False,
    )  # fmt: skip


@dataclass
class Trial:
    """The trial app as a server serves it, and the store it writes to."""

    server: HostProcess
    workers: int
    redis_url: str
    prefix: str

    def call(
        self, method: str, path: str, token: str | None = None, body: Any = None
    ) -> tuple[int, str, Any, str]:
        """(status, content type, parsed body, the answering worker's pid)."""
        status, headers, parsed = exchange(method, self.server.base + path, token=token, body=body)
        return status, headers.get_content_type(), parsed, headers["X-Worker"]

    def login(self, user: tuple[str, str]) -> dict[str, Any]:
        email, password = user
        body = {"email": email, "password": password}
        status, _, pair, _ = self.call("POST", "/login", body=body)
        assert status == 200, pair
        return dict(pair)

    def both_sides(self, token: str) -> tuple[tuple[int, str, Any], tuple[int, str, str]]:
        """The host's /me answer to ``token``, and sessionsvc's (its problem's code)."""
        host = self.call("GET", "/me", token)[:3]
        status, kind, body, _ = self.call("GET", "/api/v1/sessions", token)
        return host, (status, kind, body["code"])

    def signed(self, user_id: str, **options: Any) -> str:
        """A token signed with the trial app's key by ``create_access_token``: no session."""
        with self.beside().app_context():
            token: str = create_access_token(user_id, **options)
            current_manager().store.close()
        return token

    def beside(self) -> Flask:
        """An app of the test's on the trial app's store and signing key."""
        app = Flask("beside")
        app.config.update(
            TESTING=True,
            JWT_SECRET_KEY=JWT_KEY,
            SESSIONSVC_REDIS_URL=self.redis_url,
            SESSIONSVC_KEY_PREFIX=self.prefix,
        )
        SessionManager(app)
        return app


@pytest.fixture(scope="module", params=["flask run", "gunicorn -w 2"])
def trial(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Trial]:
    prefix = f"sessionsvc-test-{secrets.token_hex(6)}"
    env = trial_env(redis_url, prefix, tmp_path_factory.mktemp("trial") / "users.db")
    port = free_port()
    if request.param == "flask run":
        command = [sys.executable, "-m", "flask", "--app", APP, "run", "--port", str(port)]
    else:
        bind = f"127.0.0.1:{port}"
        command = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", bind, f"{APP}:app"]
    server = HostProcess(command, env, port).start()
    try:
        yield Trial(server, 1 if request.param == "flask run" else 2, redis_url, prefix)
    finally:
        server.stop()
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        delete_prefix(client, prefix)
        client.close()


def answered_by_every_worker(trial: Trial, token: str, status: int) -> set[str]:
    """Ask /me with ``token`` until each worker answered (each time ``status``)."""
    workers: set[str] = set()
    # Whichever worker accepts a connection answers it: on a loaded machine
    # one may take dozens in a row.
    for _ in range(400):
        answered, _, body, worker = trial.call("GET", "/me", token)
        assert answered == status, body
        workers.add(worker)
        if len(workers) == trial.workers:
            break
    return workers


# 1. The admin routes: on, and the host's admin table decides.
def test_the_hosts_admins_reach_the_admin_routes_and_a_roles_claim_does_not(
    trial: Trial,
) -> None:
    root, bob = trial.login(ROOT_USER), trial.login(BOB)
    path = "/api/v1/admin/users/2/sessions"
    status, _, listed, _ = trial.call("GET", path, root["access_token"])
    assert status == 200, listed
    assert bob["session_id"] in {s["id"] for s in listed["sessions"]}
    # Bob is no admin of the host's, whatever his token's roles say.
    app = trial.beside()
    with app.test_request_context():
        claimed = current_manager().open("2", claims={"roles": ["admin"]})
        current_manager().store.close()
    for token in (bob["access_token"], claimed.access_token):
        status, kind, body, _ = trial.call("GET", path, token)
        assert (status, kind, body["code"]) == (403, PROBLEM, "forbidden")


# 2. The host's expired_token_loader on its routes; problem documents on sessionsvc's.
def test_an_expired_token_gets_the_hosts_answer_on_its_routes_only(trial: Trial) -> None:
    expired = trial.signed("2", expires_delta=timedelta(seconds=-60))
    assert trial.both_sides(expired) == (
        (401, "application/json", {"error": "token_expired"}),
        (401, PROBLEM, "token_expired"),
    )


# 3. One store for every worker: fresh tokens work and revokes bite in each.
def test_fresh_tokens_work_in_every_worker_and_revokes_bite_at_once(trial: Trial) -> None:
    pairs = [trial.login(BOB) for _ in range(30)]
    for pair in pairs:
        assert len(answered_by_every_worker(trial, pair["access_token"], 200)) == trial.workers
    for pair in pairs[:10]:
        assert trial.call("POST", "/logout", pair["access_token"])[0] == 204
        # The very next request, in whichever worker, and then in every one.
        assert len(answered_by_every_worker(trial, pair["access_token"], 401)) == trial.workers
    for pair in pairs[10:]:
        assert trial.call("GET", "/me", pair["access_token"])[0] == 200


# 3, on the embedded store (no Redis): shared by the package's gunicorn
# settings, refused by plain gunicorn with two workers.
def test_on_the_embedded_store_the_packages_gunicorn_settings_share_it(tmp_path: Path) -> None:
    env = trial_env("", "trial", tmp_path / "users.db")
    del env["SESSIONSVC_REDIS_URL"]
    port = free_port()
    config = "python:sessionsvc.gunicorn_config"
    command = [sys.executable, "-m", "gunicorn", "-c", config, "-w", "2", f"{APP}:app"]
    server = HostProcess(command, {**env, "SESSIONSVC_BIND": f"127.0.0.1:{port}"}, port).start()
    try:
        trial = Trial(server, 2, "", "trial")
        for pair in [trial.login(BOB) for _ in range(10)]:
            assert len(answered_by_every_worker(trial, pair["access_token"], 200)) == 2
    finally:
        server.stop()


def test_on_the_embedded_store_two_plain_gunicorn_workers_do_not_start(tmp_path: Path) -> None:
    env = trial_env("", "trial", tmp_path / "users.db")
    del env["SESSIONSVC_REDIS_URL"]
    empty = tmp_path / "gunicorn.conf.py"  # not the checkout's, which gunicorn reads by itself
    empty.write_text("")
    bind = f"127.0.0.1:{free_port()}"
    result = run_python(
        ["-m", "gunicorn", "-c", str(empty), "-w", "2", "-b", bind, f"{APP}:app"], env
    )
    assert result.returncode != 0
    assert "each of the server's 2 workers would keep a private store" in result.stderr


# 4. The document and /docs: exactly the routes mounted, none of the host's.
def test_the_docs_serve_exactly_the_mounted_routes(trial: Trial) -> None:
    status, _, document, _ = trial.call("GET", "/apispec.json")
    assert status == 200
    assert sorted(document["paths"]) == [
        "/api/v1/admin/users/{user_id}/events",
        "/api/v1/admin/users/{user_id}/sessions",
        "/api/v1/admin/users/{user_id}/sessions/{session_id}",
        "/api/v1/sessions",
        "/api/v1/sessions/events",
        "/api/v1/sessions/{session_id}",
        "/api/v1/sessions/{session_id}/confirm",
        "/api/v1/sessions/{session_id}/deny",
    ]
    with urllib.request.urlopen(trial.server.base + "/docs", timeout=10) as page:
        assert (page.status, page.headers.get_content_type()) == (200, "text/html")
        assert "/apispec.json" in page.read().decode()


# 5. The recipe: login, refresh, logout, password change.
def test_the_recipe_signs_in_refreshes_signs_out_and_changes_the_password(trial: Trial) -> None:
    laptop, phone = trial.login(CAROL), trial.login(CAROL)
    status, _, renewed, _ = trial.call("POST", "/refresh", phone["refresh_token"])
    assert (status, renewed["session_id"]) == (200, phone["session_id"])
    assert trial.call("GET", "/me", renewed["access_token"])[:3] == (
        200,
        "application/json",
        {"email": CAROL[0]},
    )
    # The spent refresh token again: the host's revoked answer, and the session is over.
    reused = trial.call("POST", "/refresh", phone["refresh_token"])
    assert reused[:3] == (401, "application/json", {"error": "token_revoked"})
    assert trial.call("GET", "/me", renewed["access_token"])[0] == 401

    phone = trial.login(CAROL)
    assert trial.call("POST", "/logout", phone["access_token"])[0] == 204
    assert trial.call("GET", "/me", phone["access_token"])[2] == {"error": "token_revoked"}
    assert trial.call("GET", "/me", laptop["access_token"])[0] == 200

    phone = trial.login(CAROL)
    change = {"current_password": CAROL[1], "new_password": "carol's new password"}
    wrong = {**change, "current_password": "not hers"}
    assert trial.call("POST", "/password", laptop["access_token"], wrong)[0] == 401
    changed = trial.call("POST", "/password", laptop["access_token"], change)
    assert changed[:3] == (200, "application/json", {"revoked": 1})
    assert trial.call("GET", "/me", phone["access_token"])[0] == 401
    assert trial.call("GET", "/me", laptop["access_token"])[0] == 200
    assert trial.call("POST", "/login", body={"email": CAROL[0], "password": CAROL[1]})[0] == 401
    assert trial.login((CAROL[0], change["new_password"]))["session_id"]
    with trial.beside().app_context():
        events = current_manager().events_for("3", limit=50)
        current_manager().store.close()
    reasons = [e.detail["reason"] for e in events if e.type == "session.revoked"]
    assert reasons == ["password_changed", "logout", "refresh_reuse"]


# 6. Diagnostics: a token without a session, and a misspelt key.
def test_a_token_without_a_session_is_refused_and_the_log_says_why_once(trial: Trial) -> None:
    sessionless = trial.signed("2")
    for _ in range(3 * trial.workers):
        assert trial.both_sides(sessionless) == (
            (401, "application/json", {"error": "token_revoked"}),
            (401, PROBLEM, "invalid_token"),
        )
    said = trial.server.output().count(SESSIONLESS)
    assert 1 <= said <= trial.workers  # once per process
    assert "sessions.open(user_id)" in trial.server.output()
    assert MISSPELT in trial.server.output()


# 7. The CLI of a host app: the session commands only.
def test_the_trial_apps_cli_lists_only_the_session_commands(redis_url: str, tmp_path: Path) -> None:
    env = trial_env(redis_url, f"sessionsvc-test-{secrets.token_hex(6)}", tmp_path / "users.db")
    done = run_python(["-m", "flask", "--app", APP, "sessions", "--help"], env)
    assert done.returncode == 0, done.stderr
    commands = re.findall(r"^  ([a-z-]+)", done.stdout.split("Commands:")[1], re.M)
    assert commands == ["audit", "list", "revoke", "revoke-all", "webhooks"]


#: In a process of its own: the trial app is imported (built), then building
#: a user-agent parser fails; its first authenticated requests must not need to.
_FIRST_REQUEST = """
import ua_parser.regex
from tests.apps.trial_app import app


def built_during_a_request(*args, **kwargs):
    raise AssertionError("a user-agent parser was built during a request")


ua_parser.regex.Resolver.__init__ = built_during_a_request
client = app.test_client()
agent = {"User-Agent": AGENT}
pair = client.post("/login", json={"email": EMAIL, "password": PASSWORD}, headers=agent)
auth = {"Authorization": "Bearer " + pair.get_json()["access_token"], **agent}
me = client.get("/me", headers=auth)
listed = client.get("/api/v1/sessions", headers=auth).get_json()
print(me.status_code, listed["sessions"][0]["device"]["browser"])
"""


# 8. A fresh worker's first request: the parsers are built at start-up.
def test_the_trial_apps_first_request_builds_no_parser(redis_url: str, tmp_path: Path) -> None:
    prefix = f"sessionsvc-test-{secrets.token_hex(6)}"
    script = (
        _FIRST_REQUEST.replace("AGENT", repr(FIREFOX_LINUX))
        .replace("EMAIL", repr(BOB[0]))
        .replace("PASSWORD", repr(BOB[1]))
    )
    try:
        done = run_python(["-c", script], trial_env(redis_url, prefix, tmp_path / "users.db"))
    finally:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        delete_prefix(client, prefix)
        client.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["200", "Firefox"]
