"""The two apps the benchmark serves with identical gunicorn settings.

- ``ours``: a host app that mounts sessionsvc and has one protected route.
- ``baseline``: what a Flask team writes without us: flask-jwt-extended with
  its documented Redis blocklist recipe (one ``GET`` of the token's ``jti``)
  and the same protected route.

Both read ``BENCH_REDIS_URL``, ``BENCH_PREFIX`` and ``BENCH_JWT_KEY`` from the
environment: ``gunicorn 'bench.apps:ours()'`` / ``'bench.apps:baseline()'``.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from flask import Flask, jsonify
from flask_jwt_extended import JWTManager, jwt_required

from sessionsvc import SessionManager

#: The body both protected routes answer.
PAYLOAD = {"hello": "world", "items": [1, 2, 3]}


def _config(redis_url: str | None = None) -> dict[str, Any]:
    return {
        "JWT_SECRET_KEY": os.environ["BENCH_JWT_KEY"],
        "SESSIONSVC_REDIS_URL": redis_url or os.environ["BENCH_REDIS_URL"],
        "SESSIONSVC_KEY_PREFIX": os.environ.get("BENCH_PREFIX", "bench"),
    }


def ours(redis_url: str | None = None) -> Flask:
    """A host app with sessionsvc mounted."""
    app = Flask("bench-ours")
    app.config.update(_config(redis_url))
    SessionManager(app)

    @app.get("/protected")
    @jwt_required()
    def protected() -> Any:
        return jsonify(PAYLOAD)

    return app


def baseline() -> Flask:
    """flask-jwt-extended's documented Redis blocklist, nothing else."""
    app = Flask("bench-baseline")
    app.config.update(_config())
    jwt = JWTManager(app)
    # As the recipe does: one module-level client, created at import (before
    # fork; redis-py's pool notices the fork and reconnects in each worker).
    blocklist = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"], decode_responses=True)
    prefix = app.config["SESSIONSVC_KEY_PREFIX"]

    @jwt.token_in_blocklist_loader
    def check_if_token_is_revoked(jwt_header: dict[str, Any], jwt_payload: dict[str, Any]) -> bool:
        return blocklist.get(f"{prefix}:jti:{jwt_payload['jti']}") is not None

    @app.get("/protected")
    @jwt_required()
    def protected() -> Any:
        return jsonify(PAYLOAD)

    return app
