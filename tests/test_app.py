"""The standalone app: service routes, Swagger, create_app's own checks."""

from __future__ import annotations

import logging
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from sessionsvc import ConfigError, create_app
from tests.clients import JWT_KEY, assert_problem
from tests.servers import free_port


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_when_the_store_answers(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_when_the_store_is_down() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app({"JWT_SECRET_KEY": JWT_KEY, "SESSIONSVC_REDIS_URL": url})
    client = app.test_client()
    response = client.get("/readyz")
    assert_problem(response, 503, "store_unavailable")
    assert response.headers["Retry-After"] == "1"
    assert client.get("/healthz").status_code == 200


def test_swagger_ui_is_served(client: FlaskClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "swagger-ui" in response.get_data(as_text=True)
    assert "/apispec.json" in response.get_data(as_text=True)


def test_swagger_ui_is_the_current_release_shipped_in_the_package(client: FlaskClient) -> None:
    page = client.get("/docs").get_data(as_text=True)
    # What the browser fetches: scripts, stylesheets, icons (not plain links).
    assets = re.findall(r'src="([^"]+)"', page) + re.findall(r'<link[^>]+href="([^"]+)"', page)
    assert sorted(assets) == [
        "/docs/assets/docs.css",
        "/docs/assets/init.js",
        "/docs/assets/swagger-ui/favicon-32x32.png",
        "/docs/assets/swagger-ui/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui/swagger-ui-standalone-preset.js",
        "/docs/assets/swagger-ui/swagger-ui.css",
    ]
    # Nothing from the internet, not flasgger's Swagger UI 3.28.0 or jQuery 2.2.4,
    # and no inline script or style (the page's CSP allows none).
    assert "googleapis" not in page and "flasgger_static" not in page
    assert "<script>" not in page and "<style" not in page and "style=" not in page
    bundle = client.get("/docs/assets/swagger-ui/swagger-ui-bundle.js")
    assert bundle.status_code == 200
    assert bundle.mimetype in ("text/javascript", "application/javascript")
    assert '"5.35.0"' in bundle.get_data(as_text=True)
    css = client.get("/docs/assets/swagger-ui/swagger-ui.css")
    assert (css.status_code, css.mimetype) == (200, "text/css")
    for response in (bundle, css):
        response.close()


def test_unknown_path_and_method_are_problems(client: FlaskClient) -> None:
    assert_problem(client.get("/no/such/thing"), 404, "not_found")
    response = client.post("/healthz")
    assert_problem(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_body_over_64_kib_is_413(client: FlaskClient) -> None:
    response = client.post(
        "/api/v1/auth/login", data=b"{" + b" " * (64 * 1024 + 1) + b"}",
        content_type="application/json",
    )  # fmt: skip
    assert_problem(response, 413, "payload_too_large")


def test_unexpected_error_is_a_problem_without_a_traceback(app: Flask) -> None:
    @app.get("/explode")
    def explode() -> str:
        raise RuntimeError("secret internals")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    body = assert_problem(app.test_client().get("/explode"), 500, "internal_error")
    assert "secret internals" not in body["detail"]
    assert "Traceback" not in body["detail"]


def test_real_redis_requires_a_signing_key() -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        create_app({"SESSIONSVC_REDIS_URL": "redis://127.0.0.1:6379/0"})


def test_embedded_store_generates_a_signing_key_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="sessionsvc"):
        first = create_app()
        second = create_app()
    assert "JWT_SECRET_KEY is not set" in caplog.text
    assert len(first.config["JWT_SECRET_KEY"]) >= 32
    assert first.config["JWT_SECRET_KEY"] != second.config["JWT_SECRET_KEY"]


@pytest.mark.parametrize(
    "path",
    [
        "/flasgger_static/swagger-ui-bundle.js",
        "/flasgger_static/lib/jquery.min.js",
        "/flasgger_static/swagger-ui-bundle.js.map",
        "/docs/assets/lib/jquery.min.js",
    ],
)
def test_flasggers_own_swagger_ui_and_jquery_are_not_served(client: FlaskClient, path: str) -> None:
    assert_problem(client.get(path), 404, "not_found")


def test_the_docs_pages_carry_a_csp_and_refuse_framing(client: FlaskClient) -> None:
    for path in ("/docs", "/oauth2-redirect.html"):
        response = client.get(path)
        assert response.status_code == 200, path
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy, path
        assert "frame-ancestors 'none'" in policy, path
        assert response.headers["X-Frame-Options"] == "DENY", path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
    # The account page has the same protection.
    page = client.get("/account/sessions")
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
