"""The trial app: a Flask app written the way a team with an existing
flask-jwt-extended app writes one, which then mounts sessionsvc by the README
and docs/api.md alone (issue 22's "Done when"). tests/test_trial_app.py
serves it with ``flask --app tests.apps.trial_app run`` and with
``gunicorn -w 2 tests.apps.trial_app:app``.

What was the team's before sessionsvc came: its users table (SQLite, with its
own admin flag), its login view, its JWTManager and its token answers
(``{"error": "token_expired"}``), registered before ``init_app``. What it
added: ``SessionManager`` with the admin routes on and its admins named by
its own table, the API docs, and refresh, logout and password change as
docs/api.md's recipe has them.

Configured from the environment: ``JWT_SECRET_KEY``, ``SESSIONSVC_REDIS_URL``,
``SESSIONSVC_KEY_PREFIX`` and ``TRIAL_DATABASE`` (the SQLite file, shared by
the workers). Every answer names the process that gave it (``X-Worker``), so
a test can tell gunicorn's workers apart.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

from flask import Flask, Response, abort, jsonify, request
from flask_jwt_extended import JWTManager, get_jwt, jwt_required
from werkzeug.security import check_password_hash, generate_password_hash

from sessionsvc import SessionManager

# docs/api.md's line for seeing the package's warnings and events.
logging.basicConfig(level=logging.INFO)

#: The team's users: (id, email, password, admin).
SEED = [
    (1, "root@trial.example", "root's long password", 1),
    (2, "bob@trial.example", "bob's long password", 0),
    (3, "carol@trial.example", "carol's long password", 0),
]


@contextmanager
def users() -> Iterator[sqlite3.Connection]:
    """The users table, in a transaction."""
    with closing(sqlite3.connect(os.environ["TRIAL_DATABASE"], timeout=10)) as db, db:
        yield db


with users() as db:
    db.execute(
        "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL,"
        " password TEXT NOT NULL, admin INTEGER NOT NULL DEFAULT 0)"
    )
    for user_id, email, password, admin in SEED:
        if db.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
            db.execute(
                "INSERT OR IGNORE INTO users VALUES (?, ?, ?, ?)",
                (user_id, email, generate_password_hash(password), admin),
            )

app = Flask(__name__)
app.config["JWT_SECRET_KEY"] = os.environ["JWT_SECRET_KEY"]
# Unset: the embedded development store (shared among gunicorn's workers by
# the package's gunicorn settings).
app.config["SESSIONSVC_REDIS_URL"] = os.environ.get("SESSIONSVC_REDIS_URL")
app.config["SESSIONSVC_KEY_PREFIX"] = os.environ.get("SESSIONSVC_KEY_PREFIX", "sessionsvc")
app.config["SESSIONSVC_ADMIN_ROUTES"] = True

# The team's JWT set-up, there before sessionsvc, with its own error format.
jwt = JWTManager(app)


@jwt.expired_token_loader
def token_expired(header: dict[str, Any], payload: dict[str, Any]) -> Any:
    return jsonify(error="token_expired"), 401


@jwt.revoked_token_loader
def token_revoked(header: dict[str, Any], payload: dict[str, Any]) -> Any:
    return jsonify(error="token_revoked"), 401


sessions = SessionManager(app, docs=True)


@sessions.admin_loader
def is_admin(user_id: str, claims: dict[str, Any]) -> bool:
    with users() as db:
        row = db.execute("SELECT admin FROM users WHERE id = ?", (user_id,)).fetchone()
    return row is not None and row[0] == 1


@app.after_request
def served_by(response: Response) -> Response:
    response.headers["X-Worker"] = str(os.getpid())
    return response


def fields(*names: str) -> list[str]:
    body = request.get_json(silent=True) or {}
    values = [body.get(name) for name in names]
    if not all(isinstance(value, str) and value for value in values):
        abort(400)
    return values


@app.post("/login")
def login() -> Any:
    email, password = fields("email", "password")
    with users() as db:
        row = db.execute("SELECT id, password FROM users WHERE email = ?", (email,)).fetchone()
    if row is None or not check_password_hash(row[1], password):
        return jsonify(error="bad_credentials"), 401
    return jsonify(sessions.open(str(row[0])).to_json())


@app.post("/refresh")
@jwt_required(refresh=True)
def refresh() -> Any:
    return jsonify(sessions.rotate(get_jwt()).to_json())


@app.post("/logout")
@jwt_required()
def logout() -> Any:
    token = get_jwt()
    sessions.revoke(token["sub"], token["sid"], current=token["sid"])
    return "", 204


@app.post("/password")
@jwt_required()
def change_password() -> Any:
    current, new = fields("current_password", "new_password")
    token = get_jwt()
    with users() as db:
        row = db.execute("SELECT password FROM users WHERE id = ?", (token["sub"],)).fetchone()
        if row is None or not check_password_hash(row[0], current):
            return jsonify(error="bad_credentials"), 401
        db.execute(
            "UPDATE users SET password = ? WHERE id = ?",
            (generate_password_hash(new), token["sub"]),
        )
    revoked = sessions.revoke_all(token["sub"], reason="password_changed", keep=token["sid"])
    return jsonify(revoked=revoked)


@app.get("/me")
@jwt_required()
def me() -> Any:
    with users() as db:
        row = db.execute("SELECT email FROM users WHERE id = ?", (get_jwt()["sub"],)).fetchone()
    return jsonify(email=row[0])
