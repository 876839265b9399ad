"""``create_app()``: the standalone service."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flasgger import Swagger
from flask import Blueprint, Flask, Response, jsonify, request
from prometheus_client.exposition import choose_encoder

from . import account, admin, console, devices, metrics, openapi, payloads
from .errors import NotFound
from .extension import SessionManager
from .payloads import MAX_BODY
from .settings import ConfigError
from .state import current_manager, current_state, state_of

if TYPE_CHECKING:
    import redis

logger = logging.getLogger("sessionsvc")

health = Blueprint("sessionsvc_health", __name__)

#: Where a request's id and route pattern wait in the WSGI environ for the
#: access log (:class:`sessionsvc.serving.Logger`).
REQUEST_ID, ROUTE = "sessionsvc.request_id", "sessionsvc.route"
#: A request id a client (or the proxy in front) may choose: short, plain.
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


@health.get("/healthz")
@openapi.spec("health")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@health.get("/readyz")
@openapi.spec("readiness")
def readyz() -> Response:
    current_manager().ping()
    return jsonify({"status": "ok"})


#: ``/metrics`` and the request counts behind it (``SESSIONSVC_METRICS``).
#: Only here: a host app that mounts the extension exposes its own metrics,
#: if any.
metrics_view = Blueprint("sessionsvc_metrics", __name__)


@metrics_view.get("/metrics")
@openapi.spec("metrics")
def serve_metrics() -> Response:
    if not _may_read_metrics(current_state().settings.metrics_token):
        # As if there were none: the counts say who signs in and when.
        raise NotFound("The requested URL was not found on the server.")
    # The text format by default; OpenMetrics when the scraper asks for it.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(metrics.registry()), content_type=content_type)


def _may_read_metrics(token: str | None) -> bool:
    """With a token, whoever presents it; without one, clients on loopback only.

    The client's address as the sessions see it: behind trusted proxies, the
    address they forwarded.
    """
    if token is not None:
        presented = request.headers.get("Authorization", "")
        return hmac.compare_digest(presented.encode(), f"Bearer {token}".encode())
    address = devices.client_ip(request)
    return address is not None and ipaddress.ip_address(address).is_loopback


@metrics_view.after_app_request
def _count_request(response: Response) -> Response:
    rule = request.url_rule
    method = request.method if request.method in metrics.METHODS else "other"
    metrics.REQUESTS.labels(
        rule.rule if rule is not None else metrics.UNMATCHED, method, str(response.status_code)
    ).inc()
    return response


def create_app(
    config: Mapping[str, Any] | None = None, *, redis_client: redis.Redis | None = None
) -> Flask:
    """Build the standalone service: the API, the pages, health, metrics, Swagger UI.

    :param config: Flask config values (``config.py`` reads them from the
        environment for ``wsgi.py``).
    :param redis_client: a ready Redis client instead of ``SESSIONSVC_REDIS_URL``.
    :raises ConfigError: on a bad or missing setting, naming the key.
    """
    app = Flask("sessionsvc", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    # Tokens travel in the Authorization header only: no cookie, so no CSRF
    # claim to carry in every token.
    app.config["JWT_TOKEN_LOCATION"] = ["headers"]
    app.config["JWT_COOKIE_CSRF_PROTECT"] = False
    # The standalone service's admins are its user store's: on unless turned off.
    app.config["SESSIONSVC_ADMIN_ROUTES"] = True
    app.config.update(config or {})
    if not app.config.get("JWT_SECRET_KEY"):
        if app.config.get("SESSIONSVC_REDIS_URL") or redis_client is not None:
            raise ConfigError("JWT_SECRET_KEY must be set when the service uses a real Redis")
        # Development only: with the embedded store nothing outlives the
        # process anyway, so neither need the tokens.
        logger.warning(
            "JWT_SECRET_KEY is not set: generated a random one for this process; "
            "tokens stop working when it restarts"
        )
        app.config["JWT_SECRET_KEY"] = secrets.token_urlsafe(32)
    sessions = SessionManager(
        app, redis_client=redis_client, auth_routes=True, problem_paths=("/",)
    )
    sessions.admin_loader(admin.holds_admin_role)
    app.register_blueprint(health)
    if state_of(app).settings.metrics:
        # Switched off, /metrics is the plain 404 problem.
        app.register_blueprint(metrics_view)
    app.register_blueprint(account.blueprint)
    app.register_blueprint(console.blueprint)
    Swagger(app, template=openapi.TEMPLATE, config=openapi.SWAGGER_CONFIG)
    app.after_request(_protect_docs)
    app.before_request(_start_request)
    app.after_request(_finish_request)
    return app


def _start_request() -> None:
    """Give the request an id: the ``X-Request-Id`` it came with, if plain, or a new one."""
    environ = request.environ
    given = environ.get("HTTP_X_REQUEST_ID", "")
    environ[REQUEST_ID] = given if _REQUEST_ID_RE.fullmatch(given) else secrets.token_hex(8)


def _finish_request(response: Response) -> Response:
    environ = request.environ
    rule = request.url_rule
    environ[ROUTE] = rule.rule if rule is not None else None
    request_id = environ.get(REQUEST_ID)
    if request_id:  # not set when an earlier before_request refused the request
        response.headers["X-Request-Id"] = request_id
    return response


#: flasgger's HTML pages: Swagger UI at /docs, and its OAuth redirect page.
_DOCS_PAGES = frozenset({"flasgger.apidocs", "flasgger.oauth_redirect"})


def _protect_docs(response: Response) -> Response:
    if request.endpoint in _DOCS_PAGES:
        payloads.page_headers(response, openapi.DOCS_CSP)
    return response
