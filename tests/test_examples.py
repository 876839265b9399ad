"""examples/host_app.py, the README's mounting example, and
examples/webhook_receiver.py run as documented."""

from __future__ import annotations

import importlib.util
import json
import time
from types import ModuleType
from typing import Any

from flask import Flask

from tests.clients import CHROME, IPHONE, JWT_KEY, assert_jwt_answer
from tests.servers import ROOT


def host_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("host_app", ROOT / "examples" / "host_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_host(backend: Any) -> Flask:
    config = {"TESTING": True, "JWT_SECRET_KEY": JWT_KEY, **backend.app_config()}
    app: Flask = host_module().create_app(config, **backend.app_kwargs())
    return app


def test_the_host_app_signs_in_lists_and_signs_out_everywhere(backend: Any) -> None:
    app = make_host(backend)
    client = app.test_client()
    credentials = {"email": "ada@example.com", "password": "correct horse"}
    assert client.post("/signup", json=credentials).status_code == 201
    assert client.post("/signup", json=credentials).status_code == 409
    assert client.post("/login", json={**credentials, "password": "wrong"}).status_code == 401

    laptop = client.post("/login", json=credentials, headers={"User-Agent": CHROME}).get_json()
    phone = client.post("/login", json=credentials, headers={"User-Agent": IPHONE}).get_json()
    as_laptop = {"Authorization": f"Bearer {laptop['access_token']}", "User-Agent": CHROME}
    as_phone = {"Authorization": f"Bearer {phone['access_token']}", "User-Agent": IPHONE}
    assert client.get("/me", headers=as_phone).get_json() == {"email": "ada@example.com"}
    # The extension's own routes, mounted in the host app.
    listed = client.get("/api/v1/sessions", headers=as_laptop).get_json()["sessions"]
    assert {s["id"] for s in listed} == {laptop["session_id"], phone["session_id"]}

    changed = client.post("/password", json={"new_password": "battery staple"}, headers=as_laptop)
    assert changed.get_json() == {"revoked": 2}
    for headers in (as_laptop, as_phone):
        # The host's own route answers as flask-jwt-extended does for it.
        assert_jwt_answer(client.get("/me", headers=headers), 401, "Token has been revoked")
    assert client.post("/login", json=credentials).status_code == 401
    fresh = client.post("/login", json={**credentials, "password": "battery staple"})
    assert fresh.status_code == 200
    with app.app_context():
        events = app.extensions["sessionsvc"].manager.events_for("1", limit=10)
    reasons = [e.detail["reason"] for e in events if e.type == "session.revoked"]
    assert reasons == ["admin", "admin"]


def example_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_webhook_receiver_acts_once_on_each_verified_delivery(backend: Any) -> None:
    """examples/webhook_receiver.py behind a real HTTP server, fed by a deliverer."""
    import base64
    import threading

    from werkzeug.serving import make_server

    from sessionsvc.app import create_app
    from sessionsvc.state import current_state
    from sessionsvc.webhooks import Deliverer, headers_of, post
    from tests.clients import Auth

    secret = "whsec_" + base64.b64encode(b"receiver-example-secret-32-bytes").decode()
    receiver = example_module("webhook_receiver").create_app(secret)
    server = make_server("127.0.0.1", 0, receiver, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/webhooks"
    try:
        app = create_app(
            {
                "TESTING": True,
                "JWT_SECRET_KEY": JWT_KEY,
                "SESSIONSVC_LOGIN_RATE_LIMIT": "",
                "SESSIONSVC_WEBHOOK_URLS": url,
                "SESSIONSVC_WEBHOOK_SECRET": secret,
                **backend.app_config(),
            },
            **backend.app_kwargs(),
        )
        tokens = Auth(app).login(user_agent=IPHONE)
        with app.app_context():
            state = current_state()
            deliverer = Deliverer(state.store, state.settings)
            [endpoint] = deliverer.endpoints
            assert deliverer.step(endpoint, "example")
            assert not deliverer.step(endpoint, "example")
        [event] = receiver.config["RECEIVED"]
        assert event["type"] == "session.created"
        assert event["data"]["session_id"] == tokens["session_id"]
        assert event["data"]["user_agent"] == IPHONE
        # The same delivery again (a retry): accepted, not acted on twice.
        body = json.dumps(event, separators=(",", ":")).encode()
        again = headers_of(secret, event["data"]["id"], body, now=int(time.time()))
        assert post(url, body, again) == 204
        assert len(receiver.config["RECEIVED"]) == 1
        # A forged or altered one is refused.
        assert post(url, body.replace(b"iPhone", b"iPad"), again) == 400
        forged = headers_of("whsec_" + base64.b64encode(b"x" * 32).decode(), "e1", body, now=1)
        assert post(url, body, forged) == 400
        assert len(receiver.config["RECEIVED"]) == 1
    finally:
        server.shutdown()
