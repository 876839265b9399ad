"""A Flask app with its own users that mounts sessionsvc: the README's "Use it in your app".

Run it: ``python examples/host_app.py`` (an embedded development store unless
``SESSIONSVC_REDIS_URL`` is set), then::

    curl -s -X POST localhost:5000/signup -H 'Content-Type: application/json' \\
      -d '{"email": "ada@example.com", "password": "correct horse"}'
    curl -s -X POST localhost:5000/login -H 'Content-Type: application/json' \\
      -d '{"email": "ada@example.com", "password": "correct horse"}'

The app keeps its users in its own SQLite table; sessionsvc keeps the
sessions. The whole recipe: login opens a session, refresh rotates its
tokens, logout ends it, a password change ends the user's other sessions,
and ``/api/v1/sessions`` (mounted by the extension) lists and revokes them.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from typing import Any

# README.md ("Use it in your app") shows the lines from here to "recipe: end" as they are.
from flask import Blueprint, Flask, abort, current_app, jsonify, request
from flask_jwt_extended import get_jwt, jwt_required
from werkzeug.security import check_password_hash, generate_password_hash

from sessionsvc import SessionManager

sessions = SessionManager()  # sessions.init_app(app) in the app factory, below
host = Blueprint("host", __name__)


@host.post("/login")
def login() -> Any:
    email, password = _credentials("email", "password")
    user = _db().execute("SELECT id, password FROM users WHERE email = ?", (email,)).fetchone()
    if user is None or not check_password_hash(user[1], password):
        abort(401)
    # Opens a session from this request (address, user agent) and signs its tokens.
    return jsonify(sessions.open(str(user[0])).to_json())


@host.post("/refresh")
@jwt_required(refresh=True)
def refresh() -> Any:
    # New tokens for the same session; this refresh token is spent (presented
    # again, it revokes the session: reason refresh_reuse).
    return jsonify(sessions.rotate(get_jwt()).to_json())


@host.post("/logout")
@jwt_required()
def logout() -> Any:
    token = get_jwt()  # sub: your user id; sid: the session's id
    sessions.revoke(token["sub"], token["sid"], current=token["sid"])  # reason: logout
    return "", 204


@host.post("/password")
@jwt_required()
def change_password() -> Any:
    current, new = _credentials("current_password", "new_password")
    token = get_jwt()
    user_id = int(token["sub"])
    user = _db().execute("SELECT password FROM users WHERE id = ?", (user_id,)).fetchone()
    if user is None or not check_password_hash(user[0], current):
        abort(401)
    if len(new) < 8:
        abort(400)
    with _db() as db:
        db.execute(
            "UPDATE users SET password = ? WHERE id = ?", (generate_password_hash(new), user_id)
        )
    # Every other device is signed out (their next request is 401); this one stays.
    revoked = sessions.revoke_all(token["sub"], reason="password_changed", keep=token["sid"])
    return jsonify(revoked=revoked)


@host.get("/me")
@jwt_required()  # 401 (your revoked_token_loader) as soon as the session is revoked
def me() -> Any:
    user_id = int(get_jwt()["sub"])
    user = _db().execute("SELECT email FROM users WHERE id = ?", (user_id,)).fetchone()
    return jsonify(email=user[0] if user else None)


# recipe: end


@host.post("/signup")
def signup() -> Any:
    email, password = _credentials("email", "password")
    with _db() as db:
        try:
            db.execute(
                "INSERT INTO users (email, password) VALUES (?, ?)",
                (email, generate_password_hash(password)),
            )
        except sqlite3.IntegrityError:
            abort(409)
    return "", 201


def create_app(config: dict[str, Any] | None = None, **session_options: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(
        # Your own signing key: at least 32 bytes for HS256.
        JWT_SECRET_KEY=os.environ.get("JWT_SECRET_KEY") or secrets.token_urlsafe(32),
        SESSIONSVC_REDIS_URL=os.environ.get("SESSIONSVC_REDIS_URL"),
        DATABASE=":memory:",
    )
    app.config.update(config or {})
    if session_options:
        SessionManager(app, **session_options)  # e.g. redis_client=... in tests
    else:
        sessions.init_app(app)
    app.extensions["host_db"] = _connect(app.config["DATABASE"])
    app.register_blueprint(host)
    return app


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute(
        "CREATE TABLE IF NOT EXISTS users ("
        " id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL, password TEXT NOT NULL)"
    )
    return db


def _db() -> sqlite3.Connection:
    db: sqlite3.Connection = current_app.extensions["host_db"]
    return db


def _credentials(*fields: str) -> list[str]:
    """The body's string fields, non-empty (400 otherwise)."""
    body = request.get_json(silent=True) or {}
    values = [body.get(field) for field in fields]
    if not all(isinstance(value, str) and value for value in values):
        abort(400)
    return values


if __name__ == "__main__":
    create_app().run(debug=True)
