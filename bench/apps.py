"""The apps the benchmark serves with identical gunicorn settings.

- ``ours``: a host app that mounts sessionsvc and has one protected route.
- ``baseline``: what a Flask team writes without us: flask-jwt-extended with
  its documented Redis blocklist recipe (one ``GET`` of the token's ``jti``)
  and the same protected route.
- ``nocheck``: the same host app with flask-jwt-extended alone and no
  revocation check at all: the limit any check is measured against.
- ``standalone``: the standalone service (``sessionsvc.app.create_app``)
  with the login rate limit off, that ``bench.memory`` signs in to.

All read ``BENCH_REDIS_URL``, ``BENCH_PREFIX`` and ``BENCH_JWT_KEY`` from the
environment: ``gunicorn 'bench.apps:ours()'`` / ``'bench.apps:baseline()'`` /
``'bench.apps:nocheck()'`` / ``'bench.apps:standalone()'``.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from flask import Flask, jsonify
from flask_jwt_extended import JWTManager, jwt_required

from sessionsvc import SessionManager
from sessionsvc.app import create_app

#: The body every protected route answers.
PAYLOAD = {"hello": "world", "items": [1, 2, 3]}


def _config(redis_url: str | None = None) -> dict[str, Any]:
    return {
        "JWT_SECRET_KEY": os.environ["BENCH_JWT_KEY"],
        "SESSIONSVC_REDIS_URL": redis_url or os.environ["BENCH_REDIS_URL"],
        "SESSIONSVC_KEY_PREFIX": os.environ.get("BENCH_PREFIX", "bench"),
    }


def _app(name: str, redis_url: str | None = None) -> Flask:
    """An app named ``name`` with the one protected route every app has."""
    app = Flask(name)
    app.config.update(_config(redis_url))

    @app.get("/protected")
    @jwt_required()
    def protected() -> Any:
        return jsonify(PAYLOAD)

    return app


def ours(redis_url: str | None = None) -> Flask:
    """A host app with sessionsvc mounted."""
    app = _app("bench-ours", redis_url)
    SessionManager(app)
    return app


def baseline() -> Flask:
    """flask-jwt-extended's documented Redis blocklist, nothing else."""
    app = _app("bench-baseline")
    jwt = JWTManager(app)
    # As the recipe does: one module-level client, created at import (before
    # fork; redis-py's pool notices the fork and reconnects in each worker).
    blocklist = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"], decode_responses=True)
    prefix = app.config["SESSIONSVC_KEY_PREFIX"]

    @jwt.token_in_blocklist_loader
    def check_if_token_is_revoked(jwt_header: dict[str, Any], jwt_payload: dict[str, Any]) -> bool:
        return blocklist.get(f"{prefix}:jti:{jwt_payload['jti']}") is not None

    return app


def nocheck() -> Flask:
    """The same host app with flask-jwt-extended alone: no revocation check."""
    app = _app("bench-nocheck")
    JWTManager(app)
    return app


def standalone(redis_url: str | None = None) -> Flask:
    """The standalone service, its login rate limit off: thousands of
    sign-ins from one address are the measure, not an attack."""
    return create_app({**_config(redis_url), "SESSIONSVC_LOGIN_RATE_LIMIT": ""})
