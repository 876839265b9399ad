"""A Flask app with its own users that mounts sessionsvc: the README's "Use it in your app".

Run it: ``python examples/host_app.py`` (an embedded development store unless
``SESSIONSVC_REDIS_URL`` is set), then::

    curl -s -X POST localhost:5000/signup -H 'Content-Type: application/json' \\
      -d '{"email": "ada@example.com", "password": "correct horse"}'
    curl -s -X POST localhost:5000/login -H 'Content-Type: application/json' \\
      -d '{"email": "ada@example.com", "password": "correct horse"}'

The app keeps its users in its own SQLite table; sessionsvc keeps the
sessions. Login opens one, a password change signs the user out everywhere,
and ``/api/v1/sessions`` (mounted by the extension) lists and revokes them.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from typing import Any

from flask import Flask, abort, jsonify, request
from flask_jwt_extended import get_jwt_identity, jwt_required
from werkzeug.security import check_password_hash, generate_password_hash

from sessionsvc import SessionManager

sessions = SessionManager()


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
    _routes(app)
    return app


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute(
        "CREATE TABLE IF NOT EXISTS users ("
        " id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL, password TEXT NOT NULL)"
    )
    return db


def _db() -> sqlite3.Connection:
    from flask import current_app

    db: sqlite3.Connection = current_app.extensions["host_db"]
    return db


def _credentials() -> tuple[str, str]:
    body = request.get_json(silent=True) or {}
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not isinstance(password, str) or not email:
        abort(400)
    return email, password


def _routes(app: Flask) -> None:
    @app.post("/signup")
    def signup() -> Any:
        email, password = _credentials()
        with _db() as db:
            try:
                db.execute(
                    "INSERT INTO users (email, password) VALUES (?, ?)",
                    (email, generate_password_hash(password)),
                )
            except sqlite3.IntegrityError:
                abort(409)
        return "", 201

    @app.post("/login")
    def login() -> Any:
        email, password = _credentials()
        row = _db().execute("SELECT id, password FROM users WHERE email = ?", (email,)).fetchone()
        if row is None or not check_password_hash(row[1], password):
            abort(401)
        # Opens a session from this request (address, user agent) and signs its tokens.
        return jsonify(sessions.open(str(row[0])).to_json())

    @app.post("/password")
    @jwt_required()
    def change_password() -> Any:
        body = request.get_json(silent=True) or {}
        new = body.get("new_password")
        if not isinstance(new, str) or len(new) < 8:
            abort(400)
        user_id = get_jwt_identity()
        with _db() as db:
            db.execute(
                "UPDATE users SET password = ? WHERE id = ?",
                (generate_password_hash(new), int(user_id)),
            )
        # Sign out everywhere, this device included: its tokens fail from now on.
        revoked = sessions.revoke_all(user_id, reason="admin")
        return jsonify(revoked=revoked)

    @app.get("/me")
    @jwt_required()  # 401 (your revoked_token_loader) as soon as the session is revoked
    def me() -> Any:
        row = (
            _db()
            .execute("SELECT email FROM users WHERE id = ?", (int(get_jwt_identity()),))
            .fetchone()
        )
        return jsonify(email=row[0] if row else None)


if __name__ == "__main__":
    create_app().run(debug=True)
