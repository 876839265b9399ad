"""Prometheus metrics at /metrics: counters move, the off switch, host apps."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from sessionsvc import ConfigError, create_app
from tests.backends import AppFactory, Backend, host_app
from tests.clients import CHROME, FIREFOX_LINUX, JWT_KEY, Auth, assert_problem
from tests.servers import free_port

SESSIONS = "/api/v1/sessions"


def sample(client: FlaskClient, name: str, **labels: str) -> float:
    """The value of one sample in /metrics (0 when it is not there yet)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for item in family.samples:
            if item.name == name and all(item.labels.get(k) == v for k, v in labels.items()):
                return float(item.value)
    return 0.0


def test_metrics_are_prometheus_text(client: FlaskClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert "version=0.0.4" in response.content_type
    openmetrics = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert openmetrics.mimetype == "application/openmetrics-text"
    names = {f.name for f in text_string_to_metric_families(response.get_data(as_text=True))}
    assert {
        "sessionsvc_sessions_opened",
        "sessionsvc_sessions_revoked",
        "sessionsvc_anomalies",
        "sessionsvc_revocation_check_seconds",
        "sessionsvc_store_errors",
        "sessionsvc_http_requests",
    } <= names


def test_logins_and_revocations_are_counted_by_reason(auth: Auth, client: FlaskClient) -> None:
    opened = sample(client, "sessionsvc_sessions_opened_total")
    by_user = sample(client, "sessionsvc_sessions_revoked_total", reason="user")
    by_logout = sample(client, "sessionsvc_sessions_revoked_total", reason="logout")
    tokens = auth.login("alice")
    other = auth.login("alice")
    assert sample(client, "sessionsvc_sessions_opened_total") == opened + 2

    headers = auth.headers(tokens)
    assert client.delete(f"{SESSIONS}/{other['session_id']}", headers=headers).status_code == 204
    assert sample(client, "sessionsvc_sessions_revoked_total", reason="user") == by_user + 1
    assert client.post("/api/v1/auth/logout", headers=headers).status_code in (200, 204)
    assert sample(client, "sessionsvc_sessions_revoked_total", reason="logout") == by_logout + 1


def test_an_anomaly_is_counted(auth: Auth, client: FlaskClient) -> None:
    before = sample(client, "sessionsvc_anomalies_total")
    tokens = auth.login("alice", user_agent=CHROME)
    stolen = {"Authorization": f"Bearer {tokens['access_token']}", "User-Agent": FIREFOX_LINUX}
    assert client.get(SESSIONS, headers=stolen).status_code == 200
    assert sample(client, "sessionsvc_anomalies_total") == before + 1


def test_every_authenticated_request_times_one_check(auth: Auth, client: FlaskClient) -> None:
    tokens = auth.login("alice")
    before = sample(client, "sessionsvc_revocation_check_seconds_count")
    for _ in range(3):
        assert client.get(SESSIONS, headers=auth.headers(tokens)).status_code == 200
    assert sample(client, "sessionsvc_revocation_check_seconds_count") == before + 3
    # Without a token there is nothing to check.
    assert client.get(SESSIONS).status_code == 401
    assert sample(client, "sessionsvc_revocation_check_seconds_count") == before + 3


def test_requests_are_counted_by_route_template_and_status(auth: Auth, client: FlaskClient) -> None:
    tokens = auth.login("alice")
    route = "/api/v1/sessions/<session_id>"
    labels: dict[str, Any] = {"route": route, "method": "GET"}
    ok = sample(client, "sessionsvc_http_requests_total", status="200", **labels)
    missing = sample(client, "sessionsvc_http_requests_total", status="404", **labels)
    unmatched = sample(client, "sessionsvc_http_requests_total", route="<unmatched>", status="404")
    headers = auth.headers(tokens)
    assert client.get(f"{SESSIONS}/{tokens['session_id']}", headers=headers).status_code == 200
    assert client.get(f"{SESSIONS}/nope", headers=headers).status_code == 404
    assert client.get("/no/such/thing").status_code == 404
    assert client.get("/no/such/other/thing").status_code == 404
    assert sample(client, "sessionsvc_http_requests_total", status="200", **labels) == ok + 1
    assert sample(client, "sessionsvc_http_requests_total", status="404", **labels) == missing + 1
    assert (
        sample(client, "sessionsvc_http_requests_total", route="<unmatched>", status="404")
        == unmatched + 2
    )
    body = client.get("/metrics").get_data(as_text=True)
    assert "/no/such" not in body  # raw paths never become labels


def test_store_errors_are_counted() -> None:
    down = create_app(
        {
            "TESTING": True,
            "JWT_SECRET_KEY": JWT_KEY,
            "SESSIONSVC_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "SESSIONSVC_STORE_TIMEOUT": 0.3,
        }
    )
    client = down.test_client()
    before = sample(client, "sessionsvc_store_errors_total", kind="outage")
    assert_problem(client.get("/readyz"), 503, "store_unavailable")
    assert sample(client, "sessionsvc_store_errors_total", kind="outage") == before + 1


def test_metrics_can_be_switched_off(make_app: AppFactory) -> None:
    client = make_app(SESSIONSVC_METRICS=False).test_client()
    assert_problem(client.get("/metrics"), 404, "not_found")


def test_building_several_apps_in_one_process_is_fine(make_app: AppFactory) -> None:
    first, second = make_app(), make_app()
    assert first.test_client().get("/metrics").status_code == 200
    assert second.test_client().get("/metrics").status_code == 200


def test_a_host_app_mounting_the_extension_has_no_metrics_route(backend: Backend) -> None:
    app, _ = host_app(backend)
    assert isinstance(app, Flask)
    assert not any(rule.rule == "/metrics" for rule in app.url_map.iter_rules())
    assert app.test_client().get("/metrics").status_code == 404


REMOTE = {"REMOTE_ADDR": "203.0.113.7"}
TOKEN = "scrape-me-with-this-0123456789"


def test_metrics_are_served_to_loopback_only_by_default(client: FlaskClient) -> None:
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    assert_problem(client.get("/metrics", environ_base=REMOTE), 404, "not_found")
    assert_problem(
        client.get("/metrics", environ_base={"REMOTE_ADDR": "10.0.0.8"}), 404, "not_found"
    )


@pytest.mark.parametrize("peer", ["::ffff:127.0.0.1", "::ffff:7f00:1", "::ffff:127.1.2.3"])
def test_loopback_through_a_dual_stack_socket_is_loopback(client: FlaskClient, peer: str) -> None:
    # gunicorn bound to [::] sees an IPv4 client on loopback as ::ffff:127.x.y.z.
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": peer}).status_code == 200
    mapped_remote = {"REMOTE_ADDR": "::ffff:203.0.113.7"}
    assert_problem(client.get("/metrics", environ_base=mapped_remote), 404, "not_found")


def test_behind_a_trusted_proxy_the_forwarded_client_decides(make_app: AppFactory) -> None:
    client = make_app(SESSIONSVC_TRUSTED_PROXIES=1).test_client()
    forwarded = {"X-Forwarded-For": "198.51.100.9"}
    assert_problem(client.get("/metrics", headers=forwarded), 404, "not_found")
    local = {"X-Forwarded-For": "127.0.0.1"}
    assert client.get("/metrics", headers=local, environ_base=REMOTE).status_code == 200
    mapped = {"X-Forwarded-For": "::ffff:127.0.0.1"}  # from a dual-stack proxy
    assert client.get("/metrics", headers=mapped, environ_base=REMOTE).status_code == 200


def test_a_metrics_token_opens_them_to_any_address_that_presents_it(
    make_app: AppFactory,
) -> None:
    client = make_app(SESSIONSVC_METRICS_TOKEN=TOKEN).test_client()
    right = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/metrics", headers=right, environ_base=REMOTE).status_code == 200
    assert client.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN}):
        # With a token, loopback needs it too.
        assert_problem(client.get("/metrics", headers=headers), 404, "not_found")


@pytest.mark.parametrize("token", ["short", "x" * 15, "é" * 20, "tab\there-0123456789"])
def test_a_weak_metrics_token_stops_the_start_naming_the_key(token: str) -> None:
    with pytest.raises(ConfigError, match="SESSIONSVC_METRICS_TOKEN") as raised:
        create_app({"JWT_SECRET_KEY": JWT_KEY, "SESSIONSVC_METRICS_TOKEN": token})
    assert token not in str(raised.value)
